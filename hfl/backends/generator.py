"""Edit generators for the synthetic subset (paper Sec. 3.1: FLUX.1-Kontext and Step1X-Edit), one protocol:

    generator.edit(image RGB uint8, landmarks (68, 2), spec: EditSpec, instruction: str, seed: int) -> RGB

Backends (`backends.generator.name`):
* `geometric` (offline default): hfl.editing.GeometricEditor, a landmark-driven 3-D turn / expression
  displacement + piecewise-affine warp. Not a learned model: it moves pixels, it cannot create any.
* `flux-kontext`: diffusers `FluxKontextPipeline.from_pretrained(path)` from a local folder (GPU).
* `step1x-edit`: the pipeline class named in the local folder's model_index.json, from diffusers when it
  has it, else from the folder's own `pipeline.py` (diffusers 0.42 has no built-in Step1X-Edit class;
  running that file needs `trust_pipeline_code: true`), loaded with `from_pretrained(path)` and called
  like FLUX.1-Kontext (image, prompt, steps, guidance, generator, height, width).
* `http`: an OpenAI-compatible image-edit endpoint, POST {base_url}/images/edits (multipart: image, prompt,
  model; answer {"data": [{"b64_json": ...}]}); base URL and key from config or the environment
  (HFL_EDIT_API_BASE, HFL_EDIT_API_KEY). Never called by the tests.
The diffusion backends resize the edit back to the source size so landmarks stay in source pixels.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hfl.backends.base import BackendUnavailable, DropsModelWhenPickled

GENERATORS = ("geometric", "flux-kontext", "step1x-edit", "http")
DIFFUSION = ("flux-kontext", "step1x-edit")
ENV_BASE, ENV_KEY = "HFL_EDIT_API_BASE", "HFL_EDIT_API_KEY"


@dataclass
class GeneratorBackendConfig:
    name: str = "geometric"  # geometric (offline) | flux-kontext | step1x-edit | http
    path: str = ""  # flux-kontext / step1x-edit: local diffusers folder (model_index.json)
    device: str = "cuda"  # diffusion backends: torch device
    dtype: str = "bfloat16"  # diffusion backends: bfloat16 | float16 | float32
    steps: int = 28  # diffusion sampling steps
    guidance_scale: float = 2.5  # diffusion guidance (FLUX.1-Kontext default 2.5)
    max_side: int = 1024  # diffusion: longer image side fed to the model (multiple of 16)
    base_url: str = ""  # http: API base URL (empty: $HFL_EDIT_API_BASE)
    api_key: str = ""  # http: bearer key (empty: $HFL_EDIT_API_KEY)
    model: str = ""  # http: model name sent with the request
    timeout_s: float = 120.0  # http: request timeout
    trust_pipeline_code: bool = False  # step1x-edit: allow running the weights folder's own pipeline.py
    ring_scale: float = 1.6  # geometric: context ring around the face, times the landmark extent
    ring_follow: float = 0.5  # geometric: share of the head's motion the context ring follows


@runtime_checkable
class EditGenerator(Protocol):
    name: str

    def edit(
        self, image: np.ndarray, landmarks: np.ndarray, spec: Any, instruction: str, seed: int
    ) -> np.ndarray:
        """The edited RGB image, same size as `image`."""
        ...


def check_generator(cfg: GeneratorBackendConfig) -> list[str]:
    """Config and file checks (no model load)."""
    errors: list[str] = []
    if cfg.name not in GENERATORS:
        return [f"backends.generator.name: unknown '{cfg.name}' (one of {', '.join(GENERATORS)})"]
    if cfg.name in DIFFUSION:
        if importlib.util.find_spec("diffusers") is None:
            errors.append(
                f"backends.generator: {cfg.name} needs the 'diffusers' package (pip install diffusers)"
            )
        if not cfg.path:
            errors.append(f"backends.generator.path: required for {cfg.name} (a local diffusers folder)")
        elif not (Path(cfg.path) / "model_index.json").is_file():
            errors.append(f"backends.generator.path: {cfg.path}/model_index.json not found")
        if cfg.dtype not in ("bfloat16", "float16", "float32"):
            errors.append("backends.generator.dtype: one of bfloat16, float16, float32")
        if (
            cfg.name == "step1x-edit"
            and cfg.path
            and (Path(cfg.path) / "pipeline.py").is_file()
            and not cfg.trust_pipeline_code
        ):
            errors.append(
                "backends.generator.trust_pipeline_code: must be true to run the Step1X-Edit "
                "folder's pipeline.py"
            )
        if cfg.steps < 1 or cfg.max_side < 64:
            errors.append("backends.generator.steps: >= 1; max_side: >= 64")
    if cfg.name == "http":
        if not (cfg.base_url or os.environ.get(ENV_BASE)):
            errors.append(f"backends.generator.base_url: required for http (or set ${ENV_BASE})")
        if not (cfg.api_key or os.environ.get(ENV_KEY)):
            errors.append(f"backends.generator.api_key: required for http (or set ${ENV_KEY})")
    if cfg.name == "geometric" and not (cfg.ring_scale > 1 and 0 <= cfg.ring_follow <= 1):
        errors.append("backends.generator.ring_scale: > 1; ring_follow: in [0, 1]")
    return errors


class GeometricGenerator:
    name = "geometric"

    def __init__(self, cfg: GeneratorBackendConfig) -> None:
        from hfl.editing import GeometricEditor

        self.editor = GeometricEditor(cfg.ring_scale, cfg.ring_follow)

    def edit(
        self, image: np.ndarray, landmarks: np.ndarray, spec: Any, instruction: str, seed: int
    ) -> np.ndarray:
        return self.editor.edit(image, landmarks, spec).image


def step1x_pipeline_class(path: str) -> Any:
    """The pipeline class named by <path>/model_index.json `_class_name`: from diffusers when it has it,
    else from the folder's own pipeline.py (its code is executed: the config must say it trusts it)."""
    import importlib.util as iu

    import diffusers

    name = json.loads((Path(path) / "model_index.json").read_text())["_class_name"]
    name = name[-1] if isinstance(name, list) else name
    if hasattr(diffusers, name):
        return getattr(diffusers, name)
    spec = iu.spec_from_file_location(f"hfl_step1x_{abs(hash(path))}", Path(path) / "pipeline.py")
    if spec is None or spec.loader is None:
        raise BackendUnavailable(f"step1x-edit: {path}/pipeline.py not found for class {name}")
    module = iu.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise BackendUnavailable(f"step1x-edit: {path}/pipeline.py has no class {name}")
    return getattr(module, name)


