"""`dedupctl review`: start the review page's server on demand (or find the one running) and give its URL.

One server per daemon socket and user. It runs detached (`python -m dedupd.cli.review --socket S`), writes
`{pid, url}` to a state file in the user's runtime dir (mode 0600, in a 0700 directory the user owns), and
stops itself after `--idle-timeout` seconds without a request. `ensure_server` reuses a live one.
"""

import argparse
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dedupd.errors import DedupdError

#: How long `dedupctl review` waits for a new server to say it listens (imports and the thumbnail pool).
START_TIMEOUT_S = 60.0
DEFAULT_IDLE_S = 1800.0


def runtime_dir() -> Path:
    """The user's private directory for the server's state file: refused if someone else could write it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    directory = Path(base) / "dedupd-review" if base and os.path.isabs(base) else \
        Path(f"/tmp/dedupd-review-{os.getuid()}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or not directory.is_dir() or directory.is_symlink():
        raise DedupdError(f"{directory} is not a private directory of this user; remove it and try again")
    return directory


def state_file(socket_path: str) -> Path:
    return runtime_dir() / f"review-{hashlib.sha1(socket_path.encode()).hexdigest()[:12]}.json"


def _answers(url: str) -> bool:
    base, _, query = url.partition("?")
    try:
        with urllib.request.urlopen(f"{base}app.css?{query}", timeout=3) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running(socket_path: str) -> dict[str, Any] | None:
    """The live server's state ({pid, url}) for this socket, or None."""
    try:
        state = json.loads(state_file(socket_path).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if _answers(str(state["url"])) else None


def ensure_server(socket_path: str, idle_s: float = DEFAULT_IDLE_S) -> dict[str, Any]:
    """A live server's {pid, url, started}: the running one, or one started now (detached)."""
    state = running(socket_path)
    if state is not None:
        return {**state, "started": False}
    path = state_file(socket_path)
    path.unlink(missing_ok=True)
    log_path = path.with_suffix(".log")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dedupd.cli.review", "--socket", socket_path, "--state-file", str(path),
             "--idle-timeout", str(idle_s)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DedupdError(f"the review server exited with {process.returncode}; see {log_path}")
        if path.exists():
            state = json.loads(path.read_text())
            return {**state, "started": True}
        time.sleep(0.05)  # waiting for the server's state file (a condition), bounded by the deadline
    process.kill()
    raise DedupdError(f"the review server did not start within {START_TIMEOUT_S:g} s; see {log_path}")


def _write_state(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)


def serve(socket_path: str, state_path: Path, idle_s: float) -> int:
    """The server process: thumbnail pool, HTTP server, state file; until idle."""
    from dedupd.cli.client import call
    from dedupd.paths import home
    from dedupd.service.review.server import ReviewServer
    from dedupd.service.review.thumbnails import ThumbnailPool

    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or home() / ".cache")
    pool = ThumbnailPool()
    pool.start()
    try:
        server = ReviewServer(lambda cmd, args: call(socket_path, cmd, args), secrets.token_urlsafe(32), pool.make,
                              cache_home, idle_s=idle_s)
        _write_state(state_path, {"pid": os.getpid(), "url": server.url, "socket": socket_path})
        logging.getLogger(__name__).info("review page at %s", server.url)
        server.serve()
    finally:
        pool.close()
        try:
            if json.loads(state_path.read_text()).get("pid") == os.getpid():
                state_path.unlink()
        except (OSError, ValueError):
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedupd.cli.review", description="the review page's server")
    parser.add_argument("--socket", required=True, help="the daemon's control socket")
    parser.add_argument("--state-file", required=True, type=Path, help="where to write {pid, url}")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_S, help="stop after S idle seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args.socket, args.state_file, args.idle_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
