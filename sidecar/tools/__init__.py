"""Debugging tools: feed, record, serve, check, demo."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every tool's subcommand to the `audio-sidecar` parser."""
