"""Idle memory of the daemon (issue 13.16): RSS and PSS per process, and where the main process's goes.

Usage: .venv/bin/python bench/memory.py [--records 0,1000,100000] [--photos 47] [--workdir DIR]
                                        [--encode-idle-stop-s S]

For each record count R: a fresh state dir whose store already holds R synthetic records (random digests,
hashes and unit-length embeddings of the configured CNN model, written through `Catalog.apply` as the daemon
writes them) for R empty files under the root (their keys match, so the start-up scan decodes none of them),
plus `--photos` real photographs made from scikit-image's bundled images (the `dev` install has them), which
the daemon decodes and embeds. `dedupd run` starts with the built-in defaults (paths aside, no desktop bus);
once `dedupctl wait-idle` returns, the encode workers have stopped for idleness (`encode_idle_stop_s`, the
built-in default unless --encode-idle-stop-s is given; 0 keeps them running, as before they were started on
demand) and 10 s have passed (the daemon gives freed memory back when it falls idle), every process of its
tree is read: VmRSS and Pss from /proc/PID/smaps_rollup (Pss splits pages shared with the forked workers), and
for the main process the largest mappings from /proc/PID/smaps grouped by name ([heap], anonymous, each shared
library). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import numpy as np
from scan import descendants  # bench/scan.py: the process-tree walk the benchmarks share

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
SETTLE_AFTER_IDLE_S = 10.0


class ProcessMemory(TypedDict):
    """One process of the daemon's tree, as the JSON line lists it: its role and smaps_rollup's figures (KiB)."""

    pid: int
    role: str
    Rss: int
    Pss: int


class Measurement(TypedDict):
    """One record count's run (`measure`): what the summary lines print and the JSON line holds."""

    records: int
    encode_idle_stop_s: float | None
    processes: list[ProcessMemory]
    main_mappings_kib: dict[str, int]
    total_rss_mib: float
    total_pss_mib: float


def make_photos(folder: Path, count: int) -> None:
    """`count` distinct JPEGs: crops of scikit-image's photographs at up to 1024 px."""
    from PIL import Image
    from skimage import data

    sources = [getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                                  "immunohistochemistry", "coins", "camera")]
    for index in range(count):
        pixels = sources[index % len(sources)]
        step = index // len(sources)
        crop = pixels[step * 7:, step * 11:]
        image = Image.fromarray(crop).convert("RGB")
        image.thumbnail((1024, 1024))
        image.save(folder / f"photo_{index:03d}.jpg", quality=90)


def seed_store(state_dir: Path, root: Path, records: int) -> None:
    """R empty files under root and their synthetic records, committed as the daemon commits."""
    from dedupd.config import default_settings
    from dedupd.imaging.cnn import Encoder
    from dedupd.imaging.encode import encode_path
    from dedupd.records import FileKey, FileRecord
    from dedupd.service.daemon import ENCODER_VERSION, index_config

    if not records:
        return
    settings = default_settings()
    encoder = Encoder(settings.cnn.model, providers=("cpu",))
    from dedupd.catalog import Catalog

    catalog = Catalog.open(state_dir, index_config(settings), encoder_version=ENCODER_VERSION,
                           model_id=encoder.spec.fingerprint(), dim=encoder.dim)
    rng = np.random.default_rng(0)
    folder = root / "synthetic"
    folder.mkdir()
    batch: list[FileRecord] = []
    photo = next(root.glob("*.jpg"))
    template = encode_path(str(photo), cnn_spec=None).encoding  # the hashes an encoding of this version has
    hash_names = tuple(template.hashes)
    for index in range(records):
        path = folder / f"{index // 1000:03d}" / f"f{index:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.touch()
        st = path.stat()
        vector = rng.standard_normal(encoder.dim).astype(np.float32)
        encoding = replace(template, digest=secrets.token_bytes(16),
                           hashes={name: int(rng.integers(0, 2**63)) for name in hash_names},
                           embedding=vector / np.linalg.norm(vector))
        key = FileKey(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        batch.append(FileRecord(key, encoding=encoding))
        if len(batch) == 1000:
            catalog.apply(batch)
            batch = []
    if batch:
        catalog.apply(batch)
    catalog.close()


def mappings_kib(pid: int, top: int = 8) -> dict[str, int]:
    sizes: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                name = os.path.basename(fields[5]) if len(fields) > 5 else "[anonymous]"
            elif fields[0] == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(fields[1])
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:top])


