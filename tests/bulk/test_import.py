"""The Parquet format of encodings and `dedupd import`: round trip, re-stat on this host, restart, refusals."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

# pyarrow is a dependency of dedupd since the Parquet format: a venv made before it needs `ensure_venv` again.
pytest.importorskip("pyarrow", reason="pyarrow is missing: re-run scripts/test (or pip install -e .) to install it")

from dedupd.bulk import importer, parquet  # noqa: E402
from dedupd.config import load_settings  # noqa: E402
from dedupd.errors import FormatError, SkipReason  # noqa: E402
from dedupd.imaging.cnn import Encoder  # noqa: E402
from dedupd.imaging.encode import ENCODER_VERSION, encode_path  # noqa: E402
from dedupd.records import FileKey, FileRecord  # noqa: E402


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, photo_files: list[Path]) -> tuple[Path, list[parquet.Row], str]:
    """Six real photos, a byte copy of the first and a file that is no image, encoded as the backfill does
    (the project's encoder and CNN), as rows of the format: (folder, rows, model fingerprint)."""
    folder = tmp_path_factory.mktemp("library")
    for source in photo_files[:6]:
        shutil.copy(source, folder / source.name)
    shutil.copy(photo_files[0], folder / "copy.jpg")
    (folder / "notes.jpg").write_text("not a picture")
    cnn = Encoder(None)
    model = cnn.spec.fingerprint()
    rows = []
    for path in sorted(folder.iterdir()):
        st = path.stat()
        key = FileKey(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            encoded = encode_path(path, cnn_spec=cnn.spec)
        except Exception:  # noqa: BLE001 - the file that is no image
            rows.append(parquet.Row(FileRecord(key, skip=SkipReason.UNSUPPORTED_FORMAT), ENCODER_VERSION, None))
            continue
        assert encoded.cnn_input is not None
        embedding = cnn.embed_prepared([encoded.cnn_input])[0]
        rows.append(parquet.Row(FileRecord(key, replace(encoded.encoding, embedding=embedding)), ENCODER_VERSION,
                                model))
    return folder, rows, model


def config_for(home: Path, root: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dedupd.toml"
    config.write_text(f'state_dir = "{home / "state"}"\nreport_dir = "{home / "reports"}"\n'
                      f'socket = "{home / "control.sock"}"\n[notify]\ndesktop = false\n[[roots]]\npath = "{root}"\n')
    return config


def write_shard(path: Path, rows: list[parquet.Row], dim: int | None = 512) -> Path:
    with parquet.ShardWriter(path, dim) as writer:
        writer.write(rows)
    return path


def dedupd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd", *args], capture_output=True, text=True, timeout=300)


def test_rows_round_trip_bit_for_bit(library: tuple[Path, list[parquet.Row], str], tmp_path: Path) -> None:
    _, rows, _ = library
    shard = write_shard(tmp_path / "a.parquet", rows)
    assert not list(tmp_path.glob(".*partial"))
    back = [row for batch in parquet.read_rows(shard, batch_size=3) for row in batch]
    assert len(back) == len(rows) == parquet.row_count([shard])
    for got, want in zip(back, rows, strict=True):
        assert (got.encoder, got.model, got.record.key, got.record.skip) == (
            want.encoder, want.model, want.record.key, want.record.skip)
        if want.record.encoding is None:
            assert got.record.encoding is None
            continue
        g, w = got.record.encoding, want.record.encoding
        assert g is not None and g.embedding is not None and w.embedding is not None
        assert (g.digest, g.width, g.height, dict(g.hashes), g.capture, g.thumb) == (
            w.digest, w.width, w.height, dict(w.hashes), w.capture, w.thumb)
        assert np.array_equal(g.embedding.astype(np.float16), w.embedding.astype(np.float16))  # as the store keeps it


def test_import_restats_each_file_and_is_restartable(library: tuple[Path, list[parquet.Row], str],
                                                      tmp_path: Path) -> None:
    folder, rows, _ = library
    work = tmp_path / "photos"
    shutil.copytree(folder, work)
    moved = [replace(row, record=replace(row.record, key=replace(
        row.record.key, path=str(work / Path(row.record.key.path).name)))) for row in rows]
    # The encoding host's stat identity: its dev and inode are not this host's (a network mount, another machine).
    moved = [replace(row, record=replace(row.record, key=replace(row.record.key, dev=7, inode=1000 + i)))
             for i, row in enumerate(moved)]
    first, rest = moved[:3], moved[3:]
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "part-0.parquet", first)
    write_shard(shards / "part-1.parquet", rest)
    (work / "photo_001.jpg").unlink(missing_ok=True)  # gone since the backfill
    gone = sum(1 for row in moved if not os.path.exists(row.record.key.path))
    changed = work / "copy.jpg"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000_000))
    config = config_for(tmp_path / "home", work)

    # As if killed after the first shard's batch committed: the second run imports the rest, nothing twice.
    partial = json.loads(dedupd("import", str(shards / "part-0.parquet"), "--config", str(config), "--json").stdout)
    run = dedupd("import", str(shards), "--config", str(config), "--json")
    assert run.returncode == 0, run.stderr
    again = json.loads(run.stdout)
    assert again["rows"] == len(moved)
    assert again["already"] == partial["imported"] > 0
    assert again["skipped"] == {"changed": 1, **({"gone": gone} if gone else {})}
    assert partial["imported"] + again["imported"] == len(moved) - 1 - gone
    catalog, _ = importer.open_catalog(load_settings(config))
    with catalog:
        stored = {rec.key.path: rec for _, rec in catalog.store.iter_records()}
        assert str(changed) not in stored
        for row in moved:
            path = row.record.key.path
            if path == str(changed) or not os.path.exists(path):
                continue
            st = os.stat(path)
            assert (stored[path].key.dev, stored[path].key.inode) == (st.st_dev, st.st_ino)  # this host's identity
            assert stored[path].skip == row.record.skip
        groups = [sorted(Path(p).name for p in group.paths) for group in catalog.groups()]
    assert groups == [] or all(len(group) >= 2 for group in groups)
    third = json.loads(dedupd("import", str(shards), "--config", str(config), "--json").stdout)
    assert third["imported"] == 0 and third["already"] == partial["imported"] + again["imported"]


