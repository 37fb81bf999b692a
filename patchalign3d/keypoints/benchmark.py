"""The KeypointNet keypoint benchmark (ZeroKey / UKPGAN protocol): this package's detectors or any
method's predictions, scored with the benchmark code's IoU at geodesic thresholds 0.00 ... 0.10.

``patchalign3d evaluate keypointnet --root R [--categories airplane,chair,table] [--split test]
[--predictions P.json | --checkpoint C --detector zero_shot|few_shot|lift [--pointer feature|molmo|oracle]]``.
``P.json`` maps ``"<synset>-<model_id>"`` to a list of point indices into that shape's ``.pcd``.

Lifting renders each shape's ShapeNet mesh (``models/<synset>/<id>/models/model_normalized.obj``), which shares
the ``.pcd``'s frame, and snaps every lifted keypoint to its nearest ``.pcd`` point. ``--pointer oracle``
answers with the shape's own annotations projected into each view: the upper bound of lifting, not a result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from patchalign3d.api import _resolve_model
from patchalign3d.keypoints.detect import detect_keypoints
from patchalign3d.keypoints.fewshot import KeypointPrototypes
from patchalign3d.keypoints.keypointnet import SYNSETS, KeypointNet, KeypointNetShape, keypoint_names_for
from patchalign3d.keypoints.lifting import lift_keypoints
from patchalign3d.keypoints.metrics import THRESHOLDS, KeypointIoU
from patchalign3d.keypoints.pointers import DEFAULT_MOLMO, FeaturePointer, MolmoPointer, OraclePointer
from patchalign3d.keypoints.scores import resolve_text

#: Published IoU (%) on KeypointNet airplane/chair/table at 0.01 ... 0.10 (ZeroKey's Table 1; the
#: PatchAlign3D figures give 0.10 only). ZeroKey's table starts at 0.001, not 0.00.
PUBLISHED: dict[str, dict[float, float]] = {
    "ZeroKey (zero-shot, Molmo)": dict(zip(THRESHOLDS[1:], (13.16, 24.01, 37.43, 48.43, 56.60, 62.06, 67.53, 71.74, 75.75, 79.43))),
    "B2-3D (few-shot)": dict(zip(THRESHOLDS[1:], (20.29, 35.55, 46.25, 52.74, 57.72, 61.61, 64.19, 66.56, 68.55, 70.57))),
    "UKPGAN (supervised)": dict(zip(THRESHOLDS[1:], (6.54, 12.27, 17.86, 22.42, 26.55, 30.28, 34.32, 38.46, 42.65, 46.49))),
    "PatchAlign3D paper, zero-shot": {0.10: 32.88},
    "PatchAlign3D paper, few-shot": {0.10: 64.07},
}
DETECTORS = ("zero_shot", "few_shot", "lift")
POINTERS = ("feature", "molmo", "oracle")


class PredictionsError(ValueError):
    """A predictions file names unknown shapes, misses shapes, or holds bad point indices."""


def read_predictions(path: str | os.PathLike) -> dict[str, list[int]]:
    """``{"<synset>-<model_id>": [point indices]}`` from a JSON file, checked for form (not for range)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PredictionsError(f"{path}: cannot read predictions ({err})") from None
    if not isinstance(data, dict):
        raise PredictionsError(f"{path}: expected an object {{\"<synset>-<model_id>\": [point indices]}}, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise PredictionsError(f"{path}: {key!r} must map to a list of integer point indices, got {str(value)[:80]}")
        out[str(key)] = value
    return out


def check_predictions(predictions: Mapping[str, list[int]], dataset: KeypointNet, source: str = "predictions") -> dict[str, Any]:
    """Sort the keys of ``predictions`` against the dataset; raise for unknown or missing shapes.

    Returns ``{"ignored": {reason: count}}`` for keys of other categories, of other splits, or of shapes
    whose point cloud is not here.
    """
    present = dataset.by_key()
    missing_pcd = {k for keys in dataset.missing.values() for k in keys}
    chosen = {syn for syn, name in SYNSETS.items() if name in dataset.categories}
    unknown, ignored = [], {"other_category": 0, "other_split": 0, "no_point_cloud": 0}
    for key in predictions:
        synset, sep, model_id = key.partition("-")
        if not sep or synset not in SYNSETS:
            unknown.append(key)
        elif synset not in chosen:
            ignored["other_category"] += 1
        elif key not in dataset.annotated[SYNSETS[synset]]:
            unknown.append(key)
        elif key in missing_pcd:
            ignored["no_point_cloud"] += 1
        elif key not in present:
            ignored["other_split"] += 1
    if unknown:
        raise PredictionsError(
            f"{source}: {len(unknown)} unknown shape(s), not annotated KeypointNet shapes of "
            f"{', '.join(dataset.categories)}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
        )
    lacking = [k for k in present if k not in predictions]
    if lacking:
        raise PredictionsError(
            f"{source}: no prediction for {len(lacking)} shape(s) of the {dataset.split} split: {lacking[:5]}"
            f"{' ...' if len(lacking) > 5 else ''} (an empty list is a valid prediction)"
        )
    for key, idx in predictions.items():
        if key in present and idx:
            n = len(present[key].points)
            bad = [i for i in idx if not 0 <= i < n]
            if bad:
                raise PredictionsError(f"{source}: {key}: point index {bad[0]} is out of range [0, {n})")
    return {"ignored": ignored}


class _Detector:
    """This package's detector for one category, as a function of a shape."""

    def __init__(self, kind: str, dataset: KeypointNet, model: Any, text: Any, shots: int, names: dict | None,
                 options: dict[str, Any], pointer: str = "feature", molmo: dict[str, Any] | None = None) -> None:
        if kind not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {kind!r}")
        if pointer not in POINTERS:
            raise ValueError(f"pointer must be one of {POINTERS}, got {pointer!r}")
        self.kind, self.names, self.options, self.pointer_kind = kind, names, options, pointer
        self.model = None if kind == "lift" and pointer != "feature" else _resolve_model(model)
        if self.model is not None and kind != "few_shot":  # every category's names encoded once
            every = [n for c in dataset.categories for n in keypoint_names_for(c, (), names).values()]
            text = resolve_text(text, every, self.model)
        self.text = text
        self.shots, self.root, self.prototypes = shots, dataset.root, {}
        self.support_keys: list[str] = []
        self.pointer = None
        if kind == "lift" and pointer == "feature":
            probability = {k: v for k, v in options.items() if k == "min_probability"}
            self.pointer = FeaturePointer(self.model, self.text, **probability)
        elif kind == "lift" and pointer == "molmo":
            molmo = dict(molmo or {})
            self.pointer = MolmoPointer(molmo.pop("model_id", None) or DEFAULT_MOLMO, **molmo)

    def _names(self, shape: KeypointNetShape) -> dict[int, str]:
        return keypoint_names_for(shape.category, shape.semantic_ids.tolist(), self.names)

    def _support(self, category: str):
        if category not in self.prototypes:
            pool = KeypointNet(self.root, [category], "train")
            support = pool.shapes[: self.shots]
            if len(support) < self.shots:
                raise FileNotFoundError(
                    f"few-shot needs {self.shots} annotated {category} shapes of the train split with point "
                    f"clouds under {self.root / 'pcds'}; found {len(pool.shapes)}"
                )
            anns = []
            for s in support:
                ann: dict[str, list[int]] = {}
                for sem, idx in s.keypoints_by_semantic_id().items():
                    ann.setdefault(self._names(s)[sem], []).extend(idx.tolist())
                anns.append(ann)
            self.prototypes[category] = KeypointPrototypes(self.model, **self.options).fit(
                [s.points.astype(np.float32) for s in support], anns)
            self.support_keys += [s.key for s in support]
        return self.prototypes[category]

    def _lift(self, shape: KeypointNetShape) -> np.ndarray:
        if shape.mesh_path is None:
            raise FileNotFoundError(
                f"lifting renders meshes: {shape.key} has none under {self.root / 'models' / shape.synset} "
                f"(<model_id>/models/model_normalized.obj, as ShapeNetCore.v2 ships it)"
            )
        names = list(dict.fromkeys(keypoint_names_for(shape.category, (), self.names).values()))
        pointer = self.pointer
        if self.pointer_kind == "oracle":
            targets: dict[str, list[np.ndarray]] = {}
            for sem, idx in shape.keypoints_by_semantic_id().items():
                targets.setdefault(self._names(shape)[sem], []).extend(shape.points[idx])
            pointer = OraclePointer(targets)
            names = list(dict.fromkeys([*names, *targets]))
        options = {k: v for k, v in self.options.items() if k != "min_probability"}
        lifted = lift_keypoints(shape.mesh_path, names, pointer, **options)
        found = [lifted.keypoints[n] for n in names if len(lifted.keypoints[n])]
        if not found:
            return np.zeros(0, dtype=np.int64)
        return cKDTree(shape.points).query(np.concatenate(found))[1].astype(np.int64)

    def __call__(self, shape: KeypointNetShape) -> np.ndarray:
        points = shape.points.astype(np.float32)
        if self.kind == "lift":
            return np.unique(self._lift(shape))
        if self.kind == "few_shot":
            kps = self._support(shape.category).predict(points)
        else:
            names = list(dict.fromkeys(keypoint_names_for(shape.category, (), self.names).values()))
            kps = detect_keypoints(points, names, model=self.model, text=self.text, **self.options)
        return np.unique(kps.indices)


def evaluate_keypointnet(
    root: str | os.PathLike,
    *,
    categories: str | Sequence[str] | None = None,
    split: str = "test",
    predictions: str | os.PathLike | Mapping[str, list[int]] | None = None,
    model: Any = None,
    text: Any = None,
    detector: str = "zero_shot",
    pointer: str = "feature",
    molmo: dict[str, Any] | None = None,
    shots: int = 3,
    names: dict | None = None,
    detector_options: dict[str, Any] | None = None,
    limit: int | None = None,
    progress: bool = True,
    json_path: str | os.PathLike | None = None,
    markdown_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score keypoints on KeypointNet; returns the report (also written as JSON / markdown when asked).

    Args:
        root: the KeypointNet folder (release layout, :mod:`patchalign3d.keypoints.keypointnet`).
        categories: default airplane, chair, table (the protocol's).
        split: ``test`` (the protocol's), ``val``, ``train`` or ``all``.
        predictions: a JSON path or mapping ``{"<synset>-<model_id>": [point indices]}``; scores another
            method's output. Without it, this package's ``detector`` runs with ``model`` and ``text``.
        detector: ``zero_shot`` (names of :data:`DEFAULT_NAMES` or ``names``), ``few_shot`` (support: the
            first ``shots`` train shapes of each category with point clouds present) or ``lift`` (the mesh
            rendered and the ``pointer`` asked in each view).
        pointer: for ``lift``: ``feature`` (:class:`FeaturePointer`, offline), ``molmo`` (:class:`MolmoPointer`,
            ``molmo`` its keyword arguments, ``model_id`` among them) or ``oracle`` (the shape's annotations
            projected: the upper bound of lifting, labelled so in the report).
        names: ``{category: {semantic_id: name}}`` replacing the default names.
        detector_options: keyword arguments for :func:`detect_keypoints` / :class:`KeypointPrototypes` /
            :func:`lift_keypoints` (whose ``min_probability`` goes to the feature pointer).
        limit: score at most this many shapes per category (quick checks; the report says so).
    """
    if detector.startswith("discover-"):  # unsupervised keypoints: their own protocol and metrics (and lightning)
        from patchalign3d.keypoints.discover.keypointnet import evaluate_discovered

        return write_report(evaluate_discovered(root, categories=categories, split=split, model=model, limit=limit,
                                                method=detector.removeprefix("discover-"), **(detector_options or {})),
                            json_path, markdown_path)
    dataset = KeypointNet(root, categories, split)
    if len(dataset) == 0:
        elsewhere = {s: n for s, n in dataset.present_elsewhere().items() if n}
        hint = (f"; point clouds are present for {', '.join(f'{n} {s}' for s, n in elsewhere.items())} "
                f"shape(s): score those with --split {next(iter(elsewhere))}") if elsewhere else ""
        raise FileNotFoundError(
            f"none of the {dataset.num_missing} annotated {'/'.join(dataset.categories)} shapes of the {split} split "
            f"has its point cloud under {dataset.root / 'pcds'} (<synset>/<model_id>.pcd){hint}"
        )
    shapes = dataset.shapes
    if limit is not None:
        shapes = [s for c in dataset.categories for s in [x for x in shapes if x.category == c][:limit]]
    report: dict[str, Any] = {"benchmark": "keypointnet", "root": str(dataset.root), "split": split,
                              "categories": dataset.categories}
    if predictions is not None:
        source = str(predictions) if not isinstance(predictions, Mapping) else "predictions"
        preds = read_predictions(predictions) if not isinstance(predictions, Mapping) else dict(predictions)
        report.update(check_predictions(preds, dataset, source))
        report["method"] = f"predictions from {source}"
        predict = lambda shape: preds[shape.key]  # noqa: E731
    else:
        run = _Detector(detector, dataset, model, text, shots, names, dict(detector_options or {}), pointer, molmo)
        report["method"] = f"patchalign3d {detector}" + (f", {shots} shots" if detector == "few_shot" else "")
        if detector == "lift":
            report["method"] += f", {pointer} pointer" + (
                " (the annotations projected: the upper bound of lifting, not a result)" if pointer == "oracle" else "")
        predict = run

    metric = KeypointIoU()
    per_shape = {}
    for shape in tqdm(shapes, desc="keypointnet", disable=not progress):
        pred = np.asarray(predict(shape), dtype=np.int64)
        fp, fn = metric.update(shape.category, shape.points, pred, shape.gt_indices)
        per_shape[shape.key] = {"num_pred": int(len(pred)), "num_gt": int(len(shape.gt_indices)),
                                "fp@0.05": int(fp[5]), "fn@0.05": int(fn[5])}
    result = metric.compute()
    pct = lambda a: {f"{t:.2f}": round(float(v) * 100, 2) for t, v in zip(THRESHOLDS, a)}  # noqa: E731
    report.update({
        "unit": "IoU in percent",
        "thresholds": list(THRESHOLDS),
        "per_category": {c: {"iou": pct(v), "num_shapes": metric.num_shapes[c], "num_gt": metric.num_gt[c],
                             "fp": metric.fp[c].tolist(), "fn": metric.fn[c].tolist()}
                         for c, v in result["per_category"].items()},
        "mean": pct(result["mean"]),
        "num_scored": len(shapes),
        "complete": dataset.num_missing == 0 and limit is None,
        "missing": dataset.missing,
        "num_missing": dataset.num_missing,
        "limit": limit,
        "per_shape": per_shape,
        "published": {k: {f"{t:.2f}": v for t, v in row.items()} for k, row in PUBLISHED.items()},
    })
    if predictions is None and detector == "few_shot":
        report["support"] = run.support_keys
    report["markdown"] = markdown_table(report)
    return write_report(report, json_path, markdown_path)


def write_report(report: dict[str, Any], json_path: str | os.PathLike | None,
                 markdown_path: str | os.PathLike | None) -> dict[str, Any]:
    """Write a report's figures (JSON, without the markdown) and its ``markdown`` where asked; returns it."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=1))
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(report["markdown"])
    return report


def markdown_table(report: dict[str, Any]) -> str:
    """The measured rows (per category and mean) beside the published ones, IoU in percent."""
    cols = [f"{t:.2f}" for t in THRESHOLDS]
    lines = [f"# KeypointNet keypoints: {report['method']}", "",
             f"Split `{report['split']}`, categories {', '.join(report['categories'])}; {report['num_scored']} shapes "
             "scored; IoU (%) at geodesic distance thresholds (KeypointNet benchmark code's definition).", ""]
    if not report["complete"]:
        why = [f"{report['num_missing']} shape(s) of the split have no point cloud here"] if report["num_missing"] else []
        why += [f"at most {report['limit']} shapes per category (--limit)"] if report.get("limit") else []
        lines += [f"**Partial: {'; '.join(why)}. Not comparable with the published rows.**", ""]
    lines += ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    kind = "upper bound (oracle pointer)" if "oracle pointer" in report["method"] else "measured"
    for cat, row in report["per_category"].items():
        lines.append(f"| {kind}: {cat} ({row['num_shapes']} shapes) | " + " | ".join(f"{row['iou'][c]:.2f}" for c in cols) + " |")
    lines.append(f"| **{kind}: mean over categories** | " + " | ".join(f"**{report['mean'][c]:.2f}**" for c in cols) + " |")
    for name, row in report["published"].items():
        lines.append(f"| published: {name} | " + " | ".join(f"{row[c]:.2f}" if c in row else "—" for c in cols) + " |")
    return "\n".join(lines) + "\n"
