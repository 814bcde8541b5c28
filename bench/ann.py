"""Approximate nearest-neighbour libraries side by side on the matcher's embedding threshold query.

N x 512 L2-normalised vectors kept as float16 (random directions; 5 % of them near copies of another
row at cosine 0.55-0.99, so the rule's operating point has pairs to find); queries are 200 stored rows
and near copies of them. With `--real FILE.npy` (real embeddings of the bench photographs) those rows
replace the last synthetic ones and each of them is a query; `--real` may also be `bench/archive.py real`'s
cache (real.pkl): the ukbench-transformed rows are then the real rows, and `--rows photo` draws the
synthetic rows from the Gaussian fitted to the camera corpus's embeddings (archive.py's `photo_like`)
instead of uniformly random directions. For each candidate index:
build time, size in memory, 200 single-vector threshold queries at `--threshold` (default: the
matcher's `cnn_min_similarity` minus the catalog's search margin) timed wall-clock (p50 / p99), and
recall: the share of the exact scan's pairs at the rule's threshold the index finds. The exact scan
is `dedupd.search.vectors.EmbeddingIndex` (numkong float16 dot products), timed on the same queries.

Candidates: dedupd's own index (`codes`: `dedupd.search.ann.AnnIndex`, sign codes in k-means cells, its
search effort the share of the cells probed, `--shares`, its own slack), usearch HNSW with i8 and f16
vectors (threshold search = top-k grown until the k-th hit falls below the threshold; usearch's `radius`
argument is not applied in 2.26), faiss HNSW with 8-bit scalar-quantised vectors
(`IndexHNSWSQ`, its `range_search`), faiss IVF-flat on float16 rows (`IndexIVFScalarQuantizer` QT_fp16,
nprobe 16, `range_search`), and `faiss-binary-ivf`: faiss's form of dedupd's design, `IndexBinaryIVF` over
the same 512-bit sign codes (the signs of the same random projections), as many cells as dedupd's index,
trained by faiss (binary k-means), `range_search` at the same Hamming radius on all 512 bits, the same share of
cells probed (`--shares`), on one thread as dedupd's numpy; `faiss-binary-ivf-cells` the same with dedupd's
cells instead (its spherical k-means centroids assign the rows, `add_core`, and rank the cells a query probes,
`range_search_preassigned`): faiss's lists and Hamming scan alone. usearch and faiss come with the `bench` extra.
Besides p50 / p99 wall-clock, each setting gives the candidates a query returns (what the caller reads from
the store and judges on the float16 rows) and the CPU time of the whole query loop per query. A library
named twice in `--libs` is built and measured twice (paired runs: A B A B).

    .venv/bin/python bench/ann.py --n 100000 [--libs codes,usearch-i8,faiss-hnsw-sq8] [--real emb.npy]
    .venv/bin/python bench/ann.py --n 1000000 --rows photo --real ~/.cache/dedupd-bench/archive/real.pkl

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dedupd.search.matcher import MatcherSettings
from dedupd.search.vectors import EmbeddingIndex

DIM = 512
QUERIES = 200
RULE = MatcherSettings().cnn_min_similarity
MARGIN = 0.01
type Search = Callable[[np.ndarray, float], np.ndarray]
type Tune = Callable[[float], None]  # sets the search effort (HNSW ef, IVF nprobe, share of cells)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def photo_like(fit: np.ndarray) -> Draw:
    """Unit rows drawn from the Gaussian with the mean and covariance of the real embeddings `fit` (each row
    is the mean plus a random Gaussian mix of their deviations, normalised): photo-like directions, not real
    photographs. Against the 2,389 bench photographs this gives pairwise cosines of 0.02 median, 0.25 at the
    99th percentile and none of 40M pairs at the rule's 0.62 (real distinct photos: 0.01 / 0.17)."""
    mean, deviations = fit.mean(0), (fit - fit.mean(0)) / np.sqrt(len(fit) - 1)

    def draw(rng: np.random.Generator, count: int) -> np.ndarray:
        return unit(mean + rng.standard_normal((count, len(fit))).astype(np.float32) @ deviations)

    return draw


