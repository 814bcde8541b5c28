"""`dedupd backfill MANIFEST --out DIR`: encode an archive on Ray (the optional `cluster` extra), as Parquet shards.

A Ray Data job, so Ray schedules it, on this machine (`ray.init()`) or on a cluster (`--address`):
1. the manifest: a text file of paths (one a line; relative lines are relative to the manifest's folder), read
   by Ray's `read_text`, or a directory, walked here (`dedupd.scan.discover`) into a list of paths;
2. decode + hash + CNN input: `map_batches(encode_files)`, stateless Ray *tasks* on CPUs, each file through the
   project's own `dedupd.imaging.encode.encode_path` (the daemon's encoder); a file that cannot be read or
   decoded becomes a row with its skip reason, as in the store;
3. the CNN: `map_batches(Embedder)`, a callable class, so Ray runs it on a pool of *actors* (`concurrency`),
   each holding one ONNX Runtime session (`dedupd.imaging.cnn.Encoder`), with `num_gpus` when asked (CUDA, else
   CPU), fed batches of `batch_size` inputs;
4. `write_parquet(DIR)`: Ray's own writer, blocks in the format of `dedupd.bulk.parquet` (its `table`), which
   `dedupd import` reads.

What Ray does not do here, and why: a decoder that crashes its worker process is not isolated per file (the
daemon's encode pool is): Ray retries the task (the batch) and then fails the job; a decode that hangs is not
timed out. Both are rare on an archive the daemon would index anyway; the operator's guide says so.

Every node needs this dedupd installed with the `cluster` extra (the same version: rows carry its encoder
version and model fingerprint, which `dedupd import` checks) and sees the files at the manifest's paths.
"""

import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dedupd.bulk import parquet
from dedupd.errors import DedupdError, Skipped, SkipReason
from dedupd.imaging.cnn import Encoder, ModelSpec, resolve_model
from dedupd.imaging.decode import DEFAULT_MAX_PIXELS
from dedupd.imaging.encode import DEFAULT_MAX_FILE_SIZE, ENCODER_VERSION, encode_path
from dedupd.records import FileKey, FileRecord

log = logging.getLogger(__name__)

#: The column the encode tasks add for the CNN actors: the model input tensor, as `np.save` bytes (the shape
#: varies with the aspect ratio), null for a skipped file or without the CNN. Dropped before writing.
CNN_INPUT = "cnn_input"
#: What the `cluster` extra brings.
CLUSTER_EXTRA = ("ray",)


@dataclass(frozen=True, slots=True)
class Options:
    """How to run a backfill (the command's options)."""

    manifest: Path
    out: Path
    address: str | None = None  # None: a local Ray on this machine
    model: str | None = None  # the CNN model (registry name or .onnx path), as `cnn.model`
    cnn: bool = True
    actors: int = 1  # CNN actors (a fixed pool)
    gpus_per_actor: float = 0.0  # > 0: each actor asks Ray for that share of a GPU
    cpus_per_actor: float = 1.0  # CPUs each CNN actor holds (its ONNX Runtime threads)
    batch_size: int = 32  # CNN inputs per actor call
    files_per_task: int = 16  # files one encode task decodes
    num_cpus: int | None = None  # local Ray only: CPUs it may use (None: all)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    min_file_size: int = 0


# --------------------------------------------------------------------------------------------- stages (pure)
def encode_files(batch: pa.Table, *, cnn_spec: ModelSpec | None, manifest_dir: str, max_pixels: int,
                 max_file_size: int, min_file_size: int) -> pa.Table:
    """The CPU stage: a batch of manifest lines (column `text` or `path`) -> rows of the format without
    embeddings, plus `CNN_INPUT` when there is a CNN to feed. Blank lines are dropped."""
    lines = batch.column("text" if "text" in batch.column_names else "path").to_pylist()
    paths = [os.path.normpath(os.path.join(manifest_dir, line.strip())) for line in lines if line and line.strip()]
    rows, inputs = [], []
    for path in paths:
        record, tensor = _encode_one(path, cnn_spec, max_pixels, max_file_size, min_file_size)
        rows.append(parquet.Row(record, ENCODER_VERSION, None))
        inputs.append(_tensor_bytes(tensor) if tensor is not None else None)
    table = parquet.table(rows, None)
    return table.append_column(CNN_INPUT, pa.array(inputs, pa.binary())) if cnn_spec is not None else table


