"""bitnet.receipts"""