def _fit_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(w, h))
    return max(16, int(w * s) // 16 * 16), max(16, int(h * s) // 16 * 16)


class DiffusionGenerator(DropsModelWhenPickled):
    """FLUX.1-Kontext / Step1X-Edit through diffusers, loaded lazily from a local folder."""

    def __init__(self, cfg: GeneratorBackendConfig) -> None:
        errors = check_generator(cfg)
        if errors:
            raise BackendUnavailable("; ".join(errors))
        self.cfg = cfg
        self.name = cfg.name
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        import torch

        dtype = getattr(torch, self.cfg.dtype)
        if self.cfg.name == "flux-kontext":
            from diffusers import FluxKontextPipeline

            pipe = FluxKontextPipeline.from_pretrained(
                self.cfg.path, torch_dtype=dtype, local_files_only=True
            )
        else:
            cls = step1x_pipeline_class(self.cfg.path)
            pipe = cls.from_pretrained(self.cfg.path, torch_dtype=dtype, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.cfg.device)

    def edit(
        self, image: np.ndarray, landmarks: np.ndarray, spec: Any, instruction: str, seed: int
    ) -> np.ndarray:
        import torch
        from PIL import Image

        pipe = self._get()
        h, w = image.shape[:2]
        tw, th = _fit_size(w, h, self.cfg.max_side)
        src = Image.fromarray(image).resize((tw, th), Image.BICUBIC)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        kwargs: dict[str, Any] = dict(
            image=src,
            prompt=instruction,
            num_inference_steps=self.cfg.steps,
            guidance_scale=self.cfg.guidance_scale,
            generator=gen,
            height=th,
            width=tw,
        )
        import inspect

        accepted = inspect.signature(pipe.__call__).parameters
        for k, v in (("max_area", tw * th), ("_auto_resize", False)):  # FLUX.1-Kontext: keep our size
            if k in accepted:
                kwargs[k] = v
        out = pipe(**kwargs).images[0]
        return np.asarray(out.convert("RGB").resize((w, h), Image.BICUBIC))


class HttpGenerator:
    """OpenAI-compatible POST {base_url}/images/edits (see the module docstring)."""

    name = "http"

    def __init__(self, cfg: GeneratorBackendConfig) -> None:
        errors = check_generator(cfg)
        if errors:
            raise BackendUnavailable("; ".join(errors))
        self.cfg = cfg
        self.base_url = (cfg.base_url or os.environ.get(ENV_BASE, "")).rstrip("/")
        self.api_key = cfg.api_key or os.environ.get(ENV_KEY, "")

    def build_request(self, image: np.ndarray, instruction: str, seed: int) -> Any:
        """The prepared request (tests inspect it; nothing is sent)."""
        import requests
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        data = {"prompt": instruction, "n": "1", "response_format": "b64_json", "seed": str(seed)}
        if self.cfg.model:
            data["model"] = self.cfg.model
        req = requests.Request(
            "POST",
            f"{self.base_url}/images/edits",
            headers={"Authorization": f"Bearer {self.api_key}"},
            data=data,
            files={"image": ("source.png", buf.getvalue(), "image/png")},
        )
        return req.prepare()

    @staticmethod
    def parse_response(content: bytes, size: tuple[int, int]) -> np.ndarray:
        """{"data": [{"b64_json": ...}]} -> RGB array resized to size (w, h)."""
        from PIL import Image

        payload = json.loads(content)
        item = (payload.get("data") or [{}])[0]
        if "b64_json" not in item:
            raise ValueError(f"image-edit API answer has no data[0].b64_json: {str(payload)[:200]}")
        img = Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).convert("RGB")
        return np.asarray(img.resize(size, Image.BICUBIC))

    def edit(
        self, image: np.ndarray, landmarks: np.ndarray, spec: Any, instruction: str, seed: int
    ) -> np.ndarray:
        import requests

        with requests.Session() as s:
            resp = s.send(self.build_request(image, instruction, seed), timeout=self.cfg.timeout_s)
        resp.raise_for_status()
        return self.parse_response(resp.content, (image.shape[1], image.shape[0]))


def load_generator(cfg: GeneratorBackendConfig) -> EditGenerator:
    if cfg.name == "geometric":
        return GeometricGenerator(cfg)
    if cfg.name in DIFFUSION:
        return DiffusionGenerator(cfg)
    if cfg.name == "http":
        return HttpGenerator(cfg)
    raise BackendUnavailable(
        f"backends.generator.name: unknown '{cfg.name}' (one of {', '.join(GENERATORS)})"
    )
