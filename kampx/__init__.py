"""kampx: a multi-process SIP proxy with its routing logic in Python and a compiled core."""

__version__ = "0.1.0"
