"""The daemon's `dedupctl` handlers (dedupd/service/daemon.py) on a real daemon built in this process.

`Daemon._start` wires what `dedupd run` wires: LMDB store in a temporary state dir, the CNN, the encode worker
pool, the pipeline, the control socket and inotify watchers on real folders of real photographs
(tests/fixtures/photos.py). The tests call each handler as the control server does, and `dedupctl` itself over
the socket for the text it prints; only the main loop (watchdog pings, STATUS) is not run.
"""

import contextlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dedupd.cli import dedupctl
from dedupd.config import load_settings
from dedupd.protocol import ProtocolError, validate
from dedupd.service.daemon import Daemon
from dedupd.service.review.library import Library as ReviewLibrary


def recompressed(data: bytes, quality: int = 60) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class Library:
    daemon: Daemon
    root: Path
    archive: Path  # a protected root
    outside: Path  # not watched
    socket: Path

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        return self.daemon.handlers()[command](args)

    def idle(self) -> None:
        assert self.call("wait-idle", timeout=120)["idle"]

    def ctl(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = dedupctl.main(["--socket", str(self.socket), *argv])
        return code, out.getvalue()


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds))


@pytest.fixture
def library(tmp_path: Path, photo_bytes: list[bytes]) -> Iterator[Library]:
    """Pictures/ holds a.jpg with its byte copy b.jpg (older), p1.jpg with a re-compressed copy p1_q60.jpg,
    and unique photos; Archive/ (protected) holds another copy of a.jpg; Outside/ is not watched."""
    root, archive, outside = tmp_path / "Pictures", tmp_path / "Archive", tmp_path / "Outside"
    for folder in (root, archive, outside):
        folder.mkdir()
    (root / "a.jpg").write_bytes(photo_bytes[0])
    shutil.copy(root / "a.jpg", root / "b.jpg")
    set_mtime(root / "a.jpg", 1_700_000_000)
    set_mtime(root / "b.jpg", 1_600_000_000)  # older: the keep policy keeps b.jpg (same pixels, same size)
    (root / "p1.jpg").write_bytes(photo_bytes[1])
    (root / "p1_q60.jpg").write_bytes(recompressed(photo_bytes[1]))
    for i in range(2, 6):
        (root / f"unique{i}.jpg").write_bytes(photo_bytes[i])
    shutil.copy(root / "a.jpg", archive / "a_archived.jpg")
    socket_path = tmp_path / "run" / "control.sock"
    config = tmp_path / "dedupd.toml"
    config.write_text("\n".join([
        f'state_dir = "{tmp_path / "state"}"', f'report_dir = "{tmp_path / "reports"}"',
        f'socket = "{socket_path}"', "encode_workers = 1", "settle_ms = 100", "[notify]", "desktop = false",
        "[[roots]]", f'path = "{root}"', "[[roots]]", f'path = "{archive}"', "protected = true", ""]))
    daemon = Daemon(load_settings(config), config)
    try:
        daemon._start()
        lib = Library(daemon, root, archive, outside, socket_path)
        lib.idle()
        yield lib
    finally:
        daemon._teardown()


def paths_of(groups: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[member["path"] for member in group] for group in groups]


def test_duplicates_lists_each_group_with_how_each_file_matched(library: Library) -> None:
    root, archive = library.root, library.archive
    groups = library.call("duplicates")["groups"]
    exact = next(group for group in groups if str(root / "a.jpg") in (m["path"] for m in group))
    assert {m["path"] for m in exact} == {str(root / "a.jpg"), str(root / "b.jpg"), str(archive / "a_archived.jpg")}
    assert all(m["method"] == "exact" and m["distance"] == 0 for m in exact)
    near = next(group for group in groups if str(root / "p1.jpg") in (m["path"] for m in group))
    assert [m["path"] for m in near] == [str(root / "p1.jpg"), str(root / "p1_q60.jpg")]
    assert {m["method"] for m in near} <= {"phash", "cnn"}
    assert len(groups) == 2
    assert library.call("duplicates", under=str(root / "p1.jpg").rsplit("/", 1)[0] + "/none")["groups"] == []
    assert paths_of(library.call("duplicates", method="exact")["groups"]) == paths_of([exact])


def test_the_text_of_dedupctl_duplicates_names_every_file_and_how_it_matched(library: Library) -> None:
    code, text = library.ctl("duplicates")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "2 groups, 5 files"
    for group in library.call("duplicates")["groups"]:
        header = f"group {1 + [g[0]['path'] for g in library.call('duplicates')['groups']].index(group[0]['path'])}"
        assert f"{header} ({len(group)} files)" in lines
        for member in group:
            (row,) = [line for line in lines if line.endswith("  " + member["path"])]
            assert row.split()[0] == member["method"], row
    assert library.ctl("duplicates", "--under", str(library.outside))[1].strip() == "no duplicates"


