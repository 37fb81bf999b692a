"""Exceptions shared across the package, so callers can catch one type per kind of failure."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file has the wrong layout, or could not be read safely."""


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither cached locally nor downloadable (offline, or no such file)."""


class UsageError(ValueError):
    """A command line that is wrong in form: a missing, conflicting or malformed argument (exit status 2)."""
