"""`dedupctl` as a real process against a real control server with canned result documents: each verb's text
and --json output, the arguments it sends, how it finds the socket, its exit codes, and what it imports."""

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupd.protocol import ProtocolError
from dedupd.service.control import ControlServer

ROOTS = [
    {"path": "/srv/photos", "state": "watching", "recursive": True, "protected": False, "watches": 12, "detail": ""},
    {"path": "/srv/reference", "state": "polling", "recursive": True, "protected": True, "watches": 0,
     "detail": "network filesystem"},
]
STATUS = {
    "state": "running", "version": "0.1.0", "protocol": 1, "uptime_s": 3725.5, "roots": ROOTS,
    "counts": {"indexed": 1200, "pending": 3, "decodes": 1210, "duplicates": 4, "duplicate_files": 9,
               "skipped": {"truncated": 2, "unsupported_format": 5}, "skipped_by_extension": {".xcf": 5, ".jpg": 2}},
    "index": {"phash": 1200, "cnn": 1195},
    "cnn": {"enabled": True, "model": "sscd-distilled", "provider": "CPUExecutionProvider", "dim": 512},
    "scan": {"running": True, "done": 800, "total": 1200},
}
GROUPS = [
    [{"path": "/srv/photos/a.jpg"}, {"path": "/srv/photos/a copy.jpg", "method": "exact", "distance": 0},
     {"path": "/srv/photos/b.jpg", "method": "phash", "distance": 3}],
    [{"path": "/srv/photos/c.png"}, {"path": "/srv/photos/c-crop.png", "method": "cnn", "similarity": 0.8712}],
]
QUERY_LINE = "/home/u/x.jpg: 1 duplicate, 1 similar (other captures of the scene)\n"
#: The daemon's explain document (catalog.explain): per candidate, each method's evidence and the tier's.
EXPLAIN = {"/srv/photos/b.jpg": {
    "exact": False, "oriented_distance": 3, "similarity": 0.97, "phash": 4, "ahash": 2, "dhash": 5, "whash": 3,
    "decision": "phash", "metadata": "different captures", "metadata_detail": "capture time 2024:06:01 18:30:14.52 "
    "vs 2024:06:01 18:30:14.92", "pixels": "not one capture", "pixel_detail": "14/90 keypoints on one transform",
    "tier": "similar", "tier_evidence": "capture time 2024:06:01 18:30:14.52 vs 2024:06:01 18:30:14.92"}}
QUERY = {"file": "/home/u/x.jpg", "matches": [{**GROUPS[0][1], "tier": "duplicate"},
                                              {**GROUPS[0][2], "tier": "similar"}], "explain": EXPLAIN}
NEEDLES = {
    "files": {"/home/u/in/2019/a.jpg": [{"path": "/srv/photos/a.jpg", "method": "exact", "distance": 0}],
              "/home/u/in/2020/b.jpg": [{"path": "/srv/photos/b.jpg", "method": "cnn", "similarity": 0.91}],
              "/home/u/in/2020/new.jpg": []},
    "found": 2, "total": 3, "unreadable": {"/home/u/in/2020/broken.jpg": "truncated: image file is truncated"},
    "folders": [{"path": "/home/u/in/2019", "images": 1, "in_library": 1, "all": True},
                {"path": "/home/u/in/2020", "images": 2, "in_library": 1, "all": False}],
}
RESULTS: dict[str, dict[str, Any]] = {
    "status": STATUS,
    "wait-idle": {"idle": True, "waited_s": 1.25},
    "query": QUERY,
    "duplicates": {"groups": GROUPS},
    "similar": {"enabled": True, "groups": [GROUPS[0]]},
    "to-remove": {"files": ["/srv/photos/a copy.jpg", "/srv/photos/b.jpg"], "policy": "keep the most pixels"},
    "rescan": {"scheduled": ["/srv/photos"]},
    "pause": {"state": "paused"},
    "resume": {"state": "running"},
    "reload": {"changed": ["settle_ms", "methods"], "restart_needed": ["settle_ms"]},
    "watch": {"roots": ROOTS},
    "export": {"method": "phash", "encodings": {"/srv/photos/b.jpg": "f0e1d2c3b4a59687", "/srv/photos/a.jpg":
                                                "0123456789abcdef"}},
    "needles": NEEDLES,
    "ignore": {"ignored": 3},
}


