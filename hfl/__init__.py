"""HFL: human face-editing data toolkit and LaTo."""

__version__ = "0.1.0"
