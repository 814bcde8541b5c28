"""Matcher benchmark (issues 3, 9): `dedupd scan` vs imagededup and Immaculate on the bench corpora.

Usage: .venv/bin/python bench/scan.py [--corpus camera|ukbench|captures|both|all] [--results DIR]
                                      [--tools imagededup pdq sscd_distilled dedupd dedupd-no-cnn]

Each tool runs once per corpus on the corpus folder itself (flat, real files: what imagededup and
Immaculate both read), after the corpus has been read once to warm the page cache:

- imagededup: `PHash().find_duplicates(image_dir=DIR)` in .bench/peers311 (default threshold 10,
  default workers = CPU count); the whole Python process is timed, torch import included.
- pdq, sscd_distilled: `immaculate --json --method M DIR` (.bench/peers312).
- dedupd: `.venv/bin/dedupd scan DIR --json` (the default matcher, default workers and CNN); its
  {"groups": [[{"path"...}]]} becomes score.py's {"exact": [], "near": [[path, ...]]}.
- dedupd-no-cnn (only when named): the same with `--no-cnn` (exact digest + strict oriented pHash).

How a run is measured: the tool is started by a small meter process (this script re-executed with
`--meter`) that makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every process
of the tool's tree, orphans included (forkserver, resource tracker, pool workers), is reparented
to it and reaped by it when it ends. Then
- wall s: from start until the tool's main process exits (what a user waits for);
- CPU s: user + system of the meter's RUSAGE_CHILDREN once every descendant is reaped, i.e. the
  whole process tree, all threads;
- RSS MiB: peak over samples every 50 ms of the sum of the resident sizes (/proc/PID/statm) of
  all live processes of the tree. Pages that forked workers share are counted once per process,
  so this is an upper bound of the memory the tree holds; max1 MiB is the kernel's high-water
  mark of the largest single process (ru_maxrss of RUSAGE_CHILDREN), which sampling cannot miss.
  (Pss from smaps_rollup would not double count, but reading it walks the page tables: ~80 ms
  per large process here, too costly to sample on a 2-core machine.)
The tool's output is scored with /work/shared/bench/score.py against the corpus ground truth:
pairs found, precision, recall, and recall per edit kind. Per tier (issue 9): the duplicate tier is
what is scored above (a pair is true when both files are one capture); for dedupd the similar tier is
scored too: its pairs that are different captures of one scene (precision), the share of such pairs
found (recall, captures corpus only), and its pairs that are really one capture (duplicates lost to it).
The `captures` corpus is tests/fixtures/captures.py's (real burst, static-scene and stereo frames and
copies of some), ground truth = capture; its `kind` per file is "orig" for a frame, else the copy kind.
Result files are kept under --results.

`--stages` (issue 15): where a scan's time goes, per stage, in one process, file after file (no pool,
so every figure is this process's CPU s, `time.process_time`): read (`read_file`), digest
(`content_digest`), decode (`open_for_matching`: the reduced decode, orientation, capture identity;
PNG and JPEG apart), hash (the rest of `encode_bytes`: the resizes, hashes, thumbnail and CNN input),
CNN (`Encoder.embed_prepared` in batches, one thread, as `dedupd scan` runs it). What a real scan
adds (pool, pickling, matching, grouping, interpreter start, imports) is its main process's CPU s
minus its CNN: the main-process overhead row of BENCHMARKS.md.
The 1-minute load average before each run is printed: the machine may be shared. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import itertools
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _peers

sys.path.insert(0, "/work/shared/bench")
import score  # type: ignore[import-not-found]  # noqa: E402 - the shared scorer lives outside the repo

REPO = Path(__file__).resolve().parent.parent
DEDUPD = REPO / ".venv" / "bin" / "dedupd"
CORPORA_DIR = Path.home() / ".cache" / "dedupd-bench" / "corpora"
CORPORA = {"camera": "camera-import", "ukbench": "ukbench-transformed", "captures": "captures"}
TOOLS = ("imagededup", "pdq", "sscd_distilled", "dedupd")
#: Extra tools, run only when named in --tools: the matcher without the CNN shows what the CNN costs and buys.
EXTRA_TOOLS = ("dedupd-no-cnn",)
SAMPLE_INTERVAL_S = 0.05
ORPHAN_GRACE_S = 120.0
PR_SET_CHILD_SUBREAPER = 36
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: Issue 3's goals for `dedupd scan`: (max wall s, min recall, min precision) per corpus.
GOALS = {"camera": (18.0, 0.99, 0.995), "ukbench": (24.0, 0.80, 0.995)}


def corpus_folder(corpus: str) -> Path:
    """The corpus's image folder (the captures fixture is built once into the tests' cache)."""
    if corpus == "captures":
        sys.path.insert(0, str(REPO))
        from tests.fixtures import captures  # noqa: PLC0415 - the repo's own fixture generator

        return captures.cached()
    return CORPORA_DIR / CORPORA[corpus]


def corpus_truth(corpus: str) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """(ground truth {file: capture group}, variants rows, scene of each file) of a corpus."""
    name = CORPORA[corpus]
    if corpus == "captures":
        from tests.fixtures import captures  # noqa: PLC0415

        entries = captures.build(corpus_folder(corpus))
        originals = ("frame", "exif_frame", "stereo")
        rows = [{"file": f, "group": e.capture, "kind": "orig" if e.kind in originals else e.kind}
                for f, e in entries.items()]  # fmt: skip
        return captures.ground_truth(entries), rows, {f: e.scene for f, e in entries.items()}
    truth = json.loads((CORPORA_DIR / f"{name}.ground_truth.json").read_text())
    with (CORPORA_DIR / f"{name}.variants.csv").open() as handle:
        return truth, list(csv.DictReader(handle)), dict(truth)


def similar_tier(document: Any, truth: dict[str, str], scenes: dict[str, str]) -> dict[str, Any]:
    """dedupd's similar tier scored: its pairs, how many are different captures of one scene, how many one capture."""
    pairs = {frozenset((Path(a["path"]).name, Path(b["path"]).name))
             for group in document.get("similar", []) for a, b in itertools.combinations(group, 2)}  # fmt: skip
    siblings = sum(1 for p in pairs if len({truth.get(f) for f in p}) == 2 and len({scenes.get(f) for f in p}) == 1)
    same = sum(1 for p in pairs if len({truth.get(f) for f in p}) == 1)
    files = sorted(truth)
    total = sum(1 for a, b in itertools.combinations(files, 2) if truth[a] != truth[b] and scenes[a] == scenes[b])
    return {"similar_pairs": len(pairs), "similar_siblings": siblings, "similar_same_capture": same,
            "similar_precision": siblings / len(pairs) if pairs else None,
            "similar_recall": siblings / total if total else None}

