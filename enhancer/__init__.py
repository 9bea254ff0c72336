"""Likeness: real-time, personalised face enhancement for video calls."""

__version__ = "0.1.0"
