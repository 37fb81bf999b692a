"""The training store (LitData chunks written by ``data_engine``) as Lightning batches.

Each item of the store is one shape (schema in ``docs/architecture.md``). Per step
:class:`~patchalign3d.lit.transforms.ShapeTransform` draws ``num_points`` of the shape's points (uniformly at
random, or mask-aware as the release's stage 2), swaps y and z as the release does (stored points are y-up,
the model sees z-up, exactly like ``segment(up_axis="y")``), optionally re-centres and rescales like
``segment(normalize=True)``, and optionally augments. Batches are dicts:

====================  =====================  ==================================================================
key                   shape / type           meaning
====================  =====================  ==================================================================
``uid``               list[str] (B)          shape ids
``category``          list[str] (B)          categories ("" when unknown)
``points``            float32 (B, n, 3)      model-frame points
``features``          float16 (B, n, D)      per-point teacher features (``with_features``)
``texts``             list[str] (T)          de-duplicated union of the batch's part names (``with_labels``)
``labels``            bool (B, n, T)         point ``p`` of shape ``b`` carries text ``t`` (``with_labels``)
``text_mask``         bool (B, T)            text ``t`` is one of shape ``b``'s part names (``with_labels``)
====================  =====================  ==================================================================

Sharding across ranks and loader workers, shuffling, and mid-epoch resumption are LitData's: the training
loader is a :class:`litdata.StreamingDataLoader`, whose ``state_dict`` Lightning stores in every checkpoint
(``loops.fit_loop.state_dict.combined_loader``) and restores on ``--ckpt_path`` for an unfinished epoch. For a
finished one Lightning restores no loader state, so this module checkpoints LitData's epoch counter itself
(``state_dict``): without it a run resumed from an epoch-end checkpoint replayed the shuffles of epochs 0, 1, ...
(:mod:`patchalign3d.lit.streaming` holds the other pieces of an exact resume).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning import LightningDataModule
from litdata import StreamingDataset

from ..store_check import check_store
from .errors import TrainingSetupError
from .streaming import ResumableStreamingDataLoader, ShapeStreamingDataset
from .transforms import Sampling, ShapeTransform, collate_shapes

# ShapeTransform and collate_shapes live in .transforms; they are re-exported where they always were.
__all__ = ["SCHEMA_VERSION", "ShapeTransform", "StoreDataModule", "collate_shapes", "read_store_info"]

#: Store schema this module reads.
SCHEMA_VERSION = 1
STORE_INFO = "store_info.json"


def read_store_info(store: str) -> dict[str, Any]:
    """``<store>/store_info.json`` as a dict (local paths or any fsspec URL); checks the schema version."""
    path = f"{store.rstrip('/')}/{STORE_INFO}"
    try:
        if "://" in store:
            import fsspec

            with fsspec.open(path, "r") as f:
                info = json.load(f)
        else:
            info = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: {store!r} is not a training store (build one with `python -m data_engine`)"
        ) from None
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"store {store!r} has schema_version {version!r}; this package reads {SCHEMA_VERSION}")
    return info


class StoreDataModule(LightningDataModule):
    """Batches of shapes from a training store.

    Args:
        store: store root (local folder or object-storage URL), holding ``store_info.json``, ``train/``, ``val/``.
        batch_size: shapes per batch *per device* (the paper's 32 is global: divide by the number of devices).
        val_batch_size: validation batch size (default: ``batch_size``).
        num_points: points drawn per shape per step (2048 in the paper).
        num_workers: loader worker processes per device.
        train_split / val_split: store sub-folders; ``val_split=None`` disables validation.
        test_split / predict_split: sub-folders for ``test`` / ``predict`` (default: the validation split).
        shuffle: shuffle training shapes each epoch (LitData's chunk-aware shuffle, seeded by ``seed``; it
            shuffles chunks and items within them, so the store's write order matters: ``data_engine`` shuffles
            it).
        sampling: ``"random"`` (a new uniform draw every step) or ``"mask_aware"`` (the release's stage-2 rule:
            at least ``min_per_label`` points per part label by FPS, one fixed subset per shape, seeded by
            ``seed`` and the uid); see :mod:`patchalign3d.lit.transforms`.
        min_per_label: points kept per part label by ``mask_aware`` (release: 32).
        with_features: load teacher features (stage 1); with_labels: load part names and masks (stage 2).
        max_cache_size: LitData's local chunk-cache limit for remote stores.
        augment: ``null`` (the knobs below) or ``"release"`` (the release's ``--aug_enable``: rotation of up to
            ±20° about x, y and z, scale 0.9–1.1, shift 0.02, jitter 0.01, with probability 0.9).
        swap_yz, normalize, drop_category_label, rotate_deg, scale_range, translate, jitter_sigma, jitter_clip:
            see :class:`ShapeTransform`; augmentations apply to training only and are off by default.
    """

    def __init__(
        self,
        store: str,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_points: int = 2048,
        num_workers: int = 4,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        predict_split: str | None = None,
        shuffle: bool = True,
        seed: int = 42,
        with_features: bool = True,
        with_labels: bool = True,
        sampling: Sampling = "random",
        min_per_label: int = 32,
        swap_yz: bool = True,
        normalize: bool = True,
        drop_category_label: bool = False,
        augment: Literal["release"] | None = None,
        rotate_deg: float = 0.0,
        scale_range: tuple[float, float] | None = None,
        translate: float = 0.0,
        jitter_sigma: float = 0.0,
        jitter_clip: float = 0.05,
        max_cache_size: int | str = "50GB",
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_points < 1 or num_workers < 0:
            raise ValueError(
                f"batch_size and num_points must be >= 1 and num_workers >= 0, got {batch_size}, {num_points}, "
                f"{num_workers}"
            )
        if not (with_features or with_labels):
            raise ValueError("with_features and with_labels are both False: the batches would carry no targets")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self.save_hyperparameters()
        self.store = str(store).rstrip("/")
        self._info: dict[str, Any] | None = None
        self._root: str | None = None  # the published version read (the store's `current`), set with _info
        self._datasets: dict[str, ShapeStreamingDataset] = {}
        self._train_loader: ResumableStreamingDataLoader | None = None
        self._train_epoch_to_restore: int | None = None
        common = dict(num_points=num_points, sampling=sampling, min_per_label=min_per_label, seed=seed,
                      swap_yz=swap_yz, normalize=normalize, with_features=with_features, with_labels=with_labels,
                      drop_category_label=drop_category_label)
        self.train_transform = ShapeTransform(
            train=True, augment=augment, rotate_deg=rotate_deg, scale_range=tuple(scale_range) if scale_range else None,
            translate=translate, jitter_sigma=jitter_sigma, jitter_clip=jitter_clip, **common,
        )
        self.eval_transform = ShapeTransform(train=False, **common)

    # -- store ---------------------------------------------------------------------------------------
    @property
    def store_info(self) -> dict[str, Any]:
        """The store's ``store_info.json`` (read once)."""
        if self._info is None:
            # Item counts checked against store_info.json and the uid lists; later reads stay on this version.
            try:
                self._root, _ = check_store(self.store)
            except FileNotFoundError as err:  # the usual first mistake: training before the store was built
                raise TrainingSetupError(
                    f"{err}. Build it first with python -m data_engine precompute -c <data config> (the README's "
                    "Training steps), or point --data.store at a published store"
                ) from None
            self._info = read_store_info(self._root)
        return self._info

    @property
    def feature_dim(self) -> int:
        """Width ``D`` of the stored teacher features."""
        return int(self.store_info["feature_dim"])

    def _split_dir(self, split: str) -> str:
        _ = self.store_info
        path = f"{self._root}/{split}"
        if "://" not in path and not (Path(path) / "index.json").is_file():
            raise FileNotFoundError(f"store split {path} has no index.json (is {self.store!r} a complete store?)")
        return path

    def _dataset(self, split: str, train: bool) -> ShapeStreamingDataset:
        key = f"{split}:{train}"
        if key not in self._datasets:
            self._datasets[key] = ShapeStreamingDataset(
                self._split_dir(split),
                shuffle=train and self.hparams.shuffle,
                drop_last=True if train else None,  # equal step counts on every rank
                seed=self.hparams.seed,
                max_cache_size=self.hparams.max_cache_size,
                shape_transform=self.train_transform if train else self.eval_transform,
            )
        return self._datasets[key]

    def part_names(self, splits: tuple[str, ...] | None = None) -> list[str]:
        """Every part name of the store, sorted (the vocabulary a stage-2 text bank must cover).

        Read from ``store_info.json`` (``"part_names"``) when the data engine wrote it there, else gathered
        by one pass over the items of ``splits`` (default: train and validation).
        """
        if "part_names" in self.store_info:
            return sorted(set(self.store_info["part_names"]))
        splits = splits or tuple(s for s in (self.hparams.train_split, self.hparams.val_split) if s)
        names: set[str] = set()
        for split in splits:
            # A dataset without transform, read by global index: every rank may call this on its own.
            ds = StreamingDataset(self._split_dir(split))
            _ = ds[0]  # creates the chunk cache, so the item count is known
            total = max(iv.chunk_end for iv in ds.cache.get_chunk_intervals())
            if total > 10_000:
                warnings.warn(
                    f"gathering part names from {total} items of {split!r}: add \"part_names\" to "
                    f"{STORE_INFO} to skip this pass",
                    stacklevel=2,
                )
            names.update(n for i in range(total) for n in json.loads(ds[i]["part_names"]))
        return sorted(names)

    # -- Lightning hooks ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Datasets are created here, after the process group exists, so LitData sees the real world size.
        _ = self.store_info  # fail early on a wrong store path
        if stage == "fit":
            self._dataset(self.hparams.train_split, train=True)
        if stage in ("fit", "validate") and self.hparams.val_split:
            self._dataset(self.hparams.val_split, train=False)
            self._check_validation_batches()

    def _check_validation_batches(self) -> None:
        """A validation split that gives some rank no batch is an error now, not a skipped validation later.

        On several ranks LitData splits a split evenly and drops what does not fill a batch on every rank.
        """
        split = self.hparams.val_split
        if len(self._loader(split, train=False)) > 0:
            return
        dataset = self._dataset(split, train=False)
        ranks, per_rank = dataset.distributed_env.world_size, dataset.get_len(1, 1)
        batch = self.hparams.val_batch_size or self.hparams.batch_size
        fix = (f"set --data.val_batch_size {per_rank} (or less)" if per_rank else
               "add shapes to it or train on fewer devices")
        raise TrainingSetupError(
            f"validation split {split!r} gives no batch of {batch} shapes on each of the {ranks} ranks ({per_rank} "
            f"shapes per rank), so nothing would be validated and val/ metrics would never exist: {fix}"
        )

    def _loader(self, split: str, train: bool) -> ResumableStreamingDataLoader:
        workers = self.hparams.num_workers
        return ResumableStreamingDataLoader(
            self._dataset(split, train),
            batch_size=self.hparams.batch_size if train else (self.hparams.val_batch_size or self.hparams.batch_size),
            num_workers=workers,
            collate_fn=collate_shapes,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=2 if workers else None,
        )

    def train_dataloader(self) -> ResumableStreamingDataLoader:
        self._train_loader = self._loader(self.hparams.train_split, train=True)
        if self._train_epoch_to_restore is not None:  # the next iteration starts the epoch after the saved one
            self._train_loader.current_epoch = self._train_epoch_to_restore
            self._train_epoch_to_restore = None
        return self._train_loader

    def state_dict(self) -> dict[str, Any]:
        """LitData's epoch counter of the training loader (checkpointed by Lightning with every checkpoint)."""
        return {"train_epoch": self._train_loader.current_epoch} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored before the loader exists; train_dataloader() applies it. When Lightning also restores the
        # loader's own state (an unfinished epoch), that state carries the same counter.
        self._train_epoch_to_restore = state_dict.get("train_epoch")

    def val_dataloader(self) -> ResumableStreamingDataLoader | list:
        if not self.hparams.val_split:
            return []
        return self._loader(self.hparams.val_split, train=False)

    def test_dataloader(self) -> ResumableStreamingDataLoader:
        split = self.hparams.test_split or self.hparams.val_split
        if not split:
            raise ValueError("no test split: set data.test_split (or data.val_split)")
        return self._loader(split, train=False)

    def predict_dataloader(self) -> ResumableStreamingDataLoader:
        split = self.hparams.predict_split or self.hparams.val_split
        if not split:
            raise ValueError("no predict split: set data.predict_split (or data.val_split)")
        return self._loader(split, train=False)