def test_query_an_indexed_file_an_outside_copy_and_a_missing_file(library: Library, photo_bytes) -> None:
    root = library.root
    indexed = library.call("query", path=str(root / "p1_q60.jpg"))
    assert indexed["file"] == str(root / "p1_q60.jpg")
    assert [m["path"] for m in indexed["matches"]] == [str(root / "p1.jpg")]
    outside = library.outside / "a_again.jpg"
    shutil.copy(root / "a.jpg", outside)  # not indexed: encoded in the daemon, compared with the index
    found = library.call("query", path=str(outside))["matches"]
    copies = {str(root / "a.jpg"), str(root / "b.jpg"), str(library.archive / "a_archived.jpg")}
    assert {m["path"] for m in found} == copies
    assert all(m["method"] == "exact" for m in found)
    stranger = library.outside / "stranger.jpg"
    stranger.write_bytes(photo_bytes[100])
    assert library.call("query", path=str(stranger))["matches"] == []
    by_hash = library.call("query", path=str(root / "p1.jpg"), method="phash", threshold=64)["matches"]
    assert str(root / "p1_q60.jpg") in {m["path"] for m in by_hash} and len(by_hash) > 1  # 64 bits: everything
    explained = library.call("query", path=str(root / "p1.jpg"), explain=True)
    evidence = explained["explain"][str(root / "p1_q60.jpg")]
    assert evidence["decision"] in ("phash", "cnn") and evidence["exact"] is False
    assert evidence["oriented_distance"] <= 10 and 0 < evidence["similarity"] <= 1
    with pytest.raises(ProtocolError) as missing:
        library.call("query", path=str(library.outside / "nowhere.jpg"))
    assert missing.value.code == "not_found"
    (library.outside / "notes.jpg").write_text("not an image")
    with pytest.raises(ProtocolError) as broken:
        library.call("query", path=str(library.outside / "notes.jpg"))
    assert broken.value.code == "bad_args" and "unsupported_format" in str(broken.value)


def test_needles_says_which_images_and_which_folders_are_already_in_the_library(library: Library,
                                                                               photo_bytes) -> None:
    backup = library.outside / "backup"
    (backup / "2019").mkdir(parents=True)
    (backup / "2020").mkdir()
    shutil.copy(library.root / "unique2.jpg", backup / "2019" / "x.jpg")
    (backup / "2019" / "y.jpg").write_bytes(recompressed(photo_bytes[3], 80))  # unique3.jpg, re-compressed
    shutil.copy(library.root / "unique4.jpg", backup / "2020" / "z.jpg")
    (backup / "2020" / "new.jpg").write_bytes(photo_bytes[101])
    (backup / "2020" / "readme.txt").write_text("not an image")
    result = library.call("needles", dir=str(backup))
    assert (result["found"], result["total"]) == (3, 4)
    assert [m["path"] for m in result["files"][str(backup / "2019" / "x.jpg")]] == [str(library.root / "unique2.jpg")]
    assert result["files"][str(backup / "2020" / "new.jpg")] == []
    folders = {f["path"]: (f["images"], f["in_library"], f["all"]) for f in result["folders"]}
    assert folders == {str(backup): (4, 3, False), str(backup / "2019"): (2, 2, True),
                       str(backup / "2020"): (2, 1, False)}
    with pytest.raises(ProtocolError) as missing:
        library.call("needles", dir=str(library.outside / "nowhere"))
    assert missing.value.code == "not_found"


def test_to_remove_keeps_one_file_per_group_and_never_proposes_a_protected_root(library: Library) -> None:
    root = library.root
    files = library.call("to-remove")["files"]
    # Exact group: the archived copy is protected, so it is the keeper; both library copies may go.
    # Near group: p1.jpg has the same pixels and is the larger file: the re-compressed copy goes.
    assert files == sorted([str(root / "a.jpg"), str(root / "b.jpg"), str(root / "p1_q60.jpg")])
    assert not [path for path in files if path.startswith(str(library.archive))]
    assert library.call("to-remove", method="exact")["files"] == sorted([str(root / "a.jpg"), str(root / "b.jpg")])
    assert library.call("to-remove", under=str(library.outside))["files"] == []


