"""Several nodes building one store on a shared filesystem, with LitData's multi-node variables.

Each node runs the same ``python -m data_engine precompute`` with ``DATA_OPTIMIZER_NUM_NODES`` and its own
``DATA_OPTIMIZER_NODE_RANK`` (the variables ``litdata.optimize`` reads), and the same ``output`` folder. Every
node computes the same plan, takes its contiguous share of each split with LitData's own assignment rule,
and writes that share as a LitData dataset of its own. The node that finishes last publishes the store; the
others exit at once. Nodes may start at different times and may be killed and restarted: a node only ever
deletes its own files, and the store is published exactly once per result.

Layout of one run under ``<store>/.runs/<run id>/`` (the run id is a digest of the plan: tasks, splits, write
order, record settings and the number of nodes, so nodes that disagree about the inputs never mix)::

    node-<r>/<split>/          node r's dataset of its share (LitData index.json + chunks)
    node-<r>.json              node r has finished: what it wrote and what failed, with per-shape facts
    publish-<digest>.json      which node publishes the result with this digest (created exclusively)
    published.json             the digest of the result now in the store
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from .store import atomic_write_json

T = TypeVar("T")

RUNS = ".runs"
NUM_NODES_VAR = "DATA_OPTIMIZER_NUM_NODES"
NODE_RANK_VAR = "DATA_OPTIMIZER_NODE_RANK"


def node_count_and_rank() -> tuple[int, int]:
    """``(number of nodes, this node's rank)`` from LitData's variables (1 and 0 when unset).

    Raises:
        ValueError: a variable is not an integer, or the rank is outside ``[0, nodes)``.
    """
    from litdata.processing.data_processor import _get_node_rank, _get_num_nodes

    try:
        num_nodes, rank = _get_num_nodes(), _get_node_rank()
    except ValueError:
        raise ValueError(
            f"{NUM_NODES_VAR}={os.environ.get(NUM_NODES_VAR)!r} and {NODE_RANK_VAR}="
            f"{os.environ.get(NODE_RANK_VAR)!r} must be integers"
        ) from None
    if num_nodes < 1 or not 0 <= rank < num_nodes:
        raise ValueError(
            f"{NODE_RANK_VAR}={rank} with {NUM_NODES_VAR}={num_nodes}: the rank must be in 0..{num_nodes - 1}"
        )
    return num_nodes, rank


def node_share(items: Sequence[T]) -> list[T]:
    """This node's contiguous share of ``items``, as ``litdata.optimize`` would assign it with one worker.

    Contiguous shares keep the write order: node 0's items, then node 1's, ... is the whole list.
    """
    from litdata.processing.data_processor import _map_items_to_workers_sequentially

    return list(_map_items_to_workers_sequentially(1, list(items))[0])


def digest(obj: Any, length: int = 12) -> str:
    """A short, stable hex digest of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class RunFolder:
    """The shared bookkeeping of one multi-node run (see the module docstring for the layout).

    Args:
        store: the store folder.
        run_id: the plan's digest.
    """

    def __init__(self, store: str | os.PathLike, run_id: str) -> None:
        self.root = Path(store) / RUNS / run_id
        self.run_id = run_id

    def node_dir(self, rank: int) -> Path:
        """Where node ``rank`` writes its datasets, one sub-folder per split."""
        return self.root / f"node-{rank}"

    def marker_path(self, rank: int) -> Path:
        return self.root / f"node-{rank}.json"

    # -- one node ------------------------------------------------------------------------------------------
    def begin(self, rank: int) -> None:
        """Node ``rank`` starts (or restarts): forget its earlier finish and its partial datasets (its own)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker_path(rank).unlink(missing_ok=True)
        shutil.rmtree(self.node_dir(rank), ignore_errors=True)

    def finish(self, rank: int, summary: dict[str, Any]) -> None:
        """Node ``rank`` has written its whole share; ``summary`` says what it wrote and what failed."""
        atomic_write_json(self.marker_path(rank), {**summary, "rank": rank, "finished_at": time.time()})

    def finished(self, num_nodes: int) -> dict[int, dict[str, Any]]:
        """The summaries of the nodes that have finished, by rank."""
        out = {}
        for rank in range(num_nodes):
            path = self.marker_path(rank)
            if path.is_file():
                out[rank] = json.loads(path.read_text())
        return out

    # -- publishing ----------------------------------------------------------------------------------------
    def _claim_path(self, result: str) -> Path:
        return self.root / f"publish-{result}.json"

    def claim(self, result: str, rank: int) -> int:
        """Try to become the publisher of the result with digest ``result``; returns the rank that is.

        The claim file is created exclusively, so of several nodes that finish together exactly one wins. A
        publisher killed midway finds its own claim when it is restarted and publishes again.
        """
        path = self._claim_path(result)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                return int(json.loads(path.read_text())["rank"])
            except (ValueError, KeyError):  # the winner was killed while writing its claim: it is still its
                return -1
        with os.fdopen(fd, "w") as f:
            json.dump({"rank": rank, "at": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        return rank

    def release(self, result: str) -> None:
        """Give up a claim (the publish failed with an exception; another node may try)."""
        self._claim_path(result).unlink(missing_ok=True)

    def published(self) -> str | None:
        """The digest of the result this run last published, if any."""
        path = self.root / "published.json"
        return json.loads(path.read_text())["result"] if path.is_file() else None

    def mark_published(self, result: str, rank: int) -> None:
        atomic_write_json(self.root / "published.json", {"result": result, "by": rank, "at": time.time()})

    def remove_datasets(self, summaries: dict[int, dict[str, Any]]) -> None:
        """Delete the nodes' datasets once they are in the store (the published copy is what counts).

        A node that has restarted since (its marker changed or is gone) owns its folder again and keeps it.
        """
        for rank, summary in summaries.items():
            path = self.marker_path(rank)
            if path.is_file() and json.loads(path.read_text()).get("finished_at") == summary.get("finished_at"):
                shutil.rmtree(self.node_dir(rank), ignore_errors=True)
