"""Evaluation protocols: every switch that changes a benchmark figure, in one dataclass.

A :class:`Protocol` says which prompt names stand for the labels (:class:`PromptTable`: ``release``,
``find3d``, ``find3d-topk`` or a YAML file), how prompts are decorated and encoded, which shapes are scored
(all, or Find3D's subset), which points (all, or N drawn with a seed), how the cloud is posed (canonical, a
seeded random rotation, or Find3D's published one), the preprocessing handed to :func:`patchalign3d.segment`
(up axis, normalisation, label assignment, temperature) and the IoU convention
(:mod:`patchalign3d.evaluation.metrics`). Random draws are seeded per shape from ``(seed, uid)``, so a shape
gets the same points and pose whatever the order, subset or number of processes.

:func:`benchmark_protocol` gives each benchmark's protocol under three presets: ``paper`` (what the paper's
figures used), ``release`` (the released evaluation script, its names included) and ``find3d`` (Find3D's, from
the files Find3D publishes; see :mod:`patchalign3d.evaluation.find3d`).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.evaluation.find3d import find3d_topk_table
from patchalign3d.evaluation.metrics import CONVENTIONS
from patchalign3d.evaluation.prompt_table import (
    PROMPT_TABLES,
    SHAPENETPART_FIND3D_PROMPTS,
    PromptTable,
    read_prompt_table_file,
    table_from_mapping,
)
from patchalign3d.model.patchalign3d import ASSIGN_MODES
from patchalign3d.text import TEMPLATE_SETS

__all__ = [
    "PRESETS",
    "SUBSETS",
    "Protocol",
    "PromptTable",
    "PROMPT_TABLES",
    "SHAPENETPART_FIND3D_PROMPTS",
    "ROTATIONS",
    "benchmark_protocol",
    "load_prompt_table",
    "shape_rng",
    "random_rotation",
    "sample_points",
    "scores_encoded_only",
    "unit_sphere",
    "CIOU_RULES",
]

ROTATIONS: tuple[str, ...] = ("canonical", "random", "random-up", "find3d")
SUBSETS: tuple[str, ...] = ("all", "find3d")
PRESETS: tuple[str, ...] = ("paper", "release", "find3d")
#: cIoU rules: the mean over categories of their shapes' mean, or the release's mean of per-batch means
CIOU_RULES: tuple[str, ...] = ("categories", "release-batches")
#: Figures a protocol may name as the one its publisher reports.
HEADLINES: tuple[str, ...] = ("miou", "ciou", "partslip_miou")


# ---------------------------------------------------------------------------------------------------
# prompt tables (the tables themselves live in prompt_table.py, below this module and find3d.py)
# ---------------------------------------------------------------------------------------------------
def load_prompt_table(
    spec: str | PromptTable | Mapping[str, Any], protocol_dir: str | None = None
) -> PromptTable:
    """A :class:`PromptTable` from a built-in name, ``"find3d-topk"`` (Find3D's ``topk_prompts.json``, read
    from ``protocol_dir``), a YAML file (see :func:`~patchalign3d.evaluation.prompt_table.read_prompt_table_file`)
    or a mapping."""
    if isinstance(spec, PromptTable):
        return spec
    if isinstance(spec, Mapping):
        return table_from_mapping(spec, "<mapping>")
    if spec in PROMPT_TABLES:
        return PROMPT_TABLES[spec]
    if spec == "find3d-topk":
        return find3d_topk_table(protocol_dir)
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
        raise ValueError(
            f"prompt table {spec!r} is neither one of {sorted(PROMPT_TABLES) + ['find3d-topk']} nor a YAML file"
        )
    return read_prompt_table_file(path)


# ---------------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------------
@dataclass
class Protocol:
    """Every choice that changes an evaluation figure. The defaults are the release's ShapeNetPart protocol,
    except that all points are scored (the release scores 2048 drawn unseeded with replacement:
    ``points=2048, replace=True`` reproduces that draw, seeded).

    Attributes:
        preset: the preset these values started from (``"paper"``, ``"release"``, ``"find3d"``), for the
            record. Under ``"release"`` the assignment names are the release's: ``assign="membership"`` means
            its rule, ``"membership_release"``.
        prompts: prompt table, ``"release"``, ``"find3d"``, ``"find3d-topk"`` or a YAML path
            (:func:`load_prompt_table`).
        prompt_template: decorates each prompt; fields ``{part}`` and ``{category}`` (Find3D's "decorated"
            prompts are ``"{part} of a {category}"``).
        text_templates: templates the text encoder averages (``"release"``: ``{}``, ``a {}``, ``{} part``, the
            release's ``part_only``; ``"category"``: the four category templates, ``part_plus_cat``;
            ``"ensemble"``: all seven, the release's ``ensemble``; or a list). A text bank serves the setting it
            was built with (see :class:`~patchalign3d.evaluation.scoring.PromptEmbedder`).
        points: score all points (``None``) or ``points`` drawn with the shape's seed. Under
            ``assign="membership_release"`` a cloud still larger than ``max_points`` is cut to a seeded
            ``max_points`` of its points, the ones the encoder sees: the release scores only what it encodes
            (``src/datasets/shapenet.py`` lines 99-101), and a point it never encodes would get all-zero logits.
        replace: draw with replacement (as the release does); without, when there are enough points.
        normalize_before_sampling: centre and scale the whole cloud, then draw the points (the release's order,
            ``src/datasets/shapenet.py`` lines 97-99); by default the drawn points are normalised by
            :func:`patchalign3d.segment`. Needs ``normalize``.
        seed: seeds point draws, rotations and the encoder subset.
        rotation: ``"canonical"`` (as stored), ``"random"`` (uniform in SO(3)) or ``"random-up"`` (about the
            up axis), seeded per shape, or ``"find3d"`` (the rotation Find3D publishes for each test shape).
        subset: ``"all"`` shapes, or ``"find3d"`` (the subset Find3D publishes).
        protocol_dir: the folder of Find3D's protocol files (``rotation``, ``subset`` or ``prompts`` from
            Find3D); None reads ``$PATCHALIGN3D_FIND3D_DIR`` (:mod:`patchalign3d.evaluation.find3d`).
        up_axis, normalize, assign, temperature, max_points, num_groups: passed to :func:`patchalign3d.segment`.
            ``assign="membership_release"`` gives points in no patch all-zero logits, as the release does.
        category_mask: score only the shape's own label space (the category is known, as in the release);
            off, every prompt of the benchmark competes and a foreign prediction is wrong.
        none_if_negative: a point whose every logit is negative is predicted as no part (Find3D prepends a
            zero "no label" logit on PartNetE and Objaverse).
        metric: IoU convention, ``"release"``, ``"find3d"``, ``"pointbert"`` or ``"partslip"`` (the parts present
            in the ground truth, unlabelled points counted, and PartSLIP's part-first average as the headline).
        unlabelled: ``"ignore"`` / ``"count"`` unlabelled ground-truth points; ``None`` = the metric's default.
        headline: the figure the publisher reports, ``"miou"`` (mean over shapes), ``"ciou"`` (mean over
            categories) or ``"partslip_miou"``; ``None`` = the metric's (``partslip_miou`` under ``partslip``,
            else ``miou``). Find3D reports the category mean on ShapeNetPart and PartNetE (``eval_benchmark.py``
            lines 98-102, 113-117) and the shape mean on Objaverse (``evaluate3d``, line 42).
        ciou: ``"categories"`` (the mean over categories of their shapes' mean) or ``"release-batches"`` (the
            released script's mean of per-batch category means, :func:`~patchalign3d.evaluation.averaging.
            release_batch_ciou`, over batches of ``ciou_batch_size`` shapes in the release's loader order).
    """

    preset: str = "paper"
    prompts: str = "release"
    prompt_template: str = "{part}"
    text_templates: str | list[str] = "release"
    points: int | None = None
    replace: bool = False
    seed: int = 0
    rotation: str = "canonical"
    subset: str = "all"
    protocol_dir: str | None = None
    up_axis: str = "y"
    normalize: bool = True
    category_mask: bool = True
    none_if_negative: bool = False
    assign: str = "nearest"
    temperature: float | None = 0.07
    max_points: int | None = 2048
    num_groups: int | None = None
    metric: str = "release"
    unlabelled: str | None = None
    normalize_before_sampling: bool = False
    ciou: str = "categories"
    ciou_batch_size: int = 16
    headline: str | None = None

    def __post_init__(self) -> None:
        if self.points is not None and (not isinstance(self.points, int) or self.points < 1):
            raise ValueError(f"points must be None (all) or a positive integer, got {self.points!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        if self.subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {self.subset!r}")
        if self.protocol_dir is not None:
            self.protocol_dir = str(self.protocol_dir)
        if self.preset == "release" and self.assign == "membership":
            self.assign = "membership_release"  # the release's --assign membership
        if self.up_axis not in ("y", "z"):
            raise ValueError(f"up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if self.assign not in ASSIGN_MODES:
            raise ValueError(f"assign must be one of {ASSIGN_MODES}, got {self.assign!r}")
        if self.metric not in CONVENTIONS:
            raise ValueError(f"metric must be one of {CONVENTIONS}, got {self.metric!r}")
        if self.unlabelled not in (None, "ignore", "count"):
            raise ValueError(f"unlabelled must be None, 'ignore' or 'count', got {self.unlabelled!r}")
        if self.headline is not None and self.headline not in HEADLINES:
            raise ValueError(f"headline must be one of {HEADLINES}, got {self.headline!r}")
        if self.ciou not in CIOU_RULES:
            raise ValueError(f"ciou must be one of {CIOU_RULES}, got {self.ciou!r}")
        if not isinstance(self.ciou_batch_size, int) or self.ciou_batch_size < 1:
            raise ValueError(f"ciou_batch_size must be a positive integer, got {self.ciou_batch_size!r}")
        if self.normalize_before_sampling and not self.normalize:
            raise ValueError("normalize_before_sampling needs normalize=True (it moves the normalisation earlier)")
        if "{part}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{part}}', got {self.prompt_template!r}")
        try:
            self.prompt_template.format(part="x", category="y")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"prompt_template {self.prompt_template!r} may only use {{part}} and {{category}} ({e})"
            ) from None
        if isinstance(self.text_templates, str):
            if self.text_templates not in TEMPLATE_SETS:
                raise ValueError(
                    f"text_templates must be one of {sorted(TEMPLATE_SETS)} or a list, got {self.text_templates!r}"
                )
        else:
            self.text_templates = [str(t) for t in self.text_templates]
        if self.max_points is not None and self.max_points < 1:
            raise ValueError(f"max_points must be None or positive, got {self.max_points}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be None or positive, got {self.temperature}")

    # -- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "protocol") -> Protocol:
        fields_ = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields_
        if unknown:
            raise ValueError(f"{where}: unknown protocol keys {sorted(unknown)}; known: {sorted(fields_)}")
        data = dict(data)
        if data.get("points") == "all":
            data["points"] = None
        if data.get("max_points") == "all":
            data["max_points"] = None
        return cls(**data)

    # -- use ---------------------------------------------------------------------------------------------
    @property
    def headline_figure(self) -> str:
        """The figure reported first: ``headline``, else the metric's (``partslip_miou`` under ``partslip``)."""
        if self.headline is not None:
            return self.headline
        return "partslip_miou" if self.metric == "partslip" else "miou"

    @property
    def prompt_table(self) -> PromptTable:
        return load_prompt_table(self.prompts, self.protocol_dir)

    @property
    def uses_find3d_files(self) -> bool:
        """Whether this protocol reads Find3D's published rotations or subset."""
        return self.rotation == "find3d" or self.subset == "find3d"

    def prompt(self, part: str, category: str) -> str:
        """The decorated prompt of one part."""
        return self.prompt_template.format(part=part, category=category.lower().replace("_", " "))

    def prompts_for(
        self, category: str, part_names: Sequence[str], table: PromptTable | None = None
    ) -> list[str]:
        """Decorated prompts of a label space (a verbatim table's sentences as written)."""
        table = table or self.prompt_table
        listed = table.prompts(category, part_names)
        return list(listed) if table.verbatim else [self.prompt(p, category) for p in listed]

    def segment_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`patchalign3d.segment` that this protocol fixes."""
        return dict(
            normalize=self.normalize and not self.normalize_before_sampling,  # else done before the draw
            up_axis=self.up_axis,
            assign=self.assign,
            temperature=self.temperature,
            max_points=self.max_points,
            num_groups=self.num_groups,
            seed=self.seed,
        )


def benchmark_protocol(benchmark: str, preset: str = "paper") -> Protocol:
    """A benchmark's protocol under a preset (``configs/eval/<benchmark>.yaml`` hold the paper's).

    ``paper``: ShapeNetPart: release prompts, category known, unit-sphere normalisation, y/z swap, 2048 points
    drawn with replacement (seeded), ``release`` IoU. FAUST: not normalised, every vertex scored, every label
    with an empty union counting 1 (``pointbert``), a vertex of no label (``-1``) predicted as a label counted
    in its union (``src/inference/eval.py`` lines 178-202 of the release). Objaverse: Find3D's convention (labels as given, ``find3d``
    IoU, unlabelled points count as false positives). PartNetE: the category's PartNetE_meta.json names, all
    points, ``release`` IoU, and points of no part (``-1``) kept so that a part predicted there is a false
    positive, as PartSLIP's evaluation counts them. PartNet-Mobility and labelled meshes: like ShapeNetPart,
    all points.

    ScanObjectNN: COPS's protocol, the baseline the paper compares with (the paper states none of its own):
    the loader keeps the background as a scored class (its ``background="keep"``), every point scored,
    ``pointbert`` IoU (COPS's per-shape ``mean_iou``, ``source/metrics/compute_metrics.py`` lines 166-184).

    ``release``: the released evaluation script: as ``paper``, except ShapeNetPart, where the whole cloud is
    normalised before the 2048 points are drawn and cIoU is the mean of per-batch category means over batches
    of 16 in the release's loader order (``src/datasets/shapenet.py`` lines 97-101, ``src/inference/eval.py``
    lines 288-296), and FAUST, where 2048 vertices are drawn (without replacement unless fewer) and only those
    are encoded and scored; ``assign="membership"`` means the release's rule (``membership_release``).

    ``find3d``: Find3D's protocol, from its files: ShapeNetPart (HDF5 release) and PartNetE with Find3D's
    rotation of each test shape, every shape (Find3D's ``--subset`` flag is off by default,
    ``model/evaluation/benchmark/eval_benchmark.py`` lines 129 and 132; ``subset="find3d"`` takes its subset),
    prompts ``"{part} of a {category}"`` (ShapeNetPart with Find3D's names), all points, ``find3d`` IoU; on
    PartNetE and Objaverse a point whose every logit is at most 0 is no part, as Find3D's zero "no label"
    column makes it (``model/evaluation/core.py`` line 44); the headline is the mean over categories on
    ShapeNetPart and PartNetE, the mean over shapes on Objaverse, as Find3D prints them.
    """
    key = benchmark.lower()
    if preset not in PRESETS:
        raise ValueError(f"unknown protocol preset {preset!r}; expected one of {PRESETS}")
    if preset == "find3d":
        decorated = dict(preset="find3d", prompt_template="{part} of a {category}", metric="find3d")
        if key.startswith("shapenetpart"):
            return Protocol(prompts="find3d", rotation="find3d", headline="ciou", **decorated)
        if key == "partnete":
            return Protocol(rotation="find3d", none_if_negative=True, headline="ciou", **decorated)
        if key == "objaverse":
            return Protocol(none_if_negative=True, **decorated)
        raise ValueError(f"Find3D published no protocol for {benchmark!r} (it has ShapeNetPart, PartNetE, Objaverse)")
    if key.startswith("shapenetpart"):
        if preset == "release":
            return Protocol(
                preset=preset, points=2048, replace=True, normalize_before_sampling=True, ciou="release-batches"
            )
        return Protocol(preset=preset, points=2048, replace=True)
    if key == "scanobjectnn":
        return Protocol(preset=preset, metric="pointbert")
    if key == "faust":  # a vertex of no label predicted as a part is in that part's union, as the release counts it
        if preset == "release":
            return Protocol(preset=preset, normalize=False, metric="pointbert", points=2048, unlabelled="count")
        return Protocol(normalize=False, metric="pointbert", unlabelled="count")
    if key == "objaverse":
        return Protocol(preset=preset, metric="find3d")
    if key == "partnete":
        return Protocol(preset=preset, unlabelled="count")
    if key in ("partnet", "labelled-meshes"):
        return Protocol(preset=preset)
    raise ValueError(f"no default protocol for benchmark {benchmark!r}")


# ---------------------------------------------------------------------------------------------------
# seeded per-shape draws
# ---------------------------------------------------------------------------------------------------
def shape_rng(seed: int, uid: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the shape's uid (not on order or process)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(uid.encode("utf-8"))])


def random_rotation(rng: np.random.Generator, mode: str = "random", up_axis: str = "y") -> np.ndarray:
    """A ``(3, 3)`` rotation: uniform over SO(3) (``"random"``), about the up axis (``"random-up"``) or identity."""
    if mode == "canonical":
        return np.eye(3)
    if mode == "random":
        q = rng.normal(size=4)  # a normalised Gaussian quaternion is uniform on SO(3)
        w, x, y, z = q / np.linalg.norm(q)
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    if mode == "random-up":
        a = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(a), np.sin(a)
        if up_axis == "y":
            return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    raise ValueError(f"rotation must be one of {ROTATIONS}, got {mode!r}")


def sample_points(
    points: np.ndarray, labels: np.ndarray, uid: str, protocol: Protocol, rotation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the protocol's normalisation (when before the draw), point draw, rotation and, under
    ``assign="membership_release"``, the cut to the points the encoder sees, to one shape.

    Args:
        points: ``(N, 3)``; labels: ``(N,)``.
        rotation: the shape's ``(3, 3)`` published rotation when ``protocol.rotation == "find3d"``.

    Returns:
        ``(M, 3)`` float32 points and ``(M,)`` labels, ``M = N``, ``protocol.points`` or ``protocol.max_points``.
    """
    rng = shape_rng(protocol.seed, uid)
    if protocol.normalize_before_sampling:
        points = unit_sphere(points, uid)
    if protocol.points is not None:
        n = len(points)
        # without replacement only when possible; a short cloud is padded by repeats, as the release does
        idx = rng.choice(n, protocol.points, replace=protocol.replace or n < protocol.points)
        points, labels = points[idx], labels[idx]
    if protocol.rotation == "find3d":
        if rotation is None:
            raise ValueError(f"rotation='find3d' needs the shape's published rotation ({uid})")
        points = points @ rotation.T  # rotations and point draws commute: Find3D rotates first
    elif protocol.rotation != "canonical":
        rot = random_rotation(rng, protocol.rotation, protocol.up_axis)
        points = points @ rot.T
    if scores_encoded_only(protocol) and len(points) > protocol.max_points:
        # the release scores the points it encodes; any other point would get all-zero logits (label 0)
        keep = np.sort(rng.choice(len(points), protocol.max_points, replace=False))
        points, labels = points[keep], labels[keep]
    return np.ascontiguousarray(points, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)


def scores_encoded_only(protocol: Protocol) -> bool:
    """Whether only the points the encoder sees are scored (``assign="membership_release"`` with a cap)."""
    return protocol.assign == "membership_release" and protocol.max_points is not None


def unit_sphere(points: np.ndarray, uid: str = "") -> np.ndarray:
    """``(N, 3)`` float32 points centred on their centroid and scaled to radius 1 (the release's ``pc_normalize``)."""
    x = points.astype(np.float32)
    x = x - x.mean(axis=0)
    radius = float(np.sqrt((x**2).sum(axis=1)).max())
    if radius == 0.0:
        raise ValueError(f"all points of {uid or 'the shape'} coincide: the cloud cannot be normalised")
    return x / radius
