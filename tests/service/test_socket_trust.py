"""A squatted socket directory, with a real other uid (65534, via setpriv): the daemon refuses to serve in a
directory another user made or can write, and dedupctl believes only a server the kernel says is root, itself,
or the owner of a socket directory only that owner could have made (SO_PEERCRED)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dedupd.errors import DedupdError
from dedupd.service.control import ControlServer

NOBODY = 65534
PATIENCE_S = 30.0

#: An impostor's server (stdlib only, run as uid 65534): answers every request with a made-up to-remove list
#: and reports on stdout whether a request ever reached it.
IMPOSTOR = """
import json, os, socket, sys
path = sys.argv[1]
if sys.argv[2:] == ["squat"]:  # make the directory first, open to all, as a squatter in /tmp would
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.chmod(os.path.dirname(path), 0o777)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen()
print("listening", flush=True)
server.settimeout(30)
conn, _ = server.accept()
conn.settimeout(5)
try:
    data = conn.recv(65536)
    conn.sendall(json.dumps({"id": 1, "ok": True, "result": {"files": ["/home/victim/only-copy.jpg"],
                                                             "policy": "x"}}).encode() + b"\\n")
except OSError:
    data = b""
print(json.dumps({"received": data.decode(errors="replace")}), flush=True)
"""


def _needs_root_and_setpriv() -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root, setpriv (util-linux) and /usr/bin/python3 to run a process as another uid")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable sticky directory like /tmp, where any local user may create a directory first."""
    _needs_root_and_setpriv()
    path = Path(tempfile.mkdtemp(prefix="dedupd-trust-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def _as_nobody(*command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _dedupctl(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(socket_path), *args],
                          capture_output=True, text=True, timeout=PATIENCE_S)


def test_the_daemon_refuses_a_socket_directory_another_user_made(shared_tmp: Path) -> None:
    squat = shared_tmp / "dedupd-0"
    made = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "/usr/bin/python3", "-c", f"import os; os.mkdir({str(squat)!r}, 0o777); "
                           f"os.chmod({str(squat)!r}, 0o777)"], capture_output=True, text=True, timeout=PATIENCE_S)
    assert made.returncode == 0, made.stderr
    server = ControlServer(squat / "control.sock", {"status": lambda args: {"state": "running"}})
    with pytest.raises(DedupdError, match=f"belongs to uid {NOBODY}, not to this dedupd"):
        server.start()
    assert sorted(os.listdir(squat)) == []  # not even its lock file was made there


def test_the_daemon_refuses_a_socket_directory_others_can_write(tmp_path: Path) -> None:
    for mode, who in ((0o777, "everyone"), (0o770, "its group"), (0o1777, "everyone")):
        directory = tmp_path / f"run-{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
        server = ControlServer(directory / "control.sock", {"status": lambda args: {"state": "running"}})
        with pytest.raises(DedupdError, match=f"is writable by {who} \\(mode {mode:o}\\)"):
            server.start()


def test_dedupctl_does_not_believe_a_server_in_a_squatted_directory(shared_tmp: Path) -> None:
    socket_path = shared_tmp / "dedupd-0" / "control.sock"
    impostor = _as_nobody("/usr/bin/python3", "-c", IMPOSTOR, str(socket_path), "squat")
    try:
        assert impostor.stdout is not None and impostor.stdout.readline().strip() == "listening", impostor.stderr
        done = _dedupctl(socket_path, "to-remove")
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert done.stdout == "" and "only-copy.jpg" not in done.stderr
        assert f"not trusting {socket_path}: it is served by uid {NOBODY} (pid {impostor.pid}" in done.stderr
        out, _ = impostor.communicate(timeout=PATIENCE_S)
        assert json.loads(out.splitlines()[-1]) == {"received": ""}  # the request never reached the impostor
    finally:
        impostor.kill()
        impostor.wait()


def test_dedupctl_believes_the_owner_of_a_directory_only_root_could_make() -> None:
    """The system service's case: /run (root, 0755) holds /run/dedupd owned by the service's dynamic user."""
    _needs_root_and_setpriv()
    run = Path(tempfile.mkdtemp(prefix="dedupd-run-"))
    try:
        run.chmod(0o755)
        service_dir = run / "dedupd"
        service_dir.mkdir(mode=0o755)
        os.chown(service_dir, NOBODY, NOBODY)
        server = _as_nobody("/usr/bin/python3", "-c", IMPOSTOR, str(service_dir / "control.sock"))
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "listening", server.stderr
            done = _dedupctl(service_dir / "control.sock", "to-remove")
            assert done.returncode == 0 and done.stdout == "/home/victim/only-copy.jpg\n", (done.stdout, done.stderr)
        finally:
            server.kill()
            server.wait()
    finally:
        shutil.rmtree(run)
