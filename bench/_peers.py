"""Run the benchmark peers (imagededup, Immaculate) from bench scripts, in their own venvs.

Why: imagededup needs torch and Python 3.11, Immaculate its own 3.12 venv; neither may enter the
project venv. bench/peers.sh builds them under .bench/. The host side imports this module to find
the interpreters and call them; the peer side runs this same file as a script (`python _peers.py
hashes|time-phash`), reading a JSON list of absolute paths on stdin and printing one JSON object on
stdout. Keep it Python 3.11-compatible and free of project imports: it runs inside peers311.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS311 = REPO / ".bench" / "peers311" / "bin" / "python"
PEERS312_IMMACULATE = REPO / ".bench" / "peers312" / "bin" / "immaculate"
HASH_METHODS = ("phash", "ahash", "dhash", "whash")


def require(executable: Path) -> Path:
    """The peer executable, or exit with the command that builds it."""
    if not os.access(executable, os.X_OK):
        sys.exit(f"{executable} is missing: run bench/peers.sh first")
    return executable


def run_imagededup(command: str, paths: list[str], *options: str) -> Any:
    """Run `command` of this file under .bench/peers311 on `paths`; return its parsed JSON answer."""
    completed = subprocess.run(
        [str(require(PEERS311)), __file__, command, *options],
        input=json.dumps(paths),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"imagededup peer failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time of this process (all threads) or of its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# ---- peer side: runs inside .bench/peers311 ----------------------------------------------------


def _imagededup_hashers() -> dict[str, Any]:
    # imagededup 0.3.3.post2 builds its CNN model lazily, so this import needs no network (torch
    # is imported, which costs a few seconds); CNN is never instantiated here.
    from imagededup.methods import AHash, DHash, PHash, WHash  # peers311 only

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.ERROR)  # one warning per unreadable file otherwise
    classes = {"phash": PHash, "ahash": AHash, "dhash": DHash, "whash": WHash}
    return {method: cls(verbose=False) for method, cls in classes.items()}


_HASHERS: dict[str, Any] = {}


def _hash_one(path: str) -> tuple[str, dict[str, str | None]]:
    if not _HASHERS:
        _HASHERS.update(_imagededup_hashers())
    return path, {method: hasher.encode_image(image_file=path) for method, hasher in _HASHERS.items()}


def _peer_hashes(paths: list[str], jobs: int) -> dict[str, dict[str, str | None]]:
    """{path: {method: hex | None}} with imagededup's four hashers, `jobs` processes."""
    _HASHERS.update(_imagededup_hashers())  # import once before forking
    if jobs <= 1:
        return dict(map(_hash_one, paths))
    with Pool(jobs) as pool:
        return dict(pool.imap(_hash_one, paths, chunksize=8))


def _peer_time_phash(paths: list[str]) -> dict[str, Any]:
    """Time imagededup PHash.encode_image over `paths` in this one process, the loop only."""
    phash = _imagededup_hashers()["phash"]
    phash.encode_image(image_file=paths[0])  # warm-up: lazy imports, first-call caches
    cpu_start, start = cpu_seconds(), time.perf_counter()
    encoded = sum(phash.encode_image(image_file=path) is not None for path in paths)
    wall = time.perf_counter() - start
    return {"files": len(paths), "encoded": encoded, "wall_s": wall, "cpu_s": cpu_seconds() - cpu_start}


def _peer_main(argv: list[str]) -> None:
    paths = json.load(sys.stdin)
    if argv[0] == "hashes":
        jobs = int(argv[1]) if len(argv) > 1 else 1
        answer: Any = _peer_hashes(paths, jobs)
    elif argv[0] == "time-phash":
        answer = _peer_time_phash(paths)
    else:
        sys.exit(f"unknown peer command {argv[0]!r}")
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    _peer_main(sys.argv[1:])
