"""Decode time of the camera formats at camera sizes: JPEG XL next to the JPEG it was made from (the format
dedupd decodes fastest), and camera RAW files (their embedded preview, and the half-size demosaic a RAW without
a usable preview costs).

Usage: .venv/bin/python bench/formats.py [--corpus DIR] [--files N] [--repeat N] [--raw FILE ...]

Takes the N largest JPEGs of the camera-import corpus (default ~/.cache/dedupd-bench/corpora/camera-import),
writes each as JPEG XL (libjxl through imagecodecs, quality 90, lossy: what a phone or an editor writes, not a
lossless JPEG transcode) into memory, and times, per file, in this process (`time.process_time`, all threads;
wall beside it): `imaging.decode.open_for_matching` (what every encode runs: JPEG decodes at 1/2-1/8 scale in
the IDCT, JPEG XL has no reduced decode in dedupd's reader, imaging.jxl, and decodes at full size) on the JPEG
bytes and on the JPEG XL bytes. Reports the median over files of the best of --repeat runs, and the load average.
--raw FILE ...: each RAW file (no package the project installs ships one: e.g. Debian's rawtran-doc has a Canon
EOS 30D CR2) through `open_for_matching` (the preview path dedupd takes), and LibRaw's half-size demosaic of it
(`rawpy.postprocess(half_size=True)`, the fallback for a RAW without a usable preview), timed the same way.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from dedupd.imaging.decode import open_for_matching


def _best(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The best CPU and wall seconds of `repeat` calls of `run`."""
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def _decode(data: bytes) -> None:
    with open_for_matching(data) as decoded:
        decoded.oriented.load()


def _time(data: bytes, repeat: int) -> tuple[float, float]:
    return _best(lambda: _decode(data), repeat)


def _raw_rows(paths: list[Path], repeat: int) -> list[dict[str, object]]:
    import rawpy  # the bench's own use: the demosaic a RAW without a usable preview costs

    def demosaic(path: Path) -> None:
        with rawpy.imread(str(path)) as raw:
            raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)

    rows: list[dict[str, object]] = []
    for path in paths:
        data = path.read_bytes()
        with open_for_matching(data) as decoded:
            size, name = decoded.size, decoded.capture.format
        preview_cpu, preview_wall = _time(data, repeat)
        demosaic_cpu, demosaic_wall = _best(partial(demosaic, path), repeat)
        rows.append({"file": path.name, "format": name, "mp": size[0] * size[1] / 1e6,
                     "preview_cpu_ms": preview_cpu * 1e3, "preview_wall_ms": preview_wall * 1e3,
                     "demosaic_cpu_ms": demosaic_cpu * 1e3, "demosaic_wall_ms": demosaic_wall * 1e3})
        print(f"{path.name} ({name}, {rows[-1]['mp']:.1f} MP): preview path {preview_cpu * 1e3:.0f} ms CPU / "
              f"{preview_wall * 1e3:.0f} wall, half-size demosaic {demosaic_cpu * 1e3:.0f} ms CPU / "
              f"{demosaic_wall * 1e3:.0f} wall", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache/dedupd-bench/corpora/camera-import")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--raw", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    jpegs = sorted(args.corpus.glob("*.jpg"), key=lambda p: (-p.stat().st_size, p.name))[: args.files]
    rows = []
    for path in jpegs:
        jpeg = path.read_bytes()
        with Image.open(io.BytesIO(jpeg)) as image:
            size = image.size
            jxl = bytes(imagecodecs.jpegxl_encode(np.asarray(image.convert("RGB")), level=90))  # bytes: no `out`
        jpeg_cpu, jpeg_wall = _time(jpeg, args.repeat)
        jxl_cpu, jxl_wall = _time(jxl, args.repeat)
        rows.append({"file": path.name, "mp": size[0] * size[1] / 1e6, "jpeg_bytes": len(jpeg), "jxl_bytes": len(jxl),
                     "jpeg_cpu_ms": jpeg_cpu * 1e3, "jpeg_wall_ms": jpeg_wall * 1e3,
                     "jxl_cpu_ms": jxl_cpu * 1e3, "jxl_wall_ms": jxl_wall * 1e3})
        print(f"{path.name}: {rows[-1]['mp']:.1f} MP, JPEG {jpeg_cpu * 1e3:.0f} ms CPU / {jpeg_wall * 1e3:.0f} wall, "
              f"JPEG XL {jxl_cpu * 1e3:.0f} ms CPU / {jxl_wall * 1e3:.0f} wall", flush=True)
    summary: dict[str, float] = {"files": len(rows), "load_average": os.getloadavg()[0]}
    if rows:
        summary |= {key: statistics.median(float(row[key]) for row in rows)
                    for key in ("mp", "jpeg_cpu_ms", "jpeg_wall_ms", "jxl_cpu_ms", "jxl_wall_ms")}
        print(f"median of {len(rows)} files ({summary['mp']:.1f} MP): JPEG {summary['jpeg_cpu_ms']:.0f} ms CPU, "
              f"JPEG XL {summary['jxl_cpu_ms']:.0f} ms CPU ({summary['jxl_cpu_ms'] / summary['jpeg_cpu_ms']:.1f}x), "
              f"load {summary['load_average']:.1f}")
    raw_rows = _raw_rows(args.raw, args.repeat)
    print(json.dumps({"summary": summary, "rows": rows, "raw": raw_rows}))


if __name__ == "__main__":
    main()
