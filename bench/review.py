"""Review page with many groups: how long the first page takes to be served.

Makes N distinct small images (seeded noise, 64 px PNG) and a byte copy of each under one root, so a real
`dedupd run` (CNN off: the groups are exact ones, indexing is quick) holds N duplicate groups; then starts
the review server in this process, talking to that daemon over its socket as `dedupctl review` does, and
times with Python timers, over HTTP on 127.0.0.1:

* the page itself (`/`, a static file),
* the first page of groups cold (`/api/groups?refresh=1`: the daemon's `duplicates`, `to-remove` and the
  records of all 2N files, sorted by space to free, the first 20 cards as JSON),
* a later page warm (the cached list, page 100),
* the same cold request again (the daemon's answers are what it costs).

Usage: .venv/bin/python bench/review.py [--groups 10000] [--workdir DIR]. Prints one JSON line. Not a test.
"""

import argparse
import json
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from dedupd.cli.dedupctl import call
from dedupd.service.review.server import ReviewServer


def _make_library(root: Path, groups: int) -> None:
    rng = np.random.default_rng(14)
    for k in range(groups):
        folder = root / f"d{k // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{k:05d}.png")
        shutil.copyfile(folder / f"img_{k:05d}.png", folder / f"img_{k:05d}_copy.png")


def _get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as reply:
        body = reply.read()
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dedupd-review-bench-"))
    root, state = work / "library", work / "state"
    if not root.exists():
        _make_library(root, args.groups)
    socket_path = work / "control.sock"
    config = work / "dedupd.toml"
    config.write_text(f'state_dir = "{state}"\nreport_dir = "{work / "reports"}"\nsocket = "{socket_path}"\n'
                      'encode_workers = 2\nsettle_ms = 300\n[cnn]\nenabled = false\n[notify]\ndesktop = false\n'
                      f'json = false\n\n[[roots]]\npath = "{root}"\n')
    daemon = subprocess.Popen([sys.executable, "-m", "dedupd", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "w"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 120
        while not socket_path.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start; see {work / 'daemon.log'}")
            time.sleep(0.1)
        indexing = time.perf_counter()
        call(str(socket_path), "wait-idle", {"timeout": 3600.0})
        indexed_s = time.perf_counter() - indexing
        groups = call(str(socket_path), "status")["counts"]["duplicates"]
        server = ReviewServer(lambda cmd, a: call(str(socket_path), cmd, a), secrets.token_urlsafe(32),
                              lambda path, size: None, work / "cache", idle_s=3600)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        base, token = f"http://127.0.0.1:{server.port}", server.token
        page_s, _ = _get(f"{base}/?token={token}")
        cold = []
        for _ in range(3):
            seconds, body = _get(f"{base}/api/groups?tier=duplicates&page=0&per_page=20&refresh=1&token={token}")
            cold.append(seconds)
        first = json.loads(body)
        warm = [_get(f"{base}/api/groups?tier=duplicates&page=100&per_page=20&token={token}")[0] for _ in range(5)]
        server.stop()
        print(json.dumps({
            "groups": groups, "files": 2 * args.groups, "index_wait_s": round(indexed_s, 1),
            "page_html_ms": round(page_s * 1000, 1),
            "first_page_cold_ms": [round(s * 1000) for s in cold],
            "first_page_cold_median_ms": round(statistics.median(cold) * 1000),
            "later_page_warm_median_ms": round(statistics.median(warm) * 1000, 1),
            "cards_on_first_page": len(first["groups"]), "total_in_answer": first["total"],
            "first_page_bytes": len(body),
        }))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(120)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