def test_rows_of_another_encoder_or_model_are_refused(library: tuple[Path, list[parquet.Row], str],
                                                       tmp_path: Path) -> None:
    folder, rows, model = library
    config = config_for(tmp_path / "home", folder)
    old = write_shard(tmp_path / "old.parquet", [replace(rows[0], encoder="1"), *rows[1:]])
    run = dedupd("import", str(old), "--config", str(config))
    assert run.returncode == 2
    assert "encoder version '1'" in run.stderr and f"is {ENCODER_VERSION!r}" in run.stderr
    other = write_shard(tmp_path / "other.parquet", [replace(row, model="another-model:0") if row.model else row
                                                     for row in rows])
    with pytest.raises(FormatError, match="another-model:0.*this configuration's model is"):
        importer.check_versions([other], ENCODER_VERSION, model)
    plain = [replace(row, model=None, record=replace(row.record, encoding=replace(row.record.encoding, embedding=None)))
             if row.record.encoding else row for row in rows]
    with pytest.raises(FormatError, match="no CNN"):
        importer.check_versions([write_shard(tmp_path / "plain.parquet", plain, None)], ENCODER_VERSION, model)
    catalog, _ = importer.open_catalog(load_settings(config))
    with catalog:
        assert catalog.store.counts().get("encoded", 0) == 0  # nothing of a refused import was written


def test_import_while_the_store_is_held_says_to_stop_the_daemon(library: tuple[Path, list[parquet.Row], str],
                                                               tmp_path: Path) -> None:
    folder, rows, _ = library
    config = config_for(tmp_path / "home", folder)
    shard = write_shard(tmp_path / "a.parquet", rows)
    catalog, _ = importer.open_catalog(load_settings(config))  # this process holds the store, as a daemon would
    with catalog:
        run = dedupd("import", str(shard), "--config", str(config))
    assert run.returncode == 2
    assert f"dedupd pid {os.getpid()}" in run.stderr and "stop it" in run.stderr
    assert "dedupd import` writes the store itself" in run.stderr


def test_a_file_that_is_not_the_format_is_refused_by_name(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stray = tmp_path / "stray.parquet"
    pq.write_table(pa.table({"path": ["/x"]}), stray)
    with pytest.raises(FormatError, match="stray.parquet is not a dedupd encodings file: no column dev"):
        parquet.row_count(parquet.shard_files(tmp_path))
    (tmp_path / "junk.parquet").write_text("no")
    with pytest.raises(FormatError, match="junk.parquet is not a readable Parquet file"):
        parquet.row_count([tmp_path / "junk.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no .parquet files under"):
        parquet.shard_files(tmp_path / "empty")
    with pytest.raises(FormatError, match="no such file or directory"):
        parquet.shard_files(tmp_path / "missing")


def test_an_import_killed_anywhere_then_run_again_holds_every_row_once(
        library: tuple[Path, list[parquet.Row], str], tmp_path: Path) -> None:
    """SIGKILL after its first batch committed (in the middle of the next ones), then the same import again: every
    row once, the store sound (every page and secondary key checked)."""
    folder, rows, _ = library
    photo = next(row for row in rows if row.record.encoding is not None)
    links = tmp_path / "links"
    links.mkdir()
    many = []
    for i in range(4 * importer.BATCH):  # hard links: real files at distinct paths, one set of bytes
        path = links / f"p{i:05d}.jpg"
        os.link(photo.record.key.path, path)
        many.append(replace(photo, record=replace(photo.record, key=replace(photo.record.key, path=str(path)))))
    shard = write_shard(tmp_path / "many.parquet", many)
    config = config_for(tmp_path / "home", links)
    process = subprocess.Popen([sys.executable, "-m", "dedupd", "--log-level", "INFO", "import", str(shard),
                                "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the first batch is committed: kill it while it works on the next ones
        if "committed" in line:
            break
    process.kill()
    process.wait(60)
    again = json.loads(dedupd("import", str(shard), "--config", str(config), "--json").stdout)
    assert again["already"] >= importer.BATCH and again["imported"] + again["already"] == len(many)
    assert again["skipped"] == {}
    assert dedupd("check-store", "--config", str(config)).returncode == 0
    catalog, _ = importer.open_catalog(load_settings(config))
    with catalog:
        assert catalog.store.counts()["encoded"] == len(many)
        assert sorted(rec.key.path for _, rec in catalog.store.iter_records()) == [r.record.key.path for r in many]
