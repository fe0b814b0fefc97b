"""bitnet.formats"""
