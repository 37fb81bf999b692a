"""StableKeypoints in 3D: free embeddings optimised so that a frozen PatchAlign3D model's maps become
compact, consistent blobs.

StableKeypoints (Hedlin et al., ``ubc-vision/StableKeypoints``) optimises text tokens of Stable Diffusion so
that their cross-attention maps are single Gaussians. Here the frozen model is PatchAlign3D: every point of a
shape has a text-space embedding (:func:`patchalign3d.api.point_features`), and ``C`` free vectors in that
space play the tokens. The map of a vector is, per point, the softmax over the ``C`` vectors of the point's
dot products with them (the softmax over tokens of a cross-attention layer, which is what keeps two vectors
from settling on the same place). Losses, as in the authors' ``optimize.py``:

- localisation: the mean squared difference between a vector's map and a Gaussian (peak 1, ``sigma`` times
  the shape's diagonal) centred on the map's maximum;
- equivariance (weight 10, the paper's λ): the map on a rotated, scaled and cropped copy of the shape equals
  the map on the original at the same points.

Both apply to the vectors chosen per shape the authors' way (``ptp_utils.find_top_k_gaussian`` then
``furthest_point_sampling``): the ``top`` vectors whose map is closest (KL) to its Gaussian, thinned to ``k``
by farthest point sampling of their peaks. After optimising, the same choice on every training shape votes,
and the ``k`` vectors chosen most often are the keypoints (``find_best_indices``), in that order on every
shape. A keypoint is the maximum of its vector's map, averaged over ``tta`` transformed copies (the paper's
test-time ensembling).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchalign3d.keypoints.discover.augment import similarity_crop
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.precision import DEFAULT_DTYPE

FEATURES = ("embeddings", "tokens")
#: Training shapes whose features :meth:`EmbeddingKeypoints.fit` keeps, so that predicting them (the regression
#: protocol fits on the training shapes' keypoints) does not run the model on them again.
KEPT_FEATURES = 16


def position_code(points: np.ndarray, bands: int) -> Tensor:
    """``(N, 6 * bands)`` Fourier code of the points (centred on their centroid, unit max radius), scaled to unit
    norm per point."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0)
    x = x / (np.linalg.norm(x, axis=1).max() or 1.0)
    angles = (x[:, :, None] * (np.pi * 2.0 ** np.arange(bands))).reshape(len(x), -1)
    code = np.concatenate([np.sin(angles), np.cos(angles)], axis=1) / np.sqrt(3 * bands)
    return torch.from_numpy(code.astype(np.float32))


def _content_key(points: np.ndarray) -> str:
    pts = np.ascontiguousarray(points, dtype=np.float32)
    return hashlib.sha1(pts.tobytes()).hexdigest() + str(pts.shape)


def keypoint_names(k: int) -> list[str]:
    """The names unsupervised keypoints go by: ``kp0 ... kp{k-1}``, the same slot on every shape."""
    return [f"kp{i}" for i in range(k)]


def farthest_peaks(peaks: Tensor, candidates: Tensor, k: int) -> Tensor:
    """StableKeypoints ``furthest_point_sampling``: start from the two candidates whose peaks are farthest
    apart, then add the candidate farthest from those chosen, until ``k``.

    Args:
        peaks: ``(C, 3)`` peak position of every vector.
        candidates: indices of the vectors to choose among.
    """
    cand = candidates.tolist()
    if k >= len(cand):
        return candidates.clone()
    pos = peaks[candidates]
    d = torch.cdist(pos, pos)
    i, j = divmod(int(d.argmax()), len(cand))
    chosen = [i, j]
    while len(chosen) < k:
        nearest = d[:, chosen].min(dim=1).values
        nearest[chosen] = -1.0
        chosen.append(int(nearest.argmax()))
    return candidates[torch.tensor(chosen)]


