"""bitnet.tokenizers"""
