"""The one reader and writer of dedupd's Parquet format of encodings (DESIGN.md "Encodings in bulk").

What `dedupctl export --format parquet` and `dedupd backfill` write and `dedupd import` reads: one row per
file, everything the store keeps for it, so an imported row is the record the daemon would have made.

Columns (format 1; nullable unless said):
- ``path`` string, not null: the absolute path where the file was encoded (UTF-8; see `FileKey` for the rest)
- ``dev`` uint64, ``inode`` uint64, ``size`` int64, ``mtime_ns`` int64, not null: its stat identity there
- ``skip`` string: why it has no encoding (a `SkipReason` value); null for an encoded file
- ``digest`` binary(16): xxh3-128 of the bytes; ``width``, ``height`` int32: the displayed pixel size
- ``phash``, ``ahash``, ``dhash``, ``whash``, ``dct`` uint64: the hashes (`dedupd.imaging.encode`)
- ``capture`` struct of strings (format, time, subsec, offset, make, model, serial, unique_id, burst_id):
  the capture identity from metadata; null when the record has none
- ``thumb`` binary: the grey thumbnail the matcher verifies pairs on (`records.pack_thumb`; 1,024 raw bytes in
  encodings of an older version, which the matcher reads as no pixel evidence)
- ``embedding`` fixed-size list of float16 (the model's dimension): the L2-normalised CNN vector, stored as the
  store stores it (float16, so a row round-trips bit for bit); null when the CNN was off
- ``encoder`` string, not null: the encoder version (`ENCODER_VERSION`); ``model`` string: the CNN model's
  fingerprint (`ModelSpec.fingerprint`), null when the row has no embedding

Every row names its encoder and model (Parquet's dictionary encoding makes that nearly free), so shards from
several writers can sit in one directory and each row is judged on its own; the file's key-value metadata
``dedupd.format`` says the format version (a writer that drops it, e.g. another tool rewriting the shard, is
accepted when the columns are right). pyarrow is imported here only: one parser of the format.
"""

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedupd.errors import FormatError, SkipReason
from dedupd.imaging.encode import ORIENTED_HASH
from dedupd.imaging.hashing import TARGET_SIZES
from dedupd.records import Capture, Encoding, FileKey, FileRecord

FORMAT_VERSION = "1"
FORMAT_KEY = b"dedupd.format"
SUFFIX = ".parquet"
#: The hash columns, in column order: imagededup's four and the matcher's orientation-aware sign hash.
HASHES: tuple[str, ...] = (*TARGET_SIZES, ORIENTED_HASH)
CAPTURE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Capture))
#: Rows per row group written: a reader holds one group's columns at a time (about 2 MiB at 512-d).
ROW_GROUP = 2048


@dataclass(frozen=True, slots=True)
class Row:
    """One file's row: its record as the writing host saw it, and who encoded it."""

    record: FileRecord
    encoder: str
    model: str | None


def schema(dim: int | None) -> pa.Schema:
    """The Arrow schema of format 1 for embeddings of `dim` floats (None: no CNN, the column stays null)."""
    embedding = pa.list_(pa.float16(), dim) if dim else pa.list_(pa.float16())
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("dev", pa.uint64(), nullable=False),
            pa.field("inode", pa.uint64(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime_ns", pa.int64(), nullable=False),
            pa.field("skip", pa.string()),
            pa.field("digest", pa.binary(16)),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            *(pa.field(name, pa.uint64()) for name in HASHES),
            pa.field("capture", pa.struct([pa.field(name, pa.string()) for name in CAPTURE_FIELDS])),
            pa.field("thumb", pa.binary()),
            pa.field("embedding", embedding),
            pa.field("encoder", pa.string(), nullable=False),
            pa.field("model", pa.string()),
        ],
        metadata={FORMAT_KEY: FORMAT_VERSION.encode()},
    )


