"""Part-name cleaning, prompt templates and :class:`TextBank` (names -> embeddings).

A text bank is the released ``{"keys": [names], "emb": FloatTensor (K, D), "meta": {...}}`` file. Building one
encodes every name with each template, normalises each prompt embedding, averages over templates and
renormalises (as released). Embeddings are cached on disk per encoder and template set, so a name is never
encoded twice by the same encoder.

Banks built with a category (the release's "part+category" banks, and :meth:`TextBank.build` with
``category=``) key each entry ``"<part>||<category>"``, both cleaned, as the release writes them; look them up
with ``lookup(names, category=...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import string
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from patchalign3d.file_kind import sniff_file_kind

from .interface import TextEncoder
from .registry import UnknownTextEncoderError, get_text_encoder, spec_from_meta

__all__ = [
    "DEFAULT_TEMPLATES",
    "CATEGORY_TEMPLATES",
    "ENSEMBLE_TEMPLATES",
    "TEMPLATE_SETS",
    "PAIR_SEPARATOR",
    "pair_key",
    "clean_name",
    "validate_part_names",
    "MissingPartNamesError",
    "TextBank",
    "default_cache_dir",
]

#: templates of the release, each filled with one cleaned part name
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "a {}", "{} part")
#: optional templates filled with (part name, category name): the release's "part_plus_cat" setting
CATEGORY_TEMPLATES: tuple[str, ...] = ("a {} of a {}", "the {} of a {}", "{} of {}", "a {} part of a {}")
#: the release's "ensemble" setting: the category templates and the part templates, all seven averaged
ENSEMBLE_TEMPLATES: tuple[str, ...] = CATEGORY_TEMPLATES + DEFAULT_TEMPLATES
#: named template sets (the release's text settings "part_only", "part_plus_cat", "ensemble")
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "release": DEFAULT_TEMPLATES,
    "category": CATEGORY_TEMPLATES,
    "ensemble": ENSEMBLE_TEMPLATES,
}
#: joins a part and its category in the keys of a bank built with a category (``"seat||chair"``)
PAIR_SEPARATOR = "||"

_NOT_WORD = re.compile(r"[^\w\s]")  # punctuation and symbols (unicode aware); "_" is handled separately

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------------------
# names


def clean_name(name: str) -> str:
    """Normalise a part name: lowercase, ``_`` and punctuation become spaces, runs of spaces collapse.

    >>> clean_name("  Back_Rest (Left)! ")
    'back rest left'
    """
    if not isinstance(name, str):
        raise TypeError(f"a part name must be a string, got {type(name).__name__}: {name!r}")
    text = _NOT_WORD.sub(" ", name.lower().replace("_", " "))
    return " ".join(text.split())


def validate_part_names(names: Sequence[str]) -> list[str]:
    """Check a list of part names and return it (as given, as a new list).

    Raises:
        ValueError: ``names`` is a single string or not a list/tuple of strings, is empty, has blank names
            (nothing left after cleaning), or has names that clean to the same string.
    """
    if isinstance(names, (str, bytes)):
        raise ValueError(f"part names must be a list of strings, got a single string {names!r}")
    if not isinstance(names, Sequence):
        raise ValueError(f"part names must be a list of strings, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise ValueError("part names are empty: give at least one name")
    not_str = [f"#{i}: {n!r}" for i, n in enumerate(names) if not isinstance(n, str)]
    if not_str:
        raise ValueError(f"part names must be strings; not strings: {', '.join(not_str)}")
    cleaned = [clean_name(n) for n in names]
    blank = [f"#{i}: {n!r}" for i, (n, c) in enumerate(zip(names, cleaned)) if not c]
    if blank:
        raise ValueError(f"blank part names (nothing left after cleaning): {', '.join(blank)}")
    groups: dict[str, list[str]] = {}
    for n, c in zip(names, cleaned):
        groups.setdefault(c, []).append(n)
    dups = {c: ns for c, ns in groups.items() if len(ns) > 1}
    if dups:
        desc = "; ".join(f"{ns!r} -> {c!r}" for c, ns in dups.items())
        raise ValueError(f"duplicate part names after cleaning: {desc}")
    return names


def pair_key(name: str, category: str) -> str:
    """The key of ``name`` in a bank built with ``category``: ``"<clean name>||<clean category>"``."""
    return f"{clean_name(name)}{PAIR_SEPARATOR}{clean_name(category)}"


def template_fields(template: str) -> int:
    """Number of ``{}`` fields of a template (1: part name; 2: part name, category)."""
    return sum(1 for _, f, _, _ in string.Formatter().parse(template) if f is not None)


def _check_templates(templates: Sequence[str], category: str | None) -> tuple[str, ...]:
    """Templates as a tuple; each has one ``{}`` field (part name) or, when a category is given, one or two
    (part name, category): the release's ensemble mixes both kinds."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or not templates:
        raise ValueError(f"templates must be a non-empty sequence of strings, got {templates!r}")
    allowed = (1,) if category is None else (1, 2)
    for t in templates:
        if not isinstance(t, str):
            raise ValueError(f"templates must be strings, got {t!r}")
        named = any(f for _, f, _, _ in string.Formatter().parse(t) if f is not None)
        if template_fields(t) not in allowed or named:
            need = "one '{}' field (part name)" if category is None else "one or two '{}' fields (part name, category)"
            extra = " (category templates need category=...)" if template_fields(t) == 2 and category is None else ""
            raise ValueError(f"template {t!r} must have {need}{extra}")
    return tuple(templates)


