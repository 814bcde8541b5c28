"""Backfill acceptance (issue 16): the Ray backfill of a corpus, imported into a fresh store, against the daemon
indexing the same files itself.

Usage: .venv/bin/python bench/backfill.py [--corpus DIR] [--num-cpus 2] [--actors 1] [--workdir DIR] [--keep]

Needs the `cluster` extra. The corpus (default ~/.cache/dedupd-bench/corpora/camera-import) is read in place:
it is both daemons' watched root and the backfill's manifest (a directory); nothing is written into it.
1. `dedupd backfill CORPUS --out WORK/shards` on a local Ray (`--num-cpus`), timed from start to exit.
2. `dedupd import WORK/shards` into a fresh store (defaults, paths in WORK/imported), timed.
3. `dedupd run` on that store: READY, `wait-idle`, `duplicates`, `status` (its `decodes` must be 0).
4. `dedupd run` on another fresh store (WORK/indexed): READY, `wait-idle` (timed: the daemon indexing the corpus
   itself), `duplicates`.
The duplicate groups of 3 and 4 are compared as sets of path sets; the last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon import BIN, NotifyListener, dedupctl, load1, write_config  # bench/daemon.py

CORPUS = Path.home() / ".cache" / "dedupd-bench" / "corpora" / "camera-import"
STOP_TIMEOUT_S = 120.0


def timed(*args: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    run = subprocess.run([str(BIN / "dedupd"), *args, "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        sys.exit(f"dedupd {' '.join(args)} -> {run.returncode}\n{run.stdout}\n{run.stderr[-4000:]}")
    return elapsed, json.loads(run.stdout)


def daemon_groups(home: Path, root: Path) -> tuple[float, set[frozenset[str]], dict[str, Any]]:
    """Start a daemon on `home`'s store watching `root`: (seconds from READY to idle, groups, status counts)."""
    config = write_config(home, root)
    sock = home / "run" / "control.sock"
    listener = NotifyListener(home / "notify.sock")
    log = home / "daemon.log"
    env = {**os.environ, "NOTIFY_SOCKET": str(home / "notify.sock")}
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "dedupd"), "run", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    try:
        listener.wait_ready(process, log)
        ready = time.monotonic()
        dedupctl(sock, "wait-idle", "--timeout", "3600", timeout=3700)
        idle_s = time.monotonic() - ready
        groups = {frozenset(m["path"] for m in group) for group in dedupctl(sock, "duplicates")["groups"]}
        counts = dedupctl(sock, "status")["counts"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
        listener.close()
    return idle_s, groups, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dedupd-backfill-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        backfill_s, summary = timed("backfill", str(corpus), "--out", str(work / "shards"), "--num-cpus",
                                    str(args.num_cpus), "--actors", str(args.actors))
        (work / "imported").mkdir()
        config = write_config(work / "imported", corpus)
        import_s, report = timed("import", str(work / "shards"), "--config", str(config))
        _, imported_groups, imported_counts = daemon_groups(work / "imported", corpus)
        (work / "indexed").mkdir()
        index_s, indexed_groups, indexed_counts = daemon_groups(work / "indexed", corpus)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    only_imported = sorted(sorted(g) for g in imported_groups - indexed_groups)
    only_indexed = sorted(sorted(g) for g in indexed_groups - imported_groups)
    print(f"corpus {corpus}: {summary['rows']} files ({summary['encoded']} encoded, {summary['skipped']} skipped)")
    print(f"backfill on a local Ray ({args.num_cpus} CPUs, {args.actors} CNN actor): {backfill_s:.1f} s wall; "
          f"import: {import_s:.1f} s ({report['imported']} imported, skipped {report['skipped']})")
    print(f"daemon on the imported store: {len(imported_groups)} groups, {imported_counts['decodes']} decodes")
    print(f"daemon indexing itself: {len(indexed_groups)} groups, {indexed_counts['decodes']} decodes, "
          f"{index_s:.1f} s from READY to idle")
    print(f"same groups: {imported_groups == indexed_groups} ({len(only_imported)} only after the import, "
          f"{len(only_indexed)} only when indexed); load average {load1()}")
    print(json.dumps({"corpus": str(corpus), "files": summary["rows"], "backfill_s": round(backfill_s, 1),
                      "import_s": round(import_s, 1), "index_s": round(index_s, 1),
                      "imported_decodes": imported_counts["decodes"], "groups": len(indexed_groups),
                      "same_groups": imported_groups == indexed_groups, "only_imported": only_imported,
                      "only_indexed": only_indexed, "num_cpus": args.num_cpus, "actors": args.actors}))


if __name__ == "__main__":
    main()
