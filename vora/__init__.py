"""VORA: the telephony API gateway."""

__version__ = "0.2.0"
