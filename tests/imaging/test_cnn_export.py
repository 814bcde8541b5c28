"""`dedupd model export mobilenet-v3-small` (dedupd/imaging/export.py): torch -> ONNX for imagededup's CNN.

torch is not in dedupd's venv (a multi-GB download), so the exporter runs as the standalone script it
is meant to be, under an interpreter that has the `export` extra: $DEDUPD_TORCH_PYTHON, else the
benchmark peers' venv (.bench/peers311, made by bench/peers.sh). Weights cannot be downloaded here,
so the network is exported with `weights=None` (seeded random weights): this checks the export path,
the sidecar, dedupd's loading of the result and - where imagededup is installed beside torch - that
dedupd's preprocessing + ONNX model reproduce imagededup's own CNN encodings of the same network.
Skipped, with the reason, when no such interpreter exists.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dedupd.imaging.cnn import Encoder, ModelSpec
from dedupd.imaging.decode import load_rgb

REPO = Path(__file__).parents[2]
EXPORTER = REPO / "dedupd" / "imaging" / "export.py"
FIXTURES = REPO / "tests" / "fixtures" / "images"
PHOTOS = ["photo_01.jpg", "photo_02.jpg", "photo_04.jpg", "wide.jpg", "palette.gif"]


def torch_python(*modules: str) -> str:
    """The interpreter to run torch code with, or skip saying what is missing."""
    python = os.environ.get("DEDUPD_TORCH_PYTHON") or str(REPO / ".bench" / "peers311" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip(f"no torch interpreter: set DEDUPD_TORCH_PYTHON or run bench/peers.sh ({python} absent)")
    probe = subprocess.run([python, "-c", f"import {', '.join(modules)}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import {', '.join(modules)}: {probe.stderr.strip().splitlines()[-1]}")
    return python


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = torch_python("torch", "torchvision", "onnx", "onnxscript")
    out = tmp_path_factory.mktemp("export") / "mobilenet.onnx"
    run = subprocess.run(
        [python, str(EXPORTER), str(out), "--weights", "none"], capture_output=True, text=True, cwd=out.parent
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    return out


def test_export_writes_a_model_dedupd_loads_as_576_d(exported: Path) -> None:
    spec = ModelSpec.from_path(exported)
    assert (spec.name, spec.size, spec.resize, spec.layout, spec.dtype, spec.dim) == (
        "mobilenet-v3-small-untrained",
        224,
        256,
        "NCHW",
        "float32",
        576,
    )
    encoder = Encoder(spec, batch_size=2)
    vectors = encoder.embed([load_rgb(FIXTURES / name) for name in PHOTOS])
    assert vectors.shape == (len(PHOTOS), 576) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


IMAGEDEDUP_REFERENCE = """
import importlib.util, sys
import numpy as np
from imagededup.methods import CNN
from imagededup.utils import CustomModel
from imagededup.utils.models import MobilenetV3

loader = importlib.util.spec_from_file_location("export", sys.argv[1])
export = importlib.util.module_from_spec(loader)
loader.loader.exec_module(export)
model = CustomModel(name="exported", model=export.build_feature_extractor(None), transform=MobilenetV3.transform)
encodings = CNN(verbose=False, model_config=model).encode_images(sys.argv[2])
np.savez(sys.argv[3], **encodings)
"""


def test_exported_model_reproduces_imagededups_cnn_encodings(exported: Path, tmp_path: Path) -> None:
    python = torch_python("torch", "torchvision", "imagededup")
    images = tmp_path / "images"
    images.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, images / name)
    reference = tmp_path / "reference.npz"
    run = subprocess.run(
        [python, "-c", IMAGEDEDUP_REFERENCE, str(EXPORTER), str(images), str(reference)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    theirs = np.load(reference)
    ours = Encoder(ModelSpec.from_path(exported)).embed([load_rgb(images / name) for name in PHOTOS])
    for row, name in enumerate(PHOTOS):
        expected = theirs[name] / np.linalg.norm(theirs[name])
        assert float(ours[row] @ expected) > 0.9999, name
        assert np.allclose(ours[row], expected, atol=1e-4), name