def table(rows: Sequence[Row], dim: int | None) -> pa.Table:
    """`rows` as one Arrow table of the format (the shape `write` and the backfill's Ray blocks have)."""
    recs = [row.record for row in rows]
    encs = [rec.encoding for rec in recs]
    columns: dict[str, list[object]] = {
        "path": [_text_path(rec.key.path) for rec in recs],
        "dev": [rec.key.dev for rec in recs],
        "inode": [rec.key.inode for rec in recs],
        "size": [rec.key.size for rec in recs],
        "mtime_ns": [rec.key.mtime_ns for rec in recs],
        "skip": [rec.skip.value if rec.skip else None for rec in recs],
        "digest": [e.digest if e else None for e in encs],
        "width": [e.width if e else None for e in encs],
        "height": [e.height if e else None for e in encs],
        **{name: [e.hashes.get(name) if e else None for e in encs] for name in HASHES},
        "capture": [dict(zip(CAPTURE_FIELDS, astuple(e.capture), strict=True)) if e and e.capture else None
                    for e in encs],
        "thumb": [e.thumb if e else None for e in encs],
        "encoder": [row.encoder for row in rows],
        "model": [row.model if e is not None and e.embedding is not None else None for row, e in
                  zip(rows, encs, strict=True)],
    }
    target = schema(dim)
    arrays = {name: pa.array(values, type=target.field(name).type) for name, values in columns.items()}
    arrays["embedding"] = _embedding_array([e.embedding if e else None for e in encs], target.field("embedding").type)
    return pa.Table.from_arrays([arrays[name] for name in target.names], schema=target)