IMAGEDEDUP_PROGRAM = """\
import json, sys
from imagededup.methods import PHash
json.dump(PHash(verbose=False).find_duplicates(image_dir=sys.argv[1]), sys.stdout)
"""


def tool_command(tool: str, folder: Path) -> list[str]:
    """The command line that runs `tool` on `folder`, printing its duplicates as JSON on stdout."""
    if tool == "imagededup":
        return [str(_peers.require(_peers.PEERS311)), "-c", IMAGEDEDUP_PROGRAM, str(folder)]
    if tool in ("pdq", "sscd_distilled"):
        return [str(_peers.require(_peers.PEERS312_IMMACULATE)), "--json", "--method", tool, str(folder)]
    if tool == "dedupd":
        return [str(_peers.require(DEDUPD)), "scan", str(folder), "--json"]
    if tool == "dedupd-no-cnn":
        return [str(_peers.require(DEDUPD)), "scan", str(folder), "--json", "--no-cnn"]
    raise ValueError(f"unknown tool {tool!r}")


def as_scorable(tool: str, document: Any) -> Any:
    """score.py's input: dedupd's groups become "near" sets, the peers' documents pass as they are."""
    if not tool.startswith("dedupd"):
        return document
    return {
        "exact": [],
        "near": [[member["path"] for member in group] for group in document["groups"]],
        "skipped": [entry["path"] for entry in document["skipped"]],
    }


# ---- the meter: runs one tool, re-executed as `scan.py --meter STDOUT STDERR -- COMMAND...` -------


@dataclass(frozen=True, slots=True)
class Usage:
    """One tool run as the meter saw it (module docstring); lingered_s: how long orphans outlived the main process."""

    returncode: int
    wall_s: float
    cpu_s: float
    rss_mib: float
    max1_mib: float
    lingered_s: float
    meter_cpu_s: float


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, found through /proc/PID/task/TID/children (no full /proc scan)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
            except OSError:
                continue  # the thread or process has just exited
            found.extend(children)
            stack.extend(children)
    return found


def tree_rss_bytes(pid: int) -> int:
    """Sum of resident set sizes over the live descendants of `pid` (/proc/PID/statm: a counter read, cheap)."""
    total = 0
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError):
            continue  # exited between the listing and the read, or a zombie
    return total


