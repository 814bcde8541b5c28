"""dedupd.methods against imagededup's recorded answers on the fixture images (tests/fixtures/).

The golden files come from imagededup 0.3.3.post2 itself (tests/fixtures/golden.py); the calls are
shared through tests/fixtures/cases.py, so each test here re-runs exactly what was recorded, on
dedupd's PHash/AHash/DHash/WHash, and requires the same hashes, orders, types, messages and warnings.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_cases() -> ModuleType:
    path = Path(__file__).parent / "fixtures" / "cases.py"
    spec = importlib.util.spec_from_file_location("dedupd_conformance_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cases = _load_cases()
GOLDEN_HASHES: dict[str, dict[str, str | None]] = cases.read_json(cases.GOLDEN_HASHES)
GOLDEN: dict[str, Any] = cases.read_json(cases.GOLDEN_BEHAVIOUR)


@pytest.fixture(scope="module")
def hashers() -> dict[str, Any]:
    """One dedupd hasher per method, imported here so a missing facade fails these tests, not collection."""
    import dedupd.methods  # noqa: PLC0415

    return {method: getattr(dedupd.methods, cases.CLASS_NAMES[method])(verbose=False) for method in cases.HASH_METHODS}


def encoding_map(method: str) -> dict[str, str]:
    """The map golden.py searched: golden hashes of every readable file, keys sorted."""
    return {key: str(GOLDEN_HASHES[key][method]) for key in GOLDEN["encoding_map_keys"]}


@pytest.mark.parametrize("relative", sorted(GOLDEN_HASHES))
def test_encode_image_matches_imagededup(hashers: dict[str, Any], relative: str) -> None:
    path = cases.IMAGES / relative
    got = {method: hasher.encode_image(image_file=str(path)) for method, hasher in hashers.items()}
    assert got == GOLDEN_HASHES[relative]


@pytest.mark.parametrize("recursive", [False, True], ids=["flat", "recursive"])
def test_encode_images_keys_order_and_hashes(hashers: dict[str, Any], recursive: bool) -> None:
    """Same (key, hash) pairs as imagededup, in this filesystem's glob order, unreadable files dropped."""
    recorded = GOLDEN["encode_images"]["recursive" if recursive else "flat"]
    order_here = [
        key for key in cases.discovered(cases.IMAGES, recursive) if GOLDEN_HASHES[Path(key).as_posix()]["phash"]
    ]
    for method, hasher in hashers.items():
        got = hasher.encode_images(str(cases.IMAGES), recursive=recursive)
        assert list(got) == order_here, method
        assert {Path(key).as_posix(): value for key, value in got.items()} == dict(recorded[method]), method


@pytest.mark.parametrize("method", cases.HASH_METHODS)
def test_find_duplicates_matches_imagededup(hashers: dict[str, Any], method: str) -> None:
    """Every threshold x search_method x scores combination: lists, their order, distances and types."""
    got_rows = cases.find_duplicates_grid(hashers[method], encoding_map(method))
    for got, want in zip(got_rows, GOLDEN["find_duplicates"][method], strict=True):
        label = f"{method} threshold={want['threshold']} {want['search_method']} scores={want['scores']}"
        assert got["types"] == want["types"], label
        assert got["result"] == want["result"], label


@pytest.mark.parametrize("method", cases.HASH_METHODS)
def test_find_duplicates_to_remove_matches_imagededup(hashers: dict[str, Any], method: str) -> None:
    assert cases.to_remove_grid(hashers[method], encoding_map(method)) == GOLDEN["find_duplicates_to_remove"][method]


@pytest.mark.parametrize("row", GOLDEN["hamming_distance"], ids=lambda row: repr(tuple(row["pair"])))
def test_hamming_distance_matches_imagededup(hashers: dict[str, Any], row: dict[str, Any]) -> None:
    hasher_class = type(hashers["phash"])
    got = cases.outcome(lambda: hasher_class.hamming_distance(*row["pair"]))
    assert got == {key: value for key, value in row.items() if key != "pair"}


@pytest.mark.parametrize("name", sorted(GOLDEN["encode_image_arrays"]))
def test_encode_image_array_matches_imagededup(hashers: dict[str, Any], name: str) -> None:
    array = cases.load_arrays()[name]
    got = {
        method: cases.outcome(lambda h=hasher: h.encode_image(image_array=array)) for method, hasher in hashers.items()
    }
    assert got == GOLDEN["encode_image_arrays"][name]


# Calls where dedupd departs from imagededup on purpose (decided by the lead, documented in
# dedupd/methods/hashing.py); checked for dedupd's own behaviour instead of the recorded one.
DELIBERATE_DIFFERENCES = {
    "find_duplicates brute_force scores outfile": "imagededup crashes saving numpy.int64 scores; dedupd saves them",
}


@pytest.mark.parametrize("name", sorted(set(GOLDEN["calls"]) - set(DELIBERATE_DIFFERENCES)))
def test_call_outcome_matches_imagededup(hashers: dict[str, Any], name: str, tmp_path: Path) -> None:
    """Validation errors, their messages, warnings and edge-case return values (spec §6-§8)."""
    call = cases.error_cases(hashers, encoding_map("phash"), tmp_path)[name]
    assert cases.outcome(call) == GOLDEN["calls"][name]


def test_brute_force_scores_outfile_is_saved(hashers: dict[str, Any], tmp_path: Path) -> None:
    """dedupd returns what imagededup would have returned and writes it, where imagededup raises TypeError."""
    call = cases.error_cases(hashers, encoding_map("phash"), tmp_path)["find_duplicates brute_force scores outfile"]
    got = cases.outcome(call)
    want = next(
        row["result"]
        for row in GOLDEN["find_duplicates"]["phash"]
        if (row["threshold"], row["search_method"], row["scores"]) == (10, "brute_force", True)
    )
    assert got["returns"] == want
    assert cases.read_json(tmp_path / "bf.json") == {key: entries for key, entries in want}


def test_saved_json_matches_imagededup(hashers: dict[str, Any], tmp_path: Path) -> None:
    assert cases.saved_json_cases(hashers, encoding_map("phash"), tmp_path) == GOLDEN["saved_json"]


def test_find_duplicates_from_directory_matches_imagededup(hashers: dict[str, Any]) -> None:
    got = hashers["phash"].find_duplicates(image_dir=str(cases.IMAGES), recursive=True, scores=True)
    as_posix = {Path(key).as_posix(): sorted(cases.to_json(entries)) for key, entries in got.items()}
    assert as_posix == GOLDEN["find_duplicates_image_dir_recursive_phash_10"]["result"]
