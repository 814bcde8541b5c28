"""The control protocol: wire format, error codes, and the verb table with per-verb argument checks.

JSON Lines over a Unix stream socket. A request is `{"id": n, "cmd": "...", "args": {...}}`; the reply is
`{"id": n, "ok": true, "result": {...}}` or `{"id": n, "ok": false, "error": {"code": "...", "message": "..."}}`.
Both ends use this module (the daemon's `service.control` and `dedupctl`), so it is pure (no sockets, no I/O)
and imports only the stdlib and `dedupd.errors`: `dedupctl` must start fast.

Lines are ASCII JSON (non-ASCII escaped), so paths that are not valid UTF-8 (carried by Python as
surrogate escapes) survive the round trip unchanged.
"""

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

from dedupd.errors import DedupdError, without_addresses

PROTOCOL_VERSION = 1
#: Longest accepted line, newline excluded; a longer one gets "too_long" and the connection is closed.
MAX_LINE_BYTES = 1 << 20
#: How long a request line may take to arrive from its first byte; a slower client is answered "timeout" and
#: dropped, so trickling clients cannot hold the server's client slots.
LINE_TIMEOUT_S = 5.0
#: How long the server lets one handler run before answering "timeout" (a verb's own `timeout` adds to it).
REQUEST_TIMEOUT_S = 120.0
#: How long one `needles` request waits for its job (well inside REQUEST_TIMEOUT_S); the client then polls.
NEEDLES_WAIT_S = 30.0
#: How long `wait-idle` waits when the request names no timeout.
WAIT_IDLE_DEFAULT_S = 300.0
#: How much longer than the server a client waits for a reply, so the server's "timeout" answer arrives first.
CLIENT_GRACE_S = 10.0

HASH_METHODS = ("phash", "ahash", "dhash", "whash")
#: Every method a match can carry; "exact" is the content digest.
METHODS = ("exact", *HASH_METHODS, "cnn")
HASH_BITS = 64


class ErrorCode(StrEnum):
    """Why a request failed; clients branch on these, so they are a stable contract."""

    BAD_JSON = "bad_json"  # the line is not JSON (or not UTF-8)
    BAD_REQUEST = "bad_request"  # not an object, or id/cmd missing or of the wrong type
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"  # an argument is missing, unknown, of the wrong type or out of range
    NOT_FOUND = "not_found"  # the file, root or method named does not exist
    TIMEOUT = "timeout"
    TOO_LONG = "too_long"  # the line exceeds MAX_LINE_BYTES
    BUSY = "busy"  # too many clients
    FORBIDDEN = "forbidden"  # the peer's uid/gid may not use this daemon
    INTERNAL = "internal"  # a handler failed; the daemon keeps serving
    UNAVAILABLE = "unavailable"  # e.g. the daemon is stopping


