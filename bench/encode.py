"""Encoding throughput on camera-size JPEGs: imagededup vs dedupd (PHash), Immaculate vs dedupd (CNN).

Usage: .venv/bin/python bench/encode.py [--corpus DIR] [--limit N]

Files: the JPEGs under --corpus (default: the bench camera-import corpus) whose long side is at least
2000 px, sorted by path, the first --limit of them. All four runs see the same files in one go:

- imagededup PHash.encode_image, one process in .bench/peers311 (bench/peers.sh); only the encode
  loop is timed, inside that process, after one warm-up call.
- dedupd.methods.PHash.encode_image (the exact, imagededup-identical path), one process, same rule.
- dedupd.methods.CNN().encode_images(dir), timed without the model load; "not available" when the
  CNN is not there.
- Immaculate's CLI (`immaculate --json --method sscd_distilled dir`, .bench/peers312): wall time of
  the whole command, model load and duplicate search included.

img/s per core = files / CPU seconds (user + system, all threads) of the timed part, so runs that use
several threads are not flattered by the machine's core count. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _peers
from PIL import Image

DEFAULT_CORPUS = Path.home() / ".cache" / "dedupd-bench" / "corpora" / "camera-import"
CAMERA_LONG_SIDE = 2000


def camera_jpegs(corpus: Path, limit: int | None) -> list[Path]:
    """JPEG files (by content, not name) with a long side >= CAMERA_LONG_SIDE, sorted."""
    chosen = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as image:
                if image.format in ("JPEG", "MPO") and max(image.size) >= CAMERA_LONG_SIDE:
                    chosen.append(path)
        except OSError:
            continue
        if limit and len(chosen) >= limit:
            break
    return chosen


def warm_page_cache(files: list[Path]) -> None:
    """Read every file once so the first tool timed does not pay for cold disk reads alone."""
    for path in files:
        path.read_bytes()


def linked_folder(files: list[Path], folder: Path) -> Path:
    """Hard links (copies across filesystems) of `files` in one flat folder: Immaculate skips symlinks."""
    for index, source in enumerate(files):
        target = folder / f"{index:05d}_{source.name}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return folder


def row(tool: str, method: str, files: int, wall_s: float, cpu_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "tool": tool,
        "method": method,
        "files": files,
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "img_per_s": round(files / wall_s, 2) if wall_s else None,
        "img_per_s_per_core": round(files / cpu_s, 2) if cpu_s else None,
        **extra,
    }


def unavailable(tool: str, method: str, files: int, why: str) -> dict[str, Any]:
    return {"tool": tool, "method": method, "files": files, "available": False, "why": why}


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of this process) spent in `call`."""
    cpu_start, start = _peers.cpu_seconds(), time.perf_counter()
    call()
    return time.perf_counter() - start, _peers.cpu_seconds() - cpu_start


def bench_imagededup_phash(files: list[Path]) -> dict[str, Any]:
    answer = _peers.run_imagededup("time-phash", [str(p) for p in files])
    return row("imagededup", "PHash", answer["files"], answer["wall_s"], answer["cpu_s"], encoded=answer["encoded"])


def bench_dedupd_phash(files: list[Path]) -> dict[str, Any]:
    from dedupd.methods import PHash  # noqa: PLC0415 - the facade may still be missing: fail this row only

    phash = PHash(verbose=False)
    phash.encode_image(image_file=str(files[0]))  # warm-up, as on the imagededup side
    encoded = 0

    def loop() -> None:
        nonlocal encoded
        encoded = sum(phash.encode_image(image_file=str(path)) is not None for path in files)

    wall, cpu = timed(loop)
    return row("dedupd", "PHash", len(files), wall, cpu, encoded=encoded)


def bench_dedupd_cnn(folder: Path, count: int) -> dict[str, Any]:
    try:
        from dedupd.methods import CNN  # noqa: PLC0415

        init_start = time.perf_counter()
        cnn = CNN(verbose=False)
    except (ImportError, AttributeError) as error:
        return unavailable("dedupd", "CNN", count, f"{type(error).__name__}: {error}")
    init_s = time.perf_counter() - init_start
    encodings: dict[str, Any] = {}
    wall, cpu = timed(lambda: encodings.update(cnn.encode_images(str(folder))))
    return row("dedupd", "CNN", count, wall, cpu, encoded=len(encodings), init_s=round(init_s, 3))


def bench_immaculate(folder: Path, count: int) -> dict[str, Any]:
    command = [str(_peers.require(_peers.PEERS312_IMMACULATE)), "--json", "--method", "sscd_distilled", str(folder)]
    cpu_start, start = _peers.cpu_seconds(_peers.resource.RUSAGE_CHILDREN), time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    cpu = _peers.cpu_seconds(_peers.resource.RUSAGE_CHILDREN) - cpu_start
    if completed.returncode != 0:
        return unavailable("immaculate", "sscd_distilled", count, completed.stderr.strip()[-500:])
    found = json.loads(completed.stdout)
    return row("immaculate", "sscd_distilled", count, wall, cpu, skipped=len(found["skipped"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, help="at most N files (default: all camera-size JPEGs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    files = camera_jpegs(args.corpus, args.limit)
    if not files:
        parser.error(f"no JPEG with a long side >= {CAMERA_LONG_SIDE} px under {args.corpus}")
    print(f"{len(files)} camera-size JPEGs from {args.corpus}; {platform.node()}, {os.cpu_count()} CPUs")

    warm_page_cache(files)
    rows = [bench_imagededup_phash(files)]
    try:
        rows.append(bench_dedupd_phash(files))
    except ImportError as error:
        rows.append(unavailable("dedupd", "PHash", len(files), f"{type(error).__name__}: {error}"))
    with tempfile.TemporaryDirectory(prefix="dedupd-encode-bench-") as scratch:
        folder = linked_folder(files, Path(scratch))
        rows.append(bench_dedupd_cnn(folder, len(files)))
        rows.append(bench_immaculate(folder, len(files)))

    print(f"{'tool':<11} {'method':<15} {'files':>6} {'wall s':>9} {'cpu s':>9} {'img/s':>8} {'img/s/core':>10}")
    for result in rows:
        if result.get("available") is False:
            print(f"{result['tool']:<11} {result['method']:<15} {result['files']:>6}  not available: {result['why']}")
            continue
        print(
            f"{result['tool']:<11} {result['method']:<15} {result['files']:>6} {result['wall_s']:>9.2f} "
            f"{result['cpu_s']:>9.2f} {result['img_per_s']:>8.2f} {result['img_per_s_per_core']:>10.2f}"
        )
    print(json.dumps({"corpus": str(args.corpus), "cpus": os.cpu_count(), "results": rows}))


if __name__ == "__main__":
    main()