def load_real(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(real query rows, camera rows to fit photo-like rows to or None) from a .npy or archive.py's real.pkl."""
    if path.suffix == ".npy":
        return unit(np.load(path).astype(np.float32)), None
    records = pickle.loads(path.read_bytes())["records"]

    def stacked(corpus: str) -> np.ndarray:
        return unit(np.stack([np.asarray(r.encoding.embedding, np.float32) for r in records[corpus]]))

    return stacked("ukbench-transformed"), stacked("camera-import")


def near_copies(rng: np.random.Generator, base: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Unit vectors at cosine `sims` from the unit rows `base`."""
    noise = unit(rng.standard_normal(base.shape).astype(np.float32))
    noise = unit(noise - (noise * base).sum(axis=1, keepdims=True) * base)  # orthogonal to base
    return sims[:, None] * base + np.sqrt(1 - sims[:, None] ** 2) * noise


type Draw = Callable[[np.random.Generator, int], np.ndarray]  # (rng, count) -> unit rows


def isotropic(rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniformly random unit directions: no structure for an index to follow (the hard case)."""
    return unit(rng.standard_normal((count, DIM)).astype(np.float32))


def make_rows(n: int, seed: int, draw: Draw = isotropic) -> np.ndarray:
    """(n, DIM) float16 unit rows drawn by `draw`, built in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n, DIM), np.float16)
    block = 100_000
    for first in range(0, n, block):
        chunk = draw(rng, min(block, n - first))
        copies = rng.random(len(chunk)) < 0.05
        sources = rng.integers(0, len(chunk), int(copies.sum()))
        chunk[copies] = near_copies(rng, chunk[sources], rng.uniform(0.55, 0.99, len(sources)).astype(np.float32))
        rows[first : first + len(chunk)] = unit(chunk)
    return rows


def query_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    """Half near copies of stored rows (cosine 0.6-0.99), half stored rows themselves."""
    rng = np.random.default_rng(seed + 1)
    picked = rows[rng.integers(0, len(rows), QUERIES)].astype(np.float32)
    half = QUERIES // 2
    picked[:half] = near_copies(rng, unit(picked[:half]), rng.uniform(0.6, 0.99, half).astype(np.float32))
    return unit(picked).astype(np.float32)


def grown_top_k(top: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], total: int) -> Search:
    """Threshold search from a top-k search: k grows (x4) while the k-th hit is still above the threshold."""

    def search(query: np.ndarray, threshold: float) -> np.ndarray:
        k = 16
        while True:
            keys, sims = top(query, min(k, total))
            if len(sims) < k or sims[-1] < threshold or k >= total:
                return keys[sims >= threshold]
            k *= 4

    return search


def build_codes(rows: np.ndarray) -> tuple[Search, int, Tune]:
    from dedupd.search.ann import AnnIndex

    index = AnnIndex.build(np.arange(len(rows)), rows)

    def search(query: np.ndarray, threshold: float) -> np.ndarray:
        return index.search_many(query, threshold)[0]

    def tune(effort: float) -> None:  # effort: the percentage of cells probed
        index.probe_share = effort / 100

    search(rows[0].astype(np.float32), RULE)  # lays the rows out by cell (the index does it at its first query)
    return search, index.nbytes, tune


def build_usearch(rows: np.ndarray, dtype: str) -> tuple[Search, int, Tune]:
    from usearch.index import Index

    index = Index(ndim=DIM, metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
    for first in range(0, len(rows), 50_000):
        chunk = rows[first : first + 50_000]
        index.add(np.arange(first, first + len(chunk), dtype=np.uint64), chunk.astype(np.float32))

    def top(query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = index.search(query, k)
        return found.keys.astype(np.int64), 1.0 - found.distances.astype(np.float64)

    def tune(effort: float) -> None:
        index.expansion_search = int(effort)

    return grown_top_k(top, len(rows)), index.memory_usage, tune


def build_faiss(rows: np.ndarray, kind: str) -> tuple[Search, int, Tune]:
    import faiss

    if kind == "hnsw-sq8":
        index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 128
        index.hnsw.efSearch = 64
        index.train(rows[: min(len(rows), 100_000)].astype(np.float32))
    else:  # ivf-fp16
        lists = max(16, int(4 * np.sqrt(len(rows))))
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFScalarQuantizer(quantizer, DIM, lists, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        index.train(rows[: min(len(rows), 40 * lists)].astype(np.float32))
        index.nprobe = 16
    for first in range(0, len(rows), 50_000):
        index.add(rows[first : first + 50_000].astype(np.float32))

    def search(query: np.ndarray, threshold: float) -> np.ndarray:
        lims, _, labels = index.range_search(query.reshape(1, DIM), threshold)
        return labels[lims[0] : lims[1]].astype(np.int64)

    def tune(effort: float) -> None:
        if kind == "hnsw-sq8":
            index.hnsw.efSearch = int(effort)
        else:
            index.nprobe = max(1, int(effort) // 4)

    return search, faiss.serialize_index(index).nbytes, tune


def build_faiss_binary_ivf(rows: np.ndarray, own_cells: bool) -> tuple[Search, int, Tune]:
    import faiss

    from dedupd.search.ann import BITS, AnnIndex, radius

    faiss.omp_set_num_threads(1)  # one query at a time on one thread, as dedupd's index
    shaped = AnnIndex.train(rows, len(rows))  # dedupd's projections, cell count and (own_cells) centroids
    projection, centroids = shaped._projection, shaped._centroids

    def codes(block: np.ndarray) -> np.ndarray:
        return np.packbits(np.asarray(block, np.float32).reshape(-1, DIM) @ projection > 0, axis=1)

    index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, shaped.cells)
    if own_cells:
        index.is_trained = True  # the lists only: dedupd's centroids assign and probe, faiss's quantizer is unused
    else:
        sample = np.random.default_rng(0).choice(len(rows), min(len(rows), 256 * shaped.cells), replace=False)
        index.train(codes(rows[np.sort(sample)]))
    for first in range(0, len(rows), 50_000):
        block = rows[first : first + 50_000].astype(np.float32)
        if own_cells:
            cells = np.ascontiguousarray(np.argmax(block @ centroids.T, axis=1), np.int64)
            index.add_core(len(block), faiss.swig_ptr(codes(block)), None, faiss.swig_ptr(cells))
        else:
            index.add(codes(block))

    def search(query: np.ndarray, threshold: float) -> np.ndarray:
        code, at = codes(query), radius(threshold, BITS) + 1  # faiss: distance < radius
        if own_cells:
            sims = np.asarray(query, np.float32).reshape(-1) @ centroids.T
            probed = np.argpartition(-sims, index.nprobe - 1)[: index.nprobe] if index.nprobe < len(sims) else None
            lims, _, labels = index.range_search_preassigned(code, at, (np.arange(len(sims)) if probed is None
                                                                        else probed)[None], None)  # fmt: skip
        else:
            lims, _, labels = index.range_search(code, at)
        return labels[lims[0] : lims[1]].astype(np.int64)

    def tune(effort: float) -> None:  # effort: the percentage of cells probed
        index.nprobe = max(1, int(np.ceil(effort / 100 * shaped.cells)))

    return search, faiss.serialize_index_binary(index).nbytes, tune


BUILDERS: dict[str, Callable[[np.ndarray], tuple[Search, int, Tune]]] = {
    "codes": build_codes,
    "usearch-i8": lambda rows: build_usearch(rows, "i8"),
    "usearch-f16": lambda rows: build_usearch(rows, "f16"),
    "faiss-hnsw-sq8": lambda rows: build_faiss(rows, "hnsw-sq8"),
    "faiss-ivf-fp16": lambda rows: build_faiss(rows, "ivf-fp16"),
    "faiss-binary-ivf": lambda rows: build_faiss_binary_ivf(rows, own_cells=False),
    "faiss-binary-ivf-cells": lambda rows: build_faiss_binary_ivf(rows, own_cells=True),
}
#: Searched at --threshold: their Hamming radius has its own slack.
OWN_SLACK = ("codes", "faiss-binary-ivf", "faiss-binary-ivf-cells")


def percentiles(samples: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(samples, 50)) * 1e3, 2), round(float(np.percentile(samples, 99)) * 1e3, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--libs", default=",".join(BUILDERS))
    parser.add_argument("--real", type=Path, help=".npy of real embeddings (rows), or bench/archive.py's real.pkl")
    parser.add_argument("--rows", choices=("random", "photo"), default="random",
                        help="synthetic rows: uniformly random, or photo-like (needs --real real.pkl)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=RULE - MARGIN)
    parser.add_argument("--slack", type=float, default=0.05, help="the index is searched this far below --threshold")
    parser.add_argument("--efforts", default="64,256", help="search efforts: HNSW ef (IVF: nprobe = effort / 4)")
    parser.add_argument("--shares", default="12.5,25", help="codes: percentages of the cells probed")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    real, fit = load_real(args.real) if args.real else (None, None)
    if args.rows == "photo" and fit is None:
        parser.error("--rows photo needs --real real.pkl (the camera corpus's embeddings to fit)")
    rows = make_rows(args.n, args.seed, photo_like(fit) if fit is not None and args.rows == "photo" else isotropic)
    queries = query_rows(rows, args.seed)
    if real is not None:  # the real rows replace the last synthetic ones; every real row is a query
        rows[len(rows) - len(real) :] = real
        queries = real
    exact = EmbeddingIndex.from_arrays(np.arange(args.n), rows)
    truth, scan_times = [], []
    for q in queries:
        start = time.perf_counter()
        keys, sims = exact.search(q, args.threshold)
        scan_times.append(time.perf_counter() - start)
        truth.append(set(keys[sims >= RULE].tolist()))
    result: dict[str, object] = {"n": args.n, "real": bool(args.real), "threshold": args.threshold,
                                 "exact_pairs": sum(map(len, truth)), "scan_ms": percentiles(scan_times)}  # fmt: skip
    print(f"n={args.n} exact scan p50/p99 {result['scan_ms']} ms, {result['exact_pairs']} pairs at {RULE}", flush=True)
    for name in args.libs.split(","):
        gc.collect()
        before = rss_mib()
        start = time.perf_counter()
        search, nbytes, tune = BUILDERS[name](rows)
        build = time.perf_counter() - start
        figures: dict[str, object] = {"build_s": round(build, 1), "index_mib": round(nbytes / 2**20, 1),
                                      "rss_growth_mib": round(rss_mib() - before, 1)}  # fmt: skip
        for effort in map(float, (args.shares if name in OWN_SLACK else args.efforts).split(",")):
            tune(effort)
            times, found, candidates = [], 0, 0
            threshold = args.threshold if name in OWN_SLACK else args.threshold - args.slack
            cpu = time.process_time()
            for q, want in zip(queries, truth, strict=True):
                start = time.perf_counter()
                keys = search(q, threshold)
                times.append(time.perf_counter() - start)
                found += len(want & set(keys.tolist()))
                candidates += len(keys)
            cpu = time.process_time() - cpu
            figures[f"effort {effort}"] = {"query_ms": percentiles(times),
                                           "cpu_ms_per_query": round(cpu * 1e3 / len(queries), 2),
                                           "recall": round(found / max(1, sum(map(len, truth))), 4),
                                           "candidates_per_query": round(candidates / len(queries), 1)}  # fmt: skip
        run = sum(1 for key in result if key.split(" ")[0] == name) + 1
        label = name if run == 1 else f"{name} ({run})"
        print(label, figures, flush=True)
        result[label] = figures
        del search
    print(json.dumps(result))


if __name__ == "__main__":
    main()
