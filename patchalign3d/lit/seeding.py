"""Seeds derived from counters, so that a resumed run draws the same random numbers as an uninterrupted one.

Training draws random numbers in two places: the loader (which points of a shape, which augmentation) and the
step (the random FPS start, drop-path). Both take their seed from what the checkpoint already holds (the run's
seed, the epoch, the shape's uid, the global step) instead of from a random stream that advances with every
draw: nothing has to replay that stream after a resume, and the draws do not depend on how many loader workers
or checkpoints there were.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import torch

__all__ = ["mixed_seed", "run_seed", "uid_key"]


def mixed_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (NumPy's ``SeedSequence`` hashing: nearby keys, unrelated seeds)."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def uid_key(uid: str) -> int:
    """A stable integer for a shape id (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(uid.encode())


def run_seed() -> int:
    """The seed a new run starts from: ``seed_everything``'s (``PL_GLOBAL_SEED``), else this process's torch seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed()
