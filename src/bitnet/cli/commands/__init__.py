"""Thin click commands, one module per area; each body calls one library function."""
