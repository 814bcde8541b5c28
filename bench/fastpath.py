"""dedupd's fast decode path (`imaging.encode.encode_path`): speed, agreement with the exact path, PNG cost.

Usage: .venv/bin/python bench/fastpath.py [--parts throughput agreement png] [--limit N] [--no-imagededup]
                                          [--workers N]

The fast path reads a file once and decodes it reduced (JPEG: DCT-domain 1/2-1/8 scaling via
`draft`; other formats: full decode, then an integer box `reduce`) to a short side >= 256 px, then
computes the content digest, the four imagededup-style hashes (stored orientation) and the matcher's
oriented sign hash. The exact path is `dedupd.methods.PHash().encode_image` (bit-identical to
imagededup: full decode, LANCZOS from full size).

- throughput: the camera-import JPEGs whose long side is >= 3000 px (10 MP class; from the corpus's
  .variants.csv), one process, one warm-up call each, then the loop timed. img/s per core = files /
  CPU s (`time.process_time`, all threads of the process); wall img/s as well. encode_path runs
  without the CNN. imagededup's own PHash.encode_image is timed the same way inside .bench/peers311
  (bench/_peers.py `time-phash`) unless --no-imagededup.
- agreement: for every file of both corpora, the fast path's phash/ahash/dhash/whash
  (`encode_path(...).encoding.hashes`) vs the exact path's. The exact hashes come from one
  `imaging.decode.imagededup_rgb` decode per file feeding `preprocess` + `hash_int` for all four
  methods: the same functions, in the same order, that `methods.PHash/AHash/DHash/WHash.encode_image`
  call (each of which would decode the file again). Reported: share of files with identical hashes,
  mean and max bit difference, per corpus and method, and per edit kind.
- png: the camera-import PNGs, read into memory first; CPU ms per file of `encode_path` (all of it),
  its decode step alone (`open_for_matching`: full decode + reduce + RGB), a plain Pillow full decode,
  and other decoders when they import: pyspng, imagecodecs (libpng, libspng), OpenCV (full and
  IMREAD_REDUCED_COLOR_8). Those are not project dependencies: they are looked for in --alt-path
  (default .bench/pngalt, filled with `.venv/bin/pip install --no-deps --target .bench/pngalt pyspng
  imagecodecs opencv-python-headless`), appended to sys.path after the project venv's packages.

The 1-minute load average is printed with each part (the machine may be shared). The last line is JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import _peers
import numpy as np
from PIL import Image, features

from dedupd.errors import Skipped
from dedupd.imaging.decode import imagededup_rgb, open_for_matching, preprocess
from dedupd.imaging.encode import encode_bytes, encode_path
from dedupd.imaging.hashing import TARGET_SIZES, hash_int
from dedupd.methods import PHash

REPO = Path(__file__).resolve().parent.parent
CORPORA_DIR = Path.home() / ".cache" / "dedupd-bench" / "corpora"
CORPORA = ("camera-import", "ukbench-transformed")
TEN_MP_LONG_SIDE = 3000
METHODS = tuple(TARGET_SIZES)


def variants(corpus: str) -> list[dict[str, str]]:
    """The corpus's .variants.csv rows (file, group, kind, width, height, ...), in file order."""
    with (CORPORA_DIR / f"{corpus}.variants.csv").open() as handle:
        return sorted(csv.DictReader(handle), key=lambda row: row["file"])


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def timed_loop(function: Callable[[Path], object], files: list[Path]) -> dict[str, float]:
    """Warm up on the first file, then time `function` over all of them: wall and process CPU."""
    function(files[0])
    cpu_start, start = time.process_time(), time.perf_counter()
    for path in files:
        function(path)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "files": len(files),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "img_per_s": round(len(files) / wall, 2),
        "img_per_s_per_core": round(len(files) / cpu, 2),
    }


