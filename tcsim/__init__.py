"""tcsim: a bit-exact simulator of GPU matrix-unit (Tensor Core) accumulation."""

__version__ = "0.1.0"
