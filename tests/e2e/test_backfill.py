"""The Ray backfill (the `cluster` extra) on a local Ray, imported into a fresh store, gives the daemon the same
duplicate groups as indexing the files itself, without decoding any; `dedupctl export --format parquet` writes
the same rows. The short CI form of issue 16's acceptance (bench corpora: docs/operators-guide.md)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e
pytest.importorskip("ray", reason="the `cluster` extra is not installed: .venv/bin/pip install -e '.[cluster]'")

from dedupd.bulk import parquet  # noqa: E402 - needs pyarrow, which the `cluster` extra brings too


def plant_library(root: Path, photos: list[Path]) -> None:
    """A dozen distinct real photos, and copies of some: bytes, re-encoded, resized, rotated, mirrored; one
    file that is no image."""
    root.mkdir()
    for source in photos[:12]:
        shutil.copy(source, root / source.name)
    shutil.copy(photos[0], root / "byte_copy.jpg")
    with Image.open(photos[1]) as image:
        image.save(root / "reencoded.jpg", quality=70)
        image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS).save(root / "bigger.png")
    with Image.open(photos[2]) as image:
        image.transpose(Image.Transpose.ROTATE_90).save(root / "rotated.jpg", quality=92)
    with Image.open(photos[3]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "mirrored.jpg", quality=92)
    (root / "readme.jpg").write_text("not a picture")


def dedupd(*args: str, cwd: Path | None = None) -> Any:
    run = subprocess.run([sys.executable, "-m", "dedupd", *args, "--json"], capture_output=True, text=True,
                         timeout=900, cwd=cwd)
    assert run.returncode == 0, f"dedupd {' '.join(args)} -> {run.returncode}\n{run.stdout}\n{run.stderr[-6000:]}"
    return json.loads(run.stdout)


def groups_of(daemon: Any) -> set[frozenset[str]]:
    return {frozenset(member["path"] for member in group) for group in daemon.ctl_json("duplicates")["groups"]}


def test_backfill_on_local_ray_then_import_gives_the_daemons_groups(tmp_path: Path, photo_files: list[Path],
                                                                   daemon_factory: Any) -> None:
    root = tmp_path / "library"
    plant_library(root, photo_files)
    manifest = tmp_path / "manifest.txt"  # a text manifest, relative lines (relative to its folder)
    manifest.write_text("".join(f"library/{p.name}\n" for p in sorted(root.iterdir())) + "\n")
    summary = dedupd("backfill", str(manifest), "--out", str(tmp_path / "shards"), "--num-cpus", "2",
                     "--batch-size", "8", "--files-per-task", "4")
    files = len(list(root.iterdir()))
    assert (summary["rows"], summary["encoded"], summary["skipped"]) == (files, files - 1, 1)
    assert summary["skipped_by_reason"] == {"unsupported_format": 1}

    daemon = daemon_factory([root])  # the daemon indexing the files itself
    try:
        daemon.wait_idle()
        expected = groups_of(daemon)
        counts = daemon.status()["counts"]
        assert counts["decodes"] == files - 1 and counts["reused"] == 1  # byte_copy.jpg: read, not decoded
        exported = tmp_path / "export" / "all.parquet"
        exported.parent.mkdir()
        daemon.ctl("export", "--format", "parquet", "--output", str(exported))
    finally:
        assert daemon.stop() == 0
    assert len(expected) >= 4, expected  # the planted copies: byte, re-encoded + resized, rotated, mirrored

    (daemon.home / "state").rename(tmp_path / "state-indexed")  # the same configuration, a fresh store
    report = dedupd("import", str(tmp_path / "shards"), "--config", str(daemon.config))
    assert (report["imported"], report["skipped"]) == (files, {})
    daemon = daemon_factory([root])
    try:
        daemon.wait_idle()
        assert groups_of(daemon) == expected
        assert daemon.status()["counts"]["decodes"] == 0  # every file came from the shards: nothing decoded
    finally:
        assert daemon.stop() == 0

    ours = {row.record.key.path: row for batch in parquet.read_rows(exported) for row in batch}
    ray_rows = [row for shard in parquet.shard_files(tmp_path / "shards") for batch in parquet.read_rows(shard)
                for row in batch]
    assert sorted(ours) == sorted(row.record.key.path for row in ray_rows)
    for row in ray_rows:
        mine = ours[row.record.key.path]
        assert (mine.encoder, mine.model, mine.record.skip) == (row.encoder, row.model, row.record.skip)
        if row.record.encoding is None:
            continue
        a, b = mine.record.encoding, row.record.encoding
        assert a is not None and a.embedding is not None and b.embedding is not None
        assert (a.digest, dict(a.hashes), a.capture, a.thumb) == (b.digest, dict(b.hashes), b.capture, b.thumb)
        assert float(np.dot(a.embedding, b.embedding)) > 0.999  # one ONNX model; batches may round differently