def is_text(path: str) -> bool:
    """Can the format hold this path (UTF-8 text; a raw byte of another encoding, kept by os.fsdecode, is not)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_path(path: str) -> str:
    if not is_text(path):
        raise FormatError(f"{path!r} is not valid UTF-8: the Parquet format keeps paths as text")
    return path


def _embedding_array(vectors: Sequence[np.ndarray | None], kind: pa.DataType) -> pa.Array:
    """float16 rows as a fixed-size list array, nulls where a row has no vector (one copy, no per-value objects)."""
    if not isinstance(kind, pa.FixedSizeListType):
        if any(v is not None for v in vectors):
            raise FormatError("embeddings given for a table without a CNN dimension")
        return pa.nulls(len(vectors), kind)
    dim = kind.list_size
    matrix = np.zeros((len(vectors), dim), np.float16)
    valid = np.zeros(len(vectors), bool)
    for i, vector in enumerate(vectors):
        if vector is not None:
            flat = np.asarray(vector, np.float16).ravel()
            if flat.size != dim:
                raise FormatError(f"an embedding has {flat.size} values, the table's dimension is {dim}")
            matrix[i], valid[i] = flat, True
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float16()), dim, mask=pa.array(~valid))


class ShardWriter:
    """Writes rows to one Parquet file, atomically: a temporary name until `close`, then renamed in place
    (a killed export leaves no half file under the real name)."""

    def __init__(self, path: str | os.PathLike[str], dim: int | None) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._dim = dim
        self._writer = pq.ParquetWriter(self._partial, schema(dim), compression="zstd")
        self.rows = 0

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            self._writer.write_table(table(rows, self._dim), row_group_size=ROW_GROUP)
            self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------- reading
def shard_files(path: str | os.PathLike[str]) -> list[Path]:
    """The shards to read: FILE itself, or every `*.parquet` under DIR (sorted; hidden and partial files left
    out). FormatError when there is none."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FormatError(f"no such file or directory: {root}")
    found = sorted(p for p in root.rglob(f"*{SUFFIX}") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise FormatError(f"no {SUFFIX} files under {root}")
    return found


def _open(path: Path) -> pq.ParquetFile:
    try:
        shard = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise FormatError(f"{path} is not a readable Parquet file: {exc}") from None
    arrow = shard.schema_arrow
    version = (arrow.metadata or {}).get(FORMAT_KEY)
    if version is not None and version.decode(errors="replace") != FORMAT_VERSION:
        raise FormatError(f"{path} is dedupd Parquet format {version.decode(errors='replace')}; this dedupd reads "
                          f"format {FORMAT_VERSION}")
    expected = schema(None)
    missing = [name for name in expected.names if name not in arrow.names]
    if missing:
        raise FormatError(f"{path} is not a dedupd encodings file: no column {', '.join(missing)}")
    return shard


def row_count(files: Iterable[Path]) -> int:
    """Rows in these shards, from their footers (nothing else is read)."""
    return sum(_open(path).metadata.num_rows for path in files)


def skip_reasons(path: Path) -> dict[str, int]:
    """Skip reason -> rows of the shard skipped for it (encoded rows left out)."""
    counted = _open(path).read(columns=["skip"]).group_by(["skip"]).aggregate([([], "count_all")]).to_pylist()
    return {entry["skip"]: entry["count_all"] for entry in counted if entry["skip"] is not None}


def versions(path: Path) -> dict[tuple[str, str | None, bool], int]:
    """(encoder, model, encoded) -> rows of that kind in the shard, read from those columns alone: what
    `dedupd import` checks before importing (`encoded` is False for a skip row, which has no model)."""
    columns = _open(path).read(columns=["encoder", "model", "skip"])
    columns = columns.append_column("encoded", pc.is_null(columns.column("skip"))).drop_columns(["skip"])
    counted = columns.group_by(["encoder", "model", "encoded"]).aggregate([([], "count_all")]).to_pylist()
    return {(entry["encoder"], entry["model"], entry["encoded"]): entry["count_all"] for entry in counted}


def read_rows(path: Path, batch_size: int = ROW_GROUP) -> Iterator[list[Row]]:
    """The shard's rows, `batch_size` at a time. FormatError for a value no record can hold."""
    shard = _open(path)
    for batch in shard.iter_batches(batch_size=batch_size):
        try:
            yield rows_of(batch)
        except (ValueError, TypeError, KeyError) as exc:
            raise FormatError(f"{path}: a row is not a dedupd record: {exc}") from None


def rows_of(batch: pa.RecordBatch) -> list[Row]:
    """The rows of one record batch of the format (ValueError, TypeError, KeyError for one no record holds)."""
    values = {name: batch.column(name).to_pylist() for name in batch.schema.names if name != "embedding"}
    vectors = _vectors(batch.column("embedding"))
    rows = []
    for i in range(batch.num_rows):
        key = FileKey(values["path"][i], values["dev"][i], values["inode"][i], values["size"][i],
                      values["mtime_ns"][i])
        skip = values["skip"][i]
        encoding = None
        if skip is None:
            capture = values["capture"][i]
            encoding = Encoding(
                digest=values["digest"][i], width=values["width"][i], height=values["height"][i],
                hashes={name: values[name][i] for name in HASHES if values[name][i] is not None},
                embedding=vectors[i], capture=Capture(**capture) if capture is not None else None,
                thumb=values["thumb"][i],
            )
            if encoding.digest is None:
                raise ValueError(f"{key.path} has neither a skip reason nor a digest")
        record = FileRecord(key, encoding, SkipReason(skip) if skip is not None else None)
        rows.append(Row(record, values["encoder"][i], values["model"][i]))
    return rows


def _vectors(column: pa.Array) -> list[np.ndarray | None]:
    """float32 vectors of a fixed-size float16 list column (as the store hands embeddings out), None for nulls."""
    if not isinstance(column.type, pa.FixedSizeListType) or column.null_count == len(column):
        return [None] * len(column)
    dim = column.type.list_size
    flat = column.values.slice(column.offset * dim, len(column) * dim)
    matrix = np.asarray(flat.to_numpy(zero_copy_only=False), np.float16).reshape(len(column), dim).astype(np.float32)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [matrix[i] if valid[i] else None for i in range(len(column))]
