"""LitData's dataset and loader for the training store, with what an exact mid-epoch resume needs.

* :class:`ShapeStreamingDataset` gives each item's :class:`~patchalign3d.lit.transforms.ShapeTransform` the
  epoch it is drawn in, so a shape's random points and augmentation are a function of (seed, epoch, uid): a
  resumed run draws exactly what the uninterrupted run drew, whatever the number of loader workers, with no
  random stream to replay.
* :class:`ResumableStreamingDataLoader` confines a loaded state to the epoch it was saved in. LitData (0.2.76)
  clears its ``restore`` flag only when an epoch's iterator runs into ``StopIteration``; Lightning stops pulling
  after ``len(loader)`` batches, so after a mid-epoch resume the *next* epoch still believed it was resuming and
  replayed the saved position instead of starting a new shuffle (a Lightning run then trained zero or a few
  batches that epoch). Plain LitData shows it without Lightning: load a mid-epoch state, take the epoch's
  remaining ``len(loader) - k`` batches, iterate again: the saved position comes back instead of a new epoch.
"""

from __future__ import annotations

from typing import Any

from litdata import StreamingDataLoader, StreamingDataset

from .transforms import ShapeTransform

__all__ = ["ResumableStreamingDataLoader", "ShapeStreamingDataset"]


class ShapeStreamingDataset(StreamingDataset):
    """A :class:`~litdata.StreamingDataset` whose items go through ``shape_transform(item, epoch=...)``.

    Args:
        *args, **kwargs: as :class:`~litdata.StreamingDataset` (without ``transform``).
        shape_transform: applied to every item read by index (what iteration does), with the dataset's
            current epoch (LitData's counter: 1 in the first epoch).
    """

    def __init__(self, *args: Any, shape_transform: ShapeTransform, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shape_transform = shape_transform

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if isinstance(index, slice):  # raw items, as LitData returns slices without its transform
            return item
        # Runs in the loader worker, whose copy of the dataset holds the epoch being drawn.
        return self.shape_transform(item, epoch=self.current_epoch)


class ResumableStreamingDataLoader(StreamingDataLoader):
    """A :class:`~litdata.StreamingDataLoader` whose loaded state applies to the next epoch's iteration only.

    ``load_state_dict`` resumes the epoch it was saved in; every later iteration is a new epoch (new shuffle),
    also when the consumer stopped after ``len(self)`` batches without exhausting the iterator, as Lightning does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state_just_loaded = False

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._state_just_loaded = True

    def __iter__(self) -> Any:
        # A generator: this runs when the epoch's first batch is asked for, not when Lightning calls iter().
        if not self._state_just_loaded:
            self.restore = False  # the resumed epoch is over even if nobody pulled its StopIteration
        self._state_just_loaded = False
        yield from super().__iter__()
