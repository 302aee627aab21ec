"""stub"""
def record_ssdlite_mbv2(b): raise NotImplementedError
