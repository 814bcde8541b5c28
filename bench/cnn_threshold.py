#!/usr/bin/env python3
"""Precision and recall of a CNN model against cosine threshold, on the bench corpora.

    .venv/bin/python bench/cnn_threshold.py [CORPUS_DIR ...] [--model sscd-distilled] [--workers 2]
        [--size N] [--square] [--reducing-gap G|none] [--target 0.995]

Encodes every file of each corpus the way the imagededup-compatible `CNN` facade does (imagededup's
loader, no EXIF rotation), scores every unordered pair against the corpus's ground truth (as
/work/shared/bench/score.py does for imagededup's output), and prints, per corpus, pairs found,
precision and recall for thresholds 0.50..0.95, recall per edit kind at the recommended threshold,
the highest similarity of a false pair, and finally the smallest threshold (0.01 steps) whose
precision reaches `--target` on every corpus, and precision/recall at the model's default threshold.
`--size/--square/--reducing-gap` override the model's
preprocessing, to compare alternatives. Corpora default to $BENCH_DATA/corpora/* (BENCH_DATA defaults
to ~/.cache/dedupd-bench).
"""

import argparse
import csv
import json
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime

from dedupd.errors import Skipped
from dedupd.imaging.cnn import Encoder, ModelSpec, prepare, resolve_model
from dedupd.imaging.decode import load_rgb

TABLE = [round(0.50 + 0.05 * step, 2) for step in range(10)]
FINE = [round(0.30 + 0.01 * step, 2) for step in range(70)]


def prepared(spec: ModelSpec, path: Path) -> np.ndarray | None:
    try:
        return prepare(load_rgb(path), spec)
    except Skipped:
        return None


def encode(corpus: Path, files: list[str], encoder: Encoder, workers: int) -> tuple[np.ndarray, list[int], float]:
    """Embeddings of the decodable files (rows) and their indices into `files`; wall seconds."""
    start = time.perf_counter()
    paths = [corpus / name for name in files]
    job = partial(prepared, encoder.spec)
    if workers > 1:
        with multiprocessing.get_context("forkserver").Pool(workers) as pool:
            tensors = pool.map(job, paths, chunksize=8)
    else:
        tensors = [job(path) for path in paths]
    kept = [(index, tensor) for index, tensor in enumerate(tensors) if tensor is not None]
    embeddings = encoder.embed_prepared([tensor for _, tensor in kept])
    return embeddings, [index for index, _ in kept], time.perf_counter() - start


def pair_scores(embeddings: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Similarity and truth of every unordered pair (small corpora: the full matrix is fine here)."""
    rows, cols = np.triu_indices(len(embeddings), 1)
    similarity = (embeddings @ embeddings.T)[rows, cols]
    return similarity, groups[rows] == groups[cols], rows, cols


def precision_recall(similarity: np.ndarray, same: np.ndarray, true_pairs: int, threshold: float) -> tuple:
    found = similarity >= threshold
    hits = int(np.count_nonzero(found & same))
    total = int(np.count_nonzero(found))
    return total, hits, (hits / total if total else 1.0), hits / true_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_data = Path(os.environ.get("BENCH_DATA", Path.home() / ".cache/dedupd-bench"))
    parser.add_argument("corpora", nargs="*", type=Path)
    parser.add_argument("--model", default="sscd-distilled")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int)
    parser.add_argument("--square", action="store_true", help="resize to size x size (aspect not kept)")
    parser.add_argument("--reducing-gap", help="Pillow reducing_gap, or 'none'")
    parser.add_argument("--target", type=float, default=0.995, help="precision to reach on every corpus")
    args = parser.parse_args()
    corpora = args.corpora or sorted(p for p in (bench_data / "corpora").iterdir() if p.is_dir())

    spec = resolve_model(args.model)
    if args.size:
        spec = replace(spec, size=args.size)
    if args.square:
        spec = replace(spec, keep_aspect=False, resize=None)
    if args.reducing_gap:
        spec = replace(spec, reducing_gap=None if args.reducing_gap == "none" else float(args.reducing_gap))
    encoder = Encoder(spec, batch_size=args.batch_size)
    print(
        f"model {spec.name}: size {spec.size} keep_aspect {spec.keep_aspect} resize {spec.resize} "
        f"reducing_gap {spec.reducing_gap}; onnxruntime {onnxruntime.__version__} on {encoder.provider}; "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; workers {args.workers}"
    )

    passing = set(FINE)
    at_default = []
    for corpus in corpora:
        truth = json.loads(Path(f"{corpus}.ground_truth.json").read_text())
        kinds = {row["file"]: row["kind"] for row in csv.DictReader(open(f"{corpus}.variants.csv"))}
        files = sorted(truth)
        embeddings, kept, seconds = encode(corpus, files, encoder, args.workers)
        names = [files[index] for index in kept]
        groups = np.array([truth[name] for name in names])
        _, members = np.unique(np.array([truth[name] for name in files]), return_counts=True)
        true_pairs = int((members * (members - 1) // 2).sum())
        similarity, same, rows, cols = pair_scores(embeddings, groups)
        print(
            f"\n{corpus.name}: {len(files)} files, {len(files) - len(kept)} skipped, {true_pairs} true pairs; "
            f"decode+encode {seconds:.1f} s ({len(kept) / seconds:.0f} img/s)"
        )
        print("threshold  found  precision  recall")
        for threshold in TABLE:
            found, _, precision, recall = precision_recall(similarity, same, true_pairs, threshold)
            print(f"     {threshold:.2f}  {found:5d}  {100 * precision:8.2f}%  {100 * recall:5.1f}%")
        _, _, precision, recall = precision_recall(similarity, same, true_pairs, spec.threshold)
        at_default.append(f"{corpus.name} precision {100 * precision:.2f}% recall {100 * recall:.1f}%")
        passing &= {t for t in FINE if precision_recall(similarity, same, true_pairs, t)[2] >= args.target}
        negatives = similarity[~same]
        print(
            f"false pairs: highest similarity {negatives.max():.3f}, 99.99th percentile "
            f"{np.quantile(negatives, 0.9999):.3f}; true pairs: median similarity {np.median(similarity[same]):.3f}"
        )
        by_kind: dict[str, list[float]] = {}
        for score, is_same, row, col in zip(similarity, same, rows, cols, strict=True):
            pair_kinds = {kinds[names[row]], kinds[names[col]]}
            if is_same and "orig" in pair_kinds and len(pair_kinds) == 2:
                by_kind.setdefault((pair_kinds - {"orig"}).pop(), []).append(float(score))
        print(
            "vs original, median similarity and recall at the model default "
            f"{spec.threshold}: "
            + "  ".join(
                f"{kind} {np.median(v):.2f}/{100 * np.mean(np.array(v) >= spec.threshold):.0f}%"
                for kind, v in sorted(by_kind.items())
            )
        )
    smallest = min(passing) if passing else None
    print(f"\nsmallest threshold with precision >= {100 * args.target:.1f}% on every corpus: {smallest}")
    print(f"model default {spec.threshold}: " + ", ".join(at_default))
    sys.exit(0 if smallest is not None and smallest <= spec.threshold else 1)


if __name__ == "__main__":
    main()
