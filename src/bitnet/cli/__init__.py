"""bitnet.cli"""
