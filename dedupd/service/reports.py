"""Duplicate reports on disk: one JSON file per duplicate event, plus the live `duplicates.json` summary.

Owns the report format (DESIGN.md "Reports"), atomic writes (temp file in the same directory, fsync,
rename, fsync of the directory: a reader never sees half a report, a crash never leaves one), the
throttled summary refresh, and pruning by age. Knows nothing of how duplicates are found.
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from dedupd.records import Match

log = logging.getLogger(__name__)

REPORT_SCHEMA = 1
SUMMARY_NAME = "duplicates.json"


def match_document(match: Match) -> dict[str, Any]:
    """A match as reports and the control protocol show it."""
    document: dict[str, Any] = {"path": match.path, "method": match.method}
    if match.similarity is not None:
        document["similarity"] = round(match.similarity, 4)
    else:
        document["distance"] = match.distance
    return document


def write_json_atomically(path: Path, document: Any) -> None:
    """Write `document` so that `path` holds either the old content or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class ReportWriter:
    """Writes event reports and the summary under `report_dir`; thread-safe."""

    def __init__(self, report_dir: Path, *, retention_days: int = 90, summary_interval_s: float = 2.0) -> None:
        self.report_dir = report_dir
        self.retention_days = retention_days
        self.summary_interval_s = summary_interval_s
        self._lock = threading.Lock()
        self._sequence = 0
        self._summary_written_at = 0.0
        self._summary_dirty = False
        self.written = 0

    def write_event(self, file: str, matches: Sequence[Match], root: str, detected_at: datetime | None = None,
                    companions: Sequence[Mapping[str, object]] = ()) -> Path:
        """One report for one duplicate event: `file` just arrived and matches `matches`; its `companions`
        (sidecars and motion file, `dedupd.companions`, as the store knows them then) when it has any."""
        moment = detected_at or datetime.now(UTC).astimezone()
        with self._lock:
            self._sequence += 1
            name = f"{moment:%H%M%S}-{moment.microsecond:06d}-{self._sequence:06d}.json"
            path = self.report_dir / f"{moment:%Y-%m-%d}" / name
            write_json_atomically(path, {
                "schema": REPORT_SCHEMA,
                "detected_at": moment.isoformat(),
                "file": file,
                "matches": [match_document(match) for match in matches],
                "root": root,
                **({"companions": list(companions)} if companions else {}),
            })
            self.written += 1
            self._summary_dirty = True
        return path

    def mark_summary_dirty(self) -> None:
        """The groups changed (e.g. a delete split one): the summary needs a refresh."""
        with self._lock:
            self._summary_dirty = True

    def refresh_summary(self, groups: Callable[[], list[list[dict[str, Any]]]], *, force: bool = False) -> bool:
        """Rewrite duplicates.json if it is out of date and the last write is old enough (or `force`)."""
        with self._lock:
            due = time.monotonic() - self._summary_written_at >= self.summary_interval_s
            if not (self._summary_dirty and (due or force)):
                return False
            self._summary_dirty = False
            self._summary_written_at = time.monotonic()
        current = groups()
        write_json_atomically(self.report_dir / SUMMARY_NAME, {
            "schema": REPORT_SCHEMA,
            "updated_at": datetime.now(UTC).astimezone().isoformat(),
            "groups": current,
        })
        return True

    def prune(self, today: date | None = None) -> int:
        """Delete day folders older than the retention period; returns how many were removed."""
        if self.retention_days <= 0 or not self.report_dir.is_dir():
            return 0
        cutoff = (today or date.today()) - timedelta(days=self.retention_days)
        removed = 0
        for entry in self.report_dir.iterdir():
            try:
                day = date.fromisoformat(entry.name)
            except ValueError:
                continue
            if entry.is_dir() and day < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        if removed:
            log.info("pruned %d day(s) of reports older than %d days", removed, self.retention_days)
        return removed