def throughput(limit: int | None, with_imagededup: bool) -> dict[str, Any]:
    folder = CORPORA_DIR / "camera-import"
    rows = [
        row
        for row in variants("camera-import")
        if row["file"].endswith(".jpg") and max(int(row["width"]), int(row["height"])) >= TEN_MP_LONG_SIDE
    ]
    files = [folder / row["file"] for row in rows][:limit]
    megapixels = statistics.mean(int(row["width"]) * int(row["height"]) for row in rows[: len(files)]) / 1e6
    for path in files:
        path.read_bytes()  # page cache
    phash = PHash(verbose=False)
    result: dict[str, Any] = {"files": len(files), "mean_megapixels": round(megapixels, 2), "load1": load1()}
    result["fast"] = timed_loop(encode_path, files)
    result["exact"] = timed_loop(lambda path: phash.encode_image(image_file=path), files)
    if with_imagededup:
        answer = _peers.run_imagededup("time-phash", [str(path) for path in files])
        result["imagededup"] = {
            "files": answer["files"],
            "wall_s": round(answer["wall_s"], 2),
            "cpu_s": round(answer["cpu_s"], 2),
            "img_per_s": round(answer["files"] / answer["wall_s"], 2),
            "img_per_s_per_core": round(answer["files"] / answer["cpu_s"], 2),
        }
    result["load1_after"] = load1()
    return result


def exact_hashes(path: Path) -> dict[str, int]:
    """The four exact-path hashes from one full decode (what methods.*.encode_image compute)."""
    with imagededup_rgb(path) as rgb:
        return {
            method: hash_int(method, preprocess(rgb, size, grayscale=True)) for method, size in TARGET_SIZES.items()
        }


def both_paths(path: Path) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """(fast hashes, exact hashes) of one file; None for a path that skips the file."""
    try:
        fast = {method: value for method, value in encode_path(path).encoding.hashes.items() if method in METHODS}
    except Skipped:
        fast = None
    try:
        exact = exact_hashes(path)
    except Skipped:
        exact = None
    return fast, exact


def bit_stats(differences: list[int]) -> dict[str, Any]:
    return {
        "files": len(differences),
        "identical": round(differences.count(0) / len(differences), 4),
        "mean_bits": round(statistics.mean(differences), 3),
        "max_bits": max(differences),
        "over_10_bits": sum(d > 10 for d in differences),
    }


def agreement(workers: int) -> dict[str, Any]:
    result: dict[str, Any] = {"load1": load1()}
    for corpus in CORPORA:
        rows = variants(corpus)
        paths = [CORPORA_DIR / corpus / row["file"] for row in rows]
        with Pool(workers) as pool:
            pairs = pool.map(both_paths, paths, chunksize=4)
        per_method: dict[str, list[int]] = defaultdict(list)
        per_kind: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        skipped = 0
        for row, (fast, exact) in zip(rows, pairs, strict=True):
            if fast is None or exact is None:
                skipped += 1
                continue
            for method in METHODS:
                difference = (fast[method] ^ exact[method]).bit_count()
                per_method[method].append(difference)
                per_kind[row["kind"]][method].append(difference)
        result[corpus] = {
            "skipped": skipped,
            "methods": {method: bit_stats(values) for method, values in per_method.items()},
            "by_kind": {
                kind: {method: bit_stats(values) for method, values in methods.items()}
                for kind, methods in sorted(per_kind.items())
            },
        }
    result["load1_after"] = load1()
    return result


def png_decoders(alt_path: Path) -> dict[str, Callable[[bytes], object]]:
    """Decoders of PNG bytes to compare; optional ones only when they import from `alt_path`."""

    def match_decode(data: bytes) -> object:
        with open_for_matching(data) as (stored, _oriented, _size, _capture):
            return stored

    def pillow_full(data: bytes) -> object:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size

    decoders: dict[str, Callable[[bytes], object]] = {
        "encode_bytes (whole fast path)": encode_bytes,
        "open_for_matching (decode+reduce+RGB)": match_decode,
        "Pillow full decode": pillow_full,
    }
    if alt_path.is_dir():
        sys.path.append(str(alt_path))
    try:
        import pyspng  # noqa: PLC0415 - optional, measured only

        decoders["pyspng.load"] = pyspng.load
    except ImportError:
        pass
    try:
        import imagecodecs  # noqa: PLC0415

        decoders["imagecodecs.png_decode (libpng)"] = imagecodecs.png_decode
        decoders["imagecodecs.spng_decode"] = imagecodecs.spng_decode
    except ImportError:
        pass
    try:
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)
        decoders["cv2.imdecode COLOR"] = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        decoders["cv2.imdecode REDUCED_COLOR_8"] = lambda data: cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8
        )
    except ImportError:
        pass
    return decoders


