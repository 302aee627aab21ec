"""stub"""
def record_lite0(b): raise NotImplementedError
def record_v2_s(b): raise NotImplementedError
