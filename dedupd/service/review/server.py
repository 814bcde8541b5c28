"""The review page's HTTP server: 127.0.0.1 only, a free port, every request needs the random token.

Stack: the standard library's `ThreadingHTTPServer` with vanilla JavaScript and CSS shipped in the package
(`assets/`). Considered: Flask, Starlette + uvicorn, aiohttp (each a dependency to keep up with for a page
that serves a handful of JSON endpoints and images to one local user), and a JS framework (a build step, or
a vendored bundle to keep current). The stdlib server needs nothing and keeps working for years.

Security, as Jupyter does it: bound to the loopback interface only, a random token (from `secrets`) in the
URL; the token is checked on every request (constant-time), read from the `token` query parameter or the
`X-Dedupd-Token` header, and POSTs (the actions) accept only the header, which another site's page cannot
send; the Host header must name the loopback (no DNS rebinding). Only members of the groups the page showed
are served as images. Actions run in this process, with the rights of the user who started it
(`dedupd.service.actions`), and the daemon is asked through its control socket like `dedupctl` asks it.
The server stops itself after `idle_s` without requests.
"""

import hashlib
import hmac
import json
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dedupd.errors import DedupdError
from dedupd.imaging.thumbnail import Thumbnail, desktop_thumbnail
from dedupd.protocol import ProtocolError
from dedupd.service import actions
from dedupd.service.review.library import Ask, Library, plan_for

log = logging.getLogger(__name__)

