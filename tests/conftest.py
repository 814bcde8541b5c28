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
