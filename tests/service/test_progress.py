"""Scan progress in images (rate, estimate) and the once-per-burst duplicate log, with a fake clock."""

import logging
from pathlib import Path

import pytest

from dedupd.records import Match
from dedupd.service.progress import DuplicateLog, Progress, ScanProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reads_as_images_with_rate_and_estimate() -> None:
    assert Progress(120, 470, False, 10.0).text() == "120 of 470 images, 12.0/s, about 29 s left"
    assert Progress(120, 470, True, 10.0).text() == "120 of 470+ images, 12.0/s, at least 29 s left"
    assert Progress(0, 470, True, 0.2).text() == "0 of 470+ images"
    assert Progress(10, 100_000, False, 10.0).text() == "10 of 100,000 images, 1.0/s, about 27.8 h left"
    document = Progress(120, 470, False, 10.0).document()
    assert (document["done"], document["total"], document["rate"], document["eta_s"]) == (120, 470, 12.0, 29.2)


def test_a_scan_is_followed_from_its_start_and_logged_when_done(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = ScanProgress(clock)
    assert progress.observe(False, 5, 0, False) is None
    with caplog.at_level(logging.INFO, "dedupd.service.progress"):
        first = progress.observe(True, 5, 40, True)
        assert first is not None and (first.done, first.total, first.walking) == (0, 40, True)
        clock.now += 31
        later = progress.observe(True, 25, 20, False)
        assert later is not None and (later.done, later.total) == (20, 40) and progress.last() == later
        clock.now += 9
        assert progress.observe(False, 45, 0, False) is None and progress.last() is None
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["scanning: 20 of 40 images, 0.6/s, about 31 s left",
                        "first scan done: 40 images encoded in 40 s (1.0 images/s)"]
    progress.observe(True, 45, 1, False)
    with caplog.at_level(logging.INFO, "dedupd.service.progress"):
        progress.observe(False, 46, 0, False)
    assert caplog.records[-1].getMessage().startswith("scan done: 1 images encoded")
    progress.begin(46)  # a scan that ends before anyone looked is still said
    clock.now += 1
    with caplog.at_level(logging.INFO, "dedupd.service.progress"):
        assert progress.observe(False, 50, 0, False) is None
    assert caplog.records[-1].getMessage() == "scan done: 4 images encoded in 1 s (4.0 images/s)"


def test_duplicates_are_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    duplicates = DuplicateLog(clock, gap_s=10.0)
    match = Match(path="/p/a.jpg", method="exact", distance=0)
    with caplog.at_level(logging.INFO, "dedupd.service.progress"):
        duplicates.record(["/p/a.jpg", "/p/b.jpg"], {}, {})
        clock.now += 5
        duplicates.record(["/p/c.jpg"], {"/p/c.jpg": [match]}, {"/p/c.jpg": Path("/r/c.json")})
        clock.now += 9
        duplicates.flush()
        assert caplog.records == []
        clock.now += 1
        duplicates.flush()
        duplicates.flush()
        duplicates.record(["/p/d.jpg"], {}, {})
        duplicates.flush(force=True)  # a burst without duplicates says nothing
    assert [record.getMessage() for record in caplog.records] == [
        "1 duplicate among 3 new photos in /p; c.jpg is a copy of a.jpg; report: /r/c.json; "
        "all duplicates: dedupctl duplicates"]