_ASSETS = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css"}
#: The script and style sheet are the package's own files, the same for everyone: the page links them without
#: its token. The page itself, the API and the images need it.
_PUBLIC = frozenset({"/app.js", "/app.css"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
THUMB_SIZES = (128, 256, 512)

#: Makes a thumbnail of (path, size) in the encode pool: the review server never decodes in its own process.
type ThumbnailMaker = Callable[[str, int], Thumbnail | None]


class ReviewServer:
    """The page, its JSON API and the thumbnails; `serve()` until idle, `stop()` from elsewhere."""

    def __init__(self, ask: Ask, token: str, make_thumbnail: ThumbnailMaker, cache_home: Path,
                 idle_s: float = 1800.0, port: int = 0) -> None:
        self.ask = ask
        self.token = token
        self.library = Library(ask)
        self.make_thumbnail = make_thumbnail
        self.cache_home = cache_home
        self.idle_s = idle_s
        self.last_request = time.monotonic()
        self._actions = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def serve(self) -> None:
        """Serve until `stop()` or `idle_s` without a request. The groups load after the first page asked for
        (that page is one small request of its own, which a whole list loading meanwhile would slow down)."""
        watcher = threading.Thread(target=self._stop_when_idle, name="dedupd-review-idle", daemon=True)
        watcher.start()
        try:
            self.httpd.serve_forever(poll_interval=0.5)
        finally:
            self.httpd.server_close()

    def stop(self) -> None:
        self.httpd.shutdown()

    def _stop_when_idle(self) -> None:
        while True:
            left = self.idle_s - (time.monotonic() - self.last_request)
            if left <= 0:
                log.info("review page idle for %g s: stopping", self.idle_s)
                self.stop()
                return
            time.sleep(min(left, 5.0))

    # ------------------------------------------------------------------ API
    def groups(self, query: dict[str, str]) -> dict[str, Any]:
        per_page = min(max(int(query.get("per_page", "20")), 1), 200)
        # refresh=1: a page (re)load or a new tier: the groups as they are now, soon
        return self.library.page(query.get("tier", "duplicates"), int(query.get("page", "0")), per_page,
                                 refresh=query.get("refresh") == "1")

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """Keep the proposed (or the chosen) file of one group; trash the others, or link them to it."""
        op = body.get("op", "trash")
        if op not in ("trash", "reflink", "hardlink"):
            raise DedupdError(f"unknown action {op!r}")
        with self._actions:
            card = self.library.find(str(body.get("tier", "duplicates")), str(body.get("group")))
            members, going = plan_for(card, body.get("keep"))
            records = self.ask("records", {"paths": members, "tokens": True})["records"]
            planned = actions.plan(op, [members], going, records)
            companions = sorted({path for step in planned.steps for path in step.companions})
            if companions:  # their tokens, for an undo
                records.update(self.ask("records", {"paths": companions, "tokens": True})["records"])
            outcome = actions.execute(planned, records, scope={"group": members[0], "from": "review page"},
                                      ask=self.ask)
            self._settle()
            if outcome.done and not outcome.refused:
                self.library.drop(str(body.get("tier", "duplicates")), card.id)
            else:
                self.library.refresh(str(body.get("tier", "duplicates")))
        return outcome.document()

    def ignore(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._actions:
            card = self.library.find(str(body.get("tier", "duplicates")), str(body.get("group")))
            result = self.ask("ignore", {"paths": [m["path"] for m in card.members]})
            self._settle()
            self.library.drop(str(body.get("tier", "duplicates")), card.id)
        return result

    def undo(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._actions:
            outcome = actions.undo(body.get("action"), ask=self.ask)
            self._settle()
            for tier in ("duplicates", "similar"):
                self.library.refresh(tier)
        return outcome.document()

    def _settle(self) -> None:
        """After an action: let the daemon catch up with the files it was told about, then list anew."""
        try:
            self.ask("wait-idle", {"timeout": 30.0})
        except (DedupdError, OSError) as exc:
            log.info("the daemon did not settle after an action: %s", exc)

    def thumbnail(self, path: str, size: int) -> Thumbnail | None:
        record = self.library.records.get(path) or {}
        mtime_ns = int(record.get("mtime_ns") or 0)
        found = desktop_thumbnail(path, mtime_ns // 1_000_000_000, size, self.cache_home)
        if found is not None:
            return found
        key = f"{size}-{mtime_ns}-" + hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()
        cached = self.cache_home / "dedupd" / "thumbnails" / f"{key}.jpg"
        try:
            return Thumbnail(cached.read_bytes(), "image/jpeg")
        except OSError:
            pass
        made = self.make_thumbnail(path, size)
        if made is not None:
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_bytes(made.data)
            os.replace(temporary, cached)
        return made


def _asset(name: str) -> bytes:
    return resources.files("dedupd.service.review").joinpath("assets", name).read_bytes()


def _handler(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dedupd-review"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            log.debug("%s " + format, self.address_string(), *args)

        def _query(self) -> dict[str, str]:
            return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

        def _loopback(self) -> bool:
            return (self.headers.get("Host") or "").rsplit(":", 1)[0] in _LOOPBACK_HOSTS

        def _allowed(self, *, header_only: bool) -> bool:
            if not self._loopback():
                return False
            given = self.headers.get("X-Dedupd-Token") or ("" if header_only else self._query().get("token", ""))
            return hmac.compare_digest(given.encode(), server.token.encode())

        def _send(self, status: HTTPStatus, body: bytes, media_type: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, document: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(document).encode(), "application/json")

        def _refuse(self) -> None:
            self._send(HTTPStatus.FORBIDDEN, b"This page needs its token: open the URL `dedupctl review` gives.\n",
                       "text/plain; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            server.last_request = time.monotonic()
            route = urlsplit(self.path).path
            if not self._allowed(header_only=False) and not (route in _PUBLIC and self._loopback()):
                self._refuse()
                return
            try:
                if route in _ASSETS:
                    name = _ASSETS[route]
                    self._send(HTTPStatus.OK, _asset(name), mimetypes.guess_type(name)[0] or "text/plain")
                elif route == "/api/groups":
                    self._json(server.groups(self._query()))
                elif route in ("/api/thumb", "/api/image"):
                    self._image(route)
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            except (DedupdError, ValueError) as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

        def _image(self, route: str) -> None:
            query = self._query()
            path = query.get("path", "")
            if not server.library.knows(path):
                self._send(HTTPStatus.NOT_FOUND, b"not a file of a shown group\n", "text/plain")
                return
            if route == "/api/image":
                try:
                    data = Path(path).read_bytes()
                except OSError:
                    self._send(HTTPStatus.NOT_FOUND, b"gone\n", "text/plain")
                    return
                self._send(HTTPStatus.OK, data, mimetypes.guess_type(path)[0] or "application/octet-stream")
                return
            size = int(query.get("size", "256"))
            made = server.thumbnail(path, min(THUMB_SIZES, key=lambda s: (s < size, abs(s - size))))
            if made is None:
                self._send(HTTPStatus.NOT_FOUND, b"no thumbnail\n", "text/plain")
                return
            self._send(HTTPStatus.OK, made.data, made.media_type, cache=True)

        def do_POST(self) -> None:  # noqa: N802
            server.last_request = time.monotonic()
            if not self._allowed(header_only=True):
                self._refuse()
                return
            route = urlsplit(self.path).path
            handlers = {"/api/resolve": server.resolve, "/api/ignore": server.ignore, "/api/undo": server.undo}
            handler = handlers.get(route)
            if handler is None:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
                return
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request must be a JSON object")
                self._json(handler(body))
            except ProtocolError as exc:
                self._json({"error": exc.message, "code": exc.code.value}, HTTPStatus.CONFLICT)
            except (DedupdError, ValueError) as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

    return Handler
