"""Realtime audio sidecar for meeting bots."""

__version__ = "0.1.0"