def test_a_page_of_groups_ranked_by_space_to_free_comes_with_plans_records_and_totals(library: Library) -> None:
    """What the review page's first page needs in one request: `duplicates` with order "free", offset, limit
    and records (DESIGN.md's `duplicates` answer plus optional fields)."""
    root, archive = library.root, library.archive
    size = {name: (root / name).stat().st_size for name in ("a.jpg", "b.jpg", "p1_q60.jpg")}
    first = library.call("duplicates", **validate("duplicates", {"order": "free", "limit": 1, "records": True}))
    assert (first["order"], first["offset"], first["total"]) == ("free", 0, 2)
    assert first["free_bytes"] == size["a.jpg"] + size["b.jpg"] + size["p1_q60.jpg"]
    [group] = first["groups"]  # the three copies of a.jpg free the most: two files go
    assert [m["path"] for m in group] == sorted([str(root / "a.jpg"), str(root / "b.jpg"),
                                                 str(archive / "a_archived.jpg")])
    assert group == library.call("duplicates", method="exact")["groups"][0]  # members as `duplicates` lists them
    plan = next(p for p in library.call("to-remove")["groups"] if p["keep"] == [str(archive / "a_archived.jpg")])
    assert first["plans"] == [{**plan, "free_bytes": size["a.jpg"] + size["b.jpg"]}]  # to-remove's plan
    assert sorted(plan["remove"]) == sorted([str(root / "a.jpg"), str(root / "b.jpg")])
    assert set(first["records"]) == {m["path"] for m in group}
    assert first["records"][str(root / "b.jpg")]["size"] == size["b.jpg"]
    second = library.call("duplicates", **validate("duplicates", {"order": "free", "offset": 1, "limit": 5}))
    assert [m["path"] for m in second["groups"][0]] == [str(root / "p1.jpg"), str(root / "p1_q60.jpg")]
    assert second["plans"][0]["remove"] == [str(root / "p1_q60.jpg")] and "records" not in second
    by_path = library.call("duplicates", **validate("duplicates", {"offset": 1}))
    assert by_path["total"] == 2 and by_path["groups"] == library.call("duplicates")["groups"][1:]
    with pytest.raises(ProtocolError):
        validate("duplicates", {"order": "size"})
    shutil.copy(root / "a.jpg", root / "c.jpg")  # a commit: the ranking the daemon kept is made again
    library.idle()
    again = library.call("duplicates", **validate("duplicates", {"order": "free", "limit": 1}))
    assert str(root / "c.jpg") in again["plans"][0]["remove"]
    assert again["free_bytes"] == first["free_bytes"] + size["a.jpg"]


def test_the_review_pages_first_page_before_its_list_equals_the_page_from_the_list(library: Library) -> None:
    """A review server that just started answers its first page from one ranked page request; the page
    from the whole list, once loaded, is the same."""

    def ask(command: str, args: Any) -> dict[str, Any]:
        return library.call(command, **validate(command, args))

    review = ReviewLibrary(ask)
    cold = review.page("duplicates", 0, 1)
    assert cold["refreshing"] and cold["total"] == 2 and len(cold["groups"]) == 1
    card = cold["groups"][0]
    assert review.find("duplicates", card["id"]).document() == card  # an action may name it at once
    review.cards("duplicates")  # waits for the list
    deadline = time.monotonic() + 120
    while review.page("duplicates", 0, 1)["refreshing"] and time.monotonic() < deadline:
        time.sleep(0.05)
    warm = review.page("duplicates", 0, 1)
    assert {k: v for k, v in warm.items() if k != "refreshing"} == {k: v for k, v in cold.items() if k != "refreshing"}
    assert review.page("duplicates", 1, 1)["groups"][0]["members"][0]["path"] == str(library.root / "p1.jpg")


def test_ignore_takes_a_pair_out_of_every_answer_and_refuses_unknown_files(library: Library) -> None:
    root = library.root
    assert library.call("ignore", paths=[str(root / "p1.jpg"), str(root / "p1_q60.jpg")]) == {"ignored": 1}
    assert library.call("ignore", paths=[str(root / "p1.jpg"), str(root / "p1_q60.jpg")]) == {"ignored": 0}
    groups = paths_of(library.call("duplicates")["groups"])
    assert not [group for group in groups if str(root / "p1.jpg") in group]
    assert library.call("query", path=str(root / "p1.jpg"))["matches"] == []
    assert str(root / "p1_q60.jpg") not in library.call("to-remove")["files"]
    with pytest.raises(ProtocolError) as unknown:
        library.call("ignore", paths=[str(root / "a.jpg"), str(library.outside / "nowhere.jpg")])
    assert unknown.value.code == "not_found"
    assert len(library.call("duplicates")["groups"]) == 1  # the exact group is untouched


def test_a_copy_that_lands_later_joins_its_group_and_counts_in_status(library: Library) -> None:
    before = library.call("status")["counts"]
    shutil.copy(library.root / "unique5.jpg", library.root / "unique5 copy.jpg")
    library.idle()
    status = library.call("status")["counts"]
    assert status["indexed"] == before["indexed"] + 1
    assert status["duplicates"] == before["duplicates"] + 1
    assert status["decodes"] == before["decodes"] and status["reused"] == before["reused"] + 1  # read, not decoded
    assert {str(library.root / "unique5.jpg"), str(library.root / "unique5 copy.jpg")} in [
        set(group) for group in paths_of(library.call("duplicates")["groups"])]