class FakeDaemon:
    """A real ControlServer whose handlers record their arguments and answer the canned documents."""

    def __init__(self, path: Path) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.results = dict(RESULTS)
        self.server = ControlServer(path, {cmd: self._handler(cmd) for cmd in RESULTS})

    def _handler(self, cmd: str):
        def handle(args: dict[str, Any]) -> dict[str, Any]:
            self.seen.append((cmd, args))
            if cmd == "query" and args["path"].endswith("missing.jpg"):
                raise ProtocolError("not_found", f"no such file: {args['path']}")
            if cmd == "wait-idle" and args["timeout"] < 1:
                raise ProtocolError("timeout", f"still busy after {args['timeout']:g} s (3 pending)")
            return self.results[cmd]

        return handle


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "run" / "control.sock")
    fake.server.start()
    yield fake
    fake.server.stop()


@pytest.fixture
def run(tmp_path: Path):
    """Runs dedupctl in a clean environment (no DEDUPD_* variables, no config file) from tmp_path/cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    base_env = {name: value for name, value in os.environ.items() if not name.startswith(("DEDUPD_", "XDG_"))}
    base_env |= {"DEDUPD_SYSTEM": "0", "XDG_CONFIG_HOME": str(tmp_path / "config"),
                 "XDG_RUNTIME_DIR": str(tmp_path / "runtime")}

    def dedupctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dedupd.cli.dedupctl", *argv], cwd=cwd, env=base_env | (env or {}),
                              capture_output=True, text=True, timeout=60)

    return dedupctl


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout


def test_status_text_is_aligned_key_value_lines(run, daemon):
    assert _ok(run("--socket", daemon.server.path, "status")) == """\
state:       running
version:     0.1.0 (protocol 1)
uptime:      1h 02m 05s
indexed:     1200
pending:     3
decodes:     1210
duplicates:  4 groups, 9 files
skipped:     7 (unsupported_format 5, truncated 2); by extension: .xcf 5, .jpg 2
index:       phash 1200, cnn 1195
cnn:         sscd-distilled on CPUExecutionProvider (dim 512)
scan:        running, 800 of 1200
roots:
  /srv/photos     watching  recursive            12 watches
  /srv/reference  polling   recursive protected  0 watches   network filesystem
"""


def test_duplicates_text_numbers_the_groups_with_each_members_method_and_score(run, daemon):
    assert _ok(run("--socket", daemon.server.path, "duplicates")) == """\
2 groups, 5 files

group 1 (3 files)
                     /srv/photos/a.jpg
  exact  distance 0  /srv/photos/a copy.jpg
  phash  distance 3  /srv/photos/b.jpg

group 2 (2 files)
                         /srv/photos/c.png
  cnn  similarity 0.871  /srv/photos/c-crop.png
"""


def test_query_text_lists_the_matches_and_the_explanation(run, daemon):
    assert _ok(run("--socket", daemon.server.path, "query", "/home/u/x.jpg", "--explain")) == """\
/home/u/x.jpg: 1 duplicate, 1 similar (other captures of the scene)
  exact  distance 0  /srv/photos/a copy.jpg
similar:
  phash  distance 3  /srv/photos/b.jpg

evidence for /srv/photos/b.jpg:
  same bytes      no
  oriented pHash  3
  CNN similarity  0.97
  pHash           4
  aHash           2
  dHash           5
  wHash           3
  rule            phash
  metadata        different captures
    because       capture time 2024:06:01 18:30:14.52 vs 2024:06:01 18:30:14.92
  pixels          not one capture
    because       14/90 keypoints on one transform
  tier            similar
    decided by    capture time 2024:06:01 18:30:14.52 vs 2024:06:01 18:30:14.92
