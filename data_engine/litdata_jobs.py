"""The two LitData jobs of the engine: ``litdata.map`` computes a node's records, ``litdata.optimize`` writes
a split of the store from the staged records. Both run on this node alone (the engine splits work among
nodes itself, :func:`.nodes.litdata_node_vars`) and leave the process-wide start method as they found it."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .nodes import litdata_node_vars


@contextlib.contextmanager
def _litdata_call() -> Iterator[None]:
    caller_method = multiprocessing.get_start_method(allow_none=True)
    try:
        with litdata_node_vars(1, 0):
            yield
    finally:
        # LitData sets the process-wide start method (force=True); left as "spawn", every later DataLoader in
        # this process would respawn its workers each epoch (the demo's training ran 4x slower).
        if multiprocessing.get_start_method(allow_none=True) != caller_method:
            multiprocessing.set_start_method(caller_method, force=True)


def run_map(
    fn: Callable[[Any, str], None],
    inputs: Sequence[Any],
    scratch_dir: str | os.PathLike,
    *,
    num_workers: int = 1,
    start_method: str | None = None,
) -> None:
    """Run ``fn(input, output_dir)`` over ``inputs`` on ``num_workers`` LitData worker processes.

    What ``litdata.map`` does, without its progress output (the engine shows its own bar). ``fn`` writes its
    results itself (the staged records) and must not raise (LitData's parent would wait forever).
    ``scratch_dir`` is LitData's output folder; nothing is written there and it is removed after.
    """
    from litdata.processing.data_processor import DataProcessor
    from litdata.processing.functions import LambdaMapRecipe
    from litdata.streaming.resolver import Dir

    try:
        with _litdata_call():
            processor = DataProcessor(
                input_dir=Dir(), output_dir=Dir(path=str(scratch_dir)), num_workers=max(1, num_workers),
                reorder_files=False, start_method=start_method, verbose=False, fast_dev_run=False,
            )  # fmt: skip
            processor.run(LambdaMapRecipe(fn, list(inputs)))
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def write_dataset(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    output_dir: str | os.PathLike,
    *,
    num_workers: int = 1,
    chunk_bytes: str | int = "64MB",
    start_method: str | None = None,
    progress: bool = False,
) -> Path:
    """Run ``litdata.optimize`` over ``inputs`` into ``output_dir`` (replaced if it exists).

    Items come out in ``inputs`` order (``keep_data_ordered``: each worker takes a contiguous slice and the
    index lists workers in rank order). ``fn`` may yield nothing for an input; it must not raise.

    Args:
        fn: picklable callable (or generator function) from an input to a store item.
        inputs: the inputs, in the order they should be stored.
        output_dir: a folder only this call writes.
        num_workers: LitData worker processes.
        chunk_bytes: LitData chunk size.
        start_method: multiprocessing start method (LitData's default is ``spawn``).
        progress: LitData's progress output.

    Returns:
        ``output_dir``.
    """
    import litdata

    output_dir = Path(output_dir)
    if output_dir.exists():  # left by a killed run; never visible to readers
        shutil.rmtree(output_dir)
    with _litdata_call():
        litdata.optimize(
            fn=fn, inputs=list(inputs), output_dir=str(output_dir), chunk_bytes=chunk_bytes,
            num_workers=max(1, num_workers), reorder_files=False, keep_data_ordered=True,
            start_method=start_method, verbose=progress,
        )  # fmt: skip
    return output_dir