class ProtocolError(DedupdError):
    """A request failed with an error code: raised by parsing and validation, and by handlers to answer an error.

    `request_id` is set when the failing line's id is known, so the error reply can carry it.
    """

    def __init__(self, code: ErrorCode | str, message: str, *, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.request_id = request_id


# ---- argument checks: each takes the JSON value and returns the normalised value or raises ValueError ----

type Check = Callable[[Any], Any]


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if "\0" in value:
        raise ValueError("must not contain NUL")
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def _paths(min_items: int) -> Check:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or len(value) < min_items:
            raise ValueError(f"must be a list of at least {min_items} absolute paths")
        paths = [_path(item) for item in value]
        if len(set(paths)) != len(paths):
            raise ValueError("must not name a path twice")
        return paths

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return check


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("must be a number")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return check


def _expected(value: Any) -> list[dict[str, Any]]:
    """Records a client puts back (`expect`): path, size, mtime_ns and the token `records` gave for the file."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of {path, size, mtime_ns, token} objects")
    checked = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"path", "size", "mtime_ns", "token"}:
            raise ValueError("each item must be an object with exactly path, size, mtime_ns and token")
        if not isinstance(item["token"], str):
            raise ValueError("token must be a string")
        checked.append({"path": _path(item["path"]), "size": _integer(0, 1 << 63)(item["size"]),
                        "mtime_ns": _integer(-(1 << 63), 1 << 63)(item["mtime_ns"]), "token": item["token"]})
    return checked


_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a verb: its check, whether it must be given, and the value used when it is not."""

    check: Check
    required: bool = False
    default: Any = _ABSENT


@dataclass(frozen=True, slots=True)
class Verb:
    """A command the daemon answers: its arguments, and a check across them (after each one passed its own)."""

    name: str
    summary: str
    args: Mapping[str, Arg] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None


def _query_check(args: dict[str, Any]) -> None:
    method = args.get("method")
    if method is None:
        return
    if "threshold" in args and method not in HASH_METHODS:
        raise ValueError(f"threshold is for hash methods, not {method}; use min_similarity for cnn")
    if "min_similarity" in args and method != "cnn":
        raise ValueError(f"min_similarity is for cnn, not {method}; use threshold for hash methods")


def _watch_check(args: dict[str, Any]) -> None:
    if args["action"] == "list" and "path" in args:
        raise ValueError("watch list takes no path")
    if args["action"] != "list" and "path" not in args:
        raise ValueError(f"watch {args['action']} needs a path")


def _export_check(args: dict[str, Any]) -> None:
    if (args.get("format") == "parquet") != ("output" in args):
        raise ValueError("format parquet needs an output file, and only it takes one")
    if args.get("format") == "parquet" and "method" in args:
        raise ValueError("format parquet writes every encoding: it takes no method")


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("must be the job id a needles reply gave")
    return value


def _needles_check(args: dict[str, Any]) -> None:
    if ("dir" in args) == ("job" in args):
        raise ValueError("give either dir (start a job) or job (ask about one)")


def _ignore_check(args: dict[str, Any]) -> None:
    if args.get("list", False) == ("paths" in args):
        raise ValueError("give either paths (two or more files) or list")


_METHOD = Arg(_choice(METHODS))
_UNDER = Arg(_path)
#: `duplicates` and `similar`: the groups under a path or of one method; a page of them (`offset`, `limit`) in
#: path order or by space to free (`order` "free": the review page's), with the members' records (`records`).
_GROUP_ARGS = {"method": _METHOD, "under": _UNDER, "order": Arg(_choice(("path", "free"))),
               "offset": Arg(_integer(0, 1 << 31)), "limit": Arg(_integer(1, 1 << 31)),
               "records": Arg(_boolean)}

#: Every verb of the protocol; the server refuses anything else, and validates arguments against this table.
VERBS: Mapping[str, Verb] = {
    verb.name: verb
    for verb in (
        Verb("hello", "protocol and daemon version"),
        Verb("status", "state, roots, counts, index sizes, CNN provider, uptime"),
        Verb("wait-idle", "return when nothing is pending",
             {"timeout": Arg(_number(0.0, 30 * 24 * 3600.0), default=WAIT_IDLE_DEFAULT_S)}),
        Verb("query", "near-duplicates of any file",
             {"path": Arg(_path, required=True), "method": _METHOD, "threshold": Arg(_integer(0, HASH_BITS)),
              "min_similarity": Arg(_number(-1.0, 1.0)), "explain": Arg(_boolean, default=False)},
             _query_check),
        Verb("duplicates", "current duplicate groups (all, or a page: `order` path|free, `offset`, `limit`, "
                           "`records`)", _GROUP_ARGS),
        Verb("similar", "groups of different captures of one scene (bursts, series, stereo pairs)", _GROUP_ARGS),
        Verb("to-remove", "files one would delete, keeping one per group (which, and why)",
             {"method": _METHOD, "under": _UNDER}),
        Verb("rescan", "reconcile the store with the disk (one path or all roots)", {"path": Arg(_path)}),
        Verb("pause", "stop encoding (events are still queued)"),
        Verb("resume", "resume encoding"),
        Verb("reload", "re-read the configuration"),
        Verb("watch", "list, add or remove watched roots",
             {"action": Arg(_choice(("list", "add", "remove")), required=True), "path": Arg(_path)}, _watch_check),
        Verb("export", "imagededup-format encodings of the whole index (`json`), or every record as dedupd's Parquet "
                       "format written by the daemon to `output` (`parquet`)",
             {"method": Arg(_choice((*HASH_METHODS, "cnn"))), "format": Arg(_choice(("json", "parquet"))),
              "output": Arg(_path)}, _export_check),
        Verb("needles", "which images of a directory are already in the library: starts a job (`dir`) or asks "
                        "about one (`job`), waiting up to `wait` s for its result",
             {"dir": Arg(_path), "job": Arg(_job_id),
              "wait": Arg(_number(0.0, NEEDLES_WAIT_S), default=NEEDLES_WAIT_S)},
             _needles_check),
        Verb("ignore", "mark files as not duplicates of each other (`paths`), or list the pairs marked (`list`)",
             {"paths": Arg(_paths(2)), "list": Arg(_boolean)}, _ignore_check),
        Verb("unignore", "undo `ignore` among files: their pairs are judged again",
             {"paths": Arg(_paths(2), required=True)}),
        Verb("records", "what the store holds for some files (stat identity, digest, pixel size; a token with "
                        "`tokens`)", {"paths": Arg(_paths(1), required=True), "tokens": Arg(_boolean, default=False)}),
        Verb("changed", "files a user action just moved away, replaced or put back: look at them now",
             {"paths": Arg(_paths(1), required=True)}),
        Verb("expect", "files about to come back unchanged (an undo): index them from their tokens, no decode",
             {"records": Arg(_expected, required=True)}),
    )
}


def validate(cmd: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The verb's arguments checked and normalised (paths normpath'ed, defaults filled in).

    Raises ProtocolError "unknown_command" or "bad_args" naming the argument and what is wrong with it.
    """
    verb = VERBS.get(cmd)
    if verb is None:
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd!r}")
    unknown = sorted(set(args) - set(verb.args))
    if unknown:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"{cmd}: unknown argument {unknown[0]!r}")
    checked: dict[str, Any] = {}
    for name, arg in verb.args.items():
        if name not in args:
            if arg.required:
                raise ProtocolError(ErrorCode.BAD_ARGS, f"{cmd}: missing argument {name!r}")
            if arg.default is not _ABSENT:
                checked[name] = arg.default
            continue
        try:
            checked[name] = arg.check(args[name])
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{cmd}: {name} {exc}") from None
    if verb.check is not None:
        try:
            verb.check(checked)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{cmd}: {exc}") from None
    return checked


def time_limit(args: Mapping[str, Any], base_s: float = REQUEST_TIMEOUT_S) -> float:
    """How long a request may take: the base, plus the verb's own `timeout` when it waits on purpose."""
    return base_s + float(args.get("timeout", 0.0))


# ---- wire format ----

type RequestId = int | str


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request line; its args are not validated yet (see `validate`)."""

    id: RequestId
    cmd: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply line: `result` when the request succeeded, else `error`."""

    id: RequestId | None
    result: dict[str, Any] | None = None
    error: ProtocolError | None = None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"key {key!r} given twice")
        document[key] = value
    return document


