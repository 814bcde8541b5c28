"""The tests' generated photographs (tests/fixtures/photos.py): enough of them, distinct to dedupd's own CNN
and hash with a margin, the same bytes on every run, and safe to make from several runs at once."""

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from dedupd.imaging.cnn import Encoder
from dedupd.imaging.encode import encode_path
from dedupd.search.matcher import MatcherSettings, oriented_distances


def test_there_are_enough_and_all_differ(photo_files: list[Path]) -> None:
    assert len(photo_files) >= 200, "the e2e tests use up to 200 distinct photos"
    assert len({path.read_bytes() for path in photo_files}) == len(photo_files)


def test_no_two_are_duplicates_to_the_cnn_or_the_orientation_aware_hash(photo_files: list[Path]) -> None:
    """The matcher's thresholds with a margin: a re-compressed or mirrored copy of one photo must not match another.

    The set was selected at CNN similarity < 0.5 and pHash distance > 14 bits (or similarity < 0.3); the
    margins checked here leave room for a GPU's slightly different floats.
    """
    settings = MatcherSettings.defaults()
    encoder = Encoder(intra_op_threads=1)
    encoded = [encode_path(path, cnn_spec=encoder.spec) for path in photo_files]
    embeddings = encoder.embed_prepared([e.cnn_input for e in encoded if e.cnn_input is not None])
    assert len(embeddings) == len(photo_files)
    similarities = embeddings @ embeddings.T
    np.fill_diagonal(similarities, -1.0)
    variants = np.array([e.variants for e in encoded], dtype=np.uint64)
    distances = oriented_distances(variants, variants[:, 0])
    np.fill_diagonal(distances, 64)
    worst = np.unravel_index(np.argmax(similarities), similarities.shape)
    assert similarities.max() < settings.cnn_min_similarity - 0.07, [photo_files[i].name for i in worst]
    near = (distances <= settings.hash_threshold + 2) & (similarities >= settings.hash_confirm_similarity - 0.15)
    assert not near.any(), [(photo_files[i].name, photo_files[j].name) for i, j in np.argwhere(near)]


def test_generation_is_deterministic(photo_set: ModuleType, photo_files: list[Path], tmp_path: Path) -> None:
    photo_set._generate(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == [p.name for p in photo_files]
    for path in photo_files:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert (tmp_path / "MANIFEST.tsv").read_text() == (photo_files[0].parent / "MANIFEST.tsv").read_text()


def test_several_runs_making_the_cache_at_once_all_get_the_complete_set(photo_set: ModuleType,
                                                                        photo_files: list[Path],
                                                                        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    program = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('photos', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['photos'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(len(module.ensure_photos()))\n"
    )
    env = {**os.environ, "DEDUPD_TEST_CACHE": str(cache)}
    runs = [subprocess.Popen([sys.executable, "-c", program, photo_set.__file__], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    assert {out.strip() for out, _ in outputs} == {str(len(photo_files))}
    (folder,) = cache.iterdir()  # one complete folder, no scratch left behind
    assert sorted(p.name for p in folder.glob("*.jpg")) == [p.name for p in photo_files]
