"""Review page with many groups: how long the first page takes to be served.

Makes N distinct small images (seeded noise, 64 px PNG) and a byte copy of each under one root, so a real
`dedupd run` (CNN off: the groups are exact ones, indexing is quick) holds N duplicate groups; then starts
the review server in this process, talking to that daemon over its socket as `dedupctl review` does, and
times with Python timers, over HTTP on 127.0.0.1:

* one page of groups as the daemon answers it (`duplicates` with order "free", offset, limit and records),
  `--idle-s` after the daemon fell idle (it ranks its groups when it falls idle; 0: at once),
* the first page of groups from a server that just started (no list yet: that one daemon request),
* the page itself (`/`, a static file),
* the first page of groups as a page (re)load asks for it (`refresh=1`: served from the last list while a
  background refresh starts), and how long that refresh takes,
* a later page (page 100).

Usage: .venv/bin/python bench/review.py [--groups 10000] [--workdir DIR] [--idle-s 5]. Prints one JSON line.
Not a test.
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

from dedupd.cli.client import call
from dedupd.protocol import ProtocolError
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
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="wait this long after the daemon fell idle, as a user opening the page would")
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
        while True:  # the socket answers before the watcher and the start-up scan exist: wait for "running"
            try:
                call(str(socket_path), "wait-idle", {"timeout": 3600.0})
                status = call(str(socket_path), "status")
            except ProtocolError:
                status = {"state": "starting"}
            if status["state"] == "running":
                break
            time.sleep(0.2)
        indexed_s = time.perf_counter() - indexing
        groups = status["counts"]["duplicates"]
        time.sleep(args.idle_s)
        ranked = []
        for _ in range(3):
            started = time.perf_counter()
            call(str(socket_path), "duplicates", {"order": "free", "offset": 0, "limit": 20, "records": True})
            ranked.append(time.perf_counter() - started)
        server = ReviewServer(lambda cmd, a: call(str(socket_path), cmd, a), secrets.token_urlsafe(32),
                              lambda path, size: None, work / "cache", idle_s=3600)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        base, token = f"http://127.0.0.1:{server.port}", server.token
        first_url = f"{base}/api/groups?tier=duplicates&page=0&per_page=20&refresh=1&token={token}"
        cold_s, _ = _get(first_url)  # the server's first list: it waits for the daemon's answers
        page_s, _ = _get(f"{base}/?token={token}")
        loads, served = [], []
        for _ in range(3):
            seconds, body = _get(first_url)  # a page (re)load: served from the last list, a refresh starts
            served.append(seconds)
            started = time.perf_counter()
            while json.loads(_get(first_url.replace("&refresh=1", ""))[1])["refreshing"]:
                time.sleep(0.05)
            loads.append(time.perf_counter() - started + seconds)
        first = json.loads(body)
        warm = [_get(f"{base}/api/groups?tier=duplicates&page=100&per_page=20&token={token}")[0] for _ in range(5)]
        server.stop()
        print(json.dumps({
            "groups": groups, "files": 2 * args.groups, "index_wait_s": round(indexed_s, 1), "idle_s": args.idle_s,
            "daemon_ranked_page_ms": [round(s * 1000, 1) for s in ranked],
            "page_html_ms": round(page_s * 1000, 1),
            "first_page_of_a_new_server_ms": round(cold_s * 1000),
            "first_page_served_ms": [round(s * 1000, 1) for s in served],
            "first_page_served_median_ms": round(statistics.median(served) * 1000, 1),
            "background_refresh_median_ms": round(statistics.median(loads) * 1000),
            "later_page_median_ms": round(statistics.median(warm) * 1000, 1),
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
