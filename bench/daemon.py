"""Daemon benchmark (issue 5): a camera import into a watched root, next to one-shot `dedupd scan` of the same files.

Usage: .venv/bin/python bench/daemon.py [--n 1000] [--idle-s 30] [--workdir DIR] [--keep]

1. The first N JPEGs (by name) of ~/.cache/dedupd-bench/corpora/camera-import (near-duplicates and byte
   copies among them, so reports are written) are read once to warm the page cache.
2. `dedupd run --config FILE` starts on an empty watched root. The config has the built-in defaults except
   the paths (state, reports, socket in a temporary directory) and `notify.desktop = false`. The benchmark
   binds a datagram socket as NOTIFY_SOCKET and waits for READY=1, then for `dedupctl wait-idle` (the empty
   root's reconcile scan) and for the tree's CPU to go quiet, so model loading is not counted. The encode
   workers start with the first file (`encode_idle_stop_s`): their start (~1 s of imports) is in the import.
3. The import: the files are copied into the root in one burst (`shutil.copy` in a loop, like a camera
   card). The clock starts at the first copy; the end is the mtime of the last event report written under
   report_dir, once `dedupctl wait-idle` has returned (and `status` counts every file).
4. Idle CPU: utime + stime (+ cutime + cstime, so workers that exit still count) of the daemon's process
   tree over `--idle-s` seconds after wait-idle, as % of one core. Then the daemon is stopped (SIGTERM).
5. The one-shot: `dedupd scan ROOT --json` on the files already in place, timed from its start to its exit
   (its output is its report); model loading is included there, the daemon had it before the clock started.

Peak RSS: every 0.2 s the VmRSS (/proc/PID/status) of the main process and of every live descendant
(encode workers, forkserver, resource tracker) is summed; the peak of the sum is reported. Pages that
forked workers share are counted once per process, so this is an upper bound. VmHWM is the kernel's
high-water mark of the main process alone. CPU s: utime + stime of the tree from the first copy to idle
(daemon) or over the whole run (scan); "main process" is the daemon or scan process alone (CNN inference,
index, store, reports), the rest is the encode workers. The 1-minute load average is printed: the machine may be shared.
The last line of output is JSON.

The camera corpus holds 927 JPEGs (and 100 PNGs), so the default `--n 1000` imports 927. The daemon
inherits the environment, so a `DEDUPD_*` variable changes one setting for a variant run, e.g.
`DEDUPD_CNN__INTRA_OP_THREADS=1 .venv/bin/python bench/daemon.py` (the scan is not affected).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scan import descendants  # bench/scan.py: the process-tree walk both benchmarks use

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
CORPUS = Path.home() / ".cache" / "dedupd-bench" / "corpora" / "camera-import"
SAMPLE_INTERVAL_S = 0.2
READY_TIMEOUT_S = 300.0
QUIET_WINDOW_S, QUIET_CPU_S = 0.5, 0.02
IDLE_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Issue 5's goal: the daemon's import takes at most the one-shot scan's time + 10 % + 2 s.
GOAL_FACTOR, GOAL_SLACK_S = 1.10, 2.0
REPORT_GLOB = "????-??-??/*.json"


def camera_jpegs(n: int) -> list[Path]:
    """The first `n` JPEGs of the camera corpus by file name."""
    found = sorted(p for p in CORPUS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if not found:
        sys.exit(f"no JPEGs in {CORPUS}: generate the bench corpus first (/work/shared/bench)")
    return found[:n]


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM); 0 once the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int, fields: slice = slice(11, 15)) -> int:
    """utime + stime + cutime + cstime of one process (clock ticks); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            values = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(value) for value in values[fields])


def own_cpu_s(pid: int) -> float:
    """utime + stime of the process itself, every thread, its children left out."""
    return cpu_ticks(pid, slice(11, 13)) / CLOCK_TICKS


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants; children that exited are in their parent's cutime."""
    return sum(cpu_ticks(member) for member in [pid, *descendants(pid)]) / CLOCK_TICKS