def _encode_one(path: str, cnn_spec: ModelSpec | None, max_pixels: int, max_file_size: int,
                min_file_size: int) -> tuple[FileRecord, np.ndarray | None]:
    """One file's record (an encoding, or a skip reason as the daemon would store it) and its CNN input."""
    try:
        st = os.stat(path)
    except OSError as exc:
        gone = isinstance(exc, FileNotFoundError)
        key = FileKey(path, 0, 0, 0, 0)
        return FileRecord(key, skip=SkipReason.VANISHED if gone else SkipReason.UNREADABLE), None
    key = FileKey(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if st.st_size < max(1, min_file_size):
        return FileRecord(key, skip=SkipReason.TOO_SMALL), None
    try:
        encoded = encode_path(path, cnn_spec=cnn_spec, max_pixels=max_pixels, max_bytes=max_file_size)
    except Skipped as skip:
        return FileRecord(key, skip=skip.reason), None
    except Exception:  # noqa: BLE001 - an encoder bug costs one file, not the batch
        log.exception("unexpected error encoding %s", path)
        return FileRecord(key, skip=SkipReason.DECODE_ERROR), None
    return FileRecord(key, encoded.encoding), encoded.cnn_input


def _tensor_bytes(tensor: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tensor, allow_pickle=False)
    return buffer.getvalue()


def _tensor(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class Embedder:
    """The CNN stage, a Ray actor: one ONNX Runtime session, rows with `CNN_INPUT` -> rows with embeddings."""

    def __init__(self, model: str | None, batch_size: int, threads: int) -> None:
        providers = None if _gpu_assigned() else ["CPUExecutionProvider"]
        self._encoder = Encoder(model, batch_size=batch_size, providers=providers, intra_op_threads=threads)
        self._model = self._encoder.spec.fingerprint()
        log.info("backfill CNN actor: %s on %s", self._encoder.spec.name, self._encoder.provider)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_rows(batch, self._encoder.embed_prepared, self._model, self._encoder.dim)


def _gpu_assigned() -> bool:
    """Did Ray give this actor a GPU (`num_gpus`)? Then ONNX Runtime may take CUDA; else CPU only."""
    import ray

    return bool(ray.get_gpu_ids())


def embed_rows(batch: pa.Table, embed: Callable[[Sequence[np.ndarray]], np.ndarray], model: str,
               dim: int) -> pa.Table:
    """Rows with `CNN_INPUT` -> the format's rows with embeddings (one `embed` call for the whole batch)."""
    inputs = batch.column(CNN_INPUT).to_pylist()
    rows = [row for part in batch.drop_columns([CNN_INPUT]).to_batches() for row in parquet.rows_of(part)]
    wanted = [i for i, data in enumerate(inputs) if data is not None]
    vectors = embed([_tensor(inputs[i]) for i in wanted]) if wanted else np.empty((0, dim), np.float32)
    for i, vector in zip(wanted, vectors, strict=True):
        row = rows[i]
        assert row.record.encoding is not None
        encoding = replace(row.record.encoding, embedding=vector)
        rows[i] = parquet.Row(FileRecord(row.record.key, encoding), row.encoder, model)
    return parquet.table(rows, dim)


# --------------------------------------------------------------------------------------------- the job
def map_stages(options: Options, cnn_spec: ModelSpec | None, manifest_dir: str) -> list[tuple[Any, dict[str, Any]]]:
    """The `map_batches` calls of the job, as (fn, keyword arguments): what Ray is asked for, kept apart from
    running it so the resources requested (`num_gpus`, the actor pool) are plain data.

    The decode tasks are spread over the cluster's nodes (`scheduling_strategy="SPREAD"`), and give their
    remote arguments through `ray_remote_args_fn`: Ray fuses a task stage into the next actor stage when both
    ask for the same resources, and a fused decode would run inside the CNN actors, one file at a time per
    actor; Ray never fuses a stage whose arguments come from such a function."""
    import ray.data

    encode = (encode_files, {
        "batch_size": options.files_per_task, "batch_format": "pyarrow", "ray_remote_args_fn": decode_task_args,
        "fn_kwargs": {"cnn_spec": cnn_spec, "manifest_dir": manifest_dir, "max_pixels": options.max_pixels,
                      "max_file_size": options.max_file_size, "min_file_size": options.min_file_size},
    })
    if cnn_spec is None:
        return [encode]
    threads = max(1, int(options.cpus_per_actor))
    embed: dict[str, Any] = {
        "batch_size": options.batch_size, "batch_format": "pyarrow",
        "compute": ray.data.ActorPoolStrategy(size=options.actors), "num_cpus": options.cpus_per_actor,
        "fn_constructor_kwargs": {"model": options.model, "batch_size": options.batch_size, "threads": threads},
    }
    if options.gpus_per_actor > 0:
        embed["num_gpus"] = options.gpus_per_actor
    return [encode, (Embedder, embed)]


def decode_task_args() -> dict[str, Any]:
    """Ray's remote arguments of each decode task: one CPU, spread over the nodes."""
    return {"num_cpus": 1, "scheduling_strategy": "SPREAD"}


def manifest_paths(manifest: Path) -> list[str]:
    """A directory manifest: its image files (the scan's walk, hidden files left out), absolute."""
    from dedupd.scan import discover

    return [str(path) for path in discover(manifest.resolve(), recursive=True)]


def run(options: Options) -> dict[str, Any]:
    """Run the backfill job; a summary of what it wrote (shards, rows, encoded, skipped by reason)."""
    try:
        import ray
    except ImportError:
        raise DedupdError("dedupd backfill needs the `cluster` extra (Ray Data): pip install 'dedupd[cluster]' "
                          "(in a clone: .venv/bin/pip install -e '.[cluster]')") from None
    manifest = options.manifest.resolve()
    if not manifest.exists():
        raise DedupdError(f"no such manifest: {manifest}")
    cnn_spec = resolve_model(options.model) if options.cnn else None
    options.out.mkdir(parents=True, exist_ok=True)
    out = str(options.out.resolve())
    if options.address is None:
        ray.init(num_cpus=options.num_cpus, include_dashboard=False, configure_logging=False,
                 log_to_driver=False, ignore_reinit_error=True)
    else:
        ray.init(address=options.address, configure_logging=False, ignore_reinit_error=True)
    try:
        dataset: ray.data.Dataset
        if manifest.is_dir():
            dataset = ray.data.from_items([{"path": path} for path in manifest_paths(manifest)])
            manifest_dir = str(manifest)
        else:
            dataset = ray.data.read_text(str(manifest))
            manifest_dir = str(manifest.parent)
        for fn, kwargs in map_stages(options, cnn_spec, manifest_dir):
            dataset = dataset.map_batches(fn, **kwargs)
        dataset.write_parquet(out)
    finally:
        ray.shutdown()
    return summary(options.out)


def summary(out: Path) -> dict[str, Any]:
    """What a backfill directory holds: shards, rows, encoded and skipped rows (by reason), the encoders and
    models named."""
    files = parquet.shard_files(out)
    kinds: Counter[tuple[str, str | None, bool]] = Counter()
    reasons: Counter[str] = Counter()
    for path in files:
        kinds.update(parquet.versions(path))
        reasons.update(parquet.skip_reasons(path))
    encoded = sum(count for (_, _, is_encoded), count in kinds.items() if is_encoded)
    return {"out": str(out), "shards": len(files), "rows": kinds.total(), "encoded": encoded,
            "skipped": kinds.total() - encoded, "skipped_by_reason": dict(sorted(reasons.items())),
            "encoders": sorted({encoder for encoder, _, _ in kinds}),
            "models": sorted({model for _, model, _ in kinds if model is not None})}
