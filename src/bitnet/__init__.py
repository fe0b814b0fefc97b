"""bitnet-py: a BitNet b1.58 inference engine and the xtask toolkit that proves it correct and fast."""

__version__ = "0.1.0"
