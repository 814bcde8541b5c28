"""JPEG XL decode time at camera sizes, next to the JPEG it was made from (the format dedupd decodes fastest).

Usage: .venv/bin/python bench/jxl.py [--corpus DIR] [--files N] [--repeat N]

Takes the N largest JPEGs of the camera-import corpus (default ~/.cache/dedupd-bench/corpora/camera-import),
writes each as JPEG XL (pillow-jxl-plugin, quality 90, lossy: what a phone or an editor writes, not a
lossless JPEG transcode) into memory, and times, per file, in this process (`time.process_time`, all threads;
wall beside it): `imaging.decode.open_for_matching` (what every encode runs: JPEG decodes at 1/2-1/8 scale in
the IDCT, JPEG XL has no reduced decode in the plugin and decodes at full size) on the JPEG bytes and on the
JPEG XL bytes. Reports the median over files of the best of --repeat runs, and the load average.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

from PIL import Image

from dedupd.imaging.decode import open_for_matching


def _time(data: bytes, repeat: int) -> tuple[float, float]:
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        with open_for_matching(data) as decoded:
            decoded.oriented.load()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache/dedupd-bench/corpora/camera-import")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    jpegs = sorted(args.corpus.glob("*.jpg"), key=lambda p: (-p.stat().st_size, p.name))[: args.files]
    rows = []
    for path in jpegs:
        jpeg = path.read_bytes()
        buffer = io.BytesIO()
        with Image.open(io.BytesIO(jpeg)) as image:
            size = image.size
            image.convert("RGB").save(buffer, "JXL", quality=90)
        jxl = buffer.getvalue()
        jpeg_cpu, jpeg_wall = _time(jpeg, args.repeat)
        jxl_cpu, jxl_wall = _time(jxl, args.repeat)
        rows.append({"file": path.name, "mp": size[0] * size[1] / 1e6, "jpeg_bytes": len(jpeg), "jxl_bytes": len(jxl),
                     "jpeg_cpu_ms": jpeg_cpu * 1e3, "jpeg_wall_ms": jpeg_wall * 1e3,
                     "jxl_cpu_ms": jxl_cpu * 1e3, "jxl_wall_ms": jxl_wall * 1e3})
        print(f"{path.name}: {rows[-1]['mp']:.1f} MP, JPEG {jpeg_cpu * 1e3:.0f} ms CPU / {jpeg_wall * 1e3:.0f} wall, "
              f"JPEG XL {jxl_cpu * 1e3:.0f} ms CPU / {jxl_wall * 1e3:.0f} wall", flush=True)
    summary = {key: statistics.median(row[key] for row in rows)
               for key in ("mp", "jpeg_cpu_ms", "jpeg_wall_ms", "jxl_cpu_ms", "jxl_wall_ms")}
    summary["files"] = len(rows)
    summary["load_average"] = os.getloadavg()[0]
    print(f"median of {len(rows)} files ({summary['mp']:.1f} MP): JPEG {summary['jpeg_cpu_ms']:.0f} ms CPU, "
          f"JPEG XL {summary['jxl_cpu_ms']:.0f} ms CPU ({summary['jxl_cpu_ms'] / summary['jpeg_cpu_ms']:.1f}x), "
          f"load {summary['load_average']:.1f}")
    print(json.dumps({"summary": summary, "rows": rows}))


if __name__ == "__main__":
    main()
