"""bitnet.kernels"""