def meter(command: list[str], stdout_path: Path, stderr_path: Path) -> Usage:
    """Run `command` as described in the module docstring and measure its whole process tree."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    me = os.getpid()
    peak_rss = 0
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        start = time.perf_counter()
        main = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    returncode: int | None = None
    wall = lingered = 0.0
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # the whole tree is reaped
        if pid == main.pid:
            returncode, wall = os.waitstatus_to_exitcode(status), time.perf_counter() - start
            main.returncode = returncode  # reaped here, not by Popen
        if pid:
            continue
        peak_rss = max(peak_rss, tree_rss_bytes(me))
        if returncode is not None:
            lingered = time.perf_counter() - start - wall
            if lingered > ORPHAN_GRACE_S:
                for orphan in descendants(me):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(orphan, signal.SIGKILL)
        time.sleep(SAMPLE_INTERVAL_S)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(
        returncode=-1 if returncode is None else returncode,
        wall_s=wall,
        cpu_s=children.ru_utime + children.ru_stime,
        rss_mib=peak_rss / 2**20,
        max1_mib=children.ru_maxrss / 1024,
        lingered_s=lingered,
        meter_cpu_s=time.process_time(),
    )


def metered(command: list[str], stdout_path: Path, stderr_path: Path) -> Usage:
    """`meter` in a fresh process, so RUSAGE_CHILDREN and the subreaper cover this tool alone."""
    completed = subprocess.run(
        [sys.executable, __file__, "--meter", str(stdout_path), str(stderr_path), "--", *command],
        capture_output=True,
        text=True,
        check=True,
    )
    return Usage(**json.loads(completed.stdout))


# ---- the benchmark ------------------------------------------------------------------------------


def warm_page_cache(folder: Path) -> None:
    """Read every file once so the first tool does not pay the cold reads alone."""
    for path in folder.iterdir():
        if path.is_file():
            path.read_bytes()


def run_tool(tool: str, corpus: str, results: Path) -> dict[str, Any]:
    """Run one tool on one corpus, score its output; one row of the report."""
    name = CORPORA[corpus]
    folder = corpus_folder(corpus)
    stdout_path, stderr_path = results / f"{name}.{tool}.out.json", results / f"{name}.{tool}.err.txt"
    load = os.getloadavg()[0]
    usage = metered(tool_command(tool, folder), stdout_path, stderr_path)
    row: dict[str, Any] = {"tool": tool, "corpus": corpus, "load1": round(load, 2), **asdict(usage)}
    if usage.returncode != 0:
        row["error"] = stderr_path.read_text(errors="replace")[-2000:]
        return row
    raw = json.loads(stdout_path.read_text())
    document = as_scorable(tool, raw)
    pairs, skipped = score.load_pairs(document)
    ground_truth, variants, scenes = corpus_truth(corpus)
    row |= score.score(pairs, ground_truth, variants)
    row["skipped"] = len(skipped)
    if tool.startswith("dedupd"):
        row |= similar_tier(raw, ground_truth, scenes)
    return row


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_report(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'tool':<15} {'corpus':<8} {'load':>5} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} "
        f"{'max1 MiB':>8} {'pairs':>6} {'false':>6} {'precision':>9} {'recall':>7}"
    )
    for row in rows:
        head = f"{row['tool']:<15} {row['corpus']:<8} {row['load1']:>5.1f}"
        if "error" in row:
            print(f"{head}  failed ({row['returncode']}): {row['error'].strip().splitlines()[-1:]}")
            continue
        print(
            f"{head} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} {row['rss_mib']:>8.0f} "
            f"{row['max1_mib']:>8.0f} {row['pairs_found']:>6} {row['false_found']:>6} "
            f"{percent(row['precision']):>9} {percent(row['recall']):>7}"
        )
    for corpus in dict.fromkeys(row["corpus"] for row in rows):
        scored = [row for row in rows if row["corpus"] == corpus and "error" not in row]
        if not scored:
            continue
        kinds = list(scored[0]["recall_vs_original_by_kind"])
        print(
            f"\n{CORPORA[corpus]}: recall vs original by edit kind (pairs per kind: "
            f"{scored[0]['recall_vs_original_by_kind'][kinds[0]]['pairs']})"
        )
        print(f"{'kind':<10} " + " ".join(f"{row['tool']:>15}" for row in scored))
        for kind in kinds:
            print(
                f"{kind:<10} "
                + " ".join(f"{percent(row['recall_vs_original_by_kind'][kind]['recall']):>15}" for row in scored)
            )
        for row in scored:
            if row["false_pairs_by_kinds"]:
                top = ", ".join(f"{k} {n}" for k, n in list(row["false_pairs_by_kinds"].items())[:5])
                print(f"  false pairs of {row['tool']} by kinds: {top}")
    tiered = [row for row in rows if "similar_pairs" in row]
    if tiered:
        print("\nper tier (duplicate: a pair is true when one capture; similar: different captures of one scene)")
        print(f"{'tool':<15} {'corpus':<9} {'dup pairs':>9} {'wrong':>6} {'dup prec':>8} {'dup rec':>8} "
              f"{'sim pairs':>9} {'sim prec':>8} {'sim rec':>8} {'sim=1 capture':>13}")
        for row in tiered:
            print(f"{row['tool']:<15} {row['corpus']:<9} {row['pairs_found']:>9} {row['false_found']:>6} "
                  f"{percent(row['precision']):>8} {percent(row['recall']):>8} {row['similar_pairs']:>9} "
                  f"{percent(row['similar_precision']):>8} {percent(row['similar_recall']):>8} "
                  f"{row['similar_same_capture']:>13}")
    for row in rows:
        if row["tool"] == "dedupd" and "error" not in row and row["corpus"] in GOALS:
            wall, recall, precision = GOALS[row["corpus"]]
            met = row["wall_s"] <= wall and (row["recall"] or 0) >= recall and (row["precision"] or 0) >= precision
            print(
                f"goal {row['corpus']}: wall <= {wall:.0f} s, recall >= {recall:.0%} at precision >= "
                f"{precision:.1%}: {'met' if met else 'MISSED'} (wall {row['wall_s']:.1f} s, "
                f"recall {percent(row['recall'])}, precision {percent(row['precision'])})"
            )


def stage_breakdown(folder: Path) -> dict[str, float]:
    """CPU s of each stage of `dedupd scan`'s per-file work over `folder`, run in this process."""
    from dedupd.imaging.cnn import Encoder  # noqa: PLC0415 - only this mode needs dedupd in-process
    from dedupd.imaging.decode import MATCH_MIN_SIDE, open_for_matching  # noqa: PLC0415
    from dedupd.imaging.encode import content_digest, encode_bytes, read_file  # noqa: PLC0415

    encoder = Encoder(None, intra_op_threads=1)
    min_side = max(MATCH_MIN_SIDE, encoder.spec.size)
    stages: dict[str, float] = dict.fromkeys(("read", "digest", "decode PNG", "decode JPEG", "decode other",
                                              "hash+thumb+CNN input", "CNN"), 0.0)  # fmt: skip
    tensors = []
    for path in sorted(folder.iterdir()):
        clock = time.process_time()
        data = read_file(path)
        stages["read"] += time.process_time() - clock
        clock = time.process_time()
        content_digest(data)
        digest = time.process_time() - clock
        clock = time.process_time()
        with open_for_matching(data, min_side=min_side):
            pass
        decode = time.process_time() - clock
        kind = "PNG" if data.startswith(b"\x89PNG") else "JPEG" if data.startswith(b"\xff\xd8") else "other"
        stages[f"decode {kind}"] += decode
        clock = time.process_time()
        encoded = encode_bytes(data, cnn_spec=encoder.spec)
        stages["hash+thumb+CNN input"] += max(0.0, time.process_time() - clock - decode - digest)
        stages["digest"] += digest
        assert encoded.cnn_input is not None  # a cnn_spec was given: every encoding carries its CNN input
        tensors.append(encoded.cnn_input)
    clock = time.process_time()
    encoder.embed_prepared(tensors)
    stages["CNN"] = time.process_time() - clock
    return stages


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--meter":
        stdout_path, stderr_path, separator, *command = sys.argv[2:]
        assert separator == "--", "usage: scan.py --meter STDOUT STDERR -- COMMAND..."
        json.dump(asdict(meter(command, Path(stdout_path), Path(stderr_path))), sys.stdout)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=[*CORPORA, "both", "all"], default="both",
                        help="both: camera and ukbench; all: also the captures fixture")
    parser.add_argument("--tools", nargs="+", choices=TOOLS + EXTRA_TOOLS, default=list(TOOLS))
    parser.add_argument(
        "--results",
        type=Path,
        default=Path.home() / ".cache" / "dedupd-bench" / "results" / "scan",
        help="where each tool's output and stderr are kept",
    )
    parser.add_argument("--stages", action="store_true",
                        help="print the per-stage CPU breakdown of dedupd's per-file work instead (see above)")
    args = parser.parse_args()
    if args.stages:
        for corpus in {"both": ["camera", "ukbench"], "all": list(CORPORA)}.get(args.corpus, [args.corpus]):
            stages = stage_breakdown(corpus_folder(corpus))
            print(f"{CORPORA[corpus]}: " + ", ".join(f"{name} {cpu:.1f}" for name, cpu in stages.items())
                  + f"; total {sum(stages.values()):.1f} CPU s")  # fmt: skip
        return
    args.results.mkdir(parents=True, exist_ok=True)
    corpora = {"both": ["camera", "ukbench"], "all": list(CORPORA)}.get(args.corpus, [args.corpus])
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows = []
    for corpus in corpora:
        warm_page_cache(corpus_folder(corpus))
        for tool in args.tools:
            rows.append(run_tool(tool, corpus, args.results))
            print(f"  {tool} on {corpus}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    print_report(rows)
    print(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