def rollup_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return {line.split()[0].rstrip(":"): int(line.split()[1]) for line in rollup
                if line.split()[0] in ("Rss:", "Pss:")}


def process_memory(pid: int) -> ProcessMemory:
    """One process of the tree: VmRSS and Pss, which splits the pages shared with the forked workers."""
    rollup = rollup_kib(pid)
    return ProcessMemory(pid=pid, role=command_of(pid), Rss=rollup["Rss"], Pss=rollup["Pss"])


def command_of(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        text = cmdline.read().replace(b"\0", b" ").decode()
    return "main" if " run --config" in text else "resource tracker" if "resource_tracker" in text else \
        "forkserver" if "forkserver" in text else "encode worker"


def measure(records: int, photos: int, work: Path, idle_stop_s: float | None) -> Measurement:
    home = work / f"r{records}-idle{idle_stop_s}"
    root, state = home / "lib", home / "state"
    root.mkdir(parents=True)
    make_photos(root, photos)
    seed_store(state, root, records)
    config = home / "dedupd.toml"
    idle_key = "" if idle_stop_s is None else f"encode_idle_stop_s = {idle_stop_s}\n"
    config.write_text(f'state_dir = "{state}"\nsocket = "{home / "control.sock"}"\n{idle_key}[notify]\n'
                      f'desktop = false\n[[roots]]\npath = "{root}"\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEDUPD_")}
    daemon = subprocess.Popen([str(BIN / "dedupd"), "run", "--config", str(config)], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(home / "daemon.log", "w"))  # noqa: SIM115
    try:
        ctl = [str(BIN / "dedupctl"), "--socket", str(home / "control.sock")]
        deadline = time.monotonic() + 900
        while subprocess.run([*ctl, "wait-idle", "--timeout", "600"], capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dedupd did not get idle: {(home / 'daemon.log').read_text()[-2000:]}")
            time.sleep(1)
        status = json.loads(subprocess.run([*ctl, "--json", "status"], capture_output=True, check=True).stdout)
        while idle_stop_s != 0 and status["counts"]["encode_workers"]:  # they stop after the idle period
            if time.monotonic() > deadline:
                raise SystemExit("the encode workers did not stop for idleness")
            time.sleep(1)
            status = json.loads(subprocess.run([*ctl, "--json", "status"], capture_output=True, check=True).stdout)
        time.sleep(SETTLE_AFTER_IDLE_S)
        processes = [process_memory(pid) for pid in [daemon.pid, *descendants(daemon.pid)]]
        main_mappings = mappings_kib(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(120)
    return Measurement(records=status["counts"]["indexed"], encode_idle_stop_s=idle_stop_s, processes=processes,
                       main_mappings_kib=main_mappings,
                       total_rss_mib=round(sum(p["Rss"] for p in processes) / 1024, 1),
                       total_pss_mib=round(sum(p["Pss"] for p in processes) / 1024, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="0,1000,100000")
    parser.add_argument("--photos", type=int, default=47)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--encode-idle-stop-s", type=float,
                        help="the daemon's encode_idle_stop_s (default: its built-in default); 0 = eager workers")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dedupd-memory-"))
    results = []
    try:
        for records in (int(value) for value in args.records.split(",")):
            result = measure(records, args.photos, work, args.encode_idle_stop_s)
            results.append(result)
            print(f"{result['records']:>7} records: RSS {result['total_rss_mib']} MiB, PSS {result['total_pss_mib']}"
                  " MiB; " + ", ".join(f"{p['role']} {p['Rss'] // 1024}/{p['Pss'] // 1024}"
                                       for p in result["processes"]), flush=True)
            print("         main's largest mappings (MiB): " + ", ".join(
                f"{name} {kib // 1024}" for name, kib in result["main_mappings_kib"].items()), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"python": sys.version.split()[0], "cpus": len(os.sched_getaffinity(0)), "results": results}))


if __name__ == "__main__":
    main()
