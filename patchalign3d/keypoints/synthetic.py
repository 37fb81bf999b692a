"""Keypoint scores on the procedural shapes (the demo's): zero-shot, few-shot, lifting and a chance baseline.

Shapes are ``<folder>/<category>/<uid>.ply`` with a ``<uid>.parts.json`` sidecar whose ``"keypoints"`` maps
names to positions (:mod:`data_engine.synthetic_keypoints`). Each shape is sampled (2048 points, seeded) and
scaled so its bounding-box diagonal is 1, ShapeNet's convention, so the geodesic thresholds mean what they
mean on KeypointNet; a keypoint's ground truth is its nearest sample. Per category, the first ``shots``
shapes (by uid) are the few-shot support and the rest are scored by every method. As the KeypointNet protocol
does, every shape is asked every keypoint name of its category (the names any shape of the category has in
the split): an armless chair is asked for armrest ends, and a method must find them absent.

- ``zero_shot``: :func:`detect_keypoints` (absent names by the model's probability, keypoints at point
  resolution);
- ``few_shot``: :class:`KeypointPrototypes` fitted on the support (names the support lacks cannot be asked);
- ``lift``: :func:`lift_keypoints` with the offline :class:`FeaturePointer` on the shape's mesh;
- ``lift_oracle``: the same lifting with the :class:`OraclePointer` (the shape's own keypoints projected into
  each view): the upper bound of lifting, what rendering, back-projection and clustering lose;
- ``chance``: per name the shape has, as many uniformly drawn samples as it has keypoints of that name.

IoU is the KeypointNet benchmark's, per category, then averaged over categories.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from patchalign3d.api import _resolve_model
from patchalign3d.data.io import load_mesh
from patchalign3d.keypoints.detect import DEFAULT_MIN_PROBABILITY, detect_keypoints
from patchalign3d.keypoints.fewshot import KeypointPrototypes
from patchalign3d.keypoints.lifting import lift_keypoints, render_views
from patchalign3d.keypoints.metrics import THRESHOLDS, KeypointIoU
from patchalign3d.keypoints.pointers import FeaturePointer, OraclePointer
from patchalign3d.keypoints.scores import resolve_text

REPORTED = (0.05, 0.10)
METHODS = ("zero_shot", "few_shot", "lift", "lift_oracle", "chance")
LABELS = {"lift": "lift (feature pointer)", "lift_oracle": "lift (oracle pointer: upper bound)"}
#: Lifting settings of the demo's keypoint step: ZeroKey's 26 views, at 192 pixels with a 5-pixel patch (the
#: angle ZeroKey's 7 pixels cover at 512 would be 3 pixels here; at 128 pixels clusters of neighbouring legs merge).
DEMO_LIFT = {"views": 26, "resolution": 192, "patch_size": 5}
#: Query shapes per category the demo lifts (rendering dominates its time).
DEMO_LIFT_PER_CATEGORY = 2
_RENDER_KEYS = ("views", "resolution", "renderer", "up_axis", "rig", "camera")


def read_keypoint_sidecar(mesh_path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Category and ``{name: (M, 3)}`` keypoints from a mesh's ``.parts.json`` (empty when it has none)."""
    side = mesh_path.with_name(mesh_path.stem + ".parts.json")
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{side}: cannot read the sidecar ({err})") from None
    kps = data.get("keypoints", {}) if isinstance(data, dict) else None
    if not isinstance(kps, dict):
        raise ValueError(f"{side}: 'keypoints' must map names to lists of [x, y, z]")
    out = {}
    for name, pts in kps.items():
        arr = np.asarray(pts, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
            raise ValueError(f"{side}: keypoints {name!r} must be a list of finite [x, y, z]")
        out[name] = arr
    return str(data.get("category", mesh_path.parent.name)), out


def _shapes_by_category(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*/*.ply")):
        if path.with_name(path.stem + ".parts.json").is_file():
            out.setdefault(path.parent.name, []).append(path)
    return out


def _load(path: Path, num_points: int, seed: int) -> dict[str, Any] | None:
    """Samples (diagonal-1 frame), ground-truth indices per name, the mesh and the keypoints in its frame; None
    for a shape without keypoints."""
    category, keypoints = read_keypoint_sidecar(path)
    if not keypoints:
        return None
    mesh = load_mesh(path)
    samples, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    lo, hi = samples.min(0), samples.max(0)
    centre, diag = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    points = ((samples - centre) / diag).astype(np.float32)
    gt = {n: np.unique(((samples[None] - k[:, None]) ** 2).sum(-1).argmin(1)) for n, k in keypoints.items()}
    return {"uid": path.stem, "category": category, "points": points, "gt": gt, "mesh": mesh, "keypoints": keypoints,
            "centre": centre, "diag": diag}


def _lifted_indices(shape: dict[str, Any], names: list[str], pointer, options: dict[str, Any], renders) -> np.ndarray:
    """Lifted keypoints of every name as indices of the shape's samples (mesh frame -> diagonal-1 frame)."""
    lifted = lift_keypoints(shape["mesh"], names, pointer, renders=renders,
                            **{k: v for k, v in options.items() if k not in _RENDER_KEYS})
    found = [lifted.keypoints[n] for n in names if len(lifted.keypoints[n])]
    if not found:
        return np.zeros(0, dtype=np.int64)
    xyz = (np.concatenate(found) - shape["centre"]) / shape["diag"]
    return cKDTree(shape["points"]).query(xyz)[1].astype(np.int64)


class _Absence:
    """Counts of names asked, truly absent and found absent (zero-shot), per name."""

    def __init__(self) -> None:
        self.per_name: dict[str, list[int]] = {}  # name -> [asked, truly absent, found absent, both]

    def update(self, asked: Sequence[str], present: set[str], found_absent: Sequence[str]) -> None:
        for n in asked:
            row = self.per_name.setdefault(n, [0, 0, 0, 0])
            truly, found = n not in present, n in found_absent
            row[0] += 1
            row[1] += truly
            row[2] += found
            row[3] += truly and found

    def report(self) -> dict[str, Any]:
        total = np.sum(list(self.per_name.values()), axis=0) if self.per_name else np.zeros(4, int)
        return {"asked": int(total[0]), "truly_absent": int(total[1]), "found_absent": int(total[2]),
                "found_absent_correctly": int(total[3]),
                "names": {n: {"asked": r[0], "truly_absent": r[1], "found_absent": r[2], "correct": r[3]}
                          for n, r in sorted(self.per_name.items()) if r[1] or r[2]}}


def evaluate_synthetic_keypoints(
    model: Any,
    splits: Mapping[str, str | os.PathLike],
    *,
    text: Any = None,
    shots: int = 3,
    num_points: int = 2048,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    detector_options: dict[str, Any] | None = None,
    fewshot_options: dict[str, Any] | None = None,
    lift_options: dict[str, Any] | None = None,
    lift_per_category: int | None = None,
) -> dict[str, Any]:
    """IoU at geodesic 0.05 and 0.10 (and every benchmark threshold) per split, method and category.

    Args:
        model: a stage-2 :class:`~patchalign3d.PatchAlign3D`.
        splits: ``{split name: folder of <category>/<uid>.ply + .parts.json}``.
        text: names' text embeddings (default: the encoder the model was trained with, encoded once).
        shots: support shapes per category for few-shot (categories with fewer than ``shots + 1`` shapes with
            keypoints are skipped, and listed).
        methods: which of :data:`METHODS` to run (lifting renders every shape: the slow ones).
        detector_options: for :func:`detect_keypoints` (zero-shot); its ``min_probability`` also makes the
            feature pointer silent for absent names.
        fewshot_options: for :class:`KeypointPrototypes`.
        lift_options: for :func:`lift_keypoints` (default :data:`DEMO_LIFT`).
        lift_per_category: lift only the first this many query shapes of each category (None: all); the
            lifting rows are then scored on those shapes only (``lift_shapes`` in the report).

    Returns:
        ``{split: {"iou": {method: {"0.05": %, "0.10": %}}, "per_category": {...}, "iou_all_thresholds",
        "absent": {...}, "num_shapes", "shots", "skipped"}, "seconds": s}``; ``absent`` counts the zero-shot
        names found absent against those truly absent.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    t0 = time.perf_counter()
    model = _resolve_model(model)
    rng = np.random.default_rng(seed)
    detector_options = dict(detector_options or {})
    lift_options = {**DEMO_LIFT, **(lift_options or {})}
    loaded = {split: {c: [s for s in (_load(p, num_points, seed) for p in paths) if s is not None]
                      for c, paths in _shapes_by_category(Path(folder)).items()}
              for split, folder in splits.items()}
    every_name = sorted({n for cats in loaded.values() for shapes in cats.values() for s in shapes for n in s["gt"]})
    if not every_name:
        raise ValueError(f"no shape under {[str(f) for f in splits.values()]} carries keypoints in its sidecar")
    bank = resolve_text(text, every_name, model)
    pointer = FeaturePointer(model, bank, seed=seed,
                             min_probability=detector_options.get("min_probability", DEFAULT_MIN_PROBABILITY))
    report: dict[str, Any] = {}
    for split, cats in loaded.items():
        metrics = {m: KeypointIoU() for m in methods}
        absence = _Absence()
        skipped, scored, lifted = [], 0, 0
        for category, shapes in sorted(cats.items()):
            if len(shapes) < shots + 1:
                skipped.append(category) if shapes else None
                continue
            vocabulary = sorted({n for s in shapes for n in s["gt"]})
            support, queries = shapes[:shots], shapes[shots:]
            protos = None
            if "few_shot" in methods:
                protos = KeypointPrototypes(model, **(fewshot_options or {})).fit(
                    [s["points"] for s in support], [s["gt"] for s in support], seed=seed)
            for q, s in enumerate(queries):
                preds: dict[str, np.ndarray] = {}
                lift_here = [m for m in ("lift", "lift_oracle") if m in methods
                             and (lift_per_category is None or q < lift_per_category)]
                renders = render_views(s["mesh"], **{k: v for k, v in lift_options.items() if k in _RENDER_KEYS}) \
                    if lift_here else None
                lifted += bool(lift_here)
                if "zero_shot" in methods:
                    zero = detect_keypoints(s["points"], vocabulary, model=model, text=bank, seed=seed, **detector_options)
                    preds["zero_shot"] = zero.indices
                    absence.update(vocabulary, set(s["gt"]), zero.absent)
                if protos is not None:
                    known = [n for n in vocabulary if n in protos.support]
                    preds["few_shot"] = protos.predict(s["points"], known, seed=seed).indices if known else np.zeros(0, np.int64)
                if "lift" in lift_here:
                    preds["lift"] = _lifted_indices(s, vocabulary, pointer, lift_options, renders)
                if "lift_oracle" in lift_here:
                    preds["lift_oracle"] = _lifted_indices(s, vocabulary, OraclePointer(s["keypoints"]), lift_options,
                                                           renders)
                if "chance" in methods:
                    preds["chance"] = np.concatenate([rng.choice(len(s["points"]), len(g), replace=False)
                                                      for g in s["gt"].values()])
                gt = np.concatenate(list(s["gt"].values()))
                for method, pred in preds.items():
                    metrics[method].update(category, s["points"], np.unique(pred), gt)
                scored += 1
        results = {m: metrics[m].compute() for m in methods}
        # None (JSON null) where no shape was scored: NaN would not survive JSON or comparisons
        pick = lambda a: {f"{t:.2f}": _percent(a[THRESHOLDS.index(t)]) for t in REPORTED}  # noqa: E731
        report[split] = {
            "iou": {m: pick(r["mean"]) for m, r in results.items()},
            "per_category": {m: {c: pick(v) for c, v in r["per_category"].items()} for m, r in results.items()},
            "iou_all_thresholds": {m: [_percent(v) for v in r["mean"]] for m, r in results.items()},
            "absent": absence.report(),
            "num_shapes": scored, "lift_shapes": lifted, "shots": shots, "skipped": skipped,
        }
    report["seconds"] = time.perf_counter() - t0
    return report


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value) * 100, 2)


def summary_lines(report: Mapping[str, Any], splits: Sequence[str]) -> list[str]:
    """Markdown table rows of a :func:`evaluate_synthetic_keypoints` report (IoU %, mean over categories)."""
    lines = ["| split | shapes | method | IoU@0.05 | IoU@0.10 |", "|---|---|---|---|---|"]
    for split in splits:
        r = report[split]
        if not r["num_shapes"]:
            lines.append(f"| {split} | 0 | not scored: no category has {r['shots'] + 1} shapes with keypoints | | |")
            continue
        for m, iou in r["iou"].items():
            label = f"{m} ({r['shots']} shots)" if m == "few_shot" else LABELS.get(m, m)
            count = r.get("lift_shapes", r["num_shapes"]) if m.startswith("lift") else r["num_shapes"]
            if iou["0.05"] is None:
                lines.append(f"| {split} | {count} | {label}: not scored | | |")
                continue
            lines.append(f"| {split} | {count} | {label} | {iou['0.05']:.1f} | {iou['0.10']:.1f} |")
    return lines


def absent_lines(report: Mapping[str, Any], splits: Sequence[str]) -> list[str]:
    """One line per split: how many asked names zero-shot found absent, and how many of them truly were."""
    lines = []
    for split in splits:
        a = report[split].get("absent")
        if not a or not a["asked"]:
            continue
        names = ", ".join(f"{n} {v['found_absent']}/{v['truly_absent']}" for n, v in a["names"].items())
        lines.append(f"- {split}: of {a['asked']} names asked, {a['truly_absent']} were not on the shape; zero-shot "
                     f"found {a['found_absent']} absent, {a['found_absent_correctly']} of them rightly"
                     + (f" (found absent / truly absent: {names})" if names else ""))
    return lines


DEMO_SPLITS = ("test_seen", "test_unseen")


def demo_keypoints(model: Any, roots: Mapping[str, str | os.PathLike], shapes_per_category: int) -> dict[str, Any]:
    """The demo's keypoint step: :func:`evaluate_synthetic_keypoints` on its seen and held-out test shapes with
    up to 3 support shapes per category (one fewer than the category has), or why it could not run. The wall
    time is left out (the demo times each step itself), so that the report is the same on every run."""
    shots = max(1, min(3, shapes_per_category - 1))
    try:
        report = evaluate_synthetic_keypoints(model, {s: roots[s] for s in DEMO_SPLITS}, shots=shots,
                                              lift_per_category=DEMO_LIFT_PER_CATEGORY)
        report.pop("seconds")
        return report
    except ValueError as err:  # shapes written by a version without keypoints, reused by a rerun
        return {"skipped": f"{err} (delete the demo's shapes/ folder to regenerate them with keypoints)"}


def demo_report_lines(report: Mapping[str, Any]) -> list[str]:
    """Lines for the demo's ``results.md``."""
    if "skipped" in report:
        return ["", f"Keypoints: not scored: {report['skipped']}"]
    return ["", "Keypoints (IoU %, KeypointNet's geodesic metric, shapes scaled to a unit diagonal; mean over "
                "categories; every shape asked every keypoint name of its category; lifting renders "
                f"{DEMO_LIFT['views']} views of {DEMO_LIFT['resolution']} px of the first {DEMO_LIFT_PER_CATEGORY} "
                "query shapes of each category; chance: random samples, as many per name as the shape has "
                "keypoints):", "",
            *summary_lines(report, DEMO_SPLITS), "", "Names found absent (zero-shot):", "",
            *absent_lines(report, DEMO_SPLITS)]