class EmbeddingKeypoints:
    """Unsupervised keypoints of a category from free embeddings in a PatchAlign3D model's feature space.

    Args:
        model: a :class:`~patchalign3d.PatchAlign3D`, a checkpoint path / repo id, or None (the release).
        k: keypoints per shape.
        candidates: free vectors optimised (StableKeypoints: 500 tokens for 2D images; fewer suffice on a
            2048-point cloud).
        top: vectors kept per shape by their fit to a Gaussian before farthest point sampling (default
            ``2.5 k``, the authors' 25 for 10).
        steps, batch_shapes, lr: Adam steps, shapes per step, learning rate (authors: 5e-3).
        points_per_step: points of a shape the losses look at in one step (a random subset, new each step).
        sigma: the Gaussian's standard deviation, a fraction of the shape's bounding-box diagonal.
        equivariance_weight: λ of the equivariance loss (the paper's 10; localisation weighs 1).
        augmentations: transformed copies per training shape for the equivariance loss.
        tta: transformed copies averaged with the original at prediction (0: the map of the shape alone).
        features: ``"embeddings"`` (text space, a stage-2 model) or ``"tokens"`` (encoder output).
        rotate_deg, scale_range, crop: the transformations (:func:`similarity_crop`).
        num_points, seed: meshes are sampled with these; ``seed`` also seeds the optimisation.
        up_axis, device, dtype: as in :func:`patchalign3d.segment`.

    >>> finder = EmbeddingKeypoints(model, k=10).fit(bed_files)
    >>> kps = finder.predict("another_bed.ply")        # kps.names == ["kp0", ..., "kp9"], same order on every bed
    """

    def __init__(
        self,
        model: Any = None,
        k: int = 10,
        *,
        candidates: int = 64,
        top: int | None = None,
        steps: int = 100,
        batch_shapes: int = 2,
        points_per_step: int = 512,
        lr: float = 5e-3,
        sigma: float = 0.05,
        equivariance_weight: float = 10.0,
        augmentations: int = 2,
        tta: int = 1,
        features: str = "embeddings",
        position_weight: float = 1.0,
        position_bands: int = 2,
        rotate_deg: float = 15.0,
        scale_range: tuple[float, float] = (1.0, 1.2),
        crop: float = 0.1,
        num_points: int = 2048,
        seed: int = 0,
        up_axis: str = "y",
        device: str | None = None,
        dtype: str = DEFAULT_DTYPE,
    ) -> None:
        top = top if top is not None else max(k, int(round(2.5 * k)))
        if not 1 <= k <= top <= candidates:
            raise ValueError(f"need 1 <= k <= top <= candidates, got k={k}, top={top}, candidates={candidates}")
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if steps < 0 or batch_shapes < 1 or points_per_step < 1 or augmentations < 1 or tta < 0 or sigma <= 0:
            raise ValueError("steps and tta must be >= 0, batch_shapes, points_per_step and augmentations >= 1, sigma > 0")
        self.model = model
        self.k, self.candidates, self.top = k, candidates, top
        self.steps, self.batch_shapes, self.lr = steps, batch_shapes, lr
        self.points_per_step = points_per_step
        self.sigma, self.equivariance_weight = sigma, equivariance_weight
        self.augmentations, self.tta, self.features = augmentations, tta, features
        self.position_weight, self.position_bands = position_weight, position_bands
        self.transform = dict(rotate_deg=rotate_deg, scale_range=tuple(scale_range), crop=crop)
        self.num_points, self.seed = num_points, seed
        self.options = dict(up_axis=up_axis, device=device, dtype=dtype)
        self.embeddings: Tensor | None = None  # (C, D) the optimised vectors
        self.selected: Tensor | None = None  # (k,) which vectors are the keypoints, in slot order
        self.history: list[float] = []
        self._kept: dict[str, Tensor] = {}  # features of up to KEPT_FEATURES training shapes, by content

    @property
    def names(self) -> list[str]:
        return keypoint_names(self.k)

    # -- features -----------------------------------------------------------------------------------------
    def _model(self):
        from patchalign3d.api import _resolve_model

        self.model = _resolve_model(self.model)
        return self.model

    def point_features(self, points: np.ndarray) -> Tensor:
        """``(N, D)`` L2-normalised features of every point (the 'queries' of the maps)."""
        from patchalign3d.api import point_features

        pf = point_features(points, model=self._model(), seed=self.seed, outputs=(self.features,), **self.options)
        feats = pf.embeddings if self.features == "embeddings" else pf.tokens
        if feats is None:
            raise ValueError("this model has no text head (a stage-1 checkpoint?): use features='tokens'")
        feats = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        if not self.position_weight:
            return feats
        return torch.cat([feats, self.position_weight * position_code(points, self.position_bands)], dim=1)

    def _features_of(self, points: np.ndarray) -> Tensor:
        """:meth:`point_features`, from what :meth:`fit` kept when ``points`` was one of its shapes."""
        kept = self._kept.get(_content_key(points))
        return kept if kept is not None else self.point_features(points)

    def _views(self, points: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[Tensor, Tensor]]:
        """``count`` transformed copies: ``(kept point indices, their features on the copy)``."""
        views = []
        for _ in range(count):
            moved, kept = similarity_crop(points, rng, up_axis=self.options["up_axis"], **self.transform)
            views.append((torch.from_numpy(kept), self.point_features(moved)))
        return views

    # -- maps and losses ----------------------------------------------------------------------------------
    def maps(self, feats: Tensor, embeddings: Tensor | None = None) -> Tensor:
        """``(N, C)``: per point, the softmax over the vectors of its dot products with them."""
        emb = self.embeddings if embeddings is None else embeddings
        return torch.softmax(feats @ emb.T, dim=-1)

    def _gaussians(self, maps: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C)`` Gaussians (peak 1) at each map's maximum, and ``(C, 3)`` the peaks."""
        peaks = points[maps.argmax(dim=0)]
        sq = torch.cdist(points, peaks) ** 2
        return torch.exp(-sq / (2.0 * self.sigma**2)), peaks

    def _choose(self, maps: Tensor, points: Tensor, gaussians: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """StableKeypoints' per-image choice: ``top`` vectors by KL to their Gaussian, then ``k`` by FPS."""
        with torch.no_grad():
            target, peaks = gaussians if gaussians is not None else self._gaussians(maps, points)
            target = target + 1e-5
            target = target / target.sum(dim=0, keepdim=True)
            log_p = torch.log_softmax(maps + 1e-5, dim=0)  # softmax over points of the map, as the authors do
            kl = (target * (target.log() - log_p)).sum(dim=0)
            return farthest_peaks(peaks, kl.argsort()[: self.top], self.k)

    def _loss(self, feats: Tensor, points: Tensor, view: tuple[Tensor, Tensor], embeddings: Tensor,
              rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """Localisation and equivariance losses of one shape, on up to ``points_per_step`` of the points that
        the transformed copy kept (so that both maps exist at every point used)."""
        kept, moved_feats = view
        rows = torch.arange(len(kept))
        if len(rows) > self.points_per_step:
            rows = torch.from_numpy(np.sort(rng.choice(len(rows), self.points_per_step, replace=False)))
        idx = kept[rows]
        maps = self.maps(feats[idx], embeddings)
        with torch.no_grad():
            gaussians = self._gaussians(maps, points[idx])
        chosen = self._choose(maps.detach(), points[idx], gaussians)
        localize = F.mse_loss(maps[:, chosen], gaussians[0][:, chosen])
        equivariance = F.mse_loss(self.maps(moved_feats[rows], embeddings)[:, chosen], maps[:, chosen])
        return localize, equivariance

    # -- fit and predict ------------------------------------------------------------------------------------
    def fit(self, shapes: Sequence[Any], *, progress: bool = False) -> EmbeddingKeypoints:
        """Optimise the vectors on unlabelled shapes of one category (clouds, meshes or files)."""
        from tqdm.auto import tqdm

        from patchalign3d.keypoints.shapes import as_shape, diagonal

        if isinstance(shapes, (str, os.PathLike, np.ndarray, Tensor)) or len(shapes) == 0:
            raise ValueError("fit needs a non-empty list of shapes")
        rng = np.random.default_rng(self.seed)
        data = []
        self._kept = {}
        for shape in tqdm(shapes, desc="features", disable=not progress):
            pts = as_shape(shape, num_points=self.num_points, seed=self.seed).points
            scaled = torch.from_numpy(pts / diagonal(pts)).float()  # Gaussians in fractions of the diagonal
            data.append((scaled, self.point_features(pts), self._views(pts, self.augmentations, rng)))
            if len(self._kept) < KEPT_FEATURES:
                self._kept[_content_key(pts)] = data[-1][1]
        gen = torch.Generator().manual_seed(self.seed)
        dim = data[0][1].shape[1]
        embeddings = torch.randn(self.candidates, dim, generator=gen).requires_grad_(True)
        optimizer = torch.optim.Adam([embeddings], lr=self.lr)
        self.history = []
        for _ in tqdm(range(self.steps), desc="embeddings", disable=not progress):
            batch = rng.choice(len(data), size=min(self.batch_shapes, len(data)), replace=False)
            losses = [self._loss(data[i][1], data[i][0], data[i][2][rng.integers(len(data[i][2]))], embeddings, rng)
                      for i in batch]
            loss = torch.stack([loc + self.equivariance_weight * eq for loc, eq in losses]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.history.append(float(loss.detach()))
        self.embeddings = embeddings.detach()
        votes = torch.cat([self._choose(self.maps(feats), pts) for pts, feats, _ in data])
        counts = torch.bincount(votes, minlength=self.candidates)
        # most votes first; ties by index, so the order is the same on every run
        order = sorted(range(self.candidates), key=lambda c: (-int(counts[c]), c))
        self.selected = torch.tensor(order[: self.k])
        return self

    def field(self, points: np.ndarray) -> np.ndarray:
        """``(N, k)`` maps of the keypoint vectors on a shape's points, averaged over ``tta`` copies."""
        if self.embeddings is None or self.selected is None:
            raise RuntimeError("EmbeddingKeypoints.predict before fit: call fit(shapes) first")
        total = self.maps(self._features_of(points))[:, self.selected]
        count = torch.ones(len(points), 1)
        for kept, feats in self._views(points, self.tta, np.random.default_rng(self.seed + 1)):
            total[kept] += self.maps(feats)[:, self.selected]
            count[kept] += 1
        return (total / count).numpy()

    def predict(self, shape: Any) -> Keypoints:
        """The ``k`` keypoints of a shape, slot ``i`` named ``kp{i}`` on every shape."""
        from patchalign3d.keypoints.shapes import as_shape

        points = as_shape(shape, num_points=self.num_points, seed=self.seed).points
        field = self.field(points)
        indices = field.argmax(axis=0).astype(np.int64)
        labels = np.arange(self.k, dtype=np.int64)
        return Keypoints(names=self.names, points=points, field=field.astype(np.float32), indices=indices,
                         labels=labels, scores=field[indices, labels].astype(np.float32), mode="discover",
                         info={"method": "embeddings", "k": self.k, "tta": self.tta})

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the vectors, the chosen slots and the settings (not the model) to a ``.pt`` file."""
        if self.embeddings is None:
            raise RuntimeError("nothing to save: call fit(shapes) first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(self).items() if k not in ("model", "embeddings", "selected", "history", "_kept")}
        torch.save({"embeddings": self.embeddings, "selected": self.selected, "settings": settings}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model: Any = None) -> EmbeddingKeypoints:
        """Read a file written by :meth:`save`; ``model`` must be the one the vectors were fitted with."""
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            s = state["settings"]
            finder = cls(model, s["k"], candidates=s["candidates"], top=s["top"], steps=s["steps"],
                         batch_shapes=s["batch_shapes"], points_per_step=s["points_per_step"], lr=s["lr"], sigma=s["sigma"],
                         equivariance_weight=s["equivariance_weight"], augmentations=s["augmentations"],
                         tta=s["tta"], features=s["features"], position_weight=s["position_weight"],
                         position_bands=s["position_bands"], num_points=s["num_points"], seed=s["seed"],
                         **s["transform"], **s["options"])
            finder.embeddings, finder.selected = state["embeddings"], state["selected"]
        except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{path}: not an EmbeddingKeypoints file ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
        return finder
