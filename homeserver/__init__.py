"""Hearth: a Matrix homeserver on Twisted."""

__version__ = "0.1.0"
