"""Prompt tables: which text stands for each label of a benchmark.

This module sits below :mod:`~patchalign3d.evaluation.protocols` and :mod:`~patchalign3d.evaluation.find3d`,
which both build tables, so that neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PromptTable",
    "PROMPT_TABLES",
    "SHAPENETPART_FIND3D_PROMPTS",
    "read_prompt_table_file",
    "table_from_mapping",
]


@dataclass(frozen=True)
class PromptTable:
    """Which text stands for each label.

    Attributes:
        name: ``"release"``, ``"find3d"`` or the YAML file it came from.
        categories: ``{category: [prompt per label, in label order]}`` (category names matched without case).
        parts: ``{dataset part name: prompt}`` for any category not listed in ``categories``.
        allow_fewer: a category may list fewer prompts than it has labels; the labels past its list get no
            prompt, are never predicted and are not scored (Find3D's evaluation loops over the prompts it has,
            ``model/evaluation/core.py`` line 83; its top-k file is one short for Airplane).
        verbatim: the prompts are whole sentences, used as written: the protocol's ``prompt_template`` is not
            applied (Find3D uses its top-k sentences undecorated, ``model/data/data.py`` lines 411-414).

    A label with no entry keeps the dataset's own part name.
    """

    name: str
    categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    parts: Mapping[str, str] = field(default_factory=dict)
    allow_fewer: bool = False
    verbatim: bool = False

    def prompts(self, category: str, part_names: Sequence[str]) -> list[str]:
        """The prompt of each of ``part_names`` (a shape's label space) in ``category``; with ``allow_fewer``
        the list may be shorter (prompt i stands for label i)."""
        table = {k.lower(): v for k, v in self.categories.items()}
        listed = table.get(category.lower())
        if listed is not None:
            if len(listed) > len(part_names) or (len(listed) < len(part_names) and not self.allow_fewer):
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
            "allow_fewer": self.allow_fewer,
            "verbatim": self.verbatim,
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


def read_prompt_table_file(path: Path) -> PromptTable:
    """A YAML (or JSON) prompt table file.

    Layout::

        categories:            # optional, one prompt per label in label order
          Chair: [back, seat, leg, armrest]
        parts:                 # optional, rename a part name wherever it appears
          arm: arm of a person
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    return table_from_mapping(data, str(path))


def table_from_mapping(data: Any, where: str) -> PromptTable:
    """A :class:`PromptTable` from ``{"categories": ..., "parts": ..., "name": ...}``; ``where`` names the source
    in errors."""
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
