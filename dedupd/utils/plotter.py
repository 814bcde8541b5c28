"""`plot_duplicates(image_dir, duplicate_map, filename, outfile=None)`, as imagededup 0.3.3 has it.

The file and its duplicates from a `find_duplicates` map (with or without scores): the original in the middle
of the top row, titled "Original Image: <name>", the duplicates four to a row below, each titled with its name
and, for a map with scores, "(score)" (floats to 3 decimals). Saved to `outfile` when given, then shown.
Same checks and messages as imagededup: an AssertionError for a missing directory or a file without
duplicates, a ValueError for a map that is not a dict or a filename that is not one of its keys.
Deliberate difference: the figure really is 10 x 14 inches (imagededup makes one and draws on another).
matplotlib is imported when called (the `plot` extra), so `import dedupd.utils` needs nothing more.
"""

import math
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from dedupd.imaging.decode import load_rgb

_COLUMNS = 4


def _formatter(value: Any) -> Any:
    """Floats to 3 decimals, other scores (hash distances) as they are."""
    if isinstance(value, np.floating | float):
        return f"{value:.3f}"
    return value


def _validate_args(image_dir: PurePath | str, duplicate_map: dict[str, Any], filename: str) -> Path:
    directory = Path(image_dir)
    assert directory.is_dir(), ("Provided image directory does not exist! Please provide the image directory where "
                                "all files are present!")
    if not isinstance(duplicate_map, dict):
        raise ValueError("Please provide a valid Duplicate map!")
    if filename not in duplicate_map:
        raise ValueError("Please provide a valid filename present as a key in the duplicate_map!")
    return directory


def plot_duplicates(image_dir: PurePath | str, duplicate_map: dict[str, Any], filename: str,
                    outfile: str | None = None) -> None:
    """Plot `filename` and its duplicates from `duplicate_map` (see the module doc)."""
    directory = _validate_args(image_dir, duplicate_map, filename)
    retrieved = duplicate_map[filename]
    assert len(retrieved) != 0, "Provided filename has no duplicates!"
    import matplotlib.pyplot as plt
    from matplotlib import gridspec

    scores = isinstance(retrieved[0], tuple)
    rows = math.ceil(len(retrieved) / _COLUMNS) + 1
    fig = plt.figure(figsize=(10, 14))
    grid = gridspec.GridSpec(nrows=rows, ncols=_COLUMNS, figure=fig)
    top = fig.add_subplot(grid[0, 1:3])  # the original in the middle of the top row
    top.imshow(load_rgb(directory / filename))
    top.set_title(f"Original Image: {filename}")
    top.axis("off")
    for index, item in enumerate(retrieved):
        name, title = (item[0], f"{item[0]} ({_formatter(item[1])})") if scores else (item, item)
        axes = fig.add_subplot(grid[index // _COLUMNS + 1, index % _COLUMNS])
        axes.imshow(load_rgb(directory / name))
        axes.set_title(title, fontsize=6)
        axes.axis("off")
    grid.tight_layout(fig)
    if outfile:
        fig.savefig(outfile)
    plt.show()
    plt.close(fig)
