"""User-invoked resolving of duplicate groups: trash, move, reflink, hardlink; the action journal; undo.

Runs in the process of the user who asks (`dedupctl resolve`, the review server), never in the daemon: the
daemon's sandbox keeps the roots read-only for it. The daemon only answers what it knows (groups, the keep
policy's proposals, each file's stored size, mtime and digest) and sees the result as ordinary file events.

Safety rules, each checked for every file just before it is touched:

* the file is unchanged since it was indexed: same size and mtime_ns as the store's record, and the same
  content digest (the bytes are read again);
* the file it is a duplicate of (the group's keeper) still exists; for `reflink` and `hardlink` the two are
  equal byte for byte, compared again at action time;
* nothing under a protected (reference) root is ever touched;
* an image's companions, as its record lists them (`dedupd.companions`: its XMP and AAE sidecars, a Live
  Photo's motion file) go with it into the trash or the move target, each a journaled step of its own: its own
  (`IMG_1.CR3.xmp`) always, one shared by the basename (`IMG_1.xmp`, `IMG_1.AAE`, `IMG_1.MOV`) only with the
  last image of that basename to go, and not while another image of it is still in the folder (a RAW+JPEG
  pair's `IMG_1.xmp` stays with the one that stays). A companion gone meanwhile is left out.

Every step is journaled before it is carried out: one append-only JSON Lines file per action under the acting
user's state dir (`<state>/actions/`), each line fsynced. A SIGKILL at any moment therefore leaves each file
either in place or moved with its journal line written, and `undo` reads the journal to put things back
(also after a restart). Trash follows the freedesktop Trash specification through `send2trash` (home trash,
or `$topdir/.Trash-$uid` on other filesystems, with `.trashinfo` files a desktop's trash can restore from).
"""

import contextlib
import errno
import fcntl
import filecmp
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from dedupd import paths
from dedupd.companions import basename_key, named_like_companion
from dedupd.errors import DedupdError
from dedupd.imaging.encode import content_digest

#: The ways to resolve a group.
OPERATIONS = ("trash", "move", "reflink", "hardlink")
#: Operations that replace a copy by a link to the keeper: byte-identical members only.
LINKS = ("reflink", "hardlink")
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)

#: Asks the daemon one request (`cmd`, `args`) and returns its result; how `dedupctl` and the review server talk.
type Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class ActionError(DedupdError):
    """An action or undo cannot be carried out as asked (nothing was touched by the refusal itself)."""


# ---------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True, slots=True)
class Step:
    """One file to resolve: `path` goes (or becomes a link to `keeper`); `refused` says why not, if so.
    `companions` go with it (those of them in `shared` only when no other image of its basename is left)."""

    path: str
    keeper: str
    refused: str | None = None
    companions: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()


@dataclass(slots=True)
class Plan:
    """What an action would do, group by group; a dry run prints it, an action carries out its steps."""

    op: str
    target: str | None
    steps: list[Step] = field(default_factory=list)
    groups: int = 0
    #: Not for this op (a link of different bytes), or of a capture set a member of which stays.
    skipped: list[dict[str, str]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target, "groups": self.groups, "skipped": self.skipped,
                "steps": [{"path": s.path, "keeper": s.keeper, "companions": list(s.companions),
                           **({"refused": s.refused} if s.refused else {})} for s in self.steps]}