@dataclass(slots=True)
class TreeSampler:
    """Samples the resident memory of a process tree every SAMPLE_INTERVAL_S in a thread."""

    pid: int
    peak_rss_kib: int = 0
    peak_processes: int = 0
    hwm_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        members = [self.pid, *descendants(self.pid)]
        self.peak_rss_kib = max(self.peak_rss_kib, sum(status_kib(member, "VmRSS") for member in members))
        self.peak_processes = max(self.peak_processes, len(members))
        self.hwm_kib = max(self.hwm_kib, status_kib(self.pid, "VmHWM"))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def write_config(home: Path, root: Path) -> Path:
    """Defaults except the paths, and no desktop notifications (no session bus here)."""
    config = home / "dedupd.toml"
    config.write_text("\n".join([
        f'state_dir = "{home / "state"}"',
        f'report_dir = "{home / "reports"}"',
        f'socket = "{home / "run" / "control.sock"}"',
        "", "[notify]", "desktop = false",
        "", "[[roots]]", f'path = "{root}"', "",
    ]))
    return config


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET, read all the time as systemd does: with
    systemd-python installed the daemon's sd_notify blocks (holding the GIL) once 10 datagrams
    (net.unix.max_dgram_qlen) are unread, which would freeze the daemon in the middle of the import."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.5)
        self.ready = threading.Event()
        self.messages = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._socket.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages += 1
            if "READY=1" in message.splitlines():
                self.ready.set()

    def wait_ready(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready.wait(0.5):
            if process.poll() is not None:
                sys.exit(f"dedupd exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                sys.exit(f"no READY=1 from dedupd within {READY_TIMEOUT_S:g} s")

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._socket.close()


def wait_quiet(pid: int) -> None:
    """Wait until the tree has used under QUIET_CPU_S of CPU over QUIET_WINDOW_S (spawned workers started)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    before = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(QUIET_WINDOW_S)
        now = tree_cpu_s(pid)
        if now - before < QUIET_CPU_S:
            return
        before = now
    sys.exit(f"dedupd kept busy for {READY_TIMEOUT_S:g} s after READY")


def dedupctl(sock: Path, *args: str, timeout: float = 60) -> dict[str, Any]:
    run = subprocess.run([str(BIN / "dedupctl"), "--socket", str(sock), "--json", *args],
                         capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        sys.exit(f"dedupctl {' '.join(args)} -> {run.returncode}: {run.stdout}{run.stderr}")
    return json.loads(run.stdout)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass(slots=True)
class DaemonRun:
    files: int
    ready_s: float
    startup_s: float
    copy_s: float
    first_report_s: float | None
    last_report_s: float | None
    idle_s: float
    reports: int
    indexed: int
    decodes: int
    reused: int
    pending: int
    duplicate_groups: int
    duplicate_files: int
    skipped: dict[str, int]
    import_cpu_s: float
    import_main_cpu_s: float
    idle_cpu_pct: float
    idle_window_s: float
    peak_rss_mib: float
    hwm_mib: float
    peak_processes: int
    rss_at_start_mib: float
    load_before: float
    load_after: float

    @property
    def wall_s(self) -> float:
        """First copy to the last report; to wait-idle when no file had a duplicate."""
        return self.idle_s if self.last_report_s is None else self.last_report_s


@dataclass(slots=True)
class ScanRun:
    wall_s: float
    cpu_s: float
    main_cpu_s: float
    peak_rss_mib: float
    hwm_mib: float
    peak_processes: int
    groups: int
    files_in_groups: int
    skipped: int
    load_before: float
    load_after: float


def run_daemon(home: Path, sources: list[Path], idle_window_s: float) -> DaemonRun:
    root = home / "photos"
    root.mkdir()
    config = write_config(home, root)
    sock, reports = home / "run" / "control.sock", home / "reports"
    notify_path = home / "notify.sock"
    notify = NotifyListener(notify_path)
    log = home / "daemon.log"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    env.pop("DEDUPD_CONFIG", None)
    started = time.monotonic()
    with log.open("wb") as log_stream:
        process = subprocess.Popen([str(BIN / "dedupd"), "run", "--config", str(config)], env=env,
                                   stdout=log_stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    sampler = TreeSampler(process.pid).start()
    try:
        notify.wait_ready(process, log)
        ready_s = time.monotonic() - started
        dedupctl(sock, "wait-idle", "--timeout", str(READY_TIMEOUT_S), timeout=READY_TIMEOUT_S + 30)
        wait_quiet(process.pid)  # READY comes before the watcher and the encode workers' imports finish
        startup_s = time.monotonic() - started
        rss_at_start = sum(status_kib(member, "VmRSS") for member in [process.pid, *descendants(process.pid)])
        load_before = load1()
        indexed_before = dedupctl(sock, "status")["counts"]["indexed"]  # a state's stored records count too
        cpu_before, main_cpu_before = tree_cpu_s(process.pid), own_cpu_s(process.pid)

        first_copy = time.time()
        for source in sources:
            shutil.copy(source, root / source.name)
        copy_s = time.time() - first_copy

        # wait-idle could in principle answer before the watcher has read the last events: ask until every
        # copied file is accounted for (indexed since the copy began, or skipped) and nothing is pending. Into a
        # state that already holds records (bench/archive.py's library), the total count would pass at once.
        while True:
            dedupctl(sock, "wait-idle", "--timeout", str(IDLE_TIMEOUT_S), timeout=IDLE_TIMEOUT_S + 30)
            idle_at = time.time()
            status = dedupctl(sock, "status")
            counts = status["counts"]
            accounted = counts["indexed"] - indexed_before + sum(counts["skipped"].values())
            if counts["pending"] == 0 and accounted >= len(sources):
                break
            time.sleep(0.2)
        cpu_idle_start, main_cpu_idle_start = tree_cpu_s(process.pid), own_cpu_s(process.pid)
        time.sleep(idle_window_s)
        cpu_idle_end = tree_cpu_s(process.pid)
        mtimes = sorted(path.stat().st_mtime for path in reports.glob(REPORT_GLOB))
        sampler.sample()
        hwm_kib = status_kib(process.pid, "VmHWM")
        load_after = load1()
    finally:
        sampler.stop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # still draining a failed run: not worth waiting for
            process.kill()
            process.wait()
        notify.close()
    return DaemonRun(
        files=len(sources),
        ready_s=round(ready_s, 2),
        startup_s=round(startup_s, 2),
        copy_s=round(copy_s, 2),
        first_report_s=round(mtimes[0] - first_copy, 2) if mtimes else None,
        last_report_s=round(mtimes[-1] - first_copy, 2) if mtimes else None,
        idle_s=round(idle_at - first_copy, 2),
        reports=len(mtimes),
        indexed=counts["indexed"],
        decodes=counts["decodes"],
        reused=counts.get("reused", 0),  # byte copies read, not decoded (absent from a daemon before them)
        pending=counts["pending"],
        duplicate_groups=counts["duplicates"],
        duplicate_files=counts["duplicate_files"],
        skipped=counts["skipped"],
        import_cpu_s=round(cpu_idle_start - cpu_before, 1),
        import_main_cpu_s=round(main_cpu_idle_start - main_cpu_before, 1),
        idle_cpu_pct=round(100 * (cpu_idle_end - cpu_idle_start) / idle_window_s, 3),
        idle_window_s=idle_window_s,
        peak_rss_mib=round(sampler.peak_rss_kib / 1024, 1),
        hwm_mib=round(max(hwm_kib, sampler.hwm_kib) / 1024, 1),
        peak_processes=sampler.peak_processes,
        rss_at_start_mib=round(rss_at_start / 1024, 1),
        load_before=load_before,
        load_after=load_after,
    )


def run_scan(home: Path, root: Path) -> ScanRun:
    out = home / "scan.json"
    load_before = load1()
    with out.open("wb") as stdout, (home / "scan.log").open("wb") as stderr:
        started = time.time()
        process = subprocess.Popen([str(BIN / "dedupd"), "scan", str(root), "--json"], stdout=stdout,
                                   stderr=stderr, stdin=subprocess.DEVNULL)
    sampler = TreeSampler(process.pid).start()
    last_cpu = main_cpu = 0.0
    while True:  # CPU: the last reading of the tree before the scan exits (its workers are gone by then)
        last_cpu, main_cpu = max(last_cpu, tree_cpu_s(process.pid)), max(main_cpu, own_cpu_s(process.pid))
        try:
            process.wait(timeout=SAMPLE_INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            continue
    wall_s = time.time() - started
    sampler.stop()
    if process.returncode != 0:
        sys.exit(f"dedupd scan exited with {process.returncode}: {(home / 'scan.log').read_text()[-4000:]}")
    document = json.loads(out.read_text())
    return ScanRun(
        wall_s=round(wall_s, 2),
        cpu_s=round(last_cpu, 1),
        main_cpu_s=round(main_cpu, 1),
        peak_rss_mib=round(sampler.peak_rss_kib / 1024, 1),
        hwm_mib=round(sampler.hwm_kib / 1024, 1),
        peak_processes=sampler.peak_processes,
        groups=len(document["groups"]),
        files_in_groups=sum(len(group) for group in document["groups"]),
        skipped=len(document["skipped"]),
        load_before=load_before,
        load_after=load1(),
    )


def cpu_model() -> str:
    run = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
    for line in run.stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fmt(value: float) -> str:
    return f"{value:g}"


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="how many JPEGs of the camera corpus (first by name)")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle window for the daemon's CPU use")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, reports)")
    args = parser.parse_args()

    sources = camera_jpegs(args.n)
    if len(sources) < args.n:
        print(f"note: the corpus has only {len(sources)} JPEGs; using them all", file=sys.stderr)
    size = 0
    for source in sources:  # warm the page cache: the import copies from memory, as from a fast card
        size += len(source.read_bytes())
    home = Path(tempfile.mkdtemp(prefix="dedupd-bench-daemon-", dir=args.workdir))
    try:
        daemon = run_daemon(home, sources, args.idle_s)
        scan = run_scan(home, home / "photos")
    finally:
        if args.keep:
            print(f"kept {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)

    goal_s = scan.wall_s * GOAL_FACTOR + GOAL_SLACK_S
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; {len(sources)} JPEGs, {size / 2**20:.0f} MiB")
    print_table([
        ("", "daemon (live import)", "dedupd scan (one-shot)"),
        ("wall s (first copy -> last report / scan exit)", fmt(daemon.wall_s), fmt(scan.wall_s)),
        ("  copy burst s", fmt(daemon.copy_s), ""),
        ("  first report s", str(daemon.first_report_s), ""),
        ("  wait-idle returned s", fmt(daemon.idle_s), ""),
        ("  start -> READY / -> quiet s (not counted)", f"{daemon.ready_s:g} / {daemon.startup_s:g}",
         "(in wall)"),
        ("CPU s (tree)", fmt(daemon.import_cpu_s) + " (import)", fmt(scan.cpu_s)),
        ("  of which the main process (CNN, index, store)", fmt(daemon.import_main_cpu_s), fmt(scan.main_cpu_s)),
        ("peak RSS of tree MiB (sum of VmRSS)", fmt(daemon.peak_rss_mib), fmt(scan.peak_rss_mib)),
        ("VmHWM of main process MiB", fmt(daemon.hwm_mib), fmt(scan.hwm_mib)),
        ("RSS of tree before the import MiB", fmt(daemon.rss_at_start_mib), ""),
        ("processes in tree (peak)", str(daemon.peak_processes), str(scan.peak_processes)),
        ("indexed / decodes / byte copies reused", f"{daemon.indexed} / {daemon.decodes} / {daemon.reused}", ""),
        ("report files", str(daemon.reports), ""),
        ("duplicate groups / files", f"{daemon.duplicate_groups} / {daemon.duplicate_files}",
         f"{scan.groups} / {scan.files_in_groups}"),
        (f"idle CPU % of one core ({fmt(daemon.idle_window_s)} s)", fmt(daemon.idle_cpu_pct), ""),
        ("load average (1 min) before / after", f"{daemon.load_before} / {daemon.load_after}",
         f"{scan.load_before} / {scan.load_after}"),
    ])
    met = daemon.wall_s <= goal_s
    print(f"goal: daemon <= scan x {GOAL_FACTOR:g} + {GOAL_SLACK_S:g} s = {goal_s:.2f} s: "
          f"{'met' if met else 'NOT met'} ({daemon.wall_s:g} s)")
    print(json.dumps({"machine": cpu_model(), "cpus": os.cpu_count(), "files": len(sources),
                      "mib": round(size / 2**20), "daemon": {**asdict(daemon), "wall_s": daemon.wall_s},
                      "scan": asdict(scan), "goal_s": round(goal_s, 2), "goal_met": met}))


if __name__ == "__main__":
    main()
