# This file must parse on any Python, so that an old one gets a sentence and
# not a SyntaxError from a module it cannot read: no annotations, f-strings
# or other newer syntax here, and nothing imported before the check.
# MINIMUM is pyproject's requires-python (tests/test_cli_usage.py holds them equal).
import sys

MINIMUM = (3, 11)

if tuple(sys.version_info[:2]) < MINIMUM:
    wanted = ".".join(str(n) for n in MINIMUM)
    running = ".".join(str(n) for n in sys.version_info[:2])
    sys.stderr.write(
        "audio-sidecar needs Python " + wanted + " or newer; this is Python " + running
        + " (" + sys.executable + ")\n"
    )  # fmt: skip
    sys.exit(2)

from sidecar.cli import main  # noqa: E402

sys.exit(main())
