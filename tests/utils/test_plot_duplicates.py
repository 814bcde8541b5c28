"""dedupd.utils.plot_duplicates: imagededup's layout, titles, checks and messages, on real photographs."""

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedupd.methods import PHash
from dedupd.utils import plot_duplicates

matplotlib = pytest.importorskip("matplotlib")  # the `plot` extra (installed by `dev`)
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The axes titles of each figure plot_duplicates shows."""
    titles: list[list[str]] = []
    monkeypatch.setattr(plt, "show", lambda: titles.append([axes.get_title() for axes in plt.gcf().axes]))
    return titles


@pytest.fixture
def image_dir(tmp_path: Path, photos: list[Path]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    with Image.open(photos[2]) as image:
        rgb = image.convert("RGB")
    rgb.save(folder / "cat.jpg", quality=95)
    rgb.resize((rgb.width // 2, rgb.height // 2)).save(folder / "cat_small.jpg", quality=80)
    shutil.copy(folder / "cat.jpg", folder / "cat_copy.jpg")
    shutil.copy(photos[0], folder / "astronaut.png")
    return folder


def test_plots_the_original_and_its_duplicates_as_imagededup(image_dir: Path, tmp_path: Path,
                                                             shown: list[list[str]]) -> None:
    duplicates = PHash(verbose=False).find_duplicates(image_dir=image_dir)
    assert sorted(duplicates["cat.jpg"]) == ["cat_copy.jpg", "cat_small.jpg"]
    outfile = tmp_path / "plot.png"
    plot_duplicates(image_dir, duplicates, "cat.jpg", outfile=str(outfile))
    assert shown == [["Original Image: cat.jpg", *duplicates["cat.jpg"]]]
    with Image.open(outfile) as saved:
        assert saved.size == (1000, 1400)  # 10 x 14 inches at 100 dpi


def test_scores_are_in_the_titles(image_dir: Path, shown: list[list[str]]) -> None:
    scored: dict[str, Any] = {"cat.jpg": [("cat_copy.jpg", np.float32(0.98765)), ("cat_small.jpg", 2)]}
    plot_duplicates(str(image_dir), scored, "cat.jpg")
    assert shown == [["Original Image: cat.jpg", "cat_copy.jpg (0.988)", "cat_small.jpg (2)"]]


def test_bad_arguments_fail_as_in_imagededup(image_dir: Path, shown: list[list[str]]) -> None:
    with pytest.raises(AssertionError, match="Provided image directory does not exist"):
        plot_duplicates(image_dir / "missing", {"cat.jpg": ["cat_copy.jpg"]}, "cat.jpg")
    with pytest.raises(ValueError, match="Please provide a valid Duplicate map!"):
        plot_duplicates(image_dir, [("cat.jpg", [])], "cat.jpg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid filename present as a key"):
        plot_duplicates(image_dir, {"cat.jpg": ["cat_copy.jpg"]}, "dog.jpg")
    with pytest.raises(AssertionError, match="Provided filename has no duplicates!"):
        plot_duplicates(image_dir, {"astronaut.png": []}, "astronaut.png")
    assert shown == []
