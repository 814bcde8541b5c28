"""The control socket server over real Unix sockets: replies and error codes, limits, socket file handling,
peer credentials (a real process under another uid) and socket activation (systemd-socket-activate)."""

import json
import logging
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupd.errors import DedupdError
from dedupd.protocol import ProtocolError
from dedupd.service.control import ControlServer

#: Generous bound on any single wait so a broken server fails the test instead of hanging it.
PATIENCE_S = 30.0
OTHER_GID = 4321 if os.geteuid() == 0 else os.getgid()


class Client:
    """A raw JSON Lines client, so tests can send anything, including garbage."""

    def __init__(self, path: str | Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(PATIENCE_S)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, cmd: str, args: dict[str, Any] | None = None, request_id: int | str = 1) -> dict[str, Any]:
        self.send(json.dumps({"id": request_id, "cmd": cmd, "args": args or {}}).encode() + b"\n")
        return self.reply()

    def reply(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed; got {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def closed_by_server(self) -> bool:
        """True once the server closed the connection (anything still unread is discarded)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def _error(reply: dict[str, Any]) -> tuple[Any, str]:
    assert reply["ok"] is False, reply
    return reply["id"], reply["error"]["code"]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """What the blocking handlers wait for; set at teardown so no handler thread outlives its test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def waiting() -> threading.Event:
    """Set once a wait-idle handler has started."""
    return threading.Event()


@pytest.fixture
def handlers(release: threading.Event, waiting: threading.Event) -> dict[str, Callable[[dict[str, Any]], Any]]:
    def wait_idle(args: dict[str, Any]) -> dict[str, Any]:
        waiting.set()
        if not release.wait(args["timeout"]):
            raise ProtocolError("timeout", "still busy")
        return {"idle": True, "waited_s": 0.0}

    def fail(args: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    def refuse(args: dict[str, Any]) -> dict[str, Any]:
        raise ProtocolError("not_found", "nothing to pause")

    return {
        "status": lambda args: {"state": "running"},
        "query": lambda args: {"file": args["path"], "matches": [], "args": args},
        "wait-idle": wait_idle,
        "resume": lambda args: release.wait() and {"state": "running"},  # hangs until teardown
        "rescan": fail,
        "pause": refuse,
        "reload": lambda args: ["not", "a", "mapping"],
        "export": lambda args: {"encodings": {"/a.jpg": object()}},
    }


@pytest.fixture
def serve(tmp_path: Path, handlers) -> Iterator[Callable[..., ControlServer]]:
    """Starts servers (default path tmp/run/control.sock) and stops them all at teardown."""
    started: list[ControlServer] = []

    def start(path: Path | None = None, **options: Any) -> ControlServer:
        server = ControlServer(path or tmp_path / "run" / "control.sock", handlers, **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(serve) -> ControlServer:
    return serve()


def test_hello_is_answered_by_the_server_itself(server):
    reply = Client(server.path).request("hello", request_id="h")
    assert reply == {"id": "h", "ok": True, "result": {"protocol": 1, "version": reply["result"]["version"]}}


def test_many_requests_on_one_connection_are_answered_in_order(server):
    client = Client(server.path)
    lines = [json.dumps({"id": n, "cmd": "query" if n % 3 else "status", "args": {"path": f"/p/{n}.jpg"}
                         if n % 3 else {}}) for n in range(60)]
    client.send(("\n".join(lines) + "\n").encode())
    replies = [client.reply() for _ in range(60)]
    assert [reply["id"] for reply in replies] == list(range(60))
    assert replies[4]["result"] == {"file": "/p/4.jpg", "matches": [], "args": {"path": "/p/4.jpg", "explain": False}}
    assert replies[3]["result"] == {"state": "running"}


@pytest.mark.parametrize(("line", "expected"), [
    (b"this is not json", (None, "bad_json")),
    (b'{"id": 1, "cmd": "status"', (None, "bad_json")),
    (b"\xc3\x28\xa0\xa1", (None, "bad_json")),
    (b'["status"]', (None, "bad_request")),
    (b'{"cmd": "status"}', (None, "bad_request")),
    (b'{"id": 5}', (5, "bad_request")),
    (b'{"id": 6, "cmd": "format-disk"}', (6, "unknown_command")),
    (b'{"id": 7, "cmd": "query", "args": {"path": 42}}', (7, "bad_args")),
    (b'{"id": 8, "cmd": "query", "args": {}}', (8, "bad_args")),
    (b'{"id": 9, "cmd": "status", "args": {"verbose": true}}', (9, "bad_args")),
    (b'{"id": 10, "cmd": "query", "args": {"path": "relative.jpg"}}', (10, "bad_args")),
    (b'{"id": 11, "cmd": "needles", "args": {"dir": "/x"}}', (11, "unknown_command")),  # no handler given
])
def test_bad_requests_get_an_error_code_and_the_connection_goes_on(server, line, expected):
    client = Client(server.path)
    client.send(line + b"\n")
    assert _error(client.reply()) == expected
    assert client.request("status", request_id=99) == {"id": 99, "ok": True, "result": {"state": "running"}}


def test_a_handler_that_raises_gets_internal_and_a_logged_traceback(server, caplog):
    with caplog.at_level(logging.ERROR, logger="dedupd.service.control"):
        reply = Client(server.path).request("rescan", request_id=3)
    assert _error(reply) == (3, "internal") and "disk on fire" in reply["error"]["message"]
    assert any(record.exc_info and "disk on fire" in str(record.exc_info[1]) for record in caplog.records)
    assert Client(server.path).request("status")["ok"]


def test_a_handler_answers_an_error_with_protocol_error(server):
    reply = Client(server.path).request("pause", request_id=4)
    assert reply == {"id": 4, "ok": False, "error": {"code": "not_found", "message": "nothing to pause"}}


@pytest.mark.parametrize("cmd", ["reload", "export"])
def test_results_that_are_not_json_objects_get_internal(server, cmd):
    assert _error(Client(server.path).request(cmd, request_id=5)) == (5, "internal")


def test_a_long_handler_does_not_block_other_clients(server, release):
    waiting = Client(server.path)
    waiting.send(b'{"id": 1, "cmd": "wait-idle", "args": {"timeout": 300}}\n')
    for _ in range(5):
        assert Client(server.path).request("status")["result"] == {"state": "running"}
    release.set()
    assert waiting.reply() == {"id": 1, "ok": True, "result": {"idle": True, "waited_s": 0.0}}


def test_a_hung_handler_gets_timeout_and_the_client_can_go_on(serve):
    server = serve(request_timeout_s=0.5)
    client = Client(server.path)
    reply = client.request("resume", request_id=2)
    assert _error(reply) == (2, "timeout")
    assert client.request("status")["ok"]


def test_a_line_over_the_limit_gets_too_long_and_is_closed(server):
    client = Client(server.path)
    try:
        client.send(b'{"id": 1, "cmd": "query", "args": {"path": "/' + b"a" * (2 << 20) + b'"}}\n')
    except BrokenPipeError:
        pass  # the server stopped reading after 1 MiB and closed: its reply is still there to read
    assert _error(client.reply()) == (None, "too_long")
    assert client.closed_by_server()
    assert Client(server.path).request("status")["ok"]


def test_the_line_limit_is_configurable_and_exact(serve):
    server = serve(max_line=100)
    line = b'{"id": 1, "cmd": "status"}'
    client = Client(server.path)
    client.send(line + b" " * (100 - len(line)) + b"\n")  # exactly the limit: fine
    assert client.reply()["ok"]
    client.send(line + b" " * (101 - len(line)) + b"\n")
    assert _error(client.reply()) == (None, "too_long")


def test_random_bytes_get_error_replies_and_the_server_answers_after(server):
    rng = random.Random(5)
    client = Client(server.path)
    client.send(rng.randbytes(1 << 16) + b'\n{"id": "after", "cmd": "hello"}\n')
    while (reply := client.reply())["id"] != "after":
        assert _error(reply)[1] in ("bad_json", "bad_request")
    assert reply["ok"]


def test_an_idle_half_open_connection_is_closed(serve):
    server = serve(idle_timeout_s=0.5)
    client = Client(server.path)
    client.send(b'{"id": 1, "cmd": "sta')  # and then nothing
    assert client.closed_by_server()
    assert Client(server.path).request("status")["ok"]


def test_a_client_that_shuts_down_writing_still_gets_its_answer(server):
    client = Client(server.path)
    client.send(b'{"id": 1, "cmd": "status"}')  # no newline: the end of the stream ends the line
    client.sock.shutdown(socket.SHUT_WR)
    assert client.reply() == {"id": 1, "ok": True, "result": {"state": "running"}}
    assert client.closed_by_server()


def test_clients_over_the_limit_get_busy(serve, release, waiting):
    """Busy when every slot is answering a request; an idle client makes room (issue 10: idle clients must not
    lock others out), so the limit is on clients at work."""
    server = serve(max_clients=1)
    first = Client(server.path)
    first.send(b'{"id": "w", "cmd": "wait-idle", "args": {"timeout": 30}}\n')
    assert waiting.wait(PATIENCE_S)  # the only slot is at work
    second = Client(server.path)
    assert _error(second.reply()) == (None, "busy")
    assert second.closed_by_server()
    release.set()
    assert first.reply()["id"] == "w"  # answered, and now idle: the next client takes its slot
    for _ in range(1000):  # the slot frees once the server has seen the idle one go
        try:
            reply = Client(server.path).request("status")
        except (BrokenPipeError, ConnectionResetError):  # refused before the request was sent
            continue
        if reply["ok"]:
            break
        assert _error(reply) == (None, "busy")
    assert reply["ok"]
    assert first.closed_by_server()


def test_half_open_and_trickling_clients_never_lock_out_status(serve):
    server = serve(line_timeout_s=1.0)
    half_open = [Client(server.path) for _ in range(50)]
    for client in half_open:
        client.send(b'{"id": 1, "cmd": "sta')  # and then nothing
    assert Client(server.path).request("status")["ok"]
    trickle = Client(server.path)
    reply = None
    for byte in b'{"id": 1, "cmd": "status"}' * 1000:  # one byte at a time, forever: dropped with "timeout"
        try:
            trickle.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        trickle.sock.settimeout(0.05)
        try:
            reply = trickle.reply()
            break
        except TimeoutError:
            continue
    assert reply is not None and _error(reply) == (None, "timeout"), reply
    assert reply["error"]["message"] == "request line not complete within 1 s"
    assert Client(server.path).request("status")["ok"]


def _malformed(rng: random.Random, n: int) -> bytes:
    choices = [
        lambda: rng.randbytes(rng.randrange(1, 200)).replace(b"\n", b" "),
        lambda: b"{" * rng.randrange(1, 5000),
        lambda: json.dumps({"id": n, "cmd": rng.choice(["status", "query", "watch", "ignore", "x"]),
                            "args": {rng.choice(["path", "action", "paths", "timeout"]):
                                     rng.choice([None, -1, "rel", [], {}, True, 1e308, "/x"])}}).encode(),
        lambda: json.dumps([n, "status"]).encode(),
        lambda: b'{"id": %d, "cmd": "query", "args": {"path": "/\xff\xfe"}}' % n,
        lambda: b'{"id": %d, "cmd": "wait-idle", "args": {"timeout": NaN}}' % n,
        lambda: b"9" * rng.randrange(4000, 6000),
    ]
    return rng.choice(choices)()


def test_a_thousand_malformed_requests_leave_the_server_answering(server):
    rng = random.Random(1000)
    client = Client(server.path)
    for n in range(1000):
        client.send(_malformed(rng, n) + b"\n")
        reply = client.reply()
        assert reply["ok"] is False or reply["result"] == {"state": "running"} or "file" in reply["result"], reply
    assert client.request("hello", request_id="still")["ok"]
    assert Client(server.path).request("status")["ok"]


# ---- the socket file ----

def test_socket_is_created_0600_in_a_0700_directory_with_nothing_left_over(server, tmp_path):
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
    assert sorted(os.listdir(tmp_path / "run")) == ["control.sock", "control.sock.lock"]


def test_socket_with_a_group_is_0660_and_owned_by_the_group(serve, tmp_path):
    server = serve(allowed_gid=OTHER_GID)
    st = os.stat(server.path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, OTHER_GID)
    assert (stat.S_IMODE(os.stat(tmp_path / "run").st_mode), os.stat(tmp_path / "run").st_gid) == (0o750, OTHER_GID)


def test_permissions_do_not_depend_on_the_umask(serve):
    old = os.umask(0)
    try:
        server = serve()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_a_stale_socket_is_replaced(serve, tmp_path):
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed daemon leaves
    server = serve(path)
    assert Client(server.path).request("status")["ok"]


def test_a_file_that_is_not_a_socket_is_not_replaced(serve, tmp_path):
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    path.write_text("precious")
    with pytest.raises(DedupdError, match="not a socket"):
        serve(path)
    assert path.read_text() == "precious"


@pytest.mark.parametrize("where", ["under a file", "too long for AF_UNIX"])
def test_a_socket_that_cannot_be_created_is_one_clear_error(serve, tmp_path, where):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "control.sock" if where == "under a file" else tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(DedupdError, match=f"cannot create the control socket {path}"):
        serve(path)


def test_a_second_server_on_the_same_socket_is_refused(serve, server):
    with pytest.raises(DedupdError, match=f"another dedupd is already serving {server.path}"):
        serve(Path(server.path))
    assert Client(server.path).request("status")["ok"]


def test_a_live_socket_without_the_lock_is_not_replaced_either(serve, tmp_path):
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:  # e.g. a daemon of another version
        other.bind(str(path))
        other.listen()
        with pytest.raises(DedupdError, match="another dedupd is already serving"):
            serve(path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_stop_removes_the_socket_and_a_new_server_can_start(serve, handlers, tmp_path):
    path = tmp_path / "run" / "control.sock"
    first = ControlServer(path, handlers)
    first.start()
    first.stop()
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        Client(path)
    assert Client(serve(path).path).request("status")["ok"]


def test_stop_lets_the_request_in_flight_answer_and_refuses_the_rest(handlers, release, waiting, tmp_path):
    server = ControlServer(tmp_path / "control.sock", handlers)
    server.start()
    client = Client(server.path)
    client.send(b'{"id": 1, "cmd": "wait-idle", "args": {"timeout": 300}}\n{"id": 2, "cmd": "status"}\n')
    assert waiting.wait(PATIENCE_S)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    while os.path.exists(server.path):  # stop() has begun once the socket file is gone
        stopper.join(0.01)
    release.set()
    assert client.reply()["ok"]
    assert _error(client.reply()) == (2, "unavailable")
    assert client.closed_by_server()
    stopper.join(PATIENCE_S)
    assert not stopper.is_alive()


def test_handlers_for_verbs_the_protocol_lacks_are_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="frobnicate"):
        ControlServer(tmp_path / "control.sock", {"frobnicate": lambda args: {}})


# ---- peer credentials: a real client process under another uid ----

CLIENT_SCRIPT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(30)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect": exc.__class__.__name__}))
    raise SystemExit(0)
try:
    sock.sendall(b'{"id": 1, "cmd": "hello"}\\n')
except BrokenPipeError:
    pass  # refused before it could ask: the refusal is there to read
data = b""
while not data.endswith(b"\\n"):
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode() or json.dumps({"closed": True}))
"""


def _as_nobody(socket_path: str, gid: int = 65534, groups: tuple[int, ...] = ()) -> dict[str, Any]:
    """The reply to `hello` from a stdlib-only client run as uid 65534 with the given primary and supplementary
    groups (system python3: the project's venv lives under /root, which uid 65534 cannot read)."""
    group_option = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    command = ["setpriv", "--reuid=65534", f"--regid={gid}", group_option, "/usr/bin/python3", "-c",
               CLIENT_SCRIPT, socket_path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE_S, check=True)
    return json.loads(done.stdout)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory uid 65534 can traverse (pytest's tmp_path lives under a 0700 directory)."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root, setpriv (util-linux) and /usr/bin/python3 to run a client as another uid")
    path = Path(tempfile.mkdtemp(prefix="dedupd-control-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_another_uid_cannot_even_connect_to_a_0600_socket(serve, public_dir):
    server = serve(public_dir / "control.sock")
    assert _as_nobody(server.path) == {"connect": "PermissionError"}


def test_another_uid_is_forbidden_even_when_the_socket_file_lets_it_connect(serve, public_dir):
    server = serve(public_dir / "control.sock")
    os.chmod(server.path, 0o666)  # as systemd's default SocketMode would: the peer check must still hold
    assert _as_nobody(server.path) == {
        "id": None, "ok": False, "error": {"code": "forbidden", "message": "uid 65534 may not use this dedupd"}}
    assert Client(server.path).request("status")["ok"]


def test_a_peer_in_the_allowed_group_is_served(serve, public_dir):
    server = serve(public_dir / "control.sock", allowed_gid=OTHER_GID)
    assert _as_nobody(server.path, gid=OTHER_GID)["ok"]  # primary group
    assert _as_nobody(server.path, groups=(100, OTHER_GID))["ok"]  # supplementary group, read from /proc


def test_a_peer_outside_the_allowed_group_is_forbidden(serve, public_dir):
    server = serve(public_dir / "control.sock", allowed_gid=OTHER_GID)
    os.chmod(server.path, 0o666)
    assert _as_nobody(server.path, groups=(100,))["error"]["code"] == "forbidden"


# ---- socket activation ----

def test_an_inherited_listening_socket_is_used_and_left_in_place(serve, tmp_path):
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    server = serve(tmp_path / "ignored" / "control.sock", listen_fd=listener.detach())
    assert server.path == str(path)
    assert Client(path).request("status")["ok"]
    server.stop()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert not (tmp_path / "ignored").exists()


def test_an_inherited_socket_of_the_wrong_kind_is_refused(tmp_path, handlers):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        server = ControlServer(tmp_path / "control.sock", handlers, listen_fd=os.dup(datagram.fileno()))
        with pytest.raises(DedupdError, match="not a Unix stream socket"):
            server.start()


def test_systemd_socket_activation(tmp_path):
    if not shutil.which("systemd-socket-activate"):
        pytest.skip("needs systemd-socket-activate (apt-get install systemd)")
    path = tmp_path / "control.sock"
    script = Path(__file__).with_name("control_activated.py")
    activator = subprocess.Popen(["systemd-socket-activate", "-l", str(path), sys.executable, str(script), str(path)],
                                 stderr=subprocess.PIPE, text=True)
    try:
        client = None
        while client is None:  # systemd-socket-activate listens before starting anything
            try:
                client = Client(path)  # this connection makes systemd-socket-activate start the server
            except (FileNotFoundError, ConnectionRefusedError):
                with pytest.raises(subprocess.TimeoutExpired):
                    activator.wait(0.01)
        assert client.request("hello")["result"]["protocol"] == 1
        assert client.request("status")["result"]["pid"] == activator.pid  # it exec'd the server in place
    finally:
        activator.terminate()
        assert activator.wait(PATIENCE_S) == 0, activator.stderr.read()
    assert stat.S_ISSOCK(os.stat(path).st_mode)  # systemd's socket: the server does not remove it