"""


def test_query_explain_without_matches_says_so(run, daemon):
    daemon.results["query"] = {"file": "/x.jpg", "matches": [], "explain": {}}
    assert _ok(run("--socket", daemon.server.path, "query", "/x.jpg", "--explain")) == """/x.jpg: no matches
explain: nothing matched, no evidence to show
"""


def test_to_remove_text_says_which_file_is_kept_and_why(run, daemon):
    daemon.results["to-remove"] = {
        "files": ["/p/IMG_1.png"], "policy": "",
        "groups": [{"keep": ["/p/IMG_1.jpg"], "why": "carries the camera's metadata", "remove": ["/p/IMG_1.png"]}]}
    text = _ok(run("--socket", daemon.server.path, "to-remove"))
    assert text == """# keep /p/IMG_1.jpg  (carries the camera's metadata)
/p/IMG_1.png
"""


def test_similar_text_lists_the_groups(run, daemon):
    text = _ok(run("--socket", daemon.server.path, "similar"))
    assert text.startswith("1 similar groups, 3 files\n\nsimilar group 1 (3 files)\n")
    daemon.results["similar"] = {"enabled": False, "groups": []}
    text = _ok(run("--socket", daemon.server.path, "similar"))
    assert text == "the similar tier is off ([matcher] similar = false)\n"


def test_needles_text_lists_the_three_kinds_with_counts_and_marks_whole_folders(run, daemon):
    assert _ok(run("--socket", daemon.server.path, "needles", "/home/u/in")) == """\
2 of 3 images already in the library; 1 new; 1 unreadable
  ALL  1 of 1  /home/u/in/2019
       1 of 2  /home/u/in/2020
in the library (2):
  /home/u/in/2019/a.jpg  =  /srv/photos/a.jpg  (exact distance 0)
  /home/u/in/2020/b.jpg  =  /srv/photos/b.jpg  (cnn similarity 0.910)
new, not in the library (1):
  /home/u/in/2020/new.jpg
unreadable, not compared (1):
  /home/u/in/2020/broken.jpg  truncated: image file is truncated
