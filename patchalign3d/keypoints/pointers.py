"""2D pointers for lifting: given a rendered view and a keypoint name, where in the image is it?

A :class:`Pointer2D` answers ``point(image, name) -> [(u, v), ...]`` in pixels (``u`` right, ``v`` down, pixel
centres at ``+0.5``), possibly several answers or none. :func:`~patchalign3d.keypoints.lift_keypoints` also
passes ``view=`` (the view's depth, face ids and camera); pointers that only look at pixels ignore it.

- :class:`MolmoPointer`: the multimodal model ZeroKey uses, through transformers (needs its weights and,
  realistically, a GPU). It answers in text; :func:`parse_molmo_points` reads the points out of it.
- :class:`FeaturePointer`: offline. It scores the mesh with this package's patch features (the zero-shot
  field of :func:`~patchalign3d.keypoints.detect_keypoints`) and points at the best-scoring visible pixel, found
  through the view's depth. Lifting with it runs anywhere, so the whole lifting path is testable.
- :class:`OraclePointer`: the perfect pointer. It projects known 3D keypoints (annotations) into each view
  and answers where they are visible: lifting with it is the method's upper bound, what rendering,
  back-projection and clustering lose when the 2D answers are exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from patchalign3d.api import _resolve_model
from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.keypoints.scores import zero_shot_scores
from patchalign3d.text import get_text_encoder, spec_from_meta

#: ZeroKey's prompt (section 4.2 of the paper).
ZEROKEY_PROMPT = "Point to the {name} in this image."
DEFAULT_MOLMO = "allenai/Molmo-7B-D-0924"


@dataclass
class RenderedView:
    """One view of the (normalised) mesh, as lifting renders it.

    Attributes:
        index: view number.
        rgb: ``(R, R, 3)`` uint8 shaded image (what a pointer looks at).
        depth: ``(R, R)`` float32 distance along the viewing axis, ``inf`` off the mesh.
        face_ids: ``(R, R)`` int64 front face per pixel, ``-1`` off the mesh.
        rig: the :class:`data_engine.cameras.CameraRig` of all views.
        mesh: the normalised mesh that was rendered.
        transform: ``(4, 4)`` from the input mesh's frame to the normalised one.
    """

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    face_ids: np.ndarray
    rig: Any
    mesh: Any
    transform: np.ndarray

    def pixel_points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """World positions ``(M, 3)`` (in the normalised mesh's frame) of pixels, from their depth."""
        return unproject(self.rig, self.index, cols + 0.5, rows + 0.5, self.depth[rows, cols])


def unproject(rig: Any, view: int, u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Inverse of ``rig.project`` for one view: pixel coordinates and depth -> world points ``(M, 3)``."""
    u, v, depth = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (u, v, depth))
    r = rig.resolution
    ndc_x, ndc_y = u / r * 2 - 1, 1 - v / r * 2
    if rig.orthographic:
        cam = np.stack([ndc_x * rig.half_extent, ndc_y * rig.half_extent, -depth], axis=1)
    else:
        tan = np.tan(np.deg2rad(rig.fov_deg) / 2)
        cam = np.stack([ndc_x * depth * tan, ndc_y * depth * tan, -depth], axis=1)
    pose = rig.poses[view]
    return cam @ pose[:3, :3].T + pose[:3, 3]


@runtime_checkable
class Pointer2D(Protocol):
    """Anything that points at a named thing in an image."""

    def point(self, image: np.ndarray, name: str, *, view: RenderedView | None = None) -> list[tuple[float, float]]:
        """Pixel coordinates ``(u, v)`` of ``name`` in ``image`` ``(H, W, 3)`` uint8; ``[]`` when it is not there."""
        ...


# -- Molmo ----------------------------------------------------------------------------------------------------
_NUMBER = r"([-+]?\d+(?:\.\d+)?)"
_XY = re.compile(r"\bx(\d*)\s*=\s*\"\s*" + _NUMBER + r"\s*\"\s+y(\d*)\s*=\s*\"\s*" + _NUMBER + r"\s*\"")
_COORDS = re.compile(r"<points?\b[^>]*?\bcoords\s*=\s*\"([^\"]*)\"")


def parse_molmo_points(text: str, width: int, height: int) -> list[tuple[float, float]]:
    """Pixel coordinates of the points in a Molmo answer.

    Molmo (v1) writes ``<point x="61.5" y="40.6" alt="...">...</point>`` or, for several,
    ``<points x1=".." y1=".." x2=".." y2=".." ...>``, in percent of the image width and height. Molmo2 writes
    ``<points coords="...">``: an optional image index, then ``id x y`` triples in thousandths of the image.
    Values outside the image are dropped; an answer without points (``"There are none."``) gives ``[]``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    out: list[tuple[float, float]] = []
    for m in _XY.finditer(text):
        if m.group(1) != m.group(3):  # x2 must pair with y2
            continue
        x, y = float(m.group(2)), float(m.group(4))
        if 0.0 <= x <= 100.0 and 0.0 <= y <= 100.0:
            out.append((x / 100.0 * width, y / 100.0 * height))
    for m in _COORDS.finditer(text):
        tokens = m.group(1).split()
        if not tokens or not all(re.fullmatch(r"\d+(?:\.\d+)?", t) for t in tokens):
            continue
        if len(tokens) % 3 == 1:  # leading image index
            tokens = tokens[1:]
        for i in range(0, len(tokens) - 2, 3):
            x, y = float(tokens[i + 1]), float(tokens[i + 2])
            if 0.0 <= x <= 1000.0 and 0.0 <= y <= 1000.0:
                out.append((x / 1000.0 * width, y / 1000.0 * height))
    return out


class MolmoPointer:
    """Molmo through transformers, prompted as ZeroKey does ("Point to the {name} in this image.").

    Molmo v1 checkpoints (``allenai/Molmo-7B-D-0924``, ZeroKey's) ship their model code with the weights and
    load only with ``trust_remote_code=True`` (it runs code from the Hub: say so explicitly). Molmo2
    checkpoints (``allenai/Molmo2-8B``) load with transformers' own classes. Loading happens on the first
    :meth:`point` call. Never run in the test suite: it needs the weights (tens of GB) and a GPU.

    Args:
        model_id: Hub repo id or local folder.
        device: ``"cuda"``, ``"cpu"``... (default: ``device_map="auto"``).
        torch_dtype: passed to ``from_pretrained`` (``"auto"``: as stored, bf16).
        prompt: with ``{name}``.
        max_new_tokens: generation budget (an answer with a few points takes ~40 tokens).
        trust_remote_code: needed for Molmo v1.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MOLMO,
        *,
        device: str | None = None,
        torch_dtype: Any = "auto",
        prompt: str = ZEROKEY_PROMPT,
        max_new_tokens: int = 200,
        trust_remote_code: bool = False,
    ) -> None:
        if "{name}" not in prompt:
            raise ValueError(f"prompt must contain '{{name}}', got {prompt!r}")
        self.model_id, self.device, self.torch_dtype = model_id, device, torch_dtype
        self.prompt, self.max_new_tokens, self.trust_remote_code = prompt, max_new_tokens, trust_remote_code
        self._model = self._processor = None
        self._native = False

    def _load(self) -> None:
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(self.model_id, trust_remote_code=self.trust_remote_code)
        except OSError as err:
            raise WeightsUnavailableError(
                f"Molmo {self.model_id!r} is neither cached nor downloadable ({err}); download it where you have a "
                "network and pass its folder (--molmo-model PATH on the command line, MolmoPointer(PATH) in Python)"
            ) from err
        except ValueError as err:
            if "trust_remote_code" in str(err):
                raise ValueError(f"{self.model_id} ships its own model code: pass trust_remote_code=True to run it") from err
            raise
        place = {"device_map": self.device or "auto"}
        self._native = getattr(config, "model_type", "") == "molmo2"
        kwargs = dict(torch_dtype=self.torch_dtype, trust_remote_code=self.trust_remote_code, **place)
        if self._native:
            self._model = transformers.AutoModelForImageTextToText.from_pretrained(self.model_id, **kwargs)
        else:
            self._model = transformers.AutoModelForCausalLM.from_pretrained(self.model_id, **kwargs)
        self._processor = transformers.AutoProcessor.from_pretrained(self.model_id, trust_remote_code=self.trust_remote_code)
        self._model.eval()

    def generate(self, image: np.ndarray, text: str) -> str:
        """Molmo's raw answer to ``text`` about ``image`` ``(H, W, 3)`` uint8."""
        import torch
        from PIL import Image

        if self._model is None:
            self._load()
        picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
        proc, model = self._processor, self._model
        with torch.inference_mode():
            if self._native:
                messages = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": text}]}]
                inputs = proc.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True).to(model.device)
                out = model.generate(**inputs, max_new_tokens=self.max_new_tokens)
                return proc.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            # Molmo v1's own processor and generation entry point (its remote code)
            inputs = proc.process(images=[picture], text=text)
            inputs = {k: v.to(model.device).unsqueeze(0) for k, v in inputs.items()}
            config = __import__("transformers").GenerationConfig(max_new_tokens=self.max_new_tokens,
                                                                 stop_strings="<|endoftext|>")
            out = model.generate_from_batch(inputs, config, tokenizer=proc.tokenizer)
            return proc.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def point(self, image: np.ndarray, name: str, *, view: RenderedView | None = None) -> list[tuple[float, float]]:
        h, w = np.asarray(image).shape[:2]
        return parse_molmo_points(self.generate(image, self.prompt.format(name=name)), w, h)


# -- offline --------------------------------------------------------------------------------------------------
class FeaturePointer:
    """Points at the visible pixel whose surface point scores best for the name under the patch features.

    The mesh is sampled once (``num_points``) and scored for each name with the zero-shot field of
    :func:`~patchalign3d.keypoints.detect_keypoints` (patch cosines with the name's text, spread to the
    samples); a pixel takes the score of the sample nearest to its back-projected position. The answer is the
    centre of the best-scoring pixels. A name whose best patch probability stays under ``min_probability``
    gets no answer in any view (absent, as in :func:`~patchalign3d.keypoints.detect_keypoints`).

    Args:
        model: a :class:`~patchalign3d.PatchAlign3D`, a checkpoint path / repo id, or None (the release).
        text: as in :func:`patchalign3d.segment`.
        num_points: samples on the mesh.
        seed: for the sampling.
        min_probability: absence threshold (None: always answer).
    """

    def __init__(self, model: Any = None, text: Any = None, *, num_points: int = 2048, seed: int = 0,
                 min_probability: float | None = None) -> None:
        self.model, self.text, self.num_points, self.seed = model, text, num_points, seed
        self.min_probability = min_probability
        self._mesh_id: int | None = None
        self._samples: np.ndarray | None = None
        self._tree = None
        self._scores: dict[str, np.ndarray] = {}
        self._probability: dict[str, float] = {}

    def _prepare(self, mesh: Any) -> None:
        if self._mesh_id == id(mesh):
            return
        self.model = _resolve_model(self.model)
        if self.text is None or isinstance(self.text, str):  # one encoder for every name asked later
            self.text = get_text_encoder(self.text or spec_from_meta(self.model.text_meta))
        samples, _ = trimesh.sample.sample_surface(mesh, self.num_points, seed=self.seed)
        self._mesh_id, self._samples = id(mesh), samples.astype(np.float32)
        self._tree, self._scores, self._probability = cKDTree(self._samples), {}, {}

    def scores(self, name: str) -> np.ndarray:
        """``(num_points,)`` field of ``name`` on the samples of the prepared mesh."""
        if name not in self._scores:
            got = zero_shot_scores(self._samples, [name], self.model, self.text, seed=self.seed)
            self._scores[name], self._probability[name] = got.field[:, 0], float(got.probability[0])
        return self._scores[name]

    def probability(self, name: str) -> float:
        """The name's best patch probability on the prepared mesh."""
        self.scores(name)
        return self._probability[name]

    def point(self, image: np.ndarray, name: str, *, view: RenderedView | None = None) -> list[tuple[float, float]]:
        if view is None:
            raise ValueError("FeaturePointer reads the view's depth: call it through lift_keypoints (view=...)")
        self._prepare(view.mesh)
        if self.min_probability is not None and self.probability(name) < self.min_probability:
            return []
        rows, cols = np.nonzero(np.isfinite(view.depth))
        if len(rows) == 0:
            return []
        _, nearest = self._tree.query(view.pixel_points(rows, cols))
        s = self.scores(name)[nearest]
        best = s >= s.max()
        return [(float(cols[best].mean() + 0.5), float(rows[best].mean() + 0.5))]


class OraclePointer:
    """Answers with the true keypoints: each target projected into the view, where the view sees it.

    Args:
        targets: ``{name: (M, 3)}`` keypoints in the frame of the mesh given to
            :func:`~patchalign3d.keypoints.lift_keypoints` (e.g. KeypointNet's annotated ``xyz``, or the demo
            shapes' sidecar keypoints). Names it does not know get no answer.
        tolerance: a target counts as visible when the rendered depth within one pixel of its projection is
            within this of its own depth (units of the normalised mesh, whose bounding sphere has radius 0.95:
            the default 0.1 is 5 % of its size). A keypoint a little inside the surface it marks (the centre of a
            hub inside its cap) is still pointed at, as a person pointing at the picture would; one behind
            another part is not.
    """

    def __init__(self, targets: Mapping[str, Any], *, tolerance: float = 0.1) -> None:
        self.targets = {str(n): np.asarray(v, dtype=np.float64).reshape(-1, 3) for n, v in targets.items()}
        self.tolerance = float(tolerance)

    def point(self, image: np.ndarray, name: str, *, view: RenderedView | None = None) -> list[tuple[float, float]]:
        if view is None:
            raise ValueError("OraclePointer projects through the view's camera: call it through lift_keypoints (view=...)")
        targets = self.targets.get(name)
        if targets is None or not len(targets):
            return []
        uv, depth = view.rig.project(trimesh.transform_points(targets, view.transform))
        return [(float(u), float(v)) for (u, v), d in zip(uv[view.index], depth[view.index])
                if visible(view.depth, u, v, d, self.tolerance)]


def visible(depth_image: np.ndarray, u: float, v: float, depth: float, tolerance: float) -> bool:
    """Whether a point projecting to pixel ``(u, v)`` at ``depth`` is what the view shows there: inside the
    ``(R, R)`` image and within ``tolerance`` of the rendered depth of a pixel at most one away (grazing surfaces
    change depth fast from pixel to pixel)."""
    res = depth_image.shape[0]
    r, c = int(np.floor(v)), int(np.floor(u))
    if not (0 <= r < res and 0 <= c < res):
        return False
    window = depth_image[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
    seen = window[np.isfinite(window)]
    return bool(seen.size) and float(np.abs(seen - depth).min()) < tolerance
