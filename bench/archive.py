"""The big-archive benchmark (issue 16): a 1M-record library, its embedding queries, a live import, a restart.

    .venv/bin/python bench/archive.py real                  # encode the bench photographs once (cached)
    .venv/bin/python bench/archive.py build [--n N] [--rows photo|random]   # the N-record library (1,000,000)
    .venv/bin/python bench/archive.py query [--shares 12.5,25]  # p50/p99, recall vs the exact scan, per share
    .venv/bin/python bench/archive.py parquet [--rows-to-import 5000]  # `dedupd import` into it vs empty
    .venv/bin/python bench/archive.py import                # live import of 1,000 photos into it vs into its
                                                            # real rows alone and into an empty state, a restart
    .venv/bin/python bench/archive.py restart               # the daemon started twice on a copy of it: the
                                                            # restart's READY time, decodes and RSS

`real`: every file of the ukbench-transformed and camera-import corpora encoded as the daemon encodes it
(`imaging.encode.encode_path`, the default CNN model on CPU), cached with its stat identity in
~/.cache/dedupd-bench/archive/real.pkl.

`build`: the library is written straight through the store's API (`Store.commit`, batches of 20,000), not
through `dedupd import` (which searches every row against the library as it links it: see `parquet` for its
per-row cost): N - 1,362 synthetic records under /archive/synthetic (not on disk, under no watched root:
the daemon leaves them alone) with random hashes and 512-d unit embeddings, 5 % of them near copies of an
earlier record (cosine 0.55-0.99). `--rows photo` (default) draws the embeddings from the Gaussian fitted
to the camera corpus's real embeddings (`photo_like`), `--rows random` uniformly (no structure). Plus
the 1,362 real ukbench-transformed records (their real paths, hashes and embeddings). Links of the
synthetic near copies are computed exactly (cosine of the float16 rows >= the rule's `cnn_min_similarity`:
random hashes never match) and stored with the daemon's default rule, so nothing relinks at open; the real
records are then added through `Catalog.apply`, which links them as the daemon would, after the catalog has
built its ANN index (in the background, timed); the close saves it beside the store.

`query`: `Catalog.open` as the daemon does (timed, RSS; a saved index that does not match is rebuilt in the
background and waited for, timed), then 200 synthetic threshold queries (stored
synthetic rows and near copies of them) and every real ukbench row as a query, through the live index's embedding
search (`search.embeddings.EmbeddingSearch.search_many` at `cnn_min_similarity` - 0.01, as the catalog
asks) with the candidates judged on the stored float16 rows; recall is the share of the exact scan's
pairs (every stored row with cosine >= `cnn_min_similarity`, a query's own record aside) found. The exact
scan (`vectors.EmbeddingIndex` over the same rows) is timed on the same queries. `--shares` repeats the
ANN queries at each share of the index's cells probed (percent).

`parquet`: see `parquet_import`.

`import`: `bench/daemon.py`'s daemon run imports the first 1,000 files of the camera corpus into a watched
root, three times: into an empty state; into the same real rows the library holds (a state built as the
library is, `build` with no synthetic rows: the 1,362 ukbench-transformed records through `Catalog.apply`);
into a copy of the library. The camera and ukbench corpora are made from the same source photographs, so
~6 real rows of the library are duplicates of every imported photo: into the library, and into the
real-rows state, every photo is linked, verified against the stored thumbnails and reported, which into an
empty state most are not. So the headline ratio is the library over the real-rows state (the only
difference is the synthetic records: what the import pays for the library's size); the ratio over the
empty state is printed beside it (what the import pays for size and for the duplicates together).
`--rounds R` repeats the three runs (empty, real rows, library: A B C A B C); `--states real,library` runs
only those. After the first library run the daemon is started again on that copy (1M + 1,000 records) and
timed to READY=1, with its decode count
(must stay 0) and RSS after the start-up scan, once at `wait-idle` and again SETTLE_S later (the daemon's
loop ranks the groups for the review page when it falls idle): VmRSS = RssAnon (the process's own memory)
+ RssFile (mapped files: the libraries, and the pages of the memory-mapped store it has read and not yet
dropped, which are the kernel's page cache).

`restart`: the library is copied to a work directory and opened once with `Store.open` here (a copied
store is a new inode, which it checks in full: minutes at 1M, timed), then the daemon is started on the copy
twice, watching the ukbench-transformed corpus (whose 1,362 photographs are library records): the first
start re-indexes any of those photographs whose stat identity changed since `build`; the second is the
restart measured as in `import` (READY, decodes, RSS).

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dedupd.bulk import importer, parquet
from dedupd.catalog import ANN_FILE, Catalog, link_rule
from dedupd.config import default_settings
from dedupd.imaging.cnn import Encoder
from dedupd.imaging.encode import encode_path
from dedupd.records import Encoding, FileKey, FileRecord, Link
from dedupd.search.vectors import EmbeddingIndex
from dedupd.service.daemon import ENCODER_VERSION, index_config
from dedupd.store import Store

sys.path.insert(0, str(Path(__file__).parent))
import daemon as daemon_bench  # noqa: E402  (bench/daemon.py: the live-import run)
from ann import isotropic, photo_like, unit  # noqa: E402  (bench/ann.py: the synthetic rows)

CACHE = Path.home() / ".cache" / "dedupd-bench" / "archive"
CORPORA = Path.home() / ".cache" / "dedupd-bench" / "corpora"
REAL = CACHE / "real.pkl"
LIBRARY = CACHE / "library"
DIM = 512
BATCH = 20_000
QUERIES = 200
MARGIN = 0.01  # the catalog's search margin below cnn_min_similarity
SETTINGS = default_settings()
CONFIG = index_config(SETTINGS)
THRESHOLD = CONFIG.matcher.cnn_min_similarity
RSS_KEYS = ("VmRSS", "RssAnon", "RssFile")
SETTLE_S = 20.0  # after wait-idle, before the second RSS reading


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentiles_ms(samples: list[float]) -> list[float]:
    return [round(float(np.percentile(samples, q)) * 1e3, 2) for q in (50, 99)]


# ---------------------------------------------------------------------------------------------------- real
def encode_real() -> dict[str, object]:
    """Encode the bench photographs once: {corpus: [(path, FileRecord)]}, cached."""
    encoder = Encoder(SETTINGS.cnn.model, providers=("cpu",))
    real: dict[str, list[FileRecord]] = {}
    start = time.perf_counter()
    for corpus in ("ukbench-transformed", "camera-import"):
        records = []
        for path in sorted(p for p in (CORPORA / corpus).iterdir() if p.is_file()):
            try:
                encoded = encode_path(path, cnn_spec=encoder.spec)
            except Exception as exc:  # noqa: BLE001  (a bench input the daemon would skip)
                print(f"skipped {path}: {exc}", flush=True)
                continue
            assert encoded.cnn_input is not None
            embedding = encoder.embed_prepared([encoded.cnn_input])[0]
            enc = encoded.encoding
            st = path.stat()
            key = FileKey(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            enc = Encoding(enc.digest, enc.width, enc.height, enc.hashes, embedding, enc.capture, enc.thumb)
            records.append(FileRecord(key, enc))
        real[corpus] = records
        print(f"{corpus}: {len(records)} encoded", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    REAL.write_bytes(pickle.dumps({"model": encoder.spec.fingerprint(), "records": real}))
    return {"encoded": {k: len(v) for k, v in real.items()}, "encode_s": round(time.perf_counter() - start, 1)}


def load_real() -> tuple[str, dict[str, list[FileRecord]]]:
    if not REAL.exists():
        sys.exit(f"no {REAL}: run `bench/archive.py real` first")
    cached = pickle.loads(REAL.read_bytes())
    return cached["model"], cached["records"]


def real_embeddings(records: list[FileRecord]) -> np.ndarray:
    """The float32 CNN rows of `load_real`'s records (`encode_real` gave each its embedding)."""
    rows = []
    for record in records:
        assert record.encoding is not None and record.encoding.embedding is not None
        rows.append(np.asarray(record.encoding.embedding, np.float32))
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------------- build
def synthetic_block(rng: np.random.Generator, count: int, draw: Callable[[np.random.Generator, int], np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(float16 unit rows, source position of each near copy or -1, hashes (count, 5))."""
    rows = draw(rng, count).astype(np.float32)
    copies = np.flatnonzero(rng.random(count) < 0.05)
    copies = copies[copies > 0]
    sources = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier row of the block
    sims = rng.uniform(0.55, 0.99, len(copies)).astype(np.float32)
    noise = unit(rng.standard_normal((len(copies), DIM)).astype(np.float32))
    base = rows[sources]
    noise = unit(noise - (noise * base).sum(axis=1, keepdims=True) * base)
    rows[copies] = unit(sims[:, None] * base + np.sqrt(1 - sims[:, None] ** 2) * noise)
    source = np.full(count, -1, np.int64)
    source[copies] = sources
    hashes = rng.integers(0, 2**63, (count, 5), dtype=np.int64).astype(np.uint64)
    return rows.astype(np.float16), source, hashes


def synthetic_record(i: int, row: np.ndarray, hashes: np.ndarray) -> FileRecord:
    names = ("dct", "phash", "ahash", "dhash", "whash")
    enc = Encoding(int(i + 1).to_bytes(16, "big"), 4000, 3000, dict(zip(names, map(int, hashes), strict=True)), row)
    key = FileKey(f"/archive/synthetic/{i // 1000:04d}/IMG_{i:07d}.jpg", 2049, 10**7 + i, 3_000_000 + i,
                  1_600_000_000 * 10**9 + i)  # fmt: skip
    return FileRecord(key, enc)


def build(n: int, state: Path, kind: str) -> dict[str, object]:
    model, real = load_real()
    if kind == "photo":  # fitted on the camera corpus; the ukbench rows stay out of the fit (they are queries)
        draw = photo_like(real_embeddings(real["camera-import"]))
    else:
        draw = isotropic
    library_real = real["ukbench-transformed"]
    synthetic = max(0, n - len(library_real))  # n below the real rows: those alone
    if state.exists():
        shutil.rmtree(state)
    rng = np.random.default_rng(11)
    links: list[Link] = []
    start = time.perf_counter()
    with Store.open(state, encoder_version=ENCODER_VERSION, model_id=model, dim=DIM) as store:
        for first in range(0, synthetic, BATCH):
            count = min(BATCH, synthetic - first)
            rows, source, hashes = synthetic_block(rng, count, draw)
            store.commit([synthetic_record(first + k, rows[k], hashes[k]) for k in range(count)])
            copies = np.flatnonzero(source >= 0)
            sims = (rows[copies].astype(np.float32) * rows[source[copies]].astype(np.float32)).sum(1, dtype=np.float64)
            for k, s in zip(copies.tolist(), sims.tolist(), strict=True):
                if s >= THRESHOLD:  # a fresh store numbers records from 1 in commit order
                    links.append(Link(first + int(source[k]) + 1, first + k + 1, "cnn", s))
        store.replace_links(links, link_rule(CONFIG.matcher))
    written = time.perf_counter() - start
    print(f"{synthetic} synthetic records, {len(links)} links in {written:.0f} s", flush=True)
    start = time.perf_counter()
    catalog = Catalog.open(state, CONFIG, encoder_version=ENCODER_VERSION, model_id=model, dim=DIM)
    opened = time.perf_counter() - start
    vectors = catalog._index.vectors
    assert vectors is not None
    vectors.wait_built()
    built = time.perf_counter() - start
    print(f"catalog open {opened:.1f} s, ANN index built after {built:.0f} s", flush=True)
    for first in range(0, len(library_real), 500):
        catalog.apply(library_real[first : first + 500])
    catalog.close()
    store_mib = sum(f.stat().st_size for f in (state / "store").iterdir()) / 2**20
    ann_file = state / ANN_FILE
    ann_mib = ann_file.stat().st_size / 2**20 if ann_file.exists() else 0.0
    return {"n": synthetic + len(library_real), "rows": kind, "synthetic": synthetic, "real": len(library_real),
            "links": len(links), "write_s": round(written),
            "catalog_open_s": round(opened, 1), "ann_build_s": round(built), "store_mib": round(store_mib),
            "ann_file_mib": round(ann_mib)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- query
def judged(catalog: Catalog, query: np.ndarray, candidates: np.ndarray) -> set[int]:
    """The candidates whose stored float16 row is at least THRESHOLD similar to the query (the rule's judge)."""
    rows, found = catalog.store.embeddings_of(candidates)
    q = query.astype(np.float16).astype(np.float32)
    sims = (rows.astype(np.float32) * q[None, :]).sum(axis=1, dtype=np.float64)
    return set(candidates[found & (sims >= THRESHOLD)].tolist())


def query(state: Path, shares: list[float]) -> dict[str, object]:
    model, real = load_real()
    start = time.perf_counter()
    catalog = Catalog.open(state, CONFIG, encoder_version=ENCODER_VERSION, model_id=model, dim=DIM)
    opened = time.perf_counter() - start
    vectors = catalog._index.vectors
    assert vectors is not None
    rebuilt = None
    if vectors.building:  # the saved index does not match (another index format): the catalog rebuilds it
        start = time.perf_counter()
        vectors.wait_built()
        rebuilt = round(time.perf_counter() - start)
        print(f"saved index stale: rebuilt in the background in {rebuilt} s", flush=True)
    assert vectors._ann is not None, "no ANN index"
    ann = vectors._ann
    result: dict[str, object] = {"catalog_open_s": round(opened, 2), "rss_after_open_mib": rss_mib(),
                                 "index_rebuilt_s": rebuilt, "records": len(vectors)}  # fmt: skip
    keys, rows = catalog.store.embeddings()
    exact = EmbeddingIndex.from_arrays(keys, rows)
    rng = np.random.default_rng(5)
    picked = rows[rng.integers(0, len(rows) - 2000, QUERIES)].astype(np.float32)
    half = QUERIES // 2
    noise = unit(rng.standard_normal((half, DIM)).astype(np.float32))
    sims = rng.uniform(0.7, 0.99, half).astype(np.float32)[:, None]
    picked[:half] = unit(sims * unit(picked[:half]) + np.sqrt(1 - sims**2) * noise)
    del rows
    rid_of = {rec.key.path: rid for rid, rec in catalog.store.iter_records(under=str(CORPORA))}
    real_rows = real_embeddings(real["ukbench-transformed"])
    own = [rid_of[r.key.path] for r in real["ukbench-transformed"]]
    for name, queries, selves in (("synthetic", unit(picked), [-1] * QUERIES), ("real", real_rows, own)):
        scan_times, truths = [], []
        for q, self_rid in zip(queries, selves, strict=True):
            t = time.perf_counter()
            want_keys, _ = exact.search(q, THRESHOLD - MARGIN)
            scan_times.append(time.perf_counter() - t)
            truths.append(judged(catalog, q, want_keys) - {self_rid})
        truth_pairs = sum(map(len, truths))
        figures: dict[str, object] = {"queries": len(queries), "scan_ms": percentiles_ms(scan_times),
                                      "exact_pairs": truth_pairs}  # fmt: skip
        for share in shares or [ann.probe_share * 100]:
            ann.probe_share = share / 100
            ann_times, found_pairs, candidates = [], 0, 0
            for q, self_rid, want in zip(queries, selves, truths, strict=True):
                t = time.perf_counter()
                got = vectors.search_many(q[None, :], THRESHOLD - MARGIN)[0]
                ann_times.append(time.perf_counter() - t)
                found_pairs += len(want & (judged(catalog, q, got) - {self_rid}))
                candidates += len(got)
            figures[f"probe {share:g} %"] = {"ann_ms": percentiles_ms(ann_times),
                                       "recall": round(found_pairs / max(1, truth_pairs), 4),
                                       "candidates_per_query": round(candidates / len(queries), 1)}  # fmt: skip
            print(name, share, figures[f"probe {share:g} %"], flush=True)
        result[name] = figures
        print(name, figures, flush=True)
    catalog.close()
    return result


# ---------------------------------------------------------------------------------------------------- import
def restart(home: Path) -> dict[str, object]:
    """Start the daemon on home's state again: READY time, decodes, RSS after the start-up scan."""
    notify_path = home / "notify-restart.sock"
    notify_path.unlink(missing_ok=True)  # a previous restart's
    notify = daemon_bench.NotifyListener(notify_path)
    config, sock = home / "dedupd.toml", home / "run" / "control.sock"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    env.pop("DEDUPD_CONFIG", None)
    log = home / "restart.log"
    started = time.monotonic()
    with log.open("wb") as stream:
        process = subprocess.Popen([str(daemon_bench.BIN / "dedupd"), "run", "--config", str(config)], env=env,
                                   stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        notify.wait_ready(process, log)
        ready_s = time.monotonic() - started
        rss_ready = rss_mib(process.pid)
        daemon_bench.dedupctl(sock, "wait-idle", "--timeout", "600", timeout=630)
        idle_s = time.monotonic() - started
        counts = daemon_bench.dedupctl(sock, "status")["counts"]
        rss_idle = {f"{key}_mib": round(daemon_bench.status_kib(process.pid, key) / 1024, 1) for key in RSS_KEYS}
        time.sleep(SETTLE_S)
        rss_settled = {f"{key}_mib": round(daemon_bench.status_kib(process.pid, key) / 1024, 1) for key in RSS_KEYS}
        hwm = daemon_bench.status_kib(process.pid, "VmHWM") / 1024
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=300)
        notify.close()
    return {"ready_s": round(ready_s, 2), "idle_s": round(idle_s, 2), "decodes": counts["decodes"],
            "indexed": counts["indexed"], "rss_ready_mib": rss_ready, "at_idle": rss_idle,
            f"{SETTLE_S:g}_s_later": rss_settled, "hwm_mib": round(hwm, 1)}  # fmt: skip


def restart_twice(state: Path, workdir: Path | None) -> dict[str, object]:
    """`restart`: the daemon on a copy of the library watching the ukbench corpus, started twice (see above)."""
    home = Path(tempfile.mkdtemp(prefix="archive-restart-", dir=workdir))
    try:
        start = time.perf_counter()
        shutil.copytree(state, home / "state")
        print(f"library copied in {time.perf_counter() - start:.0f} s", flush=True)
        daemon_bench.write_config(home, CORPORA / "ukbench-transformed")
        result: dict[str, object] = {"load_before": daemon_bench.load1()}
        start = time.perf_counter()
        Store.open(home / "state").close()  # the full check of a copied store, here rather than in a start
        result["copy_checked_s"] = round(time.perf_counter() - start, 1)
        print(f"copy checked in {result['copy_checked_s']} s", flush=True)
        for name in ("first_start", "restart"):
            result[name] = restart(home)
            print(name, result[name], flush=True)
        result["load_after"] = daemon_bench.load1()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return result


def ratio(library: dict[str, object], base: dict[str, object], figure: str) -> float:
    """The import into the library over an import into another state, on one figure."""
    top, bottom = library[figure], base[figure]
    assert isinstance(top, int | float) and isinstance(bottom, int | float)  # a figure: seconds or a count
    return round(float(top) / float(bottom), 2)


IMPORT_STATES = ("empty", "real", "library")  # the order of one round


def live_import(state: Path, workdir: Path | None, rounds: int, states: list[str]) -> dict[str, object]:
    files = sorted(p for p in (CORPORA / "camera-import").iterdir() if p.is_file())[:1000]
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in states}
    result: dict[str, object] = {"files": len(files), "runs": runs}
    for round_no in range(rounds):
        for name in states:
            home = Path(tempfile.mkdtemp(prefix=f"archive-{name}-", dir=workdir))
            try:
                start = time.perf_counter()
                if name == "library":
                    shutil.copytree(state, home / "state")
                    print(f"library copied in {time.perf_counter() - start:.0f} s", flush=True)
                elif name == "real":  # the library's real rows, built as the library is, without the synthetic
                    built = build(0, home / "state", "photo")
                    print(f"real-rows state built in {time.perf_counter() - start:.0f} s: {built}", flush=True)
                run = asdict(daemon_bench.run_daemon(home, files, idle_window_s=5.0))
                runs[name].append(run)
                print(f"round {round_no + 1}", name, run, flush=True)
                if name == "library" and round_no == 0:
                    result["restart"] = restart(home)
                    print("restart", result["restart"], flush=True)
            finally:
                shutil.rmtree(home, ignore_errors=True)
    for base in ("real", "empty"):
        if base not in runs or "library" not in runs:
            continue
        result[f"ratio_vs_{base}"] = {
            figure: [ratio(lib, other, figure) for lib, other in zip(runs["library"], runs[base], strict=True)]
            for figure in ("idle_s", "import_cpu_s", "import_main_cpu_s")
        }
    print("library over real rows:", result.get("ratio_vs_real"), "over empty:", result.get("ratio_vs_empty"),
          flush=True)  # fmt: skip
    return result


def parquet_import(state: Path, rows: int, workdir: Path | None) -> dict[str, object]:
    """`dedupd import`'s own code path (`importer.import_shards` on the daemon's catalog) for one shard of
    `rows` rows into an empty store and into a copy of the library: rows per second and the ratio. Each row
    names a real one-byte file written for it (its honest stat identity: the import re-stats every path)
    and carries a photo-like embedding (5 % near copies of a real ukbench photograph) and random hashes."""
    model, real = load_real()
    fit = real_embeddings(real["camera-import"])
    ukbench = real_embeddings(real["ukbench-transformed"])
    top = Path(tempfile.mkdtemp(prefix="archive-parquet-", dir=workdir))
    result: dict[str, object] = {"rows": rows}
    try:
        rng = np.random.default_rng(17)
        vectors = photo_like(fit)(rng, rows)
        copies = np.flatnonzero(rng.random(rows) < 0.05)
        sims = rng.uniform(0.7, 0.99, len(copies)).astype(np.float32)[:, None]
        base = ukbench[rng.integers(0, len(ukbench), len(copies))]
        noise = unit(rng.standard_normal((len(copies), DIM)).astype(np.float32))
        noise = unit(noise - (noise * base).sum(axis=1, keepdims=True) * base)
        vectors[copies] = unit(sims * base + np.sqrt(1 - sims**2) * noise)
        hashes = rng.integers(0, 2**63, (rows, 5), dtype=np.int64).astype(np.uint64)
        files = top / "files"
        shard_rows = []
        for i in range(rows):
            path = files / f"{i // 1000:03d}" / f"IMG_{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            st = path.stat()
            rec = synthetic_record(i, vectors[i].astype(np.float16), hashes[i])
            rec = FileRecord(FileKey(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), rec.encoding)
            shard_rows.append(parquet.Row(rec, ENCODER_VERSION, model))
        shard = top / "rows.parquet"
        with parquet.ShardWriter(shard, DIM) as writer:
            writer.write(shard_rows)
        for name in ("empty", "library"):
            target = top / name
            if name == "library":
                shutil.copytree(state, target)
            start = time.perf_counter()
            catalog = Catalog.open(target, CONFIG, encoder_version=ENCODER_VERSION, model_id=model, dim=DIM)
            opened = time.perf_counter() - start
            start, cpu = time.perf_counter(), time.process_time()
            report = importer.import_shards(catalog, [shard], encoder=ENCODER_VERSION, model=model)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            links = len(catalog.store.links()[0])
            catalog.close()
            result[name] = {"open_s": round(opened, 2), "import_s": round(wall, 1), "cpu_s": round(cpu, 1),
                            "rows_per_s": round(report.imported / wall), "imported": report.imported,
                            "links": links}  # fmt: skip
            print(name, result[name], flush=True)
            shutil.rmtree(target, ignore_errors=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert isinstance(result["library"], dict) and isinstance(result["empty"], dict)
    result["import_ratio"] = ratio(result["library"], result["empty"], "import_s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("real", "build", "query", "import", "restart", "parquet"))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rows", choices=("photo", "random"), default="photo",
                        help="build: synthetic rows photo-like (fitted to the camera corpus) or isotropic random")
    parser.add_argument("--shares", default="", help="query: percentages of the index's cells to probe, swept "
                        "(default: the shipped one)")
    parser.add_argument("--rows-to-import", type=int, default=5_000, help="parquet: rows in the shard")
    parser.add_argument("--state", type=Path, default=LIBRARY, help="the library's state directory")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the import runs' directories")
    parser.add_argument("--rounds", type=int, default=1, help="import: rounds of the three runs")
    parser.add_argument("--states", default=",".join(IMPORT_STATES), help="import: the runs of a round, in order")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.step == "real":
        result = encode_real()
    elif args.step == "build":
        result = build(args.n, args.state, args.rows)
    elif args.step == "query":
        result = query(args.state, [float(e) for e in args.shares.split(",") if e])
    elif args.step == "parquet":
        result = parquet_import(args.state, args.rows_to_import, args.workdir)
    elif args.step == "restart":
        result = restart_twice(args.state, args.workdir)
    else:
        states = args.states.split(",")
        if not set(states) <= set(IMPORT_STATES):
            parser.error(f"--states: some of {', '.join(IMPORT_STATES)}")
        result = live_import(args.state, args.workdir, args.rounds, states)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
