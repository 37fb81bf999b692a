"""Evaluation protocols: every switch that changes a benchmark figure, in one dataclass.

A :class:`Protocol` says which prompt names stand for the labels (:class:`PromptTable`: ``release``,
``find3d`` or a YAML file), how prompts are decorated and encoded, which points are scored (all, or N drawn
with a seed), how the cloud is posed (canonical, or a seeded random rotation), the preprocessing handed to
:func:`patchalign3d.segment` (up axis, normalisation, label assignment, temperature) and the IoU convention
(:mod:`patchalign3d.evaluation.metrics`). Random draws are seeded per shape from ``(seed, uid)``, so a shape
gets the same points and pose whatever the order, subset or number of processes.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.evaluation.metrics import CONVENTIONS
from patchalign3d.text import TEMPLATE_SETS

__all__ = [
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
]

ROTATIONS: tuple[str, ...] = ("canonical", "random", "random-up")
_ASSIGN = ("nearest", "membership", "interpolate")


# ---------------------------------------------------------------------------------------------------
# prompt tables
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptTable:
    """Which text stands for each label.

    Attributes:
        name: ``"release"``, ``"find3d"`` or the YAML file it came from.
        categories: ``{category: [prompt per label, in label order]}`` (category names matched without case).
        parts: ``{dataset part name: prompt}`` for any category not listed in ``categories``.

    A label with no entry keeps the dataset's own part name.
    """

    name: str
    categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    parts: Mapping[str, str] = field(default_factory=dict)

    def prompts(self, category: str, part_names: Sequence[str]) -> list[str]:
        """The prompt of each of ``part_names`` (a shape's label space) in ``category``."""
        table = {k.lower(): v for k, v in self.categories.items()}
        listed = table.get(category.lower())
        if listed is not None:
            if len(listed) != len(part_names):
                raise ValueError(
                    f"prompt table {self.name!r} lists {len(listed)} prompts for {category!r} but its label space "
                    f"has {len(part_names)} parts {list(part_names)}"
                )
            return [str(p) for p in listed]
        return [self.parts.get(p, p) for p in part_names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "categories": {k: list(v) for k, v in self.categories.items()},
            "parts": dict(self.parts),
        }


#: Find3D's ShapeNetPart part names (where they differ from the release's, which the dataset uses).
SHAPENETPART_FIND3D_PROMPTS: dict[str, list[str]] = {
    "Airplane": ["body", "wing", "tail", "engine or frame"],
    "Bag": ["handle", "body"],
    "Cap": ["panels or crown", "visor or peak"],
    "Car": ["roof", "hood", "wheel or tire", "body"],
    "Chair": ["back", "seat pad", "leg", "armrest"],
    "Earphone": ["earcup", "headband", "data wire"],
    "Guitar": ["head or tuners", "neck", "body"],
    "Knife": ["blade", "handle"],
    "Lamp": ["base", "lampshade", "fixing bracket", "stem"],
    "Laptop": ["keyboard", "screen or monitor"],
    "Motorbike": ["gas tank", "seat", "wheel", "handles or handlebars", "light", "engine or frame"],
    "Mug": ["handle", "cup"],
    "Pistol": ["barrel", "handle", "trigger and guard"],
    "Rocket": ["body", "fin", "nose cone"],
    "Skateboard": ["wheel", "deck", "belt for foot"],
    "Table": ["desktop", "leg or support", "drawer"],
}

#: Built-in tables. ``release``: the dataset's names (for ShapeNetPart the release's names).
PROMPT_TABLES: dict[str, PromptTable] = {
    "release": PromptTable("release"),
    "find3d": PromptTable("find3d", categories=SHAPENETPART_FIND3D_PROMPTS),
}


def load_prompt_table(spec: str | PromptTable | Mapping[str, Any]) -> PromptTable:
    """A :class:`PromptTable` from a built-in name, a YAML file or a mapping.

    YAML layout::

        categories:            # optional, one prompt per label in label order
          Chair: [back, seat, leg, armrest]
        parts:                 # optional, rename a part name wherever it appears
          arm: arm of a person
    """
    if isinstance(spec, PromptTable):
        return spec
    if isinstance(spec, Mapping):
        return _table_from_mapping(spec, "<mapping>")
    if spec in PROMPT_TABLES:
        return PROMPT_TABLES[spec]
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
        raise ValueError(f"prompt table {spec!r} is neither one of {sorted(PROMPT_TABLES)} nor a YAML file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    return _table_from_mapping(data, str(path))


def _table_from_mapping(data: Any, where: str) -> PromptTable:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a prompt table must be a mapping with 'categories' and/or 'parts'")
    unknown = set(data) - {"categories", "parts", "name"}
    if unknown:
        raise ValueError(
            f"{where}: unknown prompt table keys {sorted(unknown)} (expected 'categories', 'parts')"
        )
    cats = data.get("categories") or {}
    parts = data.get("parts") or {}
    if not isinstance(cats, Mapping) or not all(
        isinstance(v, Sequence) and not isinstance(v, str) and all(isinstance(p, str) for p in v)
        for v in cats.values()
    ):
        raise ValueError(f"{where}: 'categories' must map category names to lists of prompt strings")
    if not isinstance(parts, Mapping) or not all(isinstance(v, str) for v in parts.values()):
        raise ValueError(f"{where}: 'parts' must map part names to prompt strings")
    return PromptTable(
        str(data.get("name", where)),
        {str(k): list(v) for k, v in cats.items()},
        {str(k): v for k, v in parts.items()},
    )


# ---------------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------------
@dataclass
class Protocol:
    """Every choice that changes an evaluation figure. The defaults are the release's ShapeNetPart protocol,
    except that all points are scored (the release scores 2048 drawn unseeded with replacement:
    ``points=2048, replace=True`` reproduces that draw, seeded).

    Attributes:
        prompts: prompt table, ``"release"``, ``"find3d"`` or a YAML path (:func:`load_prompt_table`).
        prompt_template: decorates each prompt; fields ``{part}`` and ``{category}`` (Find3D's "decorated"
            prompts are ``"{part} of a {category}"``).
        text_templates: templates the text encoder averages (``"release"``: ``{}``, ``a {}``, ``{} part``, the
            release's ``part_only``; ``"category"``: the four category templates, ``part_plus_cat``;
            ``"ensemble"``: all seven, the release's ``ensemble``; or a list). A text bank serves the setting it
            was built with (see :class:`~patchalign3d.evaluation.scoring.PromptEmbedder`).
        points: score all points (``None``) or ``points`` drawn with the shape's seed.
        replace: draw with replacement (as the release does); without, when there are enough points.
        seed: seeds point draws, rotations and the encoder subset.
        rotation: ``"canonical"`` (as stored), ``"random"`` (uniform in SO(3)) or ``"random-up"`` (about the
            up axis), seeded per shape.
        up_axis, normalize, assign, temperature, max_points, num_groups: passed to :func:`patchalign3d.segment`.
        category_mask: score only the shape's own label space (the category is known, as in the release);
            off, every prompt of the benchmark competes and a foreign prediction is wrong.
        metric: IoU convention, ``"release"``, ``"find3d"`` or ``"pointbert"``.
        unlabelled: ``"ignore"`` / ``"count"`` unlabelled ground-truth points; ``None`` = the metric's default.
    """

    prompts: str = "release"
    prompt_template: str = "{part}"
    text_templates: str | list[str] = "release"
    points: int | None = None
    replace: bool = False
    seed: int = 0
    rotation: str = "canonical"
    up_axis: str = "y"
    normalize: bool = True
    category_mask: bool = True
    assign: str = "nearest"
    temperature: float | None = 0.07
    max_points: int | None = 2048
    num_groups: int | None = None
    metric: str = "release"
    unlabelled: str | None = None

    def __post_init__(self) -> None:
        if self.points is not None and (not isinstance(self.points, int) or self.points < 1):
            raise ValueError(f"points must be None (all) or a positive integer, got {self.points!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        if self.up_axis not in ("y", "z"):
            raise ValueError(f"up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if self.assign not in _ASSIGN:
            raise ValueError(f"assign must be one of {_ASSIGN}, got {self.assign!r}")
        if self.metric not in CONVENTIONS:
            raise ValueError(f"metric must be one of {CONVENTIONS}, got {self.metric!r}")
        if self.unlabelled not in (None, "ignore", "count"):
            raise ValueError(f"unlabelled must be None, 'ignore' or 'count', got {self.unlabelled!r}")
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
    def prompt_table(self) -> PromptTable:
        return load_prompt_table(self.prompts)

    def prompt(self, part: str, category: str) -> str:
        """The decorated prompt of one part."""
        return self.prompt_template.format(part=part, category=category.lower().replace("_", " "))

    def prompts_for(
        self, category: str, part_names: Sequence[str], table: PromptTable | None = None
    ) -> list[str]:
        """Decorated prompts of a label space."""
        table = table or self.prompt_table
        return [self.prompt(p, category) for p in table.prompts(category, part_names)]

    def segment_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`patchalign3d.segment` that this protocol fixes."""
        return dict(
            normalize=self.normalize,
            up_axis=self.up_axis,
            assign=self.assign,
            temperature=self.temperature,
            max_points=self.max_points,
            num_groups=self.num_groups,
            seed=self.seed,
        )


def benchmark_protocol(benchmark: str) -> Protocol:
    """The paper's protocol for a benchmark (what ``configs/eval/<benchmark>.yaml`` also holds).

    ShapeNetPart: release prompts, category known, unit-sphere normalisation, y/z swap, 2048 points drawn with
    replacement (seeded), ``release`` IoU. FAUST: not normalised, all vertices, every label scored with an
    empty union counting 1 (``pointbert``). Objaverse: Find3D's convention (labels as given, ``find3d`` IoU,
    unlabelled points count as false positives). PartNet-Mobility and labelled meshes (the demo's synthetic
    shapes): like ShapeNetPart, all points.
    """
    key = benchmark.lower()
    if key.startswith("shapenetpart"):
        return Protocol(points=2048, replace=True)
    if key == "faust":
        return Protocol(normalize=False, metric="pointbert")
    if key == "objaverse":
        return Protocol(metric="find3d")
    if key in ("partnet", "labelled-meshes"):
        return Protocol()
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
    points: np.ndarray, labels: np.ndarray, uid: str, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the protocol's point draw and rotation to one shape.

    Args:
        points: ``(N, 3)``; labels: ``(N,)``.

    Returns:
        ``(M, 3)`` float32 points and ``(M,)`` labels, ``M = N`` or ``protocol.points``.
    """
    rng = shape_rng(protocol.seed, uid)
    if protocol.points is not None:
        n = len(points)
        # without replacement only when possible; a short cloud is padded by repeats, as the release does
        idx = rng.choice(n, protocol.points, replace=protocol.replace or n < protocol.points)
        points, labels = points[idx], labels[idx]
    if protocol.rotation != "canonical":
        rot = random_rotation(rng, protocol.rotation, protocol.up_axis)
        points = points @ rot.T
    return np.ascontiguousarray(points, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)
