"""The one sample format the sidecar carries inside: s16le mono.

Every count of audio inside is in samples; bytes appear only where audio is
cut from or joined into PCM, and there through SAMPLE_BYTES (numpy, through
SAMPLE_DTYPE). tests/test_one_fact.py fails on a module that writes the 2 out.
"""

from typing import Final

SAMPLE_BYTES: Final = 2
"""Bytes per sample of s16le mono."""

SAMPLE_DTYPE: Final = f"<i{SAMPLE_BYTES}"
"""numpy's name for that sample: little-endian signed, SAMPLE_BYTES wide."""