def decode_line(line: bytes) -> Any:
    """One JSON value from one line; anything that is not strict JSON in UTF-8 is "bad_json".

    NaN/Infinity, integers too long to convert, nesting too deep for the parser and an object naming a key
    twice (`{"cmd": "status", "cmd": "pause"}`: which one counts?) are refused too, so no line can make the
    caller raise anything but ProtocolError.
    """
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not a JSON line: {exc}") from None


def _is_id(value: Any) -> TypeGuard[RequestId]:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_request(line: bytes) -> Request:
    """A Request from one line, or ProtocolError "bad_json" / "bad_request" (with the id when it was readable)."""
    document = decode_line(line)
    if not isinstance(document, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    request_id = document.get("id")
    if not _is_id(request_id):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs an \"id\" (integer or string)")
    cmd = document.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs a \"cmd\" (string)", request_id=request_id)
    args = document.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "\"args\" must be a JSON object", request_id=request_id)
    extra = sorted(set(document) - {"id", "cmd", "args"})
    if extra:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown request field {extra[0]!r}", request_id=request_id)
    return Request(request_id, cmd, args)


def encode(document: Mapping[str, Any]) -> bytes:
    """One line of ASCII JSON; raises ValueError/TypeError for what JSON cannot carry (NaN, sets, objects)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def request_line(request_id: RequestId, cmd: str, args: Mapping[str, Any]) -> bytes:
    return encode({"id": request_id, "cmd": cmd, "args": dict(args)})


def ok_line(request_id: RequestId, result: Mapping[str, Any]) -> bytes:
    return encode({"id": request_id, "ok": True, "result": dict(result)})


def error_line(request_id: RequestId | None, code: ErrorCode, message: str) -> bytes:
    message = without_addresses(message)  # e.g. an internal error quoting a Pillow message
    return encode({"id": request_id, "ok": False, "error": {"code": code.value, "message": message}})


def parse_reply(line: bytes) -> Reply:
    """A Reply from one line; a line that is not a reply raises ProtocolError "bad_json"/"bad_request"."""
    document = decode_line(line)
    if not isinstance(document, dict) or not isinstance(document.get("ok"), bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the daemon's reply is not a reply object")
    request_id = document.get("id")
    if document["ok"]:
        result = document.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the daemon's reply has no result object")
        return Reply(request_id, result=result)
    error = document.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the daemon's error reply has no message")
    try:
        code = ErrorCode(str(error.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL
    return Reply(request_id, error=ProtocolError(code, error["message"], request_id=request_id))
