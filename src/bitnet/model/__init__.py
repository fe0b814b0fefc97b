"""bitnet.model"""