"""


@pytest.mark.parametrize(("argv", "cmd", "sent", "text"), [
    (["status"], "status", {}, "state:       running\n"),
    (["wait-idle"], "wait-idle", {"timeout": 300.0}, "idle (waited 1.2 s)\n"),
    (["wait-idle", "--timeout", "5"], "wait-idle", {"timeout": 5.0}, "idle (waited 1.2 s)\n"),
    (["query", "x.jpg", "--method", "phash", "--threshold", "4"], "query",
     {"path": "{cwd}/x.jpg", "method": "phash", "threshold": 4, "explain": False}, QUERY_LINE),
    (["query", "../x.jpg", "--method", "cnn", "--min-similarity", "0.8"], "query",
     {"path": "{tmp}/x.jpg", "method": "cnn", "min_similarity": 0.8, "explain": False}, QUERY_LINE),
    (["duplicates", "--method", "cnn", "--under", "sub"], "duplicates", {"method": "cnn", "under": "{cwd}/sub"},
     "2 groups, 5 files\n"),
    (["to-remove"], "to-remove", {}, "/srv/photos/a copy.jpg\n/srv/photos/b.jpg\n"),
    (["to-remove", "--under", "/srv/photos/"], "to-remove", {"under": "/srv/photos"},
     "/srv/photos/a copy.jpg\n/srv/photos/b.jpg\n"),
    (["rescan"], "rescan", {}, "rescan scheduled: /srv/photos\n"),
    (["rescan", "."], "rescan", {"path": "{cwd}"}, "rescan scheduled: /srv/photos\n"),
    (["pause"], "pause", {}, "state: paused\n"),
    (["resume"], "resume", {}, "state: running\n"),
    (["reload"], "reload", {}, "reloaded; changed: settle_ms, methods\nneeds a restart to take effect: settle_ms "),
    (["watch", "list"], "watch", {"action": "list"}, "/srv/photos     watching  recursive            12 watches\n"),
    (["watch", "add", "new"], "watch", {"action": "add", "path": "{cwd}/new"}, "/srv/photos "),
    (["watch", "remove", "/srv/old"], "watch", {"action": "remove", "path": "/srv/old"}, "/srv/photos "),
    (["export"], "export", {}, "0123456789abcdef  /srv/photos/a.jpg\nf0e1d2c3b4a59687  /srv/photos/b.jpg\n"),
    (["export", "--method", "dhash"], "export", {"method": "dhash"}, "0123456789abcdef  /srv/photos/a.jpg\n"),
    (["needles", "in"], "needles", {"dir": "{cwd}/in", "wait": 30.0}, "2 of 3 images already in the library; 1 new"),
    (["ignore", "a.jpg", "/srv/b.jpg", "c/d.jpg"], "ignore", {"paths": ["{cwd}/a.jpg", "/srv/b.jpg", "{cwd}/c/d.jpg"]},
     "ignored: 3 "),
])
def test_each_verb_sends_absolute_paths_and_prints_text_or_the_json_document(run, daemon, tmp_path, argv, cmd, sent,
                                                                             text):
    expected_args = json.loads(json.dumps(sent).replace("{cwd}", str(tmp_path / "cwd")).replace("{tmp}", str(tmp_path)))
    assert text in _ok(run("--socket", daemon.server.path, *argv))
    assert daemon.seen == [(cmd, expected_args)]
    assert json.loads(_ok(run("--socket", daemon.server.path, "--json", *argv))) == RESULTS[cmd]


@pytest.mark.parametrize("argv", [
    ["--json", "watch", "list"], ["watch", "--json", "list"], ["watch", "list", "--json"],
])
def test_global_options_are_accepted_before_or_after_the_verb(run, daemon, argv):
    assert json.loads(_ok(run(*argv, "--socket", daemon.server.path))) == RESULTS["watch"]
    assert json.loads(_ok(run("--socket", "/nowhere.sock", *argv, "--socket", daemon.server.path))) == RESULTS["watch"]
    assert json.loads(_ok(run(*argv[:1], "--socket", daemon.server.path, *argv[1:]))) == RESULTS["watch"]


def test_version_and_help_show_the_global_options(run):
    assert _ok(run("--version")) == "dedupctl 0.1.0\n"
    for argv in (["--help"], ["status", "--help"], ["watch", "add", "--help"]):
        shown = _ok(run(*argv))
        assert all(option in shown for option in ("--json", "--socket PATH", "--config FILE")), shown


def test_non_utf8_names_are_escaped_in_text_and_exact_with_null_or_json(run, daemon):
    """Text shows a name that is not UTF-8 with its bytes escaped (it used to print the raw bytes, which were the
    only lossless form); `--null` gives the exact bytes, `--json` the surrogate escapes Python's os.fsencode reverts."""
    name = b"/srv/\xff\xfe.jpg".decode("utf-8", "surrogateescape")
    daemon.results["to-remove"] = {"files": [name, "/srv/plain.jpg"], "policy": ""}
    argv = [sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", daemon.server.path, "to-remove"]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, b"/srv/\\xff\\xfe.jpg\n/srv/plain.jpg\n")
    done = subprocess.run([*argv, "--null"], capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, b"/srv/\xff\xfe.jpg\0/srv/plain.jpg\0")
    done = subprocess.run([*argv, "--json"], capture_output=True, timeout=60)
    assert b'"/srv/\\udcff\\udcfe.jpg"' in done.stdout
    assert os.fsencode(json.loads(done.stdout)["files"][0]) == b"/srv/\xff\xfe.jpg"


def test_text_output_escapes_terminal_controls_in_names(run, daemon):
    evil = "/srv/a\x1b]0;owned\x07\nb\u202ec.jpg"
    daemon.results["duplicates"] = {"groups": [[{"path": evil}, {"path": "/srv/back\\slash.jpg", "method": "exact",
                                                                 "distance": 0}]]}
    out = _ok(run("--socket", daemon.server.path, "duplicates"))
    assert "\x1b" not in out and "\u202e" not in out
    assert "  /srv/a\\x1b]0;owned\\x07\\nb\\u202ec.jpg\n" in out and "/srv/back\\slash.jpg\n" in out
    daemon.results["to-remove"] = {"files": [evil], "policy": ""}
    assert _ok(run("--socket", daemon.server.path, "to-remove")) == "/srv/a\\x1b]0;owned\\x07\\nb\\u202ec.jpg\n"


def test_export_of_cnn_embeddings_lists_paths_in_text_and_the_values_in_json(run, daemon):
    vectors = {"/srv/b.jpg": [0.5] * 512, "/srv/a.jpg": [0.25] * 512}
    daemon.results["export"] = {"method": "cnn", "encodings": vectors}
    assert _ok(run("--socket", daemon.server.path, "export", "--method", "cnn")) == \
        "2 cnn embeddings (512 floats each; the values with --json):\n  /srv/a.jpg\n  /srv/b.jpg\n"
    assert json.loads(_ok(run("--socket", daemon.server.path, "export", "--method", "cnn", "--json")))["encodings"] \
        == vectors
    assert "(default: phash)" in " ".join(_ok(run("export", "--help")).split())


def test_empty_answers_read_clearly(run, daemon):
    daemon.results |= {"duplicates": {"groups": []}, "to-remove": {"files": [], "policy": ""},
                       "query": {"file": "/x.jpg", "matches": []}, "watch": {"roots": []}}
    assert _ok(run("--socket", daemon.server.path, "duplicates")) == "no duplicates\n"
    assert _ok(run("--socket", daemon.server.path, "to-remove")) == ""
    assert _ok(run("--socket", daemon.server.path, "query", "/x.jpg")) == "/x.jpg: no matches\n"
    assert _ok(run("--socket", daemon.server.path, "watch", "list")) == "no roots\n"


# ---- exit codes ----

def test_a_daemon_error_exits_1_with_its_message(run, daemon):
    done = run("--socket", daemon.server.path, "query", "/home/u/missing.jpg")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "dedupctl: no such file: /home/u/missing.jpg\n")
    done = run("--socket", daemon.server.path, "--json", "wait-idle", "--timeout", "0.5")
    assert (done.returncode, done.stderr) == (1, "dedupctl: still busy after 0.5 s (3 pending)\n")
    assert json.loads(done.stdout) == {"error": {"code": "timeout", "message": "still busy after 0.5 s (3 pending)"}}


