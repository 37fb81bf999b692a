"""The one exception type of training set-up problems."""

from __future__ import annotations

__all__ = ["TrainingSetupError"]


class TrainingSetupError(ValueError):
    """A run cannot start or resume as configured; the message names the problem and the setting that fixes it.

    Raised before the first training step (and for a damaged checkpoint at resume time), so nothing is lost.
    The ``lightning`` / ``patchalign3d fit`` commands print it as one line instead of a traceback.
    """