def _others_of_basename(path: str) -> list[str]:
    """The other files in `path`'s folder of its basename that are not companions: the images it shares with."""
    directory = os.path.dirname(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    key = basename_key(path)
    return [other for name in names if (other := os.path.join(directory, name)) != path
            and basename_key(other) == key and not named_like_companion(other)]


def _with_companions(result: Plan, records: Mapping[str, Any]) -> None:
    """Give each step its image's companions (the record's): its own; the shared ones on the last step of its
    basename, when every other image of that basename in the folder goes in this plan too."""
    going = {step.path for step in result.steps if not step.refused}
    last = {basename_key(step.path): n for n, step in enumerate(result.steps) if not step.refused}
    for n, step in enumerate(result.steps):
        if step.refused:
            continue
        companions = records[step.path].get("companions") or []
        own = tuple(c["path"] for c in companions if not c["shared"])
        shared = tuple(c["path"] for c in companions if c["shared"])
        if shared and (last[basename_key(step.path)] != n or not going.issuperset(_others_of_basename(step.path))):
            shared = ()
        result.steps[n] = replace(step, companions=own + shared, shared=shared)


def _capture_set(records: Mapping[str, Any], path: str) -> str | None:
    """The key of the capture set (a RAW and its JPEG) `path` belongs to among its group, as the daemon's
    records say (`capture_set`), None for a lone file."""
    return (records.get(path) or {}).get("capture_set")


def plan(op: str, groups: Sequence[Sequence[str]], proposed: set[str], records: Mapping[str, Any],
         target: str | None = None) -> Plan:
    """The steps of resolving `groups`: each member the keep policy proposes (`proposed`, the daemon's
    `to-remove`, or all but the user's choice) goes, and is checked against its record; the group's first other
    member is its keeper. A capture set is one unit: a proposed member of one with a member that stays, stays
    too (skipped, with the reason: the user kept the RAW, so its JPEG stays)."""
    if op not in OPERATIONS:
        raise ActionError(f"unknown operation {op!r}")
    result = Plan(op, target)
    for members in groups:
        keepers = [m for m in members if m not in proposed]
        kept_sets = {_capture_set(records, m): m for m in reversed(keepers) if _capture_set(records, m)}
        going = []
        for path in (m for m in members if m in proposed):
            if (stays := kept_sets.get(_capture_set(records, path))) is not None:  # a capture set is one unit
                result.skipped.append({"path": path, "reason": f"of one capture set with {stays}, which stays"})
            else:
                going.append(path)
        if not keepers or not going:
            continue
        result.groups += 1
        keeper = keepers[0]
        for path in going:
            record = records.get(path)
            keeper_record = records.get(keeper)
            refused = None
            if record is None or record.get("digest") is None:
                refused = "not in the index (changed or removed since it was indexed)"
            elif record.get("protected"):
                refused = "under a protected root"
            elif op in LINKS and (keeper_record is None or keeper_record.get("digest") != record["digest"]):
                result.skipped.append({"path": path, "reason": f"not byte-identical to {keeper}"})
                continue
            elif op in LINKS and keeper_record and (keeper_record["dev"], keeper_record["inode"]) == (
                    record["dev"], record["inode"]):
                result.skipped.append({"path": path, "reason": f"already a hard link to {keeper}"})
                continue
            result.steps.append(Step(path, keeper, refused))
    if op not in LINKS:  # a linked file stays where it is, and so do its companions
        _with_companions(result, records)
    return result


# ---------------------------------------------------------------------------------------------- checks
def _identity(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_unchanged(path: str, record: Mapping[str, Any]) -> os.stat_result:
    """The file's stat when it is still what the store indexed (size, mtime_ns, digest); ActionError if not."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise ActionError(f"{path}: refused, the file is gone since it was indexed") from None
    if not stat.S_ISREG(st.st_mode):
        raise ActionError(f"{path}: refused, not a regular file")
    if (st.st_size, st.st_mtime_ns) != (record["size"], record["mtime_ns"]):
        raise ActionError(f"{path}: refused, the file changed since it was indexed (size or mtime differs); "
                          "wait for dedupd to index it again (dedupctl wait-idle) and look again")
    with open(path, "rb") as handle:
        digest = content_digest(handle.read()).hex()
    if digest != record["digest"]:
        raise ActionError(f"{path}: refused, its content changed since it was indexed (digest differs)")
    return st


# ---------------------------------------------------------------------------------------------- journal
def actions_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the acting user's journal lives: `<state dir>/actions` (the user's XDG state dir, or the system's)."""
    return paths.default_locations(environ).state_dir / "actions"


class Journal:
    """One action's append-only JSON Lines file; every line is fsynced before the caller goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.action = path.stem

    @classmethod
    def create(cls, directory: Path, header: Mapping[str, Any]) -> "Journal":
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        action = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)
        journal = cls(directory / f"{action}.jsonl")
        journal.append({"kind": "action", "id": action, "at": time.time(), **header})
        _fsync_dir(directory)
        return journal

    def append(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete line (a line cut by a crash is the last one, and is left out)."""
        out = []
        for line in self.path.read_bytes().split(b"\n"):
            with contextlib.suppress(ValueError):
                if line:
                    out.append(json.loads(line))
        return out


def _fsync_dir(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One action or undo at a time for this user (the review page and dedupctl may both ask)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------------------------- trash
def _mount_point(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _trash_dirs(path: str) -> list[tuple[Path, str | None]]:
    """Trash directories the spec allows for `path`, with the top dir their `.trashinfo` paths are relative to."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    top = _mount_point(os.path.dirname(path))
    uid = str(os.getuid())
    return [(Path(data_home) / "Trash", None), (Path(top) / ".Trash" / uid, top), (Path(top) / f".Trash-{uid}", top)]


def _find_in_trash(path: str, identity: Mapping[str, int]) -> tuple[str, str] | None:
    """(trashed file, its .trashinfo) of `path` trashed with this size and mtime, or None."""
    stem, ext = os.path.splitext(os.path.basename(path))
    for trash, top in _trash_dirs(path):
        info_dir = trash / "info"
        if not info_dir.is_dir():
            continue
        for info in sorted(info_dir.glob(f"{_glob_escape(stem)}*.trashinfo")):
            original = _trashinfo_path(info, top)
            trashed = trash / "files" / info.name[: -len(".trashinfo")]
            if original != path:
                continue
            try:
                st = os.stat(trashed, follow_symlinks=False)
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) == (identity["size"], identity["mtime_ns"]):
                return str(trashed), str(info)
    return None


def _drop_orphan_trashinfo(path: str) -> None:
    """Remove the .trashinfo a kill left behind between writing it and moving the file: its file is absent, and
    it names this path, or nothing (cut short while being written)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    for trash, top in _trash_dirs(path):
        for info in (trash / "info").glob(f"{_glob_escape(stem)}*.trashinfo"):
            if _trashinfo_path(info, top) in (path, None) and not os.path.lexists(trash / "files" / info.name[:-10]):
                info.unlink()


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _trashinfo_path(info: Path, top: str | None) -> str | None:
    try:
        text = info.read_text(errors="surrogateescape")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Path="):
            value = unquote(line[5:], errors="surrogateescape")
            return value if os.path.isabs(value) or top is None else os.path.join(top, value)
    return None


def _trash(path: str) -> None:
    from send2trash import send2trash  # type: ignore[import-untyped]  # imported here: `dedupctl` loads it only when it acts

    send2trash(path)


# ---------------------------------------------------------------------------------------------- links
def _clone_into(source: str, temp: str, op: str) -> None:
    """`temp` (new) becomes a hard link to `source`, or a reflink copy of it (FICLONE; EOPNOTSUPP/EXDEV raise)."""
    if op == "hardlink":
        os.link(source, temp)
        return
    with open(source, "rb") as src:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.ioctl(fd, _FICLONE, src.fileno())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(temp)
            raise
        os.close(fd)


def _copy_bytes_into(source: str, temp: str) -> None:
    """`temp` (new) becomes an independent copy of `source`'s bytes (no reflink, no link), fsynced."""
    with open(source, "rb") as src, open(temp, "xb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def _restore_metadata(path: str, meta: Mapping[str, int]) -> None:
    os.chmod(path, meta["mode"])
    with contextlib.suppress(PermissionError):
        os.chown(path, meta["uid"], meta["gid"])
    os.utime(path, ns=(meta["atime_ns"], meta["mtime_ns"]))


def _meta(st: os.stat_result) -> dict[str, int]:
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "atime_ns": st.st_atime_ns,
            "mtime_ns": st.st_mtime_ns}


def _temp_beside(path: str, action: str, n: int) -> str:
    return os.path.join(os.path.dirname(path), f".dedupd-{action}-{n}.tmp")


# ---------------------------------------------------------------------------------------------- acting
@dataclass(slots=True)
class Outcome:
    """What an action (or undo) did: per file, done or refused with the reason."""

    action: str | None
    op: str
    done: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"action": self.action, "op": self.op, "done": self.done, "refused": self.refused,
                "skipped": self.skipped}


def _move_target(path: str, root: str | None, target: str) -> str:
    relative = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.join(target, relative)


def _move(src: str, dest: str) -> None:
    """rename, or across filesystems copy to `dest.part` + fsync + rename + unlink (undo can tell each stage)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        raise ActionError(f"{src}: refused, {dest} exists already")
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    part = dest + ".part"
    shutil.copy2(src, part)
    with open(part, "rb") as handle:
        os.fsync(handle.fileno())
    os.rename(part, dest)
    os.unlink(src)


def _reconcile(ask: Ask | None, touched: Iterable[str]) -> None:
    """Tell the daemon which files an action or undo changed, so it looks at them at once (it would see the
    events anyway, but a polled root only at its next poll). Nothing is decoded for an unchanged file."""
    paths_ = sorted(set(touched))
    if ask is None or not paths_:
        return
    with contextlib.suppress(DedupdError, OSError):
        for start in range(0, len(paths_), 500):
            ask("changed", {"paths": paths_[start:start + 500]})


def execute(plan_: Plan, records: Mapping[str, Any], directory: Path | None = None,
            scope: Mapping[str, Any] | None = None, ask: Ask | None = None) -> Outcome:
    """Carry out a plan's steps, each journaled before it happens; refusals are reported, not raised.

    `ask` (the daemon) is asked to rescan the folders that changed."""
    directory = directory or actions_dir()
    with _exclusive(directory):
        journal = Journal.create(directory, {"op": plan_.op, "target": plan_.target, "scope": dict(scope or {})})
        outcome = Outcome(journal.action, plan_.op, skipped=list(plan_.skipped))
        for n, step in enumerate(plan_.steps):
            if step.refused:
                outcome.refused.append({"path": step.path, "reason": step.refused})
                continue
            try:
                outcome.done.extend(_act(journal, n, step, plan_, records))
            except (ActionError, OSError) as exc:
                reason = str(exc) if isinstance(exc, ActionError) else f"{step.path}: {exc.strerror or exc}"
                journal.append({"kind": "failed", "n": n, "reason": reason})
                outcome.refused.append({"path": step.path, "reason": reason})
        journal.append({"kind": "finished"})
    _reconcile(ask, (done["path"] for done in outcome.done))
    return outcome


def _act(journal: Journal, n: int, step: Step, plan_: Plan, records: Mapping[str, Any]) -> list[dict[str, Any]]:
    record = records[step.path]
    st = check_unchanged(step.path, record)
    if not os.path.isfile(step.keeper):
        raise ActionError(f"{step.path}: refused, the file it duplicates ({step.keeper}) is gone")
    base = {"n": n, "op": plan_.op, "path": step.path, "keeper": step.keeper, "identity": _identity(st),
            "meta": _meta(st), "token": record.get("token")}
    if plan_.op in LINKS:
        if not filecmp.cmp(step.path, step.keeper, shallow=False):
            raise ActionError(f"{step.path}: refused, not byte-identical to {step.keeper} any more")
        temp = _temp_beside(step.path, journal.action, n)
        journal.append({"kind": "intent", **base, "temp": temp})
        try:
            _clone_into(step.keeper, temp, plan_.op)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EMLINK):
                raise ActionError(f"{step.path}: refused, {plan_.op} is not possible here "
                                  f"({exc.strerror or exc})") from None
            raise
        if plan_.op == "reflink":
            _restore_metadata(temp, _meta(st))
        os.rename(temp, step.path)
        journal.append({"kind": "done", "n": n, "identity": _identity(os.stat(step.path))})
        return [{"path": step.path, "keeper": step.keeper, "op": plan_.op}]
    done = []
    for k, path in enumerate((step.path, *step.companions)):
        sub: int | str = n if k == 0 else f"{n}.{k}"
        if k and (not os.path.isfile(path) or path in step.shared and any(
                map(os.path.lexists, _others_of_basename(step.path)))):
            continue  # gone meanwhile, or shared with an image of the basename that stays (its step was refused)
        identity = _identity(st if k == 0 else os.stat(path))
        entry = base if k == 0 else {"n": sub, "op": plan_.op, "path": path, "keeper": step.keeper,
                                     "identity": identity, "companion_of": step.path,
                                     "token": (records.get(path) or {}).get("token")}
        dest: str | None
        if plan_.op == "move":
            assert plan_.target is not None
            dest = _move_target(path, record.get("root"), plan_.target)
            journal.append({"kind": "intent", **entry, "dest": dest})
            _move(path, dest)
            journal.append({"kind": "done", "n": sub, "dest": dest})
        else:
            journal.append({"kind": "intent", **entry})
            _trash(path)
            found = _find_in_trash(path, identity)
            journal.append({"kind": "done", "n": sub, "dest": found[0] if found else None,
                            "info": found[1] if found else None})
            dest = found[0] if found else None
        done.append({"path": path, "keeper": step.keeper, "op": plan_.op, "dest": dest,
                     **({"companion_of": step.path} if k else {})})
    return done


# ---------------------------------------------------------------------------------------------- history / undo
def journals(directory: Path | None = None) -> list[Journal]:
    """Every action's journal, oldest first (ids sort by time)."""
    directory = directory or actions_dir()
    return [Journal(p) for p in sorted(directory.glob("*.jsonl"))] if directory.is_dir() else []


def _fold(entries: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The header and, per step number, its intent merged with what followed (done/failed/undone)."""
    header: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kind = entry.get("kind")
        if kind == "action":
            header = dict(entry)
        elif kind == "finished":
            header["finished"] = True
        elif "n" in entry:
            state = steps.setdefault(str(entry["n"]), {})
            if kind == "intent":
                state.update(entry)
                state["state"] = "started"
            elif kind == "done":
                state.update({k: v for k, v in entry.items() if k not in ("kind", "n", "identity")})
                if "identity" in entry:
                    state["after"] = entry["identity"]
                state["state"] = "done"
            elif kind in ("failed", "undone", "undo_failed"):
                state["state"] = {"failed": "failed", "undone": "undone"}.get(kind, state.get("state", ""))
                if kind == "undo_failed":
                    state["undo_reason"] = entry.get("reason")
    return header, steps


def history(directory: Path | None = None) -> list[dict[str, Any]]:
    """One summary per action, newest first: id, when, op, files moved and undone, whether it finished."""
    out = []
    for journal in reversed(journals(directory)):
        header, steps = _fold(journal.entries())
        states = [s.get("state") for s in steps.values()]
        out.append({"action": journal.action, "at": header.get("at"), "op": header.get("op"),
                    "target": header.get("target"), "scope": header.get("scope", {}),
                    "files": sum(1 for s in states if s in ("done", "started", "undone")),
                    "undone": states.count("undone"), "failed": states.count("failed"),
                    "finished": bool(header.get("finished")),
                    "undoable": any(s in ("done", "started") for s in states)})
    return out


def undo(action: str | None = None, ask: Ask | None = None, directory: Path | None = None) -> Outcome:
    """Put back what an action moved or linked (the latest undoable one by default), journaled as it goes.

    `ask` (the daemon) is told which files are coming back unchanged, so it indexes them without decoding.
    """
    directory = directory or actions_dir()
    with _exclusive(directory):
        candidates = journals(directory)
        if action is not None:
            candidates = [j for j in candidates if j.action == action]
            if not candidates:
                raise ActionError(f"no action {action} in {directory}")
        else:
            candidates = [j for j in candidates if any(s.get("state") in ("done", "started")
                                                       for s in _fold(j.entries())[1].values())]
            if not candidates:
                raise ActionError("nothing to undo")
        journal = candidates[-1]
        header, steps = _fold(journal.entries())
        outcome = Outcome(journal.action, str(header.get("op")))
        pending = {n: s for n, s in steps.items() if s.get("state") in ("done", "started")}
        if ask is not None:
            _tell_daemon(ask, pending.values())
        for state in pending.values():
            try:
                restored = _undo_step(state)
            except (ActionError, OSError) as exc:
                reason = str(exc) if isinstance(exc, ActionError) else f"{state['path']}: {exc.strerror or exc}"
                journal.append({"kind": "undo_failed", "n": state["n"], "reason": reason})
                outcome.refused.append({"path": state["path"], "reason": reason})
                continue
            journal.append({"kind": "undone", "n": state["n"]})
            if restored:
                outcome.done.append({"path": state["path"], "op": state["op"]})
    _reconcile(ask, (done["path"] for done in outcome.done))
    return outcome


def _tell_daemon(ask: Ask, states: Iterable[Mapping[str, Any]]) -> None:
    expected = [{"path": s["path"], "size": s["identity"]["size"], "mtime_ns": s["identity"]["mtime_ns"],
                 "token": s["token"]} for s in states if s.get("token")]
    if not expected:
        return
    with contextlib.suppress(DedupdError, OSError):  # the daemon re-encodes what it was not told about
        for start in range(0, len(expected), 500):
            ask("expect", {"records": expected[start:start + 500]})


def _same(path: str, identity: Mapping[str, int], *, inode: bool) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    same = (st.st_size, st.st_mtime_ns) == (identity["size"], identity["mtime_ns"])
    return same and (not inode or (st.st_dev, st.st_ino) == (identity["dev"], identity["inode"]))


def _undo_step(state: Mapping[str, Any]) -> bool:
    """Undo one step; True when a file was put back, False when the step had not touched it."""
    path, identity, op = state["path"], state["identity"], state["op"]
    if op in LINKS:
        return _undo_link(state)
    if _same(path, identity, inode=False):  # it never left (killed before the move), or it is back already
        if op == "trash":
            _drop_orphan_trashinfo(path)
        part = (state.get("dest") or "") + ".part"
        if state.get("dest") and os.path.exists(part):
            os.unlink(part)  # a cross-filesystem copy that never finished
        if op == "move" and state.get("dest") and _same(state["dest"], identity, inode=False):
            os.unlink(state["dest"])  # the copy finished, the original was not removed yet
        return False
    if os.path.lexists(path):
        raise ActionError(f"{path}: not put back, another file is there now")
    dest, info = state.get("dest"), state.get("info")
    if op == "trash" and (not dest or not os.path.lexists(dest)):
        found = _find_in_trash(path, identity)
        if found is None:
            raise ActionError(f"{path}: not put back, it is no longer in the trash (emptied?)")
        dest, info = found
    if not dest or not _same(dest, identity, inode=False):
        raise ActionError(f"{path}: not put back, {dest} is gone or changed")
    _move(dest, path)
    if info:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(info)
    return True


def _undo_link(state: Mapping[str, Any]) -> bool:
    """A link step: the file becomes an independent copy again with its old mode, owner and times."""
    path, temp = state["path"], state["temp"]
    if os.path.lexists(temp):
        os.unlink(temp)  # killed between making the link and renaming it over the file
    after = state.get("after")
    if _same(path, state["identity"], inode=True):
        return False  # never replaced
    if after is None or not _same(path, after, inode=True):
        raise ActionError(f"{path}: not put back, it changed after the {state['op']}")
    _copy_bytes_into(path, temp)
    _restore_metadata(temp, state["meta"])
    os.rename(temp, path)
    return True