# --------------------------------------------------------------------------------------------------------
# on-disk cache


def default_cache_dir() -> Path:
    """``$PATCHALIGN3D_CACHE/text`` or ``~/.cache/patchalign3d/text``."""
    root = os.environ.get("PATCHALIGN3D_CACHE")
    return Path(root).expanduser() / "text" if root else Path("~/.cache/patchalign3d/text").expanduser()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _EmbeddingCache:
    """One file of ``{cleaned name: (D,) embedding}`` per (encoder identifier, templates, category).

    Writes merge with what is on disk under a file lock, then replace the file atomically, so concurrent
    builders (threads or processes) neither corrupt the file nor drop each other's entries.
    """

    VERSION = 1

    def __init__(self, root: Path, identifier: str, templates: tuple[str, ...], category: str | None,
                 dim: int) -> None:
        key = json.dumps([identifier, list(templates), category])
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identifier).strip("_")[:80]
        self.path = root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        self.identifier, self.templates, self.category, self.dim = identifier, templates, category, dim

    def _read(self) -> dict[str, Tensor]:
        if not self.path.is_file():
            return {}
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            keys, emb = data["keys"], data["emb"]
            ok = (data.get("identifier") == self.identifier and emb.ndim == 2 and emb.shape[0] == len(keys)
                  and emb.shape[1] == self.dim)
        except Exception as err:  # a damaged cache must never break a build: it is only an optimisation
            warnings.warn(f"ignoring unreadable text cache {self.path}: {err}", stacklevel=3)
            return {}
        if not ok:
            warnings.warn(f"ignoring text cache {self.path}: it does not match {self.identifier}",
                          stacklevel=3)
            return {}
        return dict(zip(keys, emb.float()))

    def get(self, names: Iterable[str]) -> dict[str, Tensor]:
        """Cached embeddings of those ``names`` that are cached."""
        stored = self._read()
        return {n: stored[n] for n in names if n in stored}

    def put(self, entries: dict[str, Tensor]) -> None:
        """Add entries; failures to write only warn."""
        from filelock import FileLock

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock"):
                merged = self._read()
                merged.update(entries)
                keys = list(merged)
                _atomic_torch_save(
                    {"version": self.VERSION, "identifier": self.identifier,
                     "templates": list(self.templates), "category": self.category, "keys": keys,
                     "emb": torch.stack([merged[k] for k in keys]).float().contiguous()},
                    self.path,
                )
        except OSError as err:
            warnings.warn(f"could not write text cache {self.path}: {err}", stacklevel=3)


# --------------------------------------------------------------------------------------------------------
# bank


class MissingPartNamesError(KeyError):
    """Names asked of a :class:`TextBank` that it does not hold; ``.missing`` lists them."""

    def __init__(self, missing: Sequence[str], available: int, hint: str = "") -> None:
        self.missing = list(missing)
        super().__init__(
            f"{len(self.missing)} part name(s) not in the text bank ({available} names): {self.missing}. "
            "Build a bank that contains them with TextBank.build(names, encoder)." + hint
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _validate_bank(keys: Any, emb: Any, meta: Any) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"text bank 'keys' must be a list of strings, got {type(keys).__name__}")
    if not torch.is_tensor(emb):
        raise ValueError(f"text bank 'emb' must be a tensor, got {type(emb).__name__}")
    if emb.ndim != 2 or not emb.is_floating_point():
        raise ValueError(
            f"text bank 'emb' must be a 2-D float tensor, got shape {tuple(emb.shape)} {emb.dtype}"
        )
    if emb.shape[0] != len(keys):
        raise ValueError(f"text bank 'emb' has {emb.shape[0]} rows but 'keys' has {len(keys)} names")
    if not isinstance(meta, dict):
        raise ValueError(f"text bank 'meta' must be a dict, got {type(meta).__name__}")
    dups = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dups:
        raise ValueError(f"text bank 'keys' has duplicates: {dups}")
    if emb.numel() and not torch.isfinite(emb).all():
        raise ValueError("text bank 'emb' contains NaN or infinite values")


