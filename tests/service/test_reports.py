"""Report files (dedupd.service.reports): format, atomic writes, the summary, pruning."""

import json
from datetime import date, datetime, timedelta
from pathlib import Path

from dedupd.records import Match
from dedupd.service.reports import SUMMARY_NAME, ReportWriter


def test_event_report_format(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    moment = datetime(2026, 11, 23, 14, 5, 6, 789).astimezone()
    path = writer.write_event("/p/new.jpg", [Match("/p/a.jpg", "exact", distance=0),
                                             Match("/p/b.jpg", "cnn", similarity=0.87654)], "/p", moment)
    assert path.parent.name == "2026-11-23" and path.name.startswith("140506-000789-")
    document = json.loads(path.read_text())
    assert document == {
        "schema": 1, "detected_at": moment.isoformat(), "file": "/p/new.jpg", "root": "/p",
        "matches": [{"path": "/p/a.jpg", "method": "exact", "distance": 0},
                    {"path": "/p/b.jpg", "method": "cnn", "similarity": 0.8765}],
    }
    assert not list(path.parent.glob(".*.tmp")), "no temp file is left behind"
    sidecar = {"path": "/p/IMG_1.xmp", "kind": "sidecar", "shared": True}
    attached = writer.write_event("/p/IMG_1.JPG", [Match("/p/a.jpg", "exact", distance=0)], "/p", moment,
                                  companions=[sidecar])
    assert json.loads(attached.read_text())["companions"] == [sidecar]  # only when the file has any


def test_reports_in_one_second_get_distinct_names(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    moment = datetime(2026, 11, 23, 14, 5, 6).astimezone()
    paths = {writer.write_event(f"/p/{i}.jpg", [], "/p", moment) for i in range(20)}
    assert len(paths) == 20 and writer.written == 20


def test_summary_is_throttled_unless_forced(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path, summary_interval_s=3600)
    calls: list[int] = []

    def groups() -> list[list[dict[str, object]]]:
        calls.append(1)
        return [[{"path": "/p/a.jpg"}, {"path": "/p/b.jpg"}]]

    assert not writer.refresh_summary(groups)  # nothing changed yet
    writer.mark_summary_dirty()
    assert writer.refresh_summary(groups, force=True)
    writer.mark_summary_dirty()
    assert not writer.refresh_summary(groups)  # written moments ago
    assert len(calls) == 1
    assert json.loads((tmp_path / SUMMARY_NAME).read_text())["groups"] == groups()


def test_prune_removes_only_old_day_folders(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path, retention_days=30)
    today = date(2026, 11, 23)
    for age in (0, 29, 31, 400):
        (tmp_path / (today - timedelta(days=age)).isoformat()).mkdir()
    (tmp_path / "notes").mkdir()
    assert writer.prune(today) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-10-25", "2026-11-23", "notes"]
