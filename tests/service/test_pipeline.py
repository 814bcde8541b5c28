"""The daemon's data path (dedupd/service/pipeline.py) on real components: a real LMDB catalog in a temporary
folder, the real encode worker pool and CNN, real report files, real photographs on disk. Changes are fed the
way the watcher feeds them (`on_change`), so each test decides exactly which events the pipeline sees.
"""

import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedupd.catalog import Catalog, IndexConfig
from dedupd.encodepool import EncodePool
from dedupd.imaging.cnn import Encoder
from dedupd.imaging.encode import content_digest, encode_path
from dedupd.records import Change, ChangeKind, FileRecord, Match
from dedupd.search.matcher import MatcherSettings
from dedupd.service.pipeline import Pipeline, PipelineSettings, file_key
from dedupd.service.reports import ReportWriter
from dedupd.watch import RootSpec, scan

IDLE_S = 120


@dataclass
class Batches:
    """What the pipeline hands the desktop notifier after each commit (`on_batch`)."""

    calls: list[tuple[list[str], dict[str, list[Match]]]] = field(default_factory=list)

    def __call__(self, added: list[str], duplicates: dict[str, list[Match]], reports: dict[str, Path]) -> None:
        self.calls.append((list(added), dict(duplicates)))

    def duplicates(self) -> dict[str, list[Match]]:
        return {path: matches for _, found in self.calls for path, matches in found.items()}


@dataclass
class Gate:
    """The pipeline's `before_commit`: while closed, the commit stage waits at its next batch (the batch
    already taken off the queue), so a test can make things happen while a change is not yet committed."""

    opened: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.opened.set()

    def __call__(self, paths: list[str]) -> None:
        if not self.opened.is_set():
            self.held.set()
            self.opened.wait(IDLE_S)