class TextBank:
    """Part names and their text embeddings.

    Args:
        keys: K names (unique).
        emb: (K, D) float embeddings, one row per key (L2-normalised when built here); stored as float32.
        meta: metadata, e.g. ``{"text_dim", "backend", "clip_model", "clip_pretrained", ...}``.

    ``bank[name]`` accepts the exact key or any name that cleans to a key.
    """

    def __init__(self, keys: Sequence[str], emb: Tensor, meta: dict[str, Any] | None = None) -> None:
        keys = list(keys) if isinstance(keys, (list, tuple)) else keys
        meta = {} if meta is None else meta
        _validate_bank(keys, emb, meta)
        self._keys: list[str] = keys
        self.emb: Tensor = emb.detach().to(device="cpu", dtype=torch.float32).contiguous()
        self.meta: dict[str, Any] = dict(meta)
        self._index = {k: i for i, k in enumerate(keys)}
        self._clean_index: dict[str, int] = {}
        self._pair_index: dict[str, int] = {}  # "part||category" keys, each side cleaned
        for i, k in enumerate(keys):
            part, sep, cat = k.partition(PAIR_SEPARATOR)
            if sep:
                self._pair_index.setdefault(pair_key(part, cat), i)
            else:
                self._clean_index.setdefault(clean_name(k), i)

    # -- access ------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._keys)

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def paired(self) -> bool:
        """True when entries are keyed ``"part||category"`` (a bank built with a category)."""
        return bool(self._pair_index)

    def _find(self, name: str, category: str | None = None) -> int | None:
        if not isinstance(name, str):
            return None
        if category is not None and self.paired:
            return self._pair_index.get(pair_key(name, category))
        i = self._index.get(name)
        if i is None and PAIR_SEPARATOR in name:
            return self._pair_index.get(pair_key(*name.split(PAIR_SEPARATOR, 1)))
        return self._clean_index.get(clean_name(name)) if i is None else i

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __getitem__(self, name: str) -> Tensor:
        """(D,) embedding of ``name`` (a part+category bank also takes ``"part||category"``)."""
        i = self._find(name)
        if i is None:
            raise MissingPartNamesError([name], len(self), self._pair_hint())
        return self.emb[i]

    def lookup(self, names: Sequence[str], category: str | None = None) -> Tensor:
        """(K, D) embeddings of ``names``, in order.

        Args:
            names: K part names (the exact keys, or names that clean to them).
            category: the object category; in a bank keyed ``"part||category"`` the entry of each name with
                this category is taken. A bank keyed by part names alone ignores it.

        Raises:
            MissingPartNamesError (a KeyError): naming every missing name.
        """
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise TypeError(f"names must be a sequence of strings, got {type(names).__name__}")
        idx = [self._find(n, category) for n in names]
        missing = [n for n, i in zip(names, idx) if i is None]
        if missing:
            if category is not None and self.paired:
                missing = [pair_key(n, category) for n in missing]
            raise MissingPartNamesError(missing, len(self), self._pair_hint() if category is None else "")
        return self.emb[torch.tensor(idx, dtype=torch.long)] if idx else self.emb[:0]

    def _pair_hint(self) -> str:
        if not self.paired:
            return ""
        return (f" This bank keys parts with their category ('{next(iter(self._pair_index))}', as the release's "
                "part+category banks do): look names up with category=...")

    def encoder_spec(self, source: str | None = None) -> str:
        """The :func:`~patchalign3d.text.get_text_encoder` spec of the encoder that built this bank.

        Raises:
            UnknownTextEncoderError: the bank's metadata does not tell (no silent fallback to another encoder).
        """
        where = source or f"the text bank's metadata ({len(self)} names)"
        spec = spec_from_meta(self.meta, source=where)
        if spec is None:
            raise UnknownTextEncoderError(f"{where} is empty: it does not say which text encoder built the bank")
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __repr__(self) -> str:
        who = self.meta.get("encoder") or self.meta.get("clip_model") or self.meta.get("backend", "?")
        return f"TextBank({len(self)} names, dim={self.dim}, encoder={who!r})"

    # -- files -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The released format: ``{"keys": list[str], "emb": FloatTensor (K, D), "meta": dict}``."""
        return {"keys": list(self._keys), "emb": self.emb.clone(), "meta": dict(self.meta)}

    def save(self, path: PathLike) -> None:
        """Write the released format with ``torch.save`` (atomically)."""
        _atomic_torch_save(self.to_dict(), Path(path).expanduser())

    @classmethod
    def from_dict(cls, data: Any, source: str = "text bank") -> TextBank:
        if not isinstance(data, dict):
            raise ValueError(
                f"{source}: expected a dict with 'keys', 'emb', 'meta', got {type(data).__name__}"
            )
        absent = [k for k in ("keys", "emb", "meta") if k not in data]
        if absent:
            raise ValueError(f"{source}: missing entries {absent} (expected 'keys', 'emb', 'meta')")
        try:
            _validate_bank(data["keys"], data["emb"], data["meta"])  # strict: no defaults for file contents
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        return cls(data["keys"], data["emb"], data["meta"])

    @classmethod
    def load(cls, path: PathLike) -> TextBank:
        """Read a released-format bank (``torch.load(weights_only=True)``: no code runs on load).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a valid bank (the message says what is wrong).
        """
        path = Path(path).expanduser()
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; a text bank is the one .pt file that TextBank.save writes")
        if not path.is_file():
            raise FileNotFoundError(f"text bank file not found: {path}")
        kind = sniff_file_kind(path)  # a file of another kind never reaches the unpickler
        if not kind.is_torch:
            raise ValueError(f"{path} is not a text bank: it is {kind.what}; give the .pt file that TextBank.save wrote")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path}: not a readable text bank ({type(err).__name__}: {err})") from err
        return cls.from_dict(data, source=str(path))

    # -- building ----------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        names: Sequence[str],
        encoder: TextEncoder | str | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        cache_dir: PathLike | bool | None = None,
        batch_size: int = 64,
        progress: bool = False,
        category: str | None = None,
    ) -> TextBank:
        """Encode part names into a bank whose keys are the cleaned names (``"name||category"`` with a category).

        Each name is cleaned, put into every template, encoded and normalised; the T prompt embeddings are
        averaged and the mean renormalised.

        Args:
            names: K part names (validated by :func:`validate_part_names`).
            encoder: a :class:`TextEncoder` or a spec for :func:`get_text_encoder` (None: OpenCLIP bigG).
            templates: T format strings with one ``{}`` (part name); with ``category`` also two (part name,
                category), e.g. CATEGORY_TEMPLATES or the release's ENSEMBLE_TEMPLATES (both kinds).
            cache_dir: cache folder; None -> :func:`default_cache_dir`; False -> no cache. Encoders with
                random weights are never cached.
            batch_size: prompts per encoder call.
            progress: show a tqdm bar over encoder calls.
            category: object category filled into two-field templates (cleaned like names); the keys become
                ``"name||category"``, as in the release's part+category banks.

        Returns:
            A bank with K keys and (K, D) L2-normalised float32 embeddings.
        """
        validate_part_names(names)
        keys = [clean_name(n) for n in names]
        if category is not None:
            category = clean_name(category)
            if not category:
                raise ValueError("category is blank after cleaning")
        templates = _check_templates(templates, category)
        if not isinstance(encoder, TextEncoder):
            encoder = get_text_encoder(encoder)

        cache = None
        if cache_dir is not False and encoder.cacheable:
            root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir).expanduser()
            cache = _EmbeddingCache(root, encoder.identifier, templates, category, encoder.dim)
        found = cache.get(keys) if cache is not None else {}
        todo = [k for k in keys if k not in found]
        if todo:
            new = _encode_names(encoder, todo, templates, category, batch_size, progress)
            fresh = dict(zip(todo, new))
            found.update(fresh)
            if cache is not None:
                cache.put(fresh)

        emb = torch.stack([found[k] for k in keys])
        meta = {
            **encoder.meta(),
            "text_dim": int(emb.shape[1]),
            "backend": encoder.backend,
            "model": encoder.model_name,
            "pretrained": encoder.pretrained,
            "encoder": encoder.identifier,
            "templates": list(templates),
        }
        if category is not None:
            meta["category"] = category
            keys = [f"{k}{PAIR_SEPARATOR}{category}" for k in keys]
        return cls(keys, emb, meta)


def _encode_names(encoder: TextEncoder, names: list[str], templates: tuple[str, ...], category: str | None,
                  batch_size: int, progress: bool) -> Tensor:
    """Template-averaged embeddings of K cleaned names -> (K, D)."""
    # template-major: row t*K + k; a one-field template takes the name, a two-field one (name, category)
    prompts = [t.format(n, category) if template_fields(t) == 2 else t.format(n)
               for t in templates for n in names]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"encoding {len(names)} names", unit="batch")
    emb = torch.cat([encoder.encode(prompts[s : s + batch_size], batch_size=batch_size) for s in starts])
    emb = F.normalize(emb.float(), dim=-1).view(len(templates), len(names), -1)
    return F.normalize(emb.mean(0), dim=-1)
