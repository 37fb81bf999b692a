"""ZeroKey's first stage: which keypoints to look for on a shape of a category.

ZeroKey (section 4.1) asks a multimodal chat model to "List possible salient key points (in text)" and gets a
JSON list of names ("nose", "wing tip", "tail" for an airplane), which the pointer is then asked about one by
one. :class:`KeypointNamer` gives the names of a category from:

- an offline table (default): the KeypointNet benchmark categories' names (:data:`DEFAULT_NAMES` of
  :mod:`patchalign3d.keypoints.keypointnet`, one name per group of symmetric semantic ids), or a table of your
  own;
- a chat model through transformers (``chat_model="Qwen/Qwen2.5-0.5B-Instruct"``, any instruction-tuned
  causal LM with a chat template): asked for the category's keypoint names as a JSON list. It needs the
  model's weights (downloaded once) and is never run in the test suite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.keypoints.keypointnet import DEFAULT_NAMES
from patchalign3d.keypoints.shapes import validate_names

#: ZeroKey's request (section 4.1), with the category in words instead of a rendering, and the answer's form.
NAMER_PROMPT = ("List possible salient key points (in text) of a {category}: points a person would click to mark "
                "its shape. Answer with a JSON list of short names only, e.g. [\"nose\", \"wing tip\"].")


def benchmark_table() -> dict[str, list[str]]:
    """``{category: [names]}`` of the KeypointNet benchmark categories, in semantic-id order, each name once."""
    return {c: list(dict.fromkeys(t[i] for i in sorted(t))) for c, t in DEFAULT_NAMES.items()}


def parse_names(text: str) -> list[str]:
    """Keypoint names in a chat model's answer: the first JSON list of strings in it, else its bulleted or
    numbered lines; cleaned, lower-cased and without repeats. ``[]`` when there are none."""
    for match in re.finditer(r"\[[^\[\]]*\]", text, flags=re.DOTALL):
        try:
            items = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(items, list) and items and all(isinstance(i, str) for i in items):
            return _clean(items)
    lines = [re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", ln) for ln in text.splitlines()
             if re.match(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", ln)]
    return _clean(lines)


def _clean(items: Sequence[str]) -> list[str]:
    names = [re.sub(r"\s+", " ", i.strip().strip("\"'`.:").lower()) for i in items]
    return list(dict.fromkeys(n for n in names if n))


class KeypointNamer:
    """The keypoint names to ask for on shapes of a category.

    Args:
        table: ``{category: [names]}`` (default :func:`benchmark_table`); ignored with ``chat_model``.
        chat_model: a transformers chat model (Hub id or folder) to ask instead of the table.
        prompt: the request, with ``{category}``.
        device: where the chat model runs (default ``device_map="auto"``).
        max_new_tokens: its answer's budget.

    >>> KeypointNamer().names("airplane")[:3]
    ['nose of the airplane', 'cockpit', 'tail end of the airplane']
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[str]] | None = None,
        *,
        chat_model: str | None = None,
        prompt: str = NAMER_PROMPT,
        device: str | None = None,
        max_new_tokens: int = 200,
    ) -> None:
        if "{category}" not in prompt:
            raise ValueError(f"prompt must contain '{{category}}', got {prompt!r}")
        self.table = {str(c).lower(): list(v) for c, v in (table if table is not None else benchmark_table()).items()}
        self.chat_model, self.prompt, self.device, self.max_new_tokens = chat_model, prompt, device, max_new_tokens
        self._pipeline: Any = None

    @property
    def categories(self) -> list[str]:
        """The table's categories (any category with a chat model)."""
        return sorted(self.table)

    def names(self, category: str) -> list[str]:
        """The keypoint names of ``category``.

        Raises:
            KeyError: a category the table does not have (the message lists those it has).
            ValueError: a chat model whose answer holds no names.
        """
        if self.chat_model is None:
            key = category.strip().lower()
            if key not in self.table:
                raise KeyError(f"no keypoint names for the category {category!r}; the table has {self.categories} "
                               "(give the names yourself, or a table or chat model to KeypointNamer)")
            return validate_names(self.table[key])
        answer = self.ask(self.prompt.format(category=category))
        names = parse_names(answer)
        if not names:
            raise ValueError(f"{self.chat_model} named no keypoints for {category!r}; it answered: {answer[:200]!r}")
        return validate_names(names)

    def ask(self, request: str) -> str:
        """The chat model's answer to one user message."""
        if self._pipeline is None:
            import transformers

            try:
                self._pipeline = transformers.pipeline("text-generation", model=self.chat_model,
                                                       device_map=self.device or "auto", torch_dtype="auto")
            except OSError as err:
                raise WeightsUnavailableError(
                    f"chat model {self.chat_model!r} is neither cached nor downloadable ({err}); download it where "
                    "you have a network and pass its folder"
                ) from err
        out = self._pipeline([{"role": "user", "content": request}], max_new_tokens=self.max_new_tokens,
                             do_sample=False, return_full_text=False)
        return str(out[0]["generated_text"])