def test_a_busy_daemon_exits_1(run, tmp_path):
    with ControlServer(tmp_path / "busy.sock", {}, max_clients=0) as server:
        done = run("--socket", server.path, "status")
    assert (done.returncode, done.stderr) == (1, "dedupctl: too many clients; try again later\n")


@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: VERB"),
    (["frobnicate"], "invalid choice"),
    (["query"], "required: file"),
    (["query", "/x.jpg", "--threshold", "many"], "invalid int value"),
    (["query", "/x.jpg", "--threshold", "99"], "dedupctl: query: threshold must be between 0 and 64"),
    (["query", "/x.jpg", "--method", "cnn", "--threshold", "3"], "threshold is for hash methods"),
    (["wait-idle", "--timeout", "-1"], "timeout must be between 0"),
    (["ignore", "/a.jpg"], "dedupctl: ignore: paths must be a list of at least 2"),
    (["watch"], "required: ACTION"),
    (["status", "--jsn"], "unrecognized arguments: --jsn"),
])
def test_usage_errors_exit_2_without_asking_the_daemon(run, daemon, argv, message):
    done = run("--socket", daemon.server.path, *argv)
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr
    assert daemon.seen == []


def test_no_socket_exits_3_with_one_sentence(run, tmp_path):
    path = tmp_path / "nowhere" / "control.sock"
    done = run("--socket", str(path), "status")
    assert (done.returncode, done.stdout, done.stderr) == (3, "", f"dedupd is not running (no socket at {path}).\n")


