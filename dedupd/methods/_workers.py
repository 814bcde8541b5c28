"""The facades' decode workers: one per-file job over a folder's files in `EncodePool` processes, in input order.

A file whose decoder crashes, hangs (past the pool's timeout) or cannot read it costs that file only: it is
logged with imagededup's "Invalid image file" warning and yields None, and the other files are encoded.
"""

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from dedupd.encodepool import EncodePool, Job, WorkersCannotStart
from dedupd.errors import Skipped

log = logging.getLogger(__name__)

#: Failed starts in a row after which the call fails instead of waiting (a script without the `__main__` guard).
START_ATTEMPTS = 3


def warn_invalid(path: str | os.PathLike[str], skip: Skipped) -> None:
    """imagededup's warning for a file it cannot read (its message, our reason)."""
    log.warning("Invalid image file %s:\n%s", path, skip.detail)


def decoded[R](job: Job[R], files: Sequence[Path], workers: int, verbose: bool) -> Iterator[tuple[Path, R | None]]:
    """`(path, job(path))` for each file in order, None for a file that was skipped; at least one worker process
    (the caller's own process never decodes a folder), a progress bar on stderr if `verbose`."""
    if not files:
        return
    pool = EncodePool[None](max(1, workers), _no_submissions, start_attempts=START_ATTEMPTS)
    with tqdm(total=len(files), disable=not verbose) as bar, pool:
        try:
            for path, outcome in zip(files, pool.imap(job, files), strict=True):
                bar.update()
                if isinstance(outcome, Skipped):
                    warn_invalid(path, outcome)
                    yield path, None
                else:
                    yield path, outcome
        except WorkersCannotStart as exc:
            raise WorkersCannotStart(f"{exc}: a script that calls this needs the `if __name__ == \"__main__\":` "
                                     "guard (the workers are started with spawn and import it)") from None


def _no_submissions(token: None, outcome: object) -> None:
    """`on_result` of a pool that only runs requests (`imap`): never called."""
