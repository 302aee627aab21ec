"""stub"""
def record_mobilenet_v2(b): raise NotImplementedError
def record_mobilenet_v3_large(b): raise NotImplementedError
