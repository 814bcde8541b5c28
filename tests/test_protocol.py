"""The control protocol without sockets: the verb table, argument checks, request and reply lines."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupd import protocol
from dedupd.protocol import ErrorCode, ProtocolError, error_line, parse_request

#: The machine may be busy: neither input generation speed nor example run time is what these tests check.
_PATIENT = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _error(call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    return caught.value


def test_the_verb_table_is_the_documented_one():
    assert set(protocol.VERBS) == {"hello", "status", "wait-idle", "query", "duplicates", "similar", "to-remove",
                                   "rescan", "pause", "resume", "reload", "watch", "export", "needles", "ignore",
                                   "unignore", "records", "expect", "changed"}
    assert {code.value for code in ErrorCode} == {"bad_json", "bad_request", "unknown_command", "bad_args",
                                                  "not_found", "timeout", "too_long", "busy", "forbidden",
                                                  "internal", "unavailable"}


@pytest.mark.parametrize(("cmd", "args", "expected"), [
    ("status", {}, {}),
    ("wait-idle", {}, {"timeout": protocol.WAIT_IDLE_DEFAULT_S}),
    ("wait-idle", {"timeout": 5}, {"timeout": 5.0}),
    ("query", {"path": "/a/../b/x.jpg"}, {"path": "/b/x.jpg", "explain": False}),
    ("query", {"path": "/x.jpg", "method": "phash", "threshold": 0, "explain": True},
     {"path": "/x.jpg", "method": "phash", "threshold": 0, "explain": True}),
    ("query", {"path": "/x.jpg", "method": "cnn", "min_similarity": 1}, {"path": "/x.jpg", "method": "cnn",
                                                                         "min_similarity": 1.0, "explain": False}),
    ("query", {"path": "/x.jpg", "threshold": 64, "min_similarity": -1.0},
     {"path": "/x.jpg", "threshold": 64, "min_similarity": -1.0, "explain": False}),
    ("duplicates", {"method": "exact", "under": "/srv//photos/"}, {"method": "exact", "under": "/srv/photos"}),
    ("to-remove", {}, {}),
    ("rescan", {"path": "/srv"}, {"path": "/srv"}),
    ("watch", {"action": "list"}, {"action": "list"}),
    ("watch", {"action": "add", "path": "/srv/new"}, {"action": "add", "path": "/srv/new"}),
    ("export", {"method": "whash"}, {"method": "whash"}),
    ("export", {"format": "parquet", "output": "/srv//all.parquet"},
     {"format": "parquet", "output": "/srv/all.parquet"}),
    ("needles", {"dir": "/home/u/import"}, {"dir": "/home/u/import", "wait": 30.0}),
    ("ignore", {"paths": ["/a.jpg", "/b.jpg", "/c.jpg"]}, {"paths": ["/a.jpg", "/b.jpg", "/c.jpg"]}),
])
def test_valid_arguments_are_normalised(cmd, args, expected):
    assert protocol.validate(cmd, args) == expected
    assert protocol.validate(cmd, expected) == expected  # idempotent: a client and the server may both check


@pytest.mark.parametrize(("cmd", "args", "words"), [
    ("status", {"verbose": True}, "unknown argument 'verbose'"),
    ("query", {}, "missing argument 'path'"),
    ("query", {"path": "x.jpg"}, "absolute path"),
    ("query", {"path": ""}, "non-empty string"),
    ("query", {"path": "/a\0b"}, "NUL"),
    ("query", {"path": 7}, "non-empty string"),
    ("query", {"path": "/x", "threshold": "3"}, "threshold must be an integer"),
    ("query", {"path": "/x", "threshold": True}, "threshold must be an integer"),
    ("query", {"path": "/x", "threshold": 2.0}, "threshold must be an integer"),
    ("query", {"path": "/x", "threshold": 65}, "between 0 and 64"),
    ("query", {"path": "/x", "min_similarity": 1.5}, "between -1 and 1"),
    ("query", {"path": "/x", "explain": 1}, "true or false"),
    ("query", {"path": "/x", "method": "sha1"}, "one of exact, phash"),
    ("query", {"path": "/x", "method": "cnn", "threshold": 3}, "threshold is for hash methods"),
    ("query", {"path": "/x", "method": "phash", "min_similarity": 0.5}, "min_similarity is for cnn"),
    ("wait-idle", {"timeout": -1}, "between 0"),
    ("wait-idle", {"timeout": None}, "must be a number"),
    ("watch", {}, "missing argument 'action'"),
    ("watch", {"action": "add"}, "watch add needs a path"),
    ("watch", {"action": "list", "path": "/x"}, "watch list takes no path"),
    ("watch", {"action": "purge", "path": "/x"}, "one of list, add, remove"),
    ("export", {"method": "exact"}, "one of phash"),
    ("export", {"format": "parquet"}, "format parquet needs an output file"),
    ("export", {"output": "/x.parquet"}, "format parquet needs an output file"),
    ("export", {"format": "parquet", "output": "/x.parquet", "method": "phash"}, "takes no method"),
    ("export", {"format": "csv"}, "one of json, parquet"),
    ("ignore", {"paths": ["/a.jpg"]}, "at least 2"),
    ("ignore", {"paths": "/a.jpg /b.jpg"}, "at least 2"),
    ("ignore", {"paths": ["/a.jpg", "/a.jpg"]}, "twice"),
    ("ignore", {"paths": ["/a.jpg", "b.jpg"]}, "absolute path"),
])
def test_bad_arguments_name_the_argument_and_the_problem(cmd, args, words):
    error = _error(protocol.validate, cmd, args)
    assert error.code is ErrorCode.BAD_ARGS
    assert words in error.message and error.message.startswith(cmd)


def test_unknown_command():
    assert _error(protocol.validate, "rm-rf", {}).code is ErrorCode.UNKNOWN_COMMAND


def test_a_request_round_trips():
    line = protocol.request_line(7, "query", {"path": "/p/\u00e9t\u00e9.jpg"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.parse_request(line) == protocol.Request(7, "query", {"path": "/p/\u00e9t\u00e9.jpg"})


def test_paths_that_are_not_utf8_survive_the_wire():
    path = b"/photos/\xff\xfe.jpg".decode("utf-8", "surrogateescape")  # how Python carries such a file name
    line = protocol.ok_line(1, {"files": [path]})
    line.decode("ascii")
    reply = protocol.parse_reply(line)
    assert reply.result == {"files": [path]}
    assert reply.result["files"][0].encode("utf-8", "surrogateescape") == b"/photos/\xff\xfe.jpg"


@pytest.mark.parametrize("line", [
    b"", b"nope", b"{", b'{"id": 1, "cmd": "status"', b"\xff\xfe{}", b'{"id": NaN, "cmd": "status"}',
    b'{"id": Infinity, "cmd": "status"}', b"[" * 100_000, b"1" * 5000,
])
def test_lines_that_are_not_json_are_bad_json(line):
    assert _error(protocol.parse_request, line).code is ErrorCode.BAD_JSON


@pytest.mark.parametrize(("line", "request_id"), [
    (b"[1, 2]", None), (b'"status"', None), (b'{"cmd": "status"}', None), (b'{"id": true, "cmd": "status"}', None),
    (b'{"id": [1], "cmd": "status"}', None), (b'{"id": 3}', 3), (b'{"id": 3, "cmd": 5}', 3),
    (b'{"id": "x", "cmd": "status", "args": []}', "x"), (b'{"id": 4, "cmd": "status", "arg": {}}', 4),
])
def test_malformed_requests_are_bad_request_with_the_id_when_readable(line, request_id):
    error = _error(protocol.parse_request, line)
    assert (error.code, error.request_id) == (ErrorCode.BAD_REQUEST, request_id)


@_PATIENT
@given(st.binary(max_size=200))
def test_no_bytes_make_parsing_raise_anything_but_protocol_error(line):
    try:
        request = protocol.parse_request(line)
    except ProtocolError as error:
        assert error.code in (ErrorCode.BAD_JSON, ErrorCode.BAD_REQUEST)
        return
    try:
        protocol.validate(request.cmd, request.args)
    except ProtocolError as error:
        assert error.code in (ErrorCode.UNKNOWN_COMMAND, ErrorCode.BAD_ARGS)


@_PATIENT
@given(st.dictionaries(st.sampled_from(["path", "method", "threshold", "min_similarity", "explain", "x"]),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
                       | st.lists(st.text(max_size=3), max_size=3)))
def test_no_argument_values_make_validation_raise_anything_but_bad_args(args):
    try:
        protocol.validate("query", args)
    except ProtocolError as error:
        assert error.code is ErrorCode.BAD_ARGS


def test_replies_parse_back():
    ok = protocol.parse_reply(protocol.ok_line(3, {"state": "paused"}))
    assert (ok.id, ok.result, ok.error) == (3, {"state": "paused"}, None)
    failed = protocol.parse_reply(protocol.error_line(4, ErrorCode.TIMEOUT, "still busy"))
    assert (failed.id, failed.result) == (4, None)
    assert (failed.error.code, failed.error.message, failed.error.request_id) == (ErrorCode.TIMEOUT, "still busy", 4)
    assert json.loads(protocol.error_line(None, ErrorCode.BUSY, "later")) == {
        "id": None, "ok": False, "error": {"code": "busy", "message": "later"}}


def test_an_error_code_from_a_newer_daemon_still_parses():
    reply = protocol.parse_reply(b'{"id": 1, "ok": false, "error": {"code": "quota", "message": "over quota"}}')
    assert (reply.error.code, reply.error.message) == (ErrorCode.INTERNAL, "over quota")


@pytest.mark.parametrize("line", [b"{}", b'{"id": 1, "ok": true}', b'{"id": 1, "ok": false, "error": "x"}', b"[]"])
def test_lines_that_are_not_replies_are_refused(line):
    assert _error(protocol.parse_reply, line).code is ErrorCode.BAD_REQUEST


def test_what_json_cannot_carry_is_refused_when_encoding():
    with pytest.raises(ValueError):
        protocol.ok_line(1, {"similarity": float("nan")})
    with pytest.raises(TypeError):
        protocol.ok_line(1, {"paths": {"/a"}})


def test_time_limit_adds_the_verbs_own_timeout():
    assert protocol.time_limit({}, 2.0) == 2.0
    assert protocol.time_limit({"timeout": 30.0}, 2.0) == 32.0


def test_a_key_given_twice_is_refused_wherever_it_is() -> None:
    """`{"cmd":"status","cmd":"pause"}` paused (the last key won): a request must mean one thing."""
    for line in (b'{"id": 1, "cmd": "status", "cmd": "pause"}', b'{"id": 1, "id": 2, "cmd": "status"}',
                 b'{"id": 1, "cmd": "ignore", "args": {"paths": ["/a", "/b"], "paths": ["/c", "/d"]}}'):
        with pytest.raises(ProtocolError) as refused:
            parse_request(line)
        assert refused.value.code == ErrorCode.BAD_JSON and "given twice" in refused.value.message


def test_error_replies_never_carry_heap_addresses() -> None:
    line = error_line(1, ErrorCode.INTERNAL, "query failed: cannot identify image file <_io.BytesIO object at 0x7f4>")
    assert json.loads(line)["error"]["message"] == "query failed: cannot identify image file"
