"""dedupd.methods.CNN: imagededup's CNN API (imagededup-spec.md §1, §2, §10, §11, §13) on ONNX Runtime.

Real files, the real default model and real worker processes; similarity searches on hand-made
encodings where the expected answer must be exact.
"""

import json
import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image

from dedupd.errors import ModelError
from dedupd.imaging.cnn import CPU, ModelSpec
from dedupd.methods import CNN
from dedupd.methods.cnn import cosine_duplicates, validate_similarity_threshold

FIXTURES = Path(__file__).parents[1] / "fixtures" / "images"
TINY_MODEL = Path(__file__).parents[1] / "imaging" / "cnn_models" / "mean_rgb_nchw.onnx"


@pytest.fixture(scope="module")
def cnn() -> CNN:
    return CNN(verbose=False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two duplicate pairs, one loner, one unreadable file, one hidden file, one in a sub-folder."""
    for name, target in [
        ("photo_01.jpg", "b_photo_01.jpg"),
        ("sub/photo_01_dup.png", "a_photo_01_dup.png"),
        ("photo_02.jpg", "c_photo_02.jpg"),
        ("photo_02_bright.jpg", "d_photo_02_bright.jpg"),
        ("photo_03.jpg", "e_photo_03.jpg"),
        ("not_an_image.jpg", "f_broken.jpg"),
        ("photo_04.jpg", ".hidden.jpg"),
        ("sub/photo_05.jpg", "sub/photo_05.jpg"),
    ]:
        (tmp_path / target).parent.mkdir(exist_ok=True)
        shutil.copy(FIXTURES / name, tmp_path / target)
    return tmp_path


def unit(degrees: float) -> np.ndarray:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))], np.float32)


# ---------------------------------------------------------------------------------------------------------
# Construction


def test_import_from_methods_and_default_model(cnn: CNN) -> None:
    assert cnn.model_config.name == "sscd-distilled" and cnn.verbose == 0
    assert cnn.device in ("cpu", "cuda") and (cnn.device == "cpu") == (cnn.model.provider == CPU)
    assert cnn.transform(np.zeros((300, 400, 3), np.uint8)).shape == (288, 384, 3)


def test_model_config_accepts_names_paths_and_specs(tmp_path: Path) -> None:
    assert CNN(model_config="sscd").model_config.name == "sscd"
    spec = ModelSpec.from_path(TINY_MODEL, size=8, layout="NCHW", normalisation="unit")
    tiny = CNN(verbose=False, model_config=spec)
    assert tiny.encode_image(image_array=np.zeros((20, 20, 3), np.uint8)).shape == (1, 4)


class CustomModel(NamedTuple):  # imagededup.utils.CustomModel's shape
    name: str = "default_model"
    model: Any = None
    transform: Any = None


def test_torch_custom_models_are_refused_with_a_way_forward() -> None:
    with pytest.raises(ModelError, match="ONNX models.*torch CustomModel.*mobilenet-v3-small"):
        CNN(model_config=CustomModel(name="mine", model=object(), transform=object()))


# ---------------------------------------------------------------------------------------------------------
# encode_image


def test_encode_image_from_file_and_array(cnn: CNN) -> None:
    from_file = cnn.encode_image(FIXTURES / "photo_01.jpg")
    from_str = cnn.encode_image(str(FIXTURES / "photo_01.jpg"))
    assert from_file.shape == (1, 512) and from_file.dtype == np.float32
    assert np.array_equal(from_file, from_str)
    pixels = np.asarray(Image.open(FIXTURES / "photo_01.jpg").convert("RGB"))
    assert np.allclose(cnn.encode_image(image_array=pixels), from_file, atol=1e-5)


def test_gray_arrays_are_tiled_to_rgb(cnn: CNN) -> None:
    gray = np.random.default_rng(1).integers(0, 256, (60, 80)).astype(np.uint8)
    tiled = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(cnn.encode_image(image_array=gray), cnn.encode_image(image_array=tiled))


def test_float_arrays_are_cast_like_imagededup(cnn: CNN) -> None:
    pixels = np.random.default_rng(2).uniform(0, 255, (40, 50, 3))
    assert np.array_equal(cnn.encode_image(image_array=pixels), cnn.encode_image(image_array=pixels.astype("uint8")))


def test_encode_image_errors(cnn: CNN, tmp_path: Path) -> None:
    for bad in [tmp_path / "absent.jpg", str(tmp_path), tmp_path, "", None]:
        with pytest.raises(ValueError, match="Please provide either image file path or image array!"):
            cnn.encode_image(bad)
    with pytest.raises(AssertionError, match=r"\(x, y, 3\)"):
        cnn.encode_image(image_array=np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="Received image array with shape"):
        cnn.encode_image(image_array=np.zeros((8,), np.uint8))


def test_unreadable_file_gives_none(cnn: CNN) -> None:
    assert cnn.encode_image(FIXTURES / "not_an_image.jpg") is None
    assert cnn.encode_image(FIXTURES / "image.avif") is None  # outside imagededup's format list


# ---------------------------------------------------------------------------------------------------------
# encode_images


def test_encode_images_sorted_keys_vectors_and_skips(cnn: CNN, photos: Path) -> None:
    encodings = cnn.encode_images(photos)
    assert list(encodings) == [
        "a_photo_01_dup.png",
        "b_photo_01.jpg",
        "c_photo_02.jpg",
        "d_photo_02_bright.jpg",
        "e_photo_03.jpg",
    ]
    assert all(v.shape == (512,) and v.dtype == np.float32 for v in encodings.values())
    assert np.allclose(encodings["b_photo_01.jpg"], cnn.encode_image(photos / "b_photo_01.jpg")[0], atol=1e-5)
    assert cnn.encoding_map is encodings


def test_encode_images_recursive_uses_relative_names(cnn: CNN, photos: Path) -> None:
    assert "sub/photo_05.jpg" in cnn.encode_images(str(photos), recursive=True)


def test_one_or_two_worker_processes_give_the_same_encodings(cnn: CNN, photos: Path) -> None:
    one = cnn.encode_images(photos, recursive=True)  # num_enc_workers=0: still one worker process
    pooled = cnn.encode_images(photos, recursive=True, num_enc_workers=2)
    assert list(pooled) == list(one)
    assert all(np.array_equal(pooled[name], one[name]) for name in one)


def test_a_crashing_decoder_costs_its_file_only(cnn: CNN, photos: Path, decode_faults: None,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A file whose decode kills its worker (tests/decode_faults/) is logged as invalid; the others are encoded."""
    expected = cnn.encode_images(photos)
    shutil.copy(photos / "c_photo_02.jpg", photos / "crash_c.jpg")
    with caplog.at_level("WARNING"):
        got = cnn.encode_images(photos, num_enc_workers=2)
    assert list(got) == list(expected)
    assert all(np.array_equal(got[name], expected[name]) for name in expected)
    assert any("crash_c.jpg" in r.getMessage() and "decoder worker killed by SIGSEGV" in r.getMessage()
               for r in caplog.records)


def test_nothing_readable_gives_an_empty_map(cnn: CNN, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "not_an_image.jpg", tmp_path / "x.jpg")
    assert cnn.encode_images(tmp_path) == {}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cnn.encode_images(empty) == {}


def test_encode_images_needs_a_directory(cnn: CNN) -> None:
    for bad in [FIXTURES / "photo_01.jpg", "/nonexistent/dir", None]:
        with pytest.raises(ValueError, match="Please provide a valid directory path!"):
            cnn.encode_images(bad)


def test_progress_bar_only_when_verbose(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    CNN(verbose=False).encode_images(photos)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    CNN(verbose=True).encode_images(photos)
    assert "%" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# find_duplicates


@pytest.mark.parametrize("threshold", [1, np.float32(0.9), "0.9", True])
def test_threshold_must_be_a_python_float(threshold: object) -> None:
    with pytest.raises(TypeError, match=r"Threshold must be a float between -1.0 and 1.0"):
        validate_similarity_threshold(threshold)


@pytest.mark.parametrize("threshold", [1.0001, -1.5])
def test_threshold_range(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"Threshold must be a float between -1.0 and 1.0"):
        validate_similarity_threshold(threshold)


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 1.0, np.float64(0.5)])
def test_valid_thresholds(threshold: float) -> None:
    validate_similarity_threshold(threshold)


