"""Command-line pieces the tools share: `--help` text, and the `--progress` flag."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" except for flags, unset options and help that names its own."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or isinstance(default, bool)
            or default == []
            or default is argparse.SUPPRESS
        ):
            return text
        return super()._get_help_string(action)


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr [default: when stderr is a terminal]",
    )


def wants_progress(args: argparse.Namespace, isatty: bool) -> bool:
    return isatty if args.progress is None else bool(args.progress)
