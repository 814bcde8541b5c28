"""`dedupd import FILE|DIR`: precomputed encodings (Parquet shards, `dedupd.bulk.parquet`) into the store and index.

Each row is re-checked on this host before it is trusted: the path is stat'ed, and a file that is gone, is no
longer a regular file, or whose size or mtime differ from the row's is skipped with that reason and counted
(its row describes other bytes). An accepted row is stored with this host's stat identity (dev and inode differ
from the encoding host's on a network mount), so the daemon's reconcile scan finds it unchanged and decodes
nothing. Rows whose file the store already holds as it is now are counted as `already` and left alone:
re-running an import after a kill neither duplicates nor re-links anything.

Rows go through `Catalog.apply`, the daemon's own commit path, in batches: each batch is one LMDB transaction
with its duplicate links, so a SIGKILL loses at most the batch in flight. Before anything is written, every
shard's encoder and model columns are checked against this dedupd's encoder version and the configured CNN
model: one mismatching row refuses the whole import, naming the shard (`FormatError`).
"""

import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dedupd.bulk import parquet
from dedupd.catalog import Catalog, IndexConfig
from dedupd.config import Settings
from dedupd.errors import FormatError, StoreLocked
from dedupd.imaging.cnn import Encoder, resolve_model
from dedupd.imaging.encode import ENCODER_VERSION
from dedupd.records import FileKey, FileRecord

log = logging.getLogger(__name__)

#: Rows committed per transaction: big enough that links are searched in bulk, small enough that a kill loses
#: little and the index follows the import closely.
BATCH = 512

GONE = "gone"  # no file at the row's path on this host
NOT_A_FILE = "not_a_file"  # something else than a regular file is there now
CHANGED = "changed"  # the file's size or mtime differ from the row's: other bytes than the row describes
DUPLICATE_ROW = "duplicate_row"  # a second row for a path already seen in this import


@dataclass(slots=True)
class ImportReport:
    """What an import did: rows read, imported, already in the store, and skipped by reason."""

    shards: int = 0
    rows: int = 0
    imported: int = 0
    already: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    stripped_embeddings: int = 0  # rows whose embeddings were dropped (the CNN is off in this configuration)

    def document(self) -> dict[str, Any]:
        return {"shards": self.shards, "rows": self.rows, "imported": self.imported, "already": self.already,
                "skipped": dict(sorted(self.skipped.items())), "stripped_embeddings": self.stripped_embeddings}


def model_identity(model: str | None) -> tuple[str, int]:
    """(fingerprint, dimension) of a configured CNN model, as the daemon stamps its store and the backfill its
    rows; the model is loaded only when its description does not say its dimension."""
    spec = resolve_model(model)
    if spec.dim is None:
        spec = Encoder(spec).spec
    assert spec.dim is not None
    return spec.fingerprint(), spec.dim


def open_catalog(settings: Settings) -> tuple[Catalog, str | None]:
    """The configuration's store and index as the daemon opens them, and its CNN model's fingerprint (None: CNN
    off). While the daemon runs it holds the store: refused with what to do instead."""
    model, dim = model_identity(settings.cnn.model) if settings.cnn.enabled else (None, None)
    try:
        catalog = Catalog.open(settings.state_dir, IndexConfig(matcher=settings.matcher_settings()),
                               encoder_version=ENCODER_VERSION, model_id=model, dim=dim)
    except StoreLocked as exc:
        raise StoreLocked(f"{exc}. `dedupd import` writes the store itself, so the daemon must not run meanwhile: "
                          "stop it (systemctl stop dedupd, or systemctl --user stop dedupd), import, and start it "
                          "again; it then finds the imported files unchanged and decodes none of them") from None
    return catalog, model


def check_versions(files: Sequence[Path], encoder: str, model: str | None) -> None:
    """Refuse shards holding a row of another encoder version, or an encoded row of another CNN model (a row
    without an embedding in a store that keeps them included): FormatError naming the shard and both sides."""
    for path in files:
        for (row_encoder, row_model, encoded), count in sorted(parquet.versions(path).items(), key=str):
            if row_encoder != encoder:
                raise FormatError(f"{path}: {count} rows were encoded by encoder version {row_encoder!r}, this dedupd "
                                  f"is {encoder!r}; encode them again with this dedupd (`dedupd backfill`)")
            if encoded and model is not None and row_model != model:
                theirs = f"CNN model {row_model!r}" if row_model else "no CNN (no embeddings)"
                raise FormatError(f"{path}: {count} rows were encoded with {theirs}, this configuration's model is "
                                  f"{model!r}; encode them again with the configured model (`dedupd backfill "
                                  "--model`), or import into a configuration of theirs")


def local_key(key: FileKey) -> FileKey | str:
    """The row's file as it is on this host now (its local stat identity), or why the row does not describe it."""
    try:
        st = os.stat(key.path)
    except FileNotFoundError:
        return GONE
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return NOT_A_FILE
    if (st.st_size, st.st_mtime_ns) != (key.size, key.mtime_ns):
        return CHANGED
    return FileKey(key.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def import_shards(
    catalog: Catalog,
    files: Sequence[Path],
    *,
    encoder: str,
    model: str | None,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import every row of `files` into `catalog` (see the module doc); `progress(n)` after each n rows."""
    check_versions(files, encoder, model)
    report = ImportReport(shards=len(files))
    seen: set[str] = set()
    pending: list[FileRecord] = []

    def flush() -> None:
        if pending:
            catalog.apply(pending)
            report.imported += len(pending)
            log.info("committed %d rows (%d of %d read so far imported)", len(pending), report.imported, report.rows)
            pending.clear()

    for path in files:
        for rows in parquet.read_rows(path, batch):
            report.rows += len(rows)
            for row in rows:
                rec = _accepted(catalog, row.record, seen, report, keep_embedding=model is not None)
                if rec is not None:
                    pending.append(rec)
                if len(pending) >= batch:
                    flush()
            if progress is not None:
                progress(len(rows))
    flush()
    log.info("import of %d shards: %s", len(files), report.document())
    return report


def _accepted(catalog: Catalog, rec: FileRecord, seen: set[str], report: ImportReport,
              keep_embedding: bool) -> FileRecord | None:
    """The record to store for a row (with this host's stat identity), or None (counted in `report`)."""
    if rec.key.path in seen:
        report.skipped[DUPLICATE_ROW] += 1
        return None
    seen.add(rec.key.path)
    key = local_key(rec.key)
    if isinstance(key, str):
        report.skipped[key] += 1
        return None
    stored = catalog.store.get(key.path)
    if stored is not None and (stored.key.dev, stored.key.inode, stored.key.size, stored.key.mtime_ns) == (
        key.dev, key.inode, key.size, key.mtime_ns
    ):
        report.already += 1
        return None
    rec = replace(rec, key=key)
    if rec.encoding is not None and rec.encoding.embedding is not None and not keep_embedding:
        report.stripped_embeddings += 1
        rec = replace(rec, encoding=replace(rec.encoding, embedding=None))
    return rec