@dataclass
class Rig:
    pipeline: Pipeline
    catalog: Catalog
    root: Path
    reports: Path
    batches: Batches
    gate: Gate

    def change(self, kind: ChangeKind, path: Path, dest: Path | None = None) -> None:
        self.pipeline.on_change(Change(kind, str(path), str(self.root), dest=str(dest) if dest else None))

    def idle(self) -> None:
        assert self.pipeline.wait_idle(IDLE_S), f"still busy: {self.pipeline.pending()} pending"

    def write(self, path: Path, data: bytes) -> Path:
        """A file written the way an application does: created, then closed after writing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.change(ChangeKind.CREATED, path)
        self.change(ChangeKind.CLOSED, path)
        return path

    def record(self, path: Path) -> Any:
        return self.catalog.store.get(str(path))

    def report_files(self) -> list[Path]:
        return sorted(self.reports.glob("????-??-??/*.json"))


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(intra_op_threads=1)


@pytest.fixture
def rig(tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch, decode_faults: None) -> Iterator[Rig]:
    # decode_faults: files named gate* wait for the test (tests/decode_faults/)
    monkeypatch.setenv("DECODE_FAULTS_GATE_DIR", str(tmp_path))
    root = tmp_path / "Pictures"
    root.mkdir()
    spec = RootSpec(str(root))
    catalog = Catalog.open(tmp_path / "state", IndexConfig(matcher=MatcherSettings.defaults()), encoder_version="test",
                           model_id=encoder.spec.fingerprint(), dim=encoder.dim)
    reports = ReportWriter(tmp_path / "reports")
    batches = Batches()
    gate = Gate()

    def make_pool(on_result: Any) -> EncodePool:
        return EncodePool(1, on_result, timeout_s=300, cnn_spec=encoder.spec)

    pipeline = Pipeline(catalog, make_pool, encoder, reports, PipelineSettings(settle_ms=200, min_file_size=100),
                        root_of=lambda path: str(root) if path.startswith(str(root) + "/") or path == str(root)
                        else None,
                        scanner=lambda path: scan(spec, under=path), on_batch=batches, before_commit=gate)
    pipeline.start()
    try:
        yield Rig(pipeline, catalog, root, tmp_path / "reports", batches, gate)
    finally:
        gate.opened.set()
        pipeline.stop(drain=False)
        catalog.close()


def q60(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def test_new_files_are_encoded_once_and_a_copy_is_reported(rig: Rig, photo_bytes: list[bytes]) -> None:
    for i in range(4):
        rig.write(rig.root / f"p{i}.jpg", photo_bytes[i])
    rig.idle()
    assert rig.pipeline.counters.decodes == 4 and rig.report_files() == []
    assert all(rig.record(rig.root / f"p{i}.jpg").encoding is not None for i in range(4))
    copy = rig.root / "copy.jpg"
    shutil.copy(rig.root / "p2.jpg", copy)
    rig.change(ChangeKind.CREATED, copy)
    rig.change(ChangeKind.MODIFIED, copy)
    rig.change(ChangeKind.CLOSED, copy)  # three events for one file: read once, not decoded (a byte copy)
    near = rig.write(rig.root / "near.jpg", q60(photo_bytes[3]))
    rig.idle()
    assert rig.pipeline.counters.decodes == 5 and rig.pipeline.counters.reused == 1
    found = rig.batches.duplicates()
    assert [(m.path, m.method) for m in found[str(copy)]] == [(str(rig.root / "p2.jpg"), "exact")]
    assert [m.path for m in found[str(near)]] == [str(rig.root / "p3.jpg")]
    assert found[str(near)][0].method in ("phash", "cnn")
    assert len(rig.report_files()) == 2 and rig.pipeline.counters.reports == 2
    groups = {frozenset(group.paths) for group in rig.catalog.groups()}
    assert groups == {frozenset({str(rig.root / "p2.jpg"), str(copy)}),
                      frozenset({str(rig.root / "p3.jpg"), str(near)})}


def test_an_unchanged_file_is_not_decoded_again_and_a_changed_one_is(rig: Rig, photo_bytes: list[bytes]) -> None:
    path = rig.write(rig.root / "p.jpg", photo_bytes[0])
    rig.idle()
    rig.change(ChangeKind.CLOSED, path)  # e.g. a touch-less re-close, or a rescan seeing the same file
    rig.idle()
    assert rig.pipeline.counters.decodes == 1
    path.write_bytes(photo_bytes[1])
    rig.change(ChangeKind.CLOSED, path)
    rig.idle()
    assert rig.pipeline.counters.decodes == 2
    assert rig.record(path).encoding.digest == content_digest(photo_bytes[1])


def test_moves_of_files_and_folders_rekey_records_without_decoding(rig: Rig, photo_bytes: list[bytes]) -> None:
    single = rig.write(rig.root / "single.jpg", photo_bytes[0])
    for i in range(3):
        rig.write(rig.root / "album" / f"a{i}.jpg", photo_bytes[1 + i])
    rig.idle()
    decodes = rig.pipeline.counters.decodes
    moved = rig.root / "renamed.jpg"
    single.rename(moved)
    rig.change(ChangeKind.MOVED, single, moved)
    (rig.root / "album").rename(rig.root / "2024")
    rig.change(ChangeKind.DIR_MOVED, rig.root / "album", rig.root / "2024")
    rig.idle()
    assert rig.pipeline.counters.decodes == decodes
    assert rig.record(single) is None and rig.record(moved).encoding.digest == content_digest(photo_bytes[0])
    assert all(rig.record(rig.root / "2024" / f"a{i}.jpg") is not None for i in range(3))
    assert all(rig.record(rig.root / "album" / f"a{i}.jpg") is None for i in range(3))
    assert rig.report_files() == [], "a moved file is not a duplicate of its old path"


def test_a_deleted_file_leaves_its_group(rig: Rig, photo_bytes: list[bytes]) -> None:
    original = rig.write(rig.root / "o.jpg", photo_bytes[0])
    copy = rig.write(rig.root / "c.jpg", photo_bytes[0])
    rig.idle()
    assert len(rig.catalog.groups()) == 1
    copy.unlink()
    rig.change(ChangeKind.DELETED, copy)
    rig.idle()
    assert rig.catalog.groups() == [] and rig.record(copy) is None and rig.record(original) is not None


def test_a_late_delete_event_of_a_file_that_is_back_does_not_drop_it(rig: Rig, tmp_path: Path,
                                                                    photo_bytes: list[bytes]) -> None:
    """A trash and its undo: watchdog holds a move-from a moment for its move-to, so an event of the move out
    can arrive while the file, back already, is settling; the file is observed again, not forgotten, and is
    indexed again, in its group."""
    rig.write(rig.root / "o.jpg", photo_bytes[0])
    copy = rig.write(rig.root / "c.jpg", q60(photo_bytes[0]))
    rig.idle()
    groups = rig.catalog.groups()
    away = tmp_path / "trash.jpg"
    copy.rename(away)
    rig.change(ChangeKind.DELETED, copy)
    rig.idle()
    assert rig.record(copy) is None and rig.catalog.groups() == []
    away.rename(copy)
    rig.change(ChangeKind.CREATED, copy)  # settling
    rig.change(ChangeKind.DELETED, copy)  # the move out again, late
    rig.idle()
    assert rig.record(copy) is not None and rig.catalog.groups() == groups
    copy.unlink()  # really gone, a folder of that name there instead: removed
    copy.mkdir()
    rig.change(ChangeKind.DELETED, copy)
    rig.idle()
    assert rig.record(copy) is None and rig.catalog.groups() == []


def test_a_removal_committed_after_the_file_came_back_unchanged_is_dropped(rig: Rig, tmp_path: Path,
                                                                           photo_bytes: list[bytes]) -> None:
    """The file went to the trash (its removal queued) and came back unchanged while the commit stage was busy:
    its return found the record still stored, so the removal, committed later, would lose a file that is on
    disk; it finds the file there as stored and is dropped."""
    rig.write(rig.root / "o.jpg", photo_bytes[0])
    copy = rig.write(rig.root / "c.jpg", q60(photo_bytes[0]))
    rig.idle()
    decodes, groups = rig.pipeline.counters.decodes, rig.catalog.groups()
    away = tmp_path / "trash.jpg"
    copy.rename(away)
    rig.gate.opened.clear()
    rig.change(ChangeKind.DELETED, copy)  # the removal, taken by the commit stage and held there
    assert rig.gate.held.wait(IDLE_S)
    away.rename(copy)
    rig.change(ChangeKind.CREATED, copy)
    rig.change(ChangeKind.CLOSED, copy)
    deadline = time.monotonic() + IDLE_S
    while rig.pipeline.pending_files() and time.monotonic() < deadline:  # settled, found unchanged in the store
        time.sleep(0.05)
    assert rig.pipeline.pending_files() == 0
    rig.gate.opened.set()
    rig.idle()
    assert rig.record(copy) is not None and rig.catalog.groups() == groups
    assert rig.pipeline.counters.decodes == decodes


def test_rescan_reconciles_what_happened_without_events(rig: Rig, photo_bytes: list[bytes]) -> None:
    kept = rig.write(rig.root / "kept.jpg", photo_bytes[0])
    gone = rig.write(rig.root / "gone.jpg", photo_bytes[1])
    rig.idle()
    gone.unlink()  # no events from here on: as if the watcher had lost them
    (rig.root / "sub").mkdir()
    (rig.root / "sub" / "new.jpg").write_bytes(photo_bytes[2])
    (rig.root / "sub" / "dup.jpg").write_bytes(photo_bytes[0])
    rig.pipeline.rescan(str(rig.root))
    rig.idle()
    assert rig.record(gone) is None and rig.record(kept) is not None
    assert rig.record(rig.root / "sub" / "new.jpg") is not None
    assert rig.pipeline.counters.decodes == 3  # kept.jpg was not decoded again, dup.jpg (its bytes) not at all
    assert rig.pipeline.counters.reused == 1
    assert [m.path for m in rig.batches.duplicates()[str(rig.root / "sub" / "dup.jpg")]] == [str(kept)]
    assert rig.pipeline.scan_state()["running"] is False


def test_bad_and_small_files_are_skipped_with_their_reason_and_never_retried(rig: Rig,
                                                                            photo_bytes: list[bytes]) -> None:
    notes = rig.write(rig.root / "notes.jpg", b"not an image, but long enough to be looked at: " * 4)
    tiny = rig.write(rig.root / "tiny.jpg", photo_bytes[0][:50])  # under min_file_size (100 bytes)
    truncated = rig.write(rig.root / "truncated.jpg", photo_bytes[0][: len(photo_bytes[0]) // 3])
    rig.idle()
    skips = {name: rig.record(rig.root / name).skip.value for name in ("notes.jpg", "tiny.jpg", "truncated.jpg")}
    assert skips == {"notes.jpg": "unsupported_format", "tiny.jpg": "too_small", "truncated.jpg": "truncated"}
    decodes = rig.pipeline.counters.decodes
    assert decodes == 2, "the too-small file is never handed to a decoder"
    for path in (notes, tiny, truncated):
        rig.change(ChangeKind.CLOSED, path)
    rig.idle()
    assert rig.pipeline.counters.decodes == decodes, "an unchanged broken file is not decoded again"


def test_pause_holds_new_files_back_and_resume_lets_them_through(rig: Rig, photo_bytes: list[bytes]) -> None:
    rig.pipeline.pause()
    path = rig.write(rig.root / "p.jpg", photo_bytes[0])
    assert not rig.pipeline.wait_idle(3), "paused: the file stays pending"
    assert rig.pipeline.counters.decodes == 0 and rig.pipeline.pending() >= 1
    rig.pipeline.resume()
    rig.idle()
    assert rig.pipeline.counters.decodes == 1 and rig.record(path) is not None


def test_a_file_rewritten_while_it_is_decoded_is_stored_with_its_final_content(rig: Rig, tmp_path: Path,
                                                                               photo_bytes: list[bytes]) -> None:
    path = rig.write(rig.root / "gate_photo.jpg", photo_bytes[0])
    started = tmp_path / "gate_photo.jpg.started"
    deadline = time.monotonic() + IDLE_S
    while not started.exists():  # the decode faults hold the worker before it decodes the first content
        assert time.monotonic() < deadline, "no worker took the file"
        time.sleep(0.02)
    path.write_bytes(photo_bytes[1])
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # a new key, however fast
    rig.change(ChangeKind.CLOSED, path)
    (tmp_path / "gate_photo.jpg.release").touch()
    rig.idle()
    record = rig.record(path)
    assert record.encoding.digest == content_digest(photo_bytes[1])
    assert (record.key.size, record.key.mtime_ns) == (len(photo_bytes[1]), 1_700_000_000_000_000_000)
    assert rig.pipeline.counters.decodes == 2


def _wait_for(marker: Path) -> None:
    deadline = time.monotonic() + IDLE_S
    while not marker.exists():
        assert time.monotonic() < deadline, f"no worker took {marker.name}"
        time.sleep(0.02)


def test_a_byte_copy_is_read_not_decoded_and_its_record_is_what_a_decode_gives(
        rig: Rig, encoder: Encoder, photos: list[Path]) -> None:
    with Image.open(photos[0]) as photo:
        photo = photo.convert("RGB")
    original, copy, other = rig.root / "a.jpg", rig.root / "b.jpg", rig.root / "e.jpg"
    photo.save(original, quality=90, comment=b"aaaa")
    rig.change(ChangeKind.CLOSED, original)
    rig.idle()
    shutil.copyfile(original, copy)
    photo.save(other, quality=90, comment=b"eeee")  # the same size, other bytes: must be decoded
    assert other.stat().st_size == original.stat().st_size
    rig.change(ChangeKind.CLOSED, copy)
    rig.change(ChangeKind.CLOSED, other)
    rig.idle()
    assert rig.pipeline.counters.decodes == 2 and rig.pipeline.counters.reused == 1  # a.jpg and e.jpg
    stored = rig.catalog.store.get(str(copy), embedding=True)
    st = copy.stat()
    assert (stored.key.dev, stored.key.inode, stored.key.size, stored.key.mtime_ns) == (
        st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    decoded = encode_path(copy, cnn_spec=encoder.spec)  # what decoding the copy gives
    ours, theirs = stored.encoding, decoded.encoding
    assert (ours.digest, ours.width, ours.height, dict(ours.hashes), ours.capture, ours.thumb) == (
        theirs.digest, theirs.width, theirs.height, dict(theirs.hashes), theirs.capture, theirs.thumb)
    vector = encoder.embed_prepared([decoded.cnn_input])[0]
    assert np.allclose(ours.embedding, vector.astype(np.float16), atol=2e-3)  # the store keeps float16
    found = rig.batches.duplicates()
    assert (str(original), "exact") in [(m.path, m.method) for m in found[str(copy)]]
    assert rig.record(other).encoding.digest == content_digest(other.read_bytes())
    assert (str(original), "exact") not in [(m.path, m.method) for m in found[str(other)]]
    assert [m.method for m in rig.catalog.matches(str(copy)) if m.path == str(original)] == ["exact"]


def test_a_copy_of_a_file_still_in_flight_waits_for_it_and_is_not_decoded(rig: Rig, tmp_path: Path,
                                                                          photo_bytes: list[bytes]) -> None:
    original = rig.write(rig.root / "gate_original.jpg", photo_bytes[0])
    _wait_for(tmp_path / "gate_original.jpg.started")  # a worker holds the original: not committed yet
    copy = rig.write(rig.root / "copy.jpg", photo_bytes[0])  # submitted without a digest, it would be decoded
    rig.write(rig.root / "other.jpg", photo_bytes[1])
    assert not rig.pipeline.wait_idle(2)
    (tmp_path / "gate_original.jpg.release").touch()
    rig.idle()
    assert rig.pipeline.counters.decodes == 2 and rig.pipeline.counters.reused == 1  # original.jpg and other.jpg
    assert [(m.path, m.method) for m in rig.batches.duplicates()[str(copy)]] == [(str(original), "exact")]
    assert rig.record(copy).encoding == rig.record(original).encoding


def test_a_copy_whose_original_went_away_before_it_was_read_is_decoded(rig: Rig, tmp_path: Path,
                                                                       photo_bytes: list[bytes]) -> None:
    original = rig.write(rig.root / "o.jpg", photo_bytes[0])
    rig.idle()
    copy = rig.write(rig.root / "gate_copy.jpg", photo_bytes[0])  # submitted with o.jpg's digest
    _wait_for(tmp_path / "gate_copy.jpg.started")
    original.unlink()
    rig.change(ChangeKind.DELETED, original)
    deadline = time.monotonic() + IDLE_S
    while rig.record(original) is not None:
        assert time.monotonic() < deadline, "the removal was not committed"
        time.sleep(0.05)
    (tmp_path / "gate_copy.jpg.release").touch()
    rig.idle()
    assert rig.pipeline.counters.decodes == 2 and rig.pipeline.counters.reused == 0
    assert rig.record(copy).encoding.digest == content_digest(photo_bytes[0])
    assert rig.catalog.groups() == [] and rig.report_files() == []


def test_a_stored_record_of_the_older_layout_is_not_reused(rig: Rig, encoder: Encoder,
                                                           photo_bytes: list[bytes]) -> None:
    """A record without the thumbnail (written before it existed) is not what a decode gives now: a copy of its
    file is decoded."""
    old = rig.root / "old.jpg"
    old.write_bytes(photo_bytes[0])
    decoded = encode_path(old, cnn_spec=encoder.spec)
    vector = encoder.embed_prepared([decoded.cnn_input])[0]
    rig.catalog.apply([FileRecord(file_key(str(old), old.stat()),
                                  encoding=replace(decoded.encoding, thumb=None, capture=None, embedding=vector))])
    copy = rig.write(rig.root / "copy.jpg", photo_bytes[0])
    rig.idle()
    assert rig.pipeline.counters.decodes == 1 and rig.pipeline.counters.reused == 0
    assert rig.record(copy).encoding.thumb == decoded.encoding.thumb
    assert [(m.path, m.method) for m in rig.batches.duplicates()[str(copy)]] == [(str(old), "exact")]
