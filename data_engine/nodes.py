"""Which node this is and which shapes are its own, with LitData's multi-node variables.

Each node runs the same ``python -m data_engine precompute`` with ``DATA_OPTIMIZER_NUM_NODES`` and its own
``DATA_OPTIMIZER_NODE_RANK`` (the variables ``litdata.optimize`` reads) on one output folder on a shared
filesystem. Every node computes the same plan and takes its contiguous share of each split with LitData's own
assignment rule. Nodes coordinate through nothing but the finished per-shape records in ``.staging`` (see
:mod:`.runs` for how they agree on the plan and :mod:`.publish` for how the store is made from the records).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

NUM_NODES_VAR = "DATA_OPTIMIZER_NUM_NODES"
NODE_RANK_VAR = "DATA_OPTIMIZER_NODE_RANK"


def node_count_and_rank() -> tuple[int, int]:
    """``(number of nodes, this node's rank)`` from LitData's variables (1 and 0 when both are unset).

    Raises:
        ValueError: a variable is not an integer, the rank is outside ``[0, nodes)``, or there are several
            nodes and no rank (every such process would take rank 0's share and nobody node 1's).
    """
    raw_nodes, raw_rank = os.environ.get(NUM_NODES_VAR), os.environ.get(NODE_RANK_VAR)
    try:
        num_nodes = int(raw_nodes) if raw_nodes not in (None, "") else 1
        rank = int(raw_rank) if raw_rank not in (None, "") else None
    except ValueError:
        raise ValueError(
            f"{NUM_NODES_VAR}={raw_nodes!r} and {NODE_RANK_VAR}={raw_rank!r} must be integers"
        ) from None
    if rank is None:
        if num_nodes > 1:
            raise ValueError(
                f"{NUM_NODES_VAR}={num_nodes} but {NODE_RANK_VAR} is not set: set it on every node to its rank "
                f"0..{num_nodes - 1} (e.g. from $SLURM_ARRAY_TASK_ID, $SLURM_NODEID or the launcher's $NODE_RANK)"
            )
        rank = 0
    if num_nodes < 1 or not 0 <= rank < num_nodes:
        raise ValueError(
            f"{NODE_RANK_VAR}={rank} with {NUM_NODES_VAR}={num_nodes}: the rank must be in 0..{num_nodes - 1}"
        )
    return num_nodes, rank


@contextlib.contextmanager
def litdata_node_vars(num_nodes: int, rank: int) -> Iterator[None]:
    """LitData's node variables set to ``num_nodes`` and ``rank`` for the duration of a call.

    The engine runs LitData with ``(1, 0)`` on each node: it splits the work among nodes itself, where
    ``litdata.optimize`` with several nodes would also merge index files across nodes without waiting for them.
    """
    saved = {name: os.environ.get(name) for name in (NUM_NODES_VAR, NODE_RANK_VAR)}
    os.environ.update({NUM_NODES_VAR: str(num_nodes), NODE_RANK_VAR: str(rank)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def node_shares(items: Sequence[T], num_nodes: int) -> list[list[T]]:
    """``items`` cut into ``num_nodes`` contiguous shares, as ``litdata.optimize`` assigns them to nodes of one
    worker each (the remainder goes to the last nodes). Node 0's items, then node 1's, ... is the whole list."""
    from litdata.processing.data_processor import _map_items_to_workers_sequentially

    shares = []
    for rank in range(num_nodes):
        with litdata_node_vars(num_nodes, rank):
            shares.append(list(_map_items_to_workers_sequentially(1, list(items))[0]))
    return shares


def node_share(items: Sequence[T]) -> list[T]:
    """This node's contiguous share of ``items`` (see :func:`node_shares`)."""
    num_nodes, rank = node_count_and_rank()
    return node_shares(items, num_nodes)[rank]


def digest(obj: Any, length: int = 12) -> str:
    """A short, stable hex digest of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
