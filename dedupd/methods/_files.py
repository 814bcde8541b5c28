"""imagededup's file discovery and JSON output rules (imagededup-spec.md §2, §11), shared by all facades."""

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dedupd.search.duplicates import files_to_remove

log = logging.getLogger(__name__)


def list_image_files(image_dir: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Every non-directory entry whose own name does not start with '.', in glob order.

    No extension filter: the decoder decides. Files inside hidden directories are kept in
    recursive mode (only the final name is checked), exactly as imagededup does.
    """
    pattern = "**/*" if recursive else "*"
    return [
        path.absolute()
        for path in Path(image_dir).glob(pattern)
        if not path.is_dir() and not path.name.startswith(".")
    ]


def relative_name(path: Path, image_dir: str | os.PathLike[str]) -> str:
    """The key imagededup uses: the path relative to the absolute image directory."""
    return str(path.relative_to(Path(image_dir).absolute()))


def save_json(results: Any, filename: str | os.PathLike[str]) -> None:
    """imagededup's `save_json`: indent 2, sorted keys, ASCII escapes, tuples as arrays."""
    log.info("Start: Saving duplicates as json!")
    with open(filename, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    log.info("End: Saving duplicates as json!")


def removal_list(duplicates: dict[Any, list[Any]], outfile: str | os.PathLike[str] | None) -> list[Any]:
    """imagededup's `find_duplicates_to_remove` tail, shared by hashers and CNN: pick, optionally save."""
    removable = files_to_remove(duplicates)
    if outfile:
        save_json(removable, outfile)
    return removable


def encodings_to_search[E](
    encode_images: Callable[..., dict[str, E]],
    image_dir: str | os.PathLike[str] | None,
    encoding_map: Mapping[str, E] | None,
    recursive: bool,
    num_enc_workers: int,
) -> Mapping[str, E]:
    """imagededup's dispatch of find_duplicates: encode `image_dir` if given, else use `encoding_map`.

    Warns as imagededup does (SyntaxWarning for `recursive`, always a RuntimeWarning about
    `num_enc_workers` on the encoding_map path) and refuses calls that give neither.
    """
    if image_dir:
        return encode_images(image_dir, recursive=recursive, num_enc_workers=num_enc_workers)
    if encoding_map:
        if recursive:
            warnings.warn("recursive parameter is irrelevant when using encodings.", SyntaxWarning, stacklevel=3)
        warnings.warn(
            "Parameter num_enc_workers has no effect since encodings are already provided", RuntimeWarning, stacklevel=3
        )
        return encoding_map
    raise ValueError("Provide either an image directory or encodings!")
