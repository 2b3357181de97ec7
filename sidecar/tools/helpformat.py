"""`--help` text for the tools: defaults shown only where they say something."""

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
