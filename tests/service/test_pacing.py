"""The daemon loop's pacing of its whole-library refreshes (`service.daemon.Paced`)."""

import time

from dedupd.service.daemon import REFRESH_SHARE, Paced


def test_a_new_job_is_due() -> None:
    assert Paced(REFRESH_SHARE).due()


def test_a_slow_run_waits_for_its_share() -> None:
    pace = Paced(0.05)
    pace.ran(time.monotonic() - 1.0)  # a run that took 1 s: due again 20 s after it started
    assert not pace.due()


def test_a_run_at_full_share_is_due_at_once() -> None:
    pace = Paced(1.0)
    pace.ran(time.monotonic() - 1.0)  # next = start + its own duration = now
    assert pace.due()
