"""The imagededup-compatible hashers: Hashing, PHash, AHash, DHash, WHash.

A thin facade: signatures, defaults, return types, warnings and errors follow
imagededup-spec.md §1 and §5-§12, while the work is done by `imaging.decode`, `imaging.hashing`
and `search.duplicates`. Deliberate differences (documented in README): no logging handlers are
attached to the root of the library, a folder is always decoded in worker processes (at least one, each
started with `spawn`: a script needs the `if __name__ == "__main__":` guard) where a crashing or hanging
decoder costs one file, `num_dist_workers` is accepted but the search is vectorised in-process, and
`outfile` with numpy scores does not crash.
"""

import logging
import multiprocessing
import os
from functools import partial
from typing import Any, ClassVar

import numpy as np

from dedupd.errors import Skipped
from dedupd.imaging.decode import load_image, preprocess
from dedupd.imaging.hashing import HASH_BITS, TARGET_SIZES, bits_to_int, hamming_distance, to_hex
from dedupd.methods._files import encodings_to_search, list_image_files, relative_name, removal_list, save_json
from dedupd.methods._workers import decoded, warn_invalid
from dedupd.search.duplicates import find_hash_duplicates, validate_distance_threshold

log = logging.getLogger(__name__)

CPU_COUNT = multiprocessing.cpu_count()
_DEFAULT_SEARCH_METHOD = "brute_force_cython"


def check_hash_array(image_array: np.ndarray) -> None:
    """imagededup's array shape rule: (h, w) or (h, w, 3); 3-D with other channel counts asserts."""
    shape = image_array.shape
    if len(shape) == 3 and shape[2] != 3:
        raise AssertionError(
            f"Received image array with shape: {shape}, expected image array shape is (x, y, 3)"
        )
    if len(shape) not in (2, 3):
        raise ValueError(
            f"Received image array with shape: {shape}, expected number of image array dimensions are 3 for "
            "rgb image and 2 for grayscale image!"
        )


def hash_file(method: str, image_file: str | os.PathLike[str]) -> str:
    """The hex hash of one file; raises `Skipped` when it cannot be read (a worker job of `encode_images`)."""
    gray = load_image(image_file, target_size=TARGET_SIZES[method], grayscale=True)
    return to_hex(bits_to_int(HASH_BITS[method](gray)))


class Hashing:
    """Base hasher (instantiable, 8x8 target as in imagededup); subclasses pick the algorithm."""

    method: ClassVar[str] = "ahash"

    def __init__(self, verbose: bool = True) -> None:
        self.target_size: tuple[int, int] = TARGET_SIZES[self.method]
        self.verbose = verbose
        self.results: dict[str, list[Any]] = {}

    @staticmethod
    def hamming_distance(hash1: str, hash2: str) -> np.int64:
        """Bits that differ between two hex hashes, as numpy.int64 (imagededup's type)."""
        return hamming_distance(hash1, hash2)

    @staticmethod
    def _array_to_hash(hash_mat: np.ndarray) -> str:
        """Pack a boolean matrix row-major, most significant bit first, into hex."""
        return "".join(f"{byte:02x}" for byte in np.packbits(np.asarray(hash_mat, dtype=bool).ravel()))

    def _hash_algo(self, image_array: np.ndarray) -> np.ndarray:
        return HASH_BITS[self.method](image_array)

    def _hash_func(self, image_array: np.ndarray) -> str:
        return self._array_to_hash(self._hash_algo(image_array))

    def encode_image(
        self, image_file: str | os.PathLike[str] | None = None, image_array: np.ndarray | None = None
    ) -> str | None:
        """Hash one file or array; None for an existing file that cannot be decoded."""
        try:
            if image_file and os.path.exists(image_file):
                try:
                    return hash_file(self.method, image_file)
                except Skipped as skip:
                    warn_invalid(image_file, skip)
                    return None
            if isinstance(image_array, np.ndarray):
                check_hash_array(image_array)
                return self._hash_func(preprocess(image_array, self.target_size, grayscale=True))
            raise ValueError
        except (ValueError, TypeError):
            raise ValueError("Please provide either image file path or image array!") from None

    def encode_images(
        self, image_dir: str | os.PathLike[str] | None = None, recursive: bool = False, num_enc_workers: int = CPU_COUNT
    ) -> dict[str, str]:
        """`{relative name: hex}` for every decodable file of `image_dir`, in glob order."""
        if not os.path.isdir(image_dir):  # type: ignore[arg-type]  # None raises TypeError, as upstream
            raise ValueError("Please provide a valid directory path!")
        assert image_dir is not None  # isdir(None) raised
        files = list_image_files(image_dir, recursive)
        log.info("Start: Calculating hashes...")
        hashes = dict(decoded(partial(hash_file, self.method), files, num_enc_workers, self.verbose))
        log.info("End: Calculating hashes!")
        return {relative_name(path, image_dir): value for path, value in hashes.items() if value}

    def find_duplicates(
        self,
        image_dir: str | os.PathLike[str] | None = None,
        encoding_map: dict[str, str] | None = None,
        max_distance_threshold: int = 10,
        scores: bool = False,
        outfile: str | os.PathLike[str] | None = None,
        search_method: str = _DEFAULT_SEARCH_METHOD,
        recursive: bool = False,
        num_enc_workers: int = CPU_COUNT,
        num_dist_workers: int = CPU_COUNT,
    ) -> dict[str, list[Any]]:
        """Duplicates of every image within `max_distance_threshold` bits (imagededup §8)."""
        validate_distance_threshold(max_distance_threshold)
        to_search = encodings_to_search(self.encode_images, image_dir, encoding_map, recursive, num_enc_workers)
        self.results = find_hash_duplicates(to_search, max_distance_threshold, scores, search_method)
        if outfile:
            save_json(_json_safe(self.results), outfile)
        return self.results

    def find_duplicates_to_remove(
        self,
        image_dir: str | os.PathLike[str] | None = None,
        encoding_map: dict[str, str] | None = None,
        max_distance_threshold: int = 10,
        outfile: str | os.PathLike[str] | None = None,
        recursive: bool = False,
        num_enc_workers: int = CPU_COUNT,
        num_dist_workers: int = CPU_COUNT,
    ) -> list[str]:
        """One file of every duplicate group is kept (the first in key order); the rest are listed."""
        duplicates = self.find_duplicates(
            image_dir=image_dir,
            encoding_map=encoding_map,
            max_distance_threshold=max_distance_threshold,
            scores=False,
            recursive=recursive,
            num_enc_workers=num_enc_workers,
            num_dist_workers=num_dist_workers,
        )
        return removal_list(duplicates, outfile)


def _json_safe(results: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """numpy.int64 scores as ints, so `search_method='brute_force'` + `outfile` saves instead of crashing."""
    return {
        key: [(name, int(score)) for name, score in items] if items and isinstance(items[0], tuple) else items
        for key, items in results.items()
    }


class PHash(Hashing):
    """Perceptual hash: DCT of a 32x32 luma image."""

    method = "phash"


class AHash(Hashing):
    """Average hash: 8x8 luma against its mean."""

    method = "ahash"


class DHash(Hashing):
    """Difference hash: horizontal gradients of a 9x8 luma image."""

    method = "dhash"


class WHash(Hashing):
    """Wavelet hash: Haar approximation of a 256x256 luma image."""

    method = "whash"
