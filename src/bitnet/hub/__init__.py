"""bitnet.hub"""