def png(limit: int | None, alt_path: Path) -> dict[str, Any]:
    folder = CORPORA_DIR / "camera-import"
    rows = [row for row in variants("camera-import") if row["file"].endswith(".png")][:limit]
    blobs = [(folder / row["file"]).read_bytes() for row in rows]
    megapixels = statistics.mean(int(row["width"]) * int(row["height"]) for row in rows) / 1e6
    with Image.open(io.BytesIO(blobs[0])) as first:
        mode = first.mode
    result: dict[str, Any] = {
        "files": len(blobs),
        "mean_megapixels": round(megapixels, 2),
        "mode": mode,
        "mean_mib": round(statistics.mean(map(len, blobs)) / 2**20, 2),
        "pillow_zlib_ng": features.check_feature("zlib_ng"),
        "load1": load1(),
        "decoders": {},
    }
    for name, decode in png_decoders(alt_path).items():
        decode(blobs[0])
        cpu_start, start = time.process_time(), time.perf_counter()
        for blob in blobs:
            decode(blob)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        result["decoders"][name] = {
            "cpu_ms_per_file": round(1000 * cpu / len(blobs), 1),
            "wall_ms_per_file": round(1000 * wall / len(blobs), 1),
        }
    result["load1_after"] = load1()
    return result


def print_throughput(result: dict[str, Any]) -> None:
    print(
        f"\nthroughput: {result['files']} camera-import JPEGs, long side >= {TEN_MP_LONG_SIDE} px, "
        f"mean {result['mean_megapixels']} MP (load {result['load1']} -> {result['load1_after']})"
    )
    print(f"{'path':<44} {'wall s':>7} {'CPU s':>7} {'img/s':>7} {'img/s/core':>10}")
    labels = {
        "fast": "dedupd encode_path (fast, 4 hashes + dct + digest)",
        "exact": "dedupd PHash.encode_image (exact)",
        "imagededup": "imagededup PHash.encode_image",
    }
    for key, label in labels.items():
        if key in result:
            row = result[key]
            print(
                f"{label:<44.44} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} {row['img_per_s']:>7.1f} "
                f"{row['img_per_s_per_core']:>10.1f}"
            )


def print_agreement(result: dict[str, Any]) -> None:
    print(f"\nagreement of the fast path with the exact path (load {result['load1']} -> {result['load1_after']})")
    print(
        f"{'corpus':<20} {'method':<6} {'files':>6} {'identical':>9} {'mean bits':>9} {'max bits':>8} {'>10 bits':>8}"
    )
    for corpus in CORPORA:
        for method, stats in result[corpus]["methods"].items():
            print(
                f"{corpus:<20} {method:<6} {stats['files']:>6} {100 * stats['identical']:>8.1f}% "
                f"{stats['mean_bits']:>9.2f} {stats['max_bits']:>8} {stats['over_10_bits']:>8}"
            )
        print(
            "  by kind (identical % / mean bits): "
            + "  ".join(
                f"{kind}: " + "/".join(f"{100 * s['identical']:.0f}%,{s['mean_bits']:.1f}" for s in methods.values())
                for kind, methods in result[corpus]["by_kind"].items()
            )
            + f"   [{'/'.join(METHODS)}]"
        )


def print_png(result: dict[str, Any]) -> None:
    print(
        f"\nPNG decode: {result['files']} camera-import PNGs, mode {result['mode']}, mean "
        f"{result['mean_megapixels']} MP / {result['mean_mib']} MiB, Pillow zlib-ng {result['pillow_zlib_ng']} "
        f"(load {result['load1']} -> {result['load1_after']})"
    )
    print(f"{'decoder':<40} {'CPU ms/file':>11} {'wall ms/file':>12}")
    for name, row in result["decoders"].items():
        print(f"{name:<40} {row['cpu_ms_per_file']:>11.1f} {row['wall_ms_per_file']:>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts", nargs="+", choices=["throughput", "agreement", "png"], default=["throughput", "agreement", "png"]
    )
    parser.add_argument("--limit", type=int, help="at most N files in throughput and png (default: all)")
    parser.add_argument(
        "--no-imagededup",
        dest="imagededup",
        action="store_false",
        help="skip imagededup's own timing (needs .bench/peers311)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for agreement")
    parser.add_argument(
        "--alt-path",
        type=Path,
        default=REPO / ".bench" / "pngalt",
        help="where the optional PNG decoders are installed",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count()}
    if "throughput" in args.parts:
        report["throughput"] = throughput(args.limit, args.imagededup)
        print_throughput(report["throughput"])
    if "agreement" in args.parts:
        report["agreement"] = agreement(args.workers)
        print_agreement(report["agreement"])
    if "png" in args.parts:
        report["png"] = png(args.limit, args.alt_path)
        print_png(report["png"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
