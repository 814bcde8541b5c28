"""Live index and store benchmark: threshold queries, rebuild time and memory, embedding search.

Hash mode (default): N records whose "dct" sign hash (the matcher's, indexed by the catalog) is a random
63-bit value (its DC bit is always 0), except ~10% that form clusters of 2-6 near-duplicates (0-8 bits
from their cluster's first member, a quarter of them also rotated or mirrored; a 0-bit copy shares its
content digest); the four imagededup-style hashes are random. The store is written directly in batches,
with the links the hash-only rule (CNN off: exact, oriented distance <= 2) gives within each cluster
(`matcher.all_pairs`; chance matches between unrelated random hashes are negligible) and that rule, so the
catalog does not relink. Then a fresh process opens the Catalog as the daemon does and reports the rebuild
time, its RSS, and single-query latency of the live "dct" index at threshold 10 (the rule's hash
threshold with the CNN, the widest search), next to a numpy brute-force scan (XOR + bitwise_count) over the
same hashes in the same process; then a file's 8 orientation variants at threshold 10 in one
`query_many` (the per-file search with the CNN on), `Catalog.matches` (hash-only rule), and
`Catalog.near(..., "phash")` (a scan of the imagededup-style column, loaded on first use, with the RSS
after it). `--compare` adds the array BK-tree and the multi-index hashing variants (3 and 4 substrings) on
the same hashes. `--relink` times `Catalog.set_matcher` (a reload) from the hash-only threshold 2 to 1 (stricter:
the stored links are judged again), to 4 (looser: every record is searched again) and back to 2.

Embedding mode (`--embeddings`, default N 100k): N x 512 unit vectors as float16 with clusters; query
latency of EmbeddingIndex.search at min similarity 0.9 next to numpy float32 BLAS on the same rows.

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from dedupd.catalog import Catalog, IndexConfig, link_rule
from dedupd.imaging.hashing import oriented_variants
from dedupd.records import Encoding, FileKey, FileRecord, Link
from dedupd.search.bktree import BKTree
from dedupd.search.matcher import MatcherSettings, all_pairs
from dedupd.search.mih import MultiIndexHash
from dedupd.search.vectors import EmbeddingIndex
from dedupd.store import Store

THRESHOLD = 10
QUERIES = 1000
RULE = MatcherSettings().without_cnn()
CONFIG = IndexConfig(RULE)
_NO_DC = np.uint64(2**63 - 1)


def memory_mib() -> dict[str, float]:
    """VmRSS and its anonymous / file-backed parts, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1e3
    return round(float(np.percentile(ms, 50)), 4), round(float(np.percentile(ms, 99)), 4)


def timed[A](fn: Callable[[A], object], args_list: Iterable[A], cpu: list[float] | None = None) -> tuple[float, float]:
    """Wall-clock p50/p99 in ms; per-call thread CPU time goes to `cpu` when given (the machine is shared,
    so wall-clock tails include time spent preempted by other processes)."""
    samples = []
    for args in args_list:
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(args)
        samples.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.thread_time() - start_cpu)
    return percentiles(samples)


def flips(rng: np.random.Generator, count: int, max_bits: int) -> np.ndarray:
    """`count` XOR masks with 0..max_bits random bits set."""
    masks = np.zeros(count, np.uint64)
    bits = rng.integers(0, max_bits + 1, count)
    for k in range(1, max_bits + 1):
        rows = np.flatnonzero(bits >= k)
        masks[rows] |= np.uint64(1) << rng.integers(0, 64, rows.size).astype(np.uint64)
    return masks