def test_threshold_is_checked_before_anything_else(cnn: CNN) -> None:
    with pytest.raises(TypeError):
        cnn.find_duplicates(min_similarity_threshold=1)


def test_find_duplicates_needs_a_directory_or_encodings(cnn: CNN) -> None:
    for kwargs in [{}, {"encoding_map": {}}, {"image_dir": ""}]:
        with pytest.raises(ValueError, match="Provide either an image directory or encodings!"):
            cnn.find_duplicates(**kwargs)


def test_encoding_map_warnings(cnn: CNN) -> None:
    encodings = {"a": unit(0), "b": unit(10)}
    with pytest.warns(RuntimeWarning, match="num_enc_workers has no effect"):
        cnn.find_duplicates(encoding_map=encodings, min_similarity_threshold=0.9)
    with pytest.warns(SyntaxWarning, match="recursive parameter is irrelevant"), pytest.warns(RuntimeWarning):
        cnn.find_duplicates(encoding_map=encodings, min_similarity_threshold=0.9, recursive=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_lists_follow_map_order_exclude_self_and_carry_float_scores(cnn: CNN) -> None:
    encodings = {"z": unit(0), "y": unit(20), "x": unit(5), "w": unit(90), "v": unit(0)}
    result = cnn.find_duplicates(encoding_map=encodings, min_similarity_threshold=0.9, scores=True)
    assert list(result) == ["z", "y", "x", "w", "v"]
    assert [name for name, _ in result["z"]] == ["y", "x", "v"]  # map order, not score order
    assert result["w"] == []
    assert all(type(score) is float for found in result.values() for _, score in found)
    assert result["z"][2][1] == pytest.approx(1.0, abs=1e-6)  # an identical vector is listed, itself is not
    assert cnn.results is result
    names_only = cnn.find_duplicates(encoding_map=encodings, min_similarity_threshold=0.9)
    assert names_only["x"] == ["z", "y", "v"]


def test_unnormalised_and_row_shaped_encodings_are_accepted() -> None:
    encodings = {"a": np.array([[3.0, 0.0]]), "b": np.array([10.0, 1.0]), "c": np.zeros(2)}
    assert cosine_duplicates(encodings, 0.9) == {"a": ["b"], "b": ["a"], "c": []}


def test_chunked_search_equals_the_full_matrix() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(150, 8)).astype(np.float32)
    vectors[50] = vectors[7]
    encodings = {f"k{i:03d}": v for i, v in enumerate(vectors)}
    unit_rows = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    full = unit_rows @ unit_rows.T
    expected = {f"k{i:03d}": [f"k{j:03d}" for j in range(150) if j != i and full[i, j] >= 0.6] for i in range(150)}
    assert cosine_duplicates(encodings, 0.6, chunk_elements=7 * 150) == expected
    assert cosine_duplicates(encodings, 0.6) == expected


