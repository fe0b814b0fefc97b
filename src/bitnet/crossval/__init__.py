"""bitnet.crossval"""
