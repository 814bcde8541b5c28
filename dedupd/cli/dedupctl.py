"""The `dedupctl` command: asks a running dedupd over its control socket and prints the answer.

Owns argument parsing and output formatting (clear text by default, the result document as one JSON document
with `--json`); one request is `dedupd.cli.client.call`. Imports only `protocol`, `errors`, `paths`, the client
and the stdlib so it starts fast. Exit codes: 0 ok; 1 the daemon answered an error; 2 usage (or a bad config file);
3 the daemon cannot be reached (said in one sentence).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dedupd import __version__, names, paths, protocol
from dedupd.cli.client import DaemonUnreachable, call
from dedupd.errors import DedupdError
from dedupd.protocol import ProtocolError

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


# ---- text output ----

def _table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows with left-aligned columns (the last column is not padded, so long paths do not widen others)."""
    if not rows:
        return []
    rows = [[names.shown(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [indent + "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
            .rstrip() for row in rows]


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def _score(match: Mapping[str, Any]) -> str:
    if match.get("distance") is not None:
        return f"distance {match['distance']}"
    if match.get("similarity") is not None:
        return f"similarity {match['similarity']:.3f}"
    return ""


def _match_rows(matches: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[match.get("method") or "", _score(match), match["path"]] for match in matches]


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _root_rows(roots: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for root in roots:
        flags = " ".join(flag for flag in ("recursive", "protected") if root.get(flag))
        rows.append([root["path"], root["state"], flags, f"{root.get('watches', 0)} watches", root.get("detail") or ""])
    return rows




# ---- verbs ----
#
# A verb is a formatter with a `@verb(...)` line above it: its name, help, the protocol command it sends, the
# arguments it adds to its parser and how they become the request. The global options (--json, --socket,
# --config) are added to every verb's parser, so they are accepted before or after the verb.

type ArgsBuilder = Callable[[argparse.Namespace], dict[str, Any]]
type Formatter = Callable[[Mapping[str, Any]], list[str]]
type ArgumentsAdder = Callable[[argparse.ArgumentParser], None]
#: Replaces the one request of a verb: (socket path, parsed arguments, validated request) -> result document.
type Executor = Callable[[str, argparse.Namespace, dict[str, Any]], dict[str, Any]]


def _no_args(ns: argparse.Namespace) -> dict[str, Any]:
    return {}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Verb:
    """One dedupctl verb (`name` is "status", or "watch add" for an action of the group "watch")."""

    name: str
    help: str
    show: Formatter
    cmd: str
    arguments: ArgumentsAdder = _no_arguments
    build: ArgsBuilder = _no_args
    execute: Executor | None = None
    #: The result's file paths, for `--null` (their exact bytes, each ended by NUL); None: no --null.
    paths: Callable[[Mapping[str, Any]], list[str]] | None = None
    problems: Formatter | None = None  # what went wrong although the verb ran: printed on stderr, exit status 1

    def run(self, socket_path: str, args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
        if self.execute is not None:
            return self.execute(socket_path, args, request)
        return call(socket_path, self.cmd, request)


#: Every verb, in the order `--help` lists them; filled by `@verb`.
VERBS: list[Verb] = []
#: Groups of verbs (`watch list|add|remove`) and their help.
GROUPS = {"watch": "list, add or remove watched roots"}


def verb(name: str, help: str, *, cmd: str | None = None, arguments: ArgumentsAdder = _no_arguments,
         build: ArgsBuilder = _no_args, execute: Executor | None = None,
         paths: Callable[[Mapping[str, Any]], list[str]] | None = None,
         problems: Formatter | None = None) -> Callable[[Formatter], Formatter]:
    """Registers the decorated formatter as the text output of verb `name` (sending `cmd`, default: `name`)."""

    def register(show: Formatter) -> Formatter:
        VERBS.append(Verb(name, help, show, cmd or name.split()[0], arguments, build, execute, paths, problems))
        return show

    return register


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _given(**values: Any) -> dict[str, Any]:
    """The options the user gave (argparse leaves the others None); the daemon applies its defaults."""
    return {name: value for name, value in values.items() if value is not None and value is not False}


def _method_option(choices: Sequence[str] = protocol.METHODS, default: str = "the daemon's matcher") -> ArgumentsAdder:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--method", choices=choices, help=f"only this method (default: {default})")

    return add


def _positional(name: str, **options: Any) -> ArgumentsAdder:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(name, **options)

    return add



# ---- the verbs, each its formatter under its @verb line ----

@verb("status", "state, roots, counts, index sizes, CNN, uptime")
def _show_status(result: Mapping[str, Any]) -> list[str]:
    counts = result["counts"]
    skipped = counts.get("skipped") or {}
    skipped_text = str(sum(skipped.values()))
    if skipped:
        skipped_text += f" ({_counted(skipped)})"
    if counts.get("skipped_by_extension"):
        skipped_text += f"; by extension: {_counted(counts['skipped_by_extension'])}"
    cnn = result.get("cnn") or {}
    cnn_text = f"{cnn.get('model')} on {cnn.get('provider')} (dim {cnn.get('dim')})" if cnn.get("enabled") else "off"
    scan = result.get("scan") or {}
    scan_text = "done" if not scan.get("running") else \
        f"running, {scan.get('summary') or f'{scan.get('done', 0)} of {scan.get('total', 0)}'}"
    rows = [
        ["state:", result["state"]],
        *[[f"FAILING {stage}:", why] for stage, why in sorted((result.get("problems") or {}).items())],
        ["version:", f"{result['version']} (protocol {result['protocol']})"],
        ["uptime:", _duration(result["uptime_s"])],
        ["indexed:", str(counts["indexed"])],
        ["pending:", str(counts["pending"])],
        ["decodes:", str(counts.get("decodes", 0))],
        ["duplicates:", f"{counts['duplicates']} groups, {counts.get('duplicate_files', 0)} files"],
        ["skipped:", skipped_text],
        *([["sidecars:", f"{counts.get('sidecars', 0)} sidecars, {counts.get('motion_files', 0)} motion files"]]
          if counts.get("sidecars") or counts.get("motion_files") else []),
        ["index:", _counted(result.get("index") or {}) or "empty"],
        ["cnn:", cnn_text],
        ["scan:", scan_text],
        ["roots:", "" if result["roots"] else "none"],
    ]
    return _table(rows) + _table(_root_rows(result["roots"]), indent="  ")


def _wait_idle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, metavar="S",
                        help=f"give up after S seconds (default {protocol.WAIT_IDLE_DEFAULT_S:g})")


@verb("wait-idle", "return when nothing is pending", arguments=_wait_idle_arguments,
      build=lambda ns: _given(timeout=ns.timeout))
def _show_wait_idle(result: Mapping[str, Any]) -> list[str]:
    return [f"idle (waited {result['waited_s']:.1f} s)"]


def _query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    _method_option()(parser)
    parser.add_argument("--threshold", type=int, metavar="N", help="max hamming distance for hash methods (0-64)")
    parser.add_argument("--min-similarity", type=float, metavar="F", help="min cosine similarity for the CNN")
    parser.add_argument("--explain", action="store_true",
                        help="also show, per file, the evidence of each method and what decided the tier")


@verb("query", "near-duplicates of any file", arguments=_query_arguments,
      build=lambda ns: _given(path=_absolute(ns.file), method=ns.method, threshold=ns.threshold,
                              min_similarity=ns.min_similarity, explain=ns.explain))
def _show_query(result: Mapping[str, Any]) -> list[str]:
    matches = result["matches"]
    same = [m for m in matches if m.get("tier", "duplicate") == "duplicate"]
    other = [m for m in matches if m.get("tier", "duplicate") != "duplicate"]
    counted = f"{len(same) or 'no'} duplicate{'' if len(same) == 1 else 's'}" if same or not other else ""
    if other:
        counted += f"{', ' if counted else ''}{len(other)} similar (other captures of the scene)"
    lines = [f"{result['file']}: {counted if matches else 'no matches'}"]
    if result.get("companions"):  # the file's sidecars and motion file
        lines.append("  with " + ", ".join(f"{os.path.basename(c['path'])} ({c['kind']})"
                                           for c in result["companions"]))
    lines += _table(_match_rows(same), indent="  ")
    if other:
        lines += ["similar:", *_table(_match_rows(other), indent="  ")]
    if "explain" in result:
        lines += _explain_lines(result["explain"])
    return lines


#: `query --explain` rows: (label, evidence key) in the order a reader follows the decision.
_EXPLAIN_ROWS = (
    ("same bytes", "exact"), ("oriented pHash", "oriented_distance"), ("CNN similarity", "similarity"),
    ("pHash", "phash"), ("aHash", "ahash"), ("dHash", "dhash"), ("wHash", "whash"),
    ("rule", "decision"), ("metadata", "metadata"), ("  because", "metadata_detail"), ("pixels", "pixels"),
    ("  because", "pixel_detail"), ("tier", "tier"), ("  decided by", "tier_evidence"),
)


def _explain_value(evidence: Mapping[str, Any], key: str) -> str:
    value = evidence.get(key)
    if key == "decision":
        return value or "not a match"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value in (None, "") else str(value)


def _explain_lines(explain: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One table per candidate: each method's evidence and what decided the tier."""
    if not explain:
        return ["explain: nothing matched, no evidence to show"]
    lines = []
    for path, evidence in explain.items():
        lines += ["", f"evidence for {path}:"]
        lines += _table([[label, _explain_value(evidence, key)] for label, key in _EXPLAIN_ROWS if key in evidence],
                        indent="  ")  # fmt: skip
    return lines


def _listing_arguments(parser: argparse.ArgumentParser) -> None:
    _method_option()(parser)
    parser.add_argument("--under", metavar="DIR", help="only files under DIR")


def _listing_args(ns: argparse.Namespace) -> dict[str, Any]:
    return _given(method=ns.method, under=ns.under and _absolute(ns.under))


@verb("duplicates", "current duplicate groups", arguments=_listing_arguments, build=_listing_args)
def _show_duplicates(result: Mapping[str, Any]) -> list[str]:
    return _group_lines(result["groups"], "group", "no duplicates")


def _group_lines(groups: Sequence[Sequence[Mapping[str, Any]]], label: str, empty: str) -> list[str]:
    """Groups of either tier: a count line, then each group's members and how each matched."""
    if not groups:
        return [empty]
    lines = [f"{len(groups)} {label}s, {sum(len(group) for group in groups)} files"]
    for number, group in enumerate(groups, 1):
        lines += ["", f"{label} {number} ({len(group)} files)"]
        lines += _table(_match_rows(group), indent="  ")
    return lines


@verb("similar", "groups of different captures of one scene (bursts, series, stereo pairs), for culling",
      arguments=_listing_arguments, build=_listing_args)
def _show_similar(result: Mapping[str, Any]) -> list[str]:
    if not result.get("enabled", True):
        return ["the similar tier is off ([matcher] similar = false)"]
    return _group_lines(result["groups"], "similar group", "no similar groups")


@verb("to-remove", "files one would delete, keeping one per group (`# keep` lines say which and why)",
      arguments=_listing_arguments, build=_listing_args, paths=lambda result: list(result["files"]))
def _show_to_remove(result: Mapping[str, Any]) -> list[str]:
    if "groups" not in result:
        return list(result["files"])
    lines = []
    for group in result["groups"]:
        lines += [f"# keep {path}  ({group['why']})" for path in group["keep"]]
        lines += list(group["remove"])
    return lines


@verb("rescan", "reconcile the store with the disk (PATH, or every root)",
      arguments=_positional("path", nargs="?"),
      build=lambda ns: _given(path=ns.path and _absolute(ns.path)))
def _show_rescan(result: Mapping[str, Any]) -> list[str]:
    return [f"rescan scheduled: {path}" for path in result["scheduled"]] or ["nothing to rescan"]


def _show_state(result: Mapping[str, Any]) -> list[str]:
    return [f"state: {result['state']}"]


verb("pause", "stop encoding (changes are still queued)")(_show_state)
verb("resume", "resume encoding")(_show_state)


@verb("reload", "re-read the configuration")
def _show_reload(result: Mapping[str, Any]) -> list[str]:
    changed, later = result["changed"], result.get("restart_needed") or []
    lines = [f"reloaded; changed: {', '.join(changed)}" if changed else "reloaded; no setting changed"]
    if later:
        lines.append(f"needs a restart to take effect: {', '.join(later)} (systemctl restart dedupd, or "
                     "systemctl --user restart dedupd)")
    return lines


def _show_roots(result: Mapping[str, Any]) -> list[str]:
    return _table(_root_rows(result["roots"])) or ["no roots"]


verb("watch list", "the watched roots", build=lambda ns: {"action": "list"})(_show_roots)
verb("watch add", "add a watched root", arguments=_positional("path"),
     build=lambda ns: {"action": "add", "path": _absolute(ns.path)})(_show_roots)
verb("watch remove", "remove a watched root", arguments=_positional("path"),
     build=lambda ns: {"action": "remove", "path": _absolute(ns.path)})(_show_roots)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    _method_option((*protocol.HASH_METHODS, "cnn"), default="phash")(parser)
    parser.add_argument("--format", choices=("json", "parquet"), help="json (default): imagededup's encodings of one "
                        "method; parquet: every record in dedupd's Parquet format (what `dedupd import` reads), "
                        "written by the daemon to --output")
    parser.add_argument("--output", help="the .parquet file the daemon writes (with --format parquet)")


def _export_request(ns: argparse.Namespace) -> dict[str, Any]:
    if (ns.format == "parquet") != (ns.output is not None):
        raise DedupdError("--format parquet needs --output FILE, and only it takes one")
    return _given(method=ns.method, format=ns.format, output=_absolute(ns.output) if ns.output else None)


@verb("export", "imagededup-format encodings of the whole index: {path: hex} (hashes) or {path: [floats]} (cnn); "
      "or every record as Parquet (--format parquet --output FILE)",
      arguments=_export_arguments, build=_export_request)
def _show_export(result: Mapping[str, Any]) -> list[str]:
    if result.get("format") == "parquet":
        left_out = [f"left out (not UTF-8): {names.shown(path)}" for path in result.get("left_out", [])]
        return [f"wrote {result['rows']:,} records to {result['output']} (import them with `dedupd import`)", *left_out]
    encodings = sorted(result["encodings"].items())
    if any(not isinstance(value, str) for _, value in encodings):  # CNN embeddings: too long for a line each
        dims = sorted({len(value) for _, value in encodings})
        return [f"{len(encodings)} {result.get('method', 'cnn')} embeddings ({'/'.join(map(str, dims))} floats "
                "each; the values with --json):", *(f"  {path}" for path, _ in encodings)]
    return [f"{value}  {path}" for path, value in encodings]


def _poll_needles(socket_path: str, args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    """`needles` is a job in the daemon: start it, then ask about it until it is done (each ask waits up to
    protocol.NEEDLES_WAIT_S, so no request nears the daemon's time limit however large DIR is)."""
    result = call(socket_path, "needles", request)
    while not result.get("done", True):  # a reply without "done" is a whole result
        if sys.stderr.isatty():
            print(f"\rneedles: {result['checked']:,} of {result['total']:,} files", end="", file=sys.stderr)
        result = call(socket_path, "needles", {"job": result["job"]})
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    return result


@verb("needles", "which images of DIR (and which sub-folders, wholly) are in the library",
      arguments=_positional("dir"), build=lambda ns: {"dir": _absolute(ns.dir)}, execute=_poll_needles)
def _show_needles(result: Mapping[str, Any]) -> list[str]:
    files, unreadable = result["files"], result.get("unreadable") or {}
    found = {path: matches for path, matches in sorted(files.items()) if matches}
    new = sorted(path for path, matches in files.items() if not matches)
    lines = [f"{result['found']} of {result['total']} images already in the library; {len(new)} new; "
             f"{len(unreadable)} unreadable"]
    lines += _table([["ALL" if folder["all"] else "", f"{folder['in_library']} of {folder['images']}", folder["path"]]
                     for folder in result["folders"]], indent="  ")
    if found:
        lines.append(f"in the library ({len(found)}):")
        lines += _table([[path, "=", matches[0]["path"], f"({matches[0].get('method')} {_score(matches[0])})"]
                         for path, matches in found.items()], indent="  ")
    if new:
        lines.append(f"new, not in the library ({len(new)}):")
        lines += [f"  {path}" for path in new]
    if unreadable:
        lines.append(f"unreadable, not compared ({len(unreadable)}):")
        lines += _table([[path, why] for path, why in sorted(unreadable.items())], indent="  ")
    return lines


def _ignore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="two or more files")
    parser.add_argument("--list", action="store_true", help="list the pairs ignored so far")


def _ignore_request(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.list and ns.paths:
        raise ProtocolError("bad_args", "ignore: give two or more files, or --list, not both")
    return {"list": True} if ns.list else {"paths": [_absolute(path) for path in ns.paths]}


@verb("ignore", "mark files as not duplicates of each other; never reported again (--list: the pairs)",
      arguments=_ignore_arguments, build=_ignore_request)
def _show_ignore(result: Mapping[str, Any]) -> list[str]:
    if "pairs" in result:
        return [f"{a}  {b}" for a, b in result["pairs"]] or ["no ignored pairs"]
    return [f"ignored: {result['ignored']} (these files are no longer reported as duplicates of each other)"]


@verb("unignore", "undo ignore: these files are judged as duplicates again",
      arguments=_positional("paths", nargs="+", metavar="PATH", help="two or more files"),
      build=lambda ns: {"paths": [_absolute(path) for path in ns.paths]})
def _show_unignore(result: Mapping[str, Any]) -> list[str]:
    return [f"unignored: {result['unignored']} (these files are judged as duplicates again)"]


# ---- actions: carried out here, with the rights of the user who asks, never by the daemon ----

type Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]
#: A verb carried out in this process; it may ask the daemon through `Ask`.
type LocalVerb = Callable[[argparse.Namespace, Ask], dict[str, Any]]
_RECORDS_PER_REQUEST = 2000  # paths per `records` request, well inside the 1 MiB request line


def _acting(local: LocalVerb) -> Executor:
    def execute(socket_path: str, args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
        return local(args, lambda cmd, sent: call(socket_path, cmd, sent))

    return execute


def _resolve(args: argparse.Namespace, ask: Ask) -> dict[str, Any]:
    from dedupd.service import actions  # loaded only by the verbs that act: dedupctl must start fast

    op = "move" if args.move_to else "reflink" if args.reflink else "hardlink" if args.hardlink else "trash"
    acting = bool(args.trash or args.move_to or args.reflink or args.hardlink) and not args.dry_run
    if args.tier == "similar" and not args.keep:
        raise ProtocolError("bad_args", "similar groups hold different captures of a scene: say which file to keep "
                                        "with --keep FILE")
    listing = _given(under=args.under and _absolute(args.under))
    groups = [[member["path"] for member in group] for group in ask(args.tier, listing)["groups"]]
    if args.group or args.keep:
        wanted = _absolute(args.keep or args.group)
        groups = [group for group in groups if wanted in group]
        if not groups:
            tier = "duplicate" if args.tier == "duplicates" else "similar"
            raise ProtocolError("not_found", f"{wanted} is in no {tier} group")
    if args.keep:  # the user's choice instead of the keep policy's
        proposed = {path for group in groups for path in group if path != _absolute(args.keep)}
    else:
        proposed = set(ask("to-remove", listing)["files"])
    records = _records(ask, sorted({path for group in groups for path in group}), acting)
    target = _absolute(args.move_to) if args.move_to else None
    planned = actions.plan(op, groups, proposed, records, target)
    if not acting:
        return {"dry_run": True, **planned.document()}
    records.update(_records(ask, sorted({path for step in planned.steps for path in step.companions}), True))
    scope = _given(group=args.group and _absolute(args.group), under=listing.get("under"), tier=args.tier,
                   keep=args.keep and _absolute(args.keep))
    return {"dry_run": False, **actions.execute(planned, records, scope=scope, ask=ask).document()}


def _records(ask: Ask, paths_: Sequence[str], tokens: bool) -> dict[str, Any]:
    """The daemon's records of these files (with the tokens an undo gives back), a request per batch."""
    records: dict[str, Any] = {}
    for start in range(0, len(paths_), _RECORDS_PER_REQUEST):
        batch = list(paths_[start:start + _RECORDS_PER_REQUEST])
        records.update(ask("records", {"paths": batch, "tokens": tokens})["records"])
    return records


def _undo(args: argparse.Namespace, ask: Ask) -> dict[str, Any]:
    from dedupd.service import actions

    return actions.undo(args.action, ask=ask).document()


def _history(args: argparse.Namespace, ask: Ask) -> dict[str, Any]:
    from dedupd.service import actions

    return {"actions": actions.history()}


def _refusals(result: Mapping[str, Any]) -> list[str]:
    return [refusal["reason"] for refusal in result.get("refused", [])] + [
        f"{step['path']}: refused, {step['refused']}" for step in result.get("steps", []) if step.get("refused")]


def _resolve_arguments(parser: argparse.ArgumentParser) -> None:
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--trash", action="store_true", help="into the freedesktop trash")
    how.add_argument("--move-to", metavar="DIR", help="into DIR (keeping the path below the root)")
    how.add_argument("--reflink", action="store_true", help="byte-identical copies become reflinks of the keeper")
    how.add_argument("--hardlink", action="store_true", help="byte-identical copies become hard links to the keeper")
    parser.add_argument("--dry-run", action="store_true", help="only print what it would do (the default)")
    parser.add_argument("--group", metavar="FILE", help="only the group FILE is in")
    parser.add_argument("--keep", metavar="FILE", help="keep FILE (not the keep policy's choice) and resolve the "
                                                       "rest of its group")
    parser.add_argument("--under", metavar="DIR", help="only files under DIR")
    parser.add_argument("--tier", choices=("duplicates", "similar"), default="duplicates",
                        help="which groups (default: duplicates; similar ones need --keep)")


@verb("resolve", "keep one file per group and trash, move or link the others (a dry run unless told how); "
                 "journaled, undo with `dedupctl undo`", cmd="duplicates", arguments=_resolve_arguments,
      build=lambda ns: _given(under=ns.under and _absolute(ns.under)), execute=_acting(_resolve), problems=_refusals)
def _show_resolve(result: Mapping[str, Any]) -> list[str]:
    if result["dry_run"]:
        steps = result["steps"]
        doing = [step for step in steps if not step.get("refused")]
        target = f" to {result['target']}" if result.get("target") else ""
        lines = [f"would {result['op']} {len(doing)} file{'' if len(doing) == 1 else 's'}{target} from "
                 f"{result['groups']} group{'' if result['groups'] == 1 else 's'} (dry run; act with --trash, "
                 "--move-to DIR, --reflink or --hardlink)"]
        lines += _table([[result["op"], step["path"], f"(keeps {step['keeper']})"] for step in doing], "  ")
        lines += _table([["refused", step["path"], step["refused"]] for step in steps if step.get("refused")], "  ")
        return lines + _table([["skipped", skip["path"], skip["reason"]] for skip in result["skipped"]], "  ")
    lines = [f"action {result['action']}: {result['op']} {len(result['done'])} file"
             f"{'' if len(result['done']) == 1 else 's'} (undo with: dedupctl undo {result['action']})"]
    lines += _table([[done["op"], done["path"], f"-> {done['dest']}" if done.get("dest") else
                      f"(now a {done['op']} of {done['keeper']})" if done.get("keeper") and not done.get("dest")
                      else ""] for done in result["done"]], "  ")
    return lines + _table([["skipped", skip["path"], skip["reason"]] for skip in result["skipped"]], "  ")


@verb("undo", "put back what an action moved or linked (the latest by default)", cmd="hello",
      arguments=_positional("action", nargs="?", help="an action id from `dedupctl history`"),
      execute=_acting(_undo), problems=_refusals)
def _show_undo(result: Mapping[str, Any]) -> list[str]:
    lines = [f"undid action {result['action']} ({result['op']}): {len(result['done'])} file"
             f"{'' if len(result['done']) == 1 else 's'} put back"]
    return lines + _table([["restored", done["path"]] for done in result["done"]], "  ")


@verb("history", "the actions taken, newest first", cmd="hello", execute=_acting(_history))
def _show_history(result: Mapping[str, Any]) -> list[str]:
    if not result["actions"]:
        return ["no actions yet"]
    rows = []
    for entry in result["actions"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"])) if entry.get("at") else "?"
        state = ("undone" if not entry["undoable"] and entry["undone"] else
                 "interrupted" if not entry["finished"] else "done")
        target = f" {entry['target']}" if entry.get("target") else ""
        rows.append([entry["action"], when, f"{entry['op']}{target}", f"{entry['files']} files", state])
    return _table(rows)


def _review(socket_path: str, args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    from dedupd.cli import review  # loaded only here: dedupctl must start fast

    call(socket_path, "hello")  # a clear "not running" before a server is started for nothing
    state = review.ensure_server(socket_path, idle_s=args.idle_timeout)
    opened = False
    if not args.print_url:
        import webbrowser

        opened = webbrowser.open(state["url"])
    return {"url": state["url"], "pid": state["pid"], "started": state["started"], "opened": opened}


def _review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-url", action="store_true", help="print the URL instead of opening a browser")
    parser.add_argument("--idle-timeout", type=float, default=1800.0, metavar="S",
                        help="the server stops after S seconds without a request (default 1800)")


@verb("review", "open the review page (a local web page: the groups side by side, and the actions)", cmd="hello",
      arguments=_review_arguments, execute=_review)
def _show_review(result: Mapping[str, Any]) -> list[str]:
    if result["opened"]:
        return [f"opened {result['url']} in your browser"]
    return [result["url"]]


# ---- the parser ----

def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--json, --socket and --config: on the top parser with their defaults, on every verb's parser without
    (argparse.SUPPRESS), so that a value given after the verb is kept and one given before is not reset."""
    default: Any = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document", **default)
    parser.add_argument("--socket", metavar="PATH", **default,
                        help=f"control socket (default: ${paths.SOCKET_ENV}, then the config's `socket`, "
                             "then the user/system default)")
    parser.add_argument("--config", metavar="FILE", **default,
                        help=f"read the control socket from this dedupd config file (default: ${paths.CONFIG_ENV}, "
                             "then the user/system config file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dedupctl", description="Ask a running dedupd. Exit codes: 0 ok, 1 the daemon answered an error, "
                                     "2 usage, 3 the daemon cannot be reached.",
        epilog="--json, --socket and --config may also be given after the verb. `dedupctl VERB --help` shows a "
               "verb's options.")
    parser.add_argument("--version", action="version", version=f"dedupctl {__version__}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    groups: dict[str, Any] = {}
    for entry in VERBS:
        *group, name = entry.name.split()
        if group and group[0] not in groups:
            group_parser = commands.add_parser(group[0], help=GROUPS[group[0]], description=GROUPS[group[0]])
            _global_options(group_parser, top=False)
            groups[group[0]] = group_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        verb_parser = (groups[group[0]] if group else commands).add_parser(name, help=entry.help,
                                                                            description=entry.help)
        _global_options(verb_parser, top=False)
        entry.arguments(verb_parser)
        if entry.paths is not None:
            verb_parser.add_argument("-0", "--null", action="store_true",
                                     help="print the paths as their exact bytes, each ended by NUL (for xargs -0): "
                                          "right for every file name")
        verb_parser.set_defaults(entry=entry)
    return parser


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _fail(message: str, code: int) -> int:
    print(f"dedupctl: {names.shown(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    entry: Verb = args.entry
    try:
        request = protocol.validate(entry.cmd, entry.build(args))
        where = paths.locate_socket(args.socket, config=args.config)
    except DedupdError as exc:  # bad arguments, or a config file that cannot be read for its `socket`
        return _fail(str(exc), EXIT_USAGE)
    try:
        result = entry.run(str(where.path), args, request)
        problems = entry.problems(result) if entry.problems is not None else []
        if args.json:
            _print_json(result)
        elif getattr(args, "null", False) and entry.paths is not None:
            sys.stdout.flush()
            sys.stdout.buffer.write(b"".join(names.raw(path) + b"\0" for path in entry.paths(result)))
        else:
            try:
                lines = entry.show(result)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                return _fail(f"unexpected answer from dedupd ({type(exc).__name__}: {exc})", EXIT_DAEMON_ERROR)
            for line in lines:
                print(names.shown(line))
        for problem in problems:
            print(f"dedupctl: {names.shown(problem)}", file=sys.stderr)
        return EXIT_DAEMON_ERROR if problems else EXIT_OK
    except DaemonUnreachable as exc:
        print(exc, file=sys.stderr)
        if where.origin != "--socket":
            print(f"(that is {where.origin}; for a daemon elsewhere use --socket PATH, or --config FILE naming "
                  "its config file)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ProtocolError as exc:
        if args.json:
            _print_json({"error": {"code": exc.code.value, "message": exc.message}})
        return _fail(exc.message, EXIT_DAEMON_ERROR)
    except DedupdError as exc:  # an action refused as a whole (nothing to undo, an unknown action id)
        if args.json:
            _print_json({"error": {"code": "refused", "message": str(exc)}})
        return _fail(str(exc), EXIT_DAEMON_ERROR)
    except BrokenPipeError:  # e.g. `dedupctl to-remove | head`: stop quietly, as other filters do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