def test_default_threshold_is_the_models(cnn: CNN, photos: Path) -> None:
    result = cnn.find_duplicates(photos)
    assert result == cnn.find_duplicates(photos, min_similarity_threshold=cnn.model_config.threshold)
    assert result["a_photo_01_dup.png"] == ["b_photo_01.jpg"]
    assert result["d_photo_02_bright.jpg"] == ["c_photo_02.jpg"]
    assert result["e_photo_03.jpg"] == []
    assert "f_broken.jpg" not in result and ".hidden.jpg" not in result


def test_outfile_is_imagededups_json(cnn: CNN, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "dups.json"
    result = cnn.find_duplicates(photos, scores=True, outfile=out)
    assert out.read_text() == json.dumps(
        {key: [list(item) for item in found] for key, found in result.items()}, indent=2, sort_keys=True
    )


# ---------------------------------------------------------------------------------------------------------
# find_duplicates_to_remove


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_removal_walks_keys_in_order(cnn: CNN, tmp_path: Path) -> None:
    # 1~2 and 2~3 (cos 30 deg = 0.87) but not 1~3 (cos 60 deg): imagededup's docs example -> ['2']
    encodings = {"1": unit(0), "2": unit(30), "3": unit(60), "4": unit(180)}
    out = tmp_path / "remove.json"
    assert cnn.find_duplicates_to_remove(encoding_map=encodings, min_similarity_threshold=0.8, outfile=out) == ["2"]
    assert json.loads(out.read_text()) == ["2"]


def test_removal_keeps_the_first_file_in_sorted_order(cnn: CNN, photos: Path) -> None:
    assert sorted(cnn.find_duplicates_to_remove(photos)) == ["b_photo_01.jpg", "d_photo_02_bright.jpg"]


def test_removal_without_input_is_a_value_error(cnn: CNN) -> None:
    with pytest.raises(ValueError, match="Provide either an image directory or encodings!"):
        cnn.find_duplicates_to_remove()
