"""Debugging tools: feed, record, serve, check, demo.

Each tool is a trio program built on the same sans-I/O core as the sidecar
(frames, messages, resample) talking over real sockets.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every tool's subcommand to the `audio-sidecar` parser."""
    from sidecar.tools import check, demo, feed, record, serve

    for tool in (demo, feed, record, serve, check):
        tool.add_parser(sub)
