"""Shared test fixtures: real photographs, and the distinct photographs made from them (tests/fixtures/photos.py)."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _skimage_data() -> Path:
    import skimage  # dev extra: ships real photographs as plain files

    return Path(skimage.__file__).parent / "data"


#: Real photographs shipped inside scikit-image (read in place, never copied into the repo).
PHOTO_NAMES = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "hubble_deep_field.jpg",
    "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg", "brick.png", "grass.png", "gravel.png",
)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Paths of real photographs, all distinct scenes."""
    data = _skimage_data()
    return [data / name for name in PHOTO_NAMES]


def _fixture_module(name: str) -> ModuleType:
    """A module of tests/fixtures/ by path (the tests are not a package: --import-mode=importlib)."""
    module_name = f"dedupd_test_fixtures_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(__file__).parent / "fixtures" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(scope="session")
def photo_set() -> ModuleType:
    """tests/fixtures/photos.py: the generator of the distinct photographs."""
    return _fixture_module("photos")


@pytest.fixture(scope="session")
def dng() -> ModuleType:
    """tests/fixtures/dng.py: DNG files (camera RAW) made from real photographs by tifffile."""
    return _fixture_module("dng")


@pytest.fixture(scope="session")
def photo_files(photo_set: ModuleType) -> list[Path]:
    """Paths of 200+ distinct real photographs (96 px JPEG tiles), made once into a cache."""
    return photo_set.photo_paths()


@pytest.fixture(scope="session")
def photo_bytes(photo_set: ModuleType) -> list[bytes]:
    """The JPEG bytes of `photo_files`: no two are duplicates to dedupd's matcher (tests/test_photos.py)."""
    return photo_set.photo_bytes()


# ---- CI: no test may be skipped but for a GPU ----

#: With this set to 1 (.ci/run does), a run that skipped any test fails, unless the skip is about a CUDA GPU:
#: CI installs everything else the tests need, so any other skip means a test silently did not run.
NO_SKIPS_ENV = "DEDUPD_TEST_NO_SKIPS"
_skipped: list[tuple[str, str]] = []


def _allowed_skip(reason: str) -> bool:
    return "CUDA" in reason or "GPU" in reason


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(NO_SKIPS_ENV) != "1":
        return
    forbidden = [(nodeid, reason) for nodeid, reason in _skipped if not _allowed_skip(reason)]
    if forbidden:
        lines = "\n".join(f"  {nodeid}: {reason}" for nodeid, reason in forbidden)
        print(f"\n{NO_SKIPS_ENV}=1: {len(forbidden)} test(s) skipped for a reason other than a GPU:\n{lines}")
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: On PYTHONPATH, encode workers misbehave on files named hang*, crash*, exit*, raise*, gate* (its sitecustomize).
DECODE_FAULTS = Path(__file__).parent / "decode_faults"


@pytest.fixture
def decode_faults_env() -> dict[str, str]:
    """The environment entry that makes the encode workers of a process started with it run tests/decode_faults."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(DECODE_FAULTS), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def decode_faults(monkeypatch: pytest.MonkeyPatch, decode_faults_env: dict[str, str]) -> None:
    """Encode workers started in this test (they inherit this process's environment) run tests/decode_faults."""
    for name, value in decode_faults_env.items():
        monkeypatch.setenv(name, value)