def make_hashes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(dct hash per record, digest id per record, clusters as arrays of record positions)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64, n, dtype=np.uint64) & _NO_DC
    digests = np.arange(n, dtype=np.int64)
    sizes = rng.integers(2, 7, n // 40)  # ~3.5 members each: ~9% of records in clusters
    positions = rng.permutation(n)[: int(sizes.sum())]
    clusters = np.split(positions, np.cumsum(sizes)[:-1])
    for members in clusters:
        masks = flips(rng, len(members) - 1, 8) & _NO_DC
        values[members[1:]] = values[members[0]] ^ masks
        exact = members[1:][masks == 0]
        digests[exact] = digests[members[0]]
        turned = members[1:][(masks != 0) & (rng.random(len(masks)) < 0.25)]
        values[turned] = oriented_variants(values[turned])[np.arange(len(turned)), rng.integers(1, 8, len(turned))]
    return values, digests, clusters


def cluster_links(rids: np.ndarray, values: np.ndarray, digests: np.ndarray, clusters: list[np.ndarray]) -> list[Link]:
    """The links the rule gives within each cluster."""
    links = []
    for members in clusters:
        for pair in all_pairs(digests[members], oriented_variants(values[members]), None, RULE):
            links.append(Link(int(rids[members[pair.first]]), int(rids[members[pair.second]]), pair.method,
                              float(pair.score)))  # fmt: skip
    return links


def populate(state: Path, n: int, seed: int) -> None:
    """Write n records (five hashes each, as the daemon stores them) plus their links."""
    values, digests, clusters = make_hashes(n, seed)
    rng = np.random.default_rng(seed + 1)
    others = rng.integers(0, 2**64, (n, 4), dtype=np.uint64)
    start = time.perf_counter()
    with Store.open(state) as store:
        for first in range(0, n, 20_000):
            batch = [
                FileRecord(
                    FileKey(
                        f"/photos/{i // 5000:04d}/IMG_{i:08d}.jpg",
                        2049,
                        10**6 + i,
                        2_000_000 + i,
                        1_700_000_000 * 10**9 + i,
                    ),
                    Encoding(
                        int(digests[i]).to_bytes(16, "big"),
                        4000,
                        3000,
                        {
                            "dct": int(values[i]),
                            "phash": int(others[i, 0]),
                            "ahash": int(others[i, 1]),
                            "dhash": int(others[i, 2]),
                            "whash": int(others[i, 3]),
                        },
                    ),  # fmt: skip
                )
                for i in range(first, min(n, first + 20_000))
            ]
            store.commit(batch)
        rids = np.arange(1, n + 1)  # a fresh store numbers records from 1 in commit order
        store.replace_links(cluster_links(rids, values, digests, clusters), link_rule(RULE))
    print(f"populated {n} records in {time.perf_counter() - start:.1f} s", flush=True)


def queries(values: np.ndarray, seed: int) -> list[int]:
    """Half near-duplicates of stored hashes (0-8 bits off), half fresh random hashes."""
    rng = np.random.default_rng(seed + 2)
    near = values[rng.integers(0, len(values), QUERIES // 2)] ^ flips(rng, QUERIES // 2, 8)
    fresh = rng.integers(0, 2**64, QUERIES - QUERIES // 2, dtype=np.uint64)
    mixed = np.concatenate([near, fresh])
    rng.shuffle(mixed)
    return mixed.tolist()


def measure(state: Path, seed: int, compare: bool, relink: bool) -> dict[str, object]:
    """Run in a fresh process: rebuild like the daemon, then time queries."""
    start = time.perf_counter()
    catalog = Catalog.open(state, CONFIG)
    rebuild_s = time.perf_counter() - start
    memory = memory_mib()
    live = catalog._index.dct  # the live index the catalog queries
    stats = catalog.stats()
    values = live.items()[1]  # the same hashes, for queries and the brute-force scan
    qs = [q & int(_NO_DC) for q in queries(values, seed)]
    cpu: list[float] = []
    query = timed(lambda q: live.query(q, THRESHOLD), qs, cpu)
    query_cpu = percentiles(cpu)
    variants = oriented_variants(np.array(qs, np.uint64))
    oriented = timed(lambda i: live.query_many(variants[i], THRESHOLD), range(200))
    probes = [Encoding(b"\0" * 16, 1, 1, {"dct": q, "phash": q}) for q in qs[:200]]
    matches = timed(catalog.matches, probes)
    after_queries = memory_mib()
    near = timed(lambda e: catalog.near(e, "phash"), probes)
    after_column = memory_mib()
    brute = timed(lambda q: np.flatnonzero(np.bitwise_count(values ^ np.uint64(q)) <= THRESHOLD), qs)
    start = time.perf_counter()
    listed = catalog.groups()
    groups_s = time.perf_counter() - start
    result: dict[str, object] = {
        "n": len(values),
        "query_p50_ms": query[0],
        "query_p99_ms": query[1],
        "query_cpu_p50_ms": query_cpu[0],
        "query_cpu_p99_ms": query_cpu[1],
        "bruteforce_p50_ms": brute[0],
        "bruteforce_p99_ms": brute[1],
        "oriented_8_variants_p50_ms": oriented[0],
        "matches_p50_ms": matches[0],
        "near_phash_column_p50_ms": near[0],
        "rebuild_s": round(rebuild_s, 3),
        "rss_mib": memory["VmRSS"],
        "rss_anon_mib": memory.get("RssAnon"),
        "rss_file_mib": memory.get("RssFile"),
        "rss_after_queries_mib": after_queries["VmRSS"],
        "rss_after_phash_column_mib": after_column["VmRSS"],
        "groups": stats["groups"],
        "groups_listing_s": round(groups_s, 2),
        "grouped_files": sum(len(g.paths) for g in listed),
        "mih_mib": round(live.nbytes / 2**20, 1),
    }
    if relink:
        for bits in (1, 4, RULE.hash_only_threshold):
            start = time.perf_counter()
            catalog.set_matcher(RULE.with_threshold(bits))
            result[f"set_matcher_to_{bits}_s"] = round(time.perf_counter() - start, 2)
    if compare:
        keys = np.arange(len(values))
        for chunks in (3, 4):
            start = time.perf_counter()
            index = MultiIndexHash.from_arrays(keys, values, chunks=chunks)
            build = time.perf_counter() - start
            p50, p99 = timed(partial(index.query, threshold=THRESHOLD), qs)
            result[f"mih{chunks}"] = {"build_s": round(build, 2), "p50_ms": p50, "p99_ms": p99,
                                      "mib": round(index.nbytes / 2**20, 1)}  # fmt: skip
            del index
        start = time.perf_counter()
        tree = BKTree.from_items(keys, values)
        build = time.perf_counter() - start
        bktree: dict[str, float] = {"build_s": round(build, 2)}
        result["bktree"] = bktree
        for threshold in (2, 4, THRESHOLD):
            sample = qs[:: max(1, len(qs) // (100 if threshold < THRESHOLD else 30))]
            p50, p99 = timed(partial(tree.query, threshold=threshold, ordered=False), sample)
            mih50, _ = timed(partial(live.query, threshold=threshold), sample)
            bktree[f"t{threshold}_p50_ms"] = p50
            bktree[f"t{threshold}_mih_p50_ms"] = mih50
    catalog.close()
    return result


def embedding_bench(n: int, seed: int) -> dict[str, object]:
    dim = 512
    rng = np.random.default_rng(seed)
    rows = np.empty((n, dim), np.float16)
    for first in range(0, n, 50_000):  # generate in blocks to keep float64 temporaries small
        block = rng.standard_normal((min(50_000, n - first), dim), dtype=np.float32)
        rows[first : first + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    near = rng.integers(0, n, n // 20)
    noisy = rows[near].astype(np.float32) + 0.02 * rng.standard_normal((len(near), dim), dtype=np.float32)
    rows[rng.integers(0, n, len(near))] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    start = time.perf_counter()
    index = EmbeddingIndex.from_arrays(np.arange(n), rows)
    build = time.perf_counter() - start
    picks = rng.integers(0, n, 200)
    qs = [rows[i].astype(np.float32) + 0.01 * rng.standard_normal(dim, dtype=np.float32) for i in picks]
    cpu: list[float] = []
    p50, p99 = timed(lambda q: index.search(q, 0.9), qs, cpu)
    top50, _ = timed(lambda q: index.top_k(q, 10), qs[:50])
    as_f32 = rows.astype(np.float32)
    blas50, _ = timed(lambda q: np.flatnonzero(as_f32 @ q >= 0.9), qs[:50])
    return {
        "n": n, "dim": dim, "query_p50_ms": p50, "query_p99_ms": p99, "query_cpu_p50_ms": percentiles(cpu)[0],
        "top10_p50_ms": top50,
        "numpy_f32_p50_ms": blas50, "matrix_mib": round(index.nbytes / 2**20, 1), "build_s": round(build, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="records (default 1,000,000; 100,000 with --embeddings)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--embeddings", action="store_true", help="benchmark the embedding matrix instead")
    parser.add_argument("--compare", action="store_true", help="also time the BK-tree and MIH variants")
    parser.add_argument("--relink", action="store_true", help="also time set_matcher to other thresholds")
    parser.add_argument("--state", type=Path, default=None, help="store location (default: a cache dir per N)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh-process half
    args = parser.parse_args()
    if args.embeddings:
        result = embedding_bench(args.n or 100_000, args.seed)
        print(json.dumps(result))
        return
    n = args.n or 1_000_000
    state = args.state or Path.home() / ".cache" / "dedupd-bench" / f"index-{n}-{args.seed}"
    if args.measure:
        print(json.dumps(measure(state, args.seed, args.compare, args.relink)))
        return
    ready = False
    if (state / "store").exists():
        with Store.open(state) as store:
            ready = store.counts().get("encoded") == n and store.link_rule() == link_rule(RULE)  # not an older layout
    if not ready:
        shutil.rmtree(state, ignore_errors=True)
        populate(state, n, args.seed)
    flags = [f"--{name}" for name in ("compare", "relink") if getattr(args, name)]
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", "--n", str(n), "--seed", str(args.seed),
           "--state", str(state), *flags]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    result = json.loads(out[-1])
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1))
    for name, figures in result.items():
        if isinstance(figures, dict):
            print(name, figures)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