def test_a_stale_socket_exits_3(run, tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    done = run("--socket", str(path), "--json", "status")
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == f"dedupd is not running (nothing listens on {path}).\n"


def test_a_daemon_that_hangs_up_without_answering_exits_3(run, tmp_path):
    path = tmp_path / "rude.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def hang_up() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)

    thread = threading.Thread(target=hang_up)
    thread.start()
    done = run("--socket", str(path), "status")
    thread.join()
    listener.close()
    assert (done.returncode, done.stderr) == (3, f"dedupd closed the connection without answering ({path}).\n")


# ---- finding the socket ----

def test_the_socket_comes_from_the_environment_then_the_config_file(run, daemon, tmp_path):
    assert _ok(run("status", env={"DEDUPD_SOCKET": daemon.server.path})).startswith("state:")
    config = tmp_path / "dedupd.toml"
    config.write_text(f'socket = "{daemon.server.path}"\n[[roots]]\npath = "/srv/photos"\n')
    assert _ok(run("status", env={"DEDUPD_CONFIG": str(config)})).startswith("state:")
    default_config = tmp_path / "config" / "dedupd" / "dedupd.toml"
    default_config.parent.mkdir(parents=True)
    default_config.write_text(f'socket = "{daemon.server.path}"\n')
    assert _ok(run("status")).startswith("state:")


def test_the_user_default_socket_is_in_the_runtime_dir(run, tmp_path):
    done = run("status")
    expected = tmp_path / "runtime" / "dedupd" / "control.sock"
    assert (done.returncode, done.stderr) == (3, f"dedupd is not running (no socket at {expected}).\n"
                                                 "(that is the user default; for a daemon elsewhere use --socket "
                                                 "PATH, or --config FILE naming its config file)\n")


def test_config_names_the_daemons_config_file_for_its_socket(run, daemon, tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text(f'socket = "{daemon.server.path}"\n')
    assert _ok(run("status", "--config", str(config))).startswith("state:")
    assert _ok(run("--config", str(config), "status", env={"DEDUPD_CONFIG": "/nonexistent.toml"})).startswith("state:")
    config.write_text(f'socket = "{tmp_path / "gone.sock"}"\n')
    done = run("status", "--config", str(config))
    assert done.returncode == 3
    assert f"no socket at {tmp_path / 'gone.sock'}" in done.stderr and f"the `socket` of {config}" in done.stderr
    done = run("status", "--config", str(tmp_path / "missing.toml"))
    assert (done.returncode, done.stderr) == (2, f"dedupctl: config file not found: {tmp_path / 'missing.toml'} "
                                                 "(from --config)\n")


def test_a_config_file_that_cannot_be_read_exits_2(run, tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("socket = \n")
    done = run("status", env={"DEDUPD_CONFIG": str(config)})
    assert done.returncode == 2 and str(config) in done.stderr


# ---- start-up cost ----

def test_dedupctl_imports_nothing_heavy():
    """dedupctl must start fast: it runs a whole request without numpy, Pillow, LMDB, ONNX Runtime, pydantic or
    watchdog (nor any of dedupd's heavy modules) in sys.modules."""
    code = ("import json, sys\nfrom dedupd.cli import dedupctl\n"
            "code = dedupctl.main(['--socket', '/nonexistent/control.sock', 'status'])\n"
            "print(json.dumps([code, sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    code, modules = json.loads(done.stdout.splitlines()[-1])
    assert code == 3
    heavy = {"numpy", "PIL", "lmdb", "onnxruntime", "pydantic", "pydantic_settings", "watchdog", "scipy", "pywt"}
    assert {name.split(".")[0] for name in modules} & heavy == set()
    assert {name for name in modules if name.startswith("dedupd")} == {
        "dedupd", "dedupd.cli", "dedupd.cli.client", "dedupd.cli.dedupctl", "dedupd.errors", "dedupd.names",
        "dedupd.paths", "dedupd.peer", "dedupd.protocol"}
