"""Thumbnails made in the encode pool (worker processes with crash and timeout isolation), on demand.

The review server asks for one thumbnail at a time per browser request; each waits for its worker's
outcome. A file that cannot be decoded has no thumbnail (the page shows its name instead).
"""

from concurrent.futures import TimeoutError as FutureTimeout

from dedupd.encodepool import EncodePool
from dedupd.imaging.decode import DEFAULT_MAX_PIXELS
from dedupd.imaging.thumbnail import Thumbnail

#: How long one thumbnail may take (a large photo decodes at reduced size; this only bounds a stuck one).
THUMBNAIL_TIMEOUT_S = 30.0

#: The workers start with the first thumbnail not in a cache and stop after this long without one (a page
#: whose thumbnails are all cached needs none, and the server may stay up for its idle timeout).
THUMBNAIL_IDLE_STOP_S = 120.0


class ThumbnailPool:
    """`make(path, size)` -> Thumbnail or None, from `workers` encode-pool processes."""

    def __init__(self, workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._pool: EncodePool[None] = EncodePool(workers, lambda token, outcome: None,
                                                  timeout_s=THUMBNAIL_TIMEOUT_S, max_pixels=max_pixels,
                                                  idle_stop_s=THUMBNAIL_IDLE_STOP_S)

    def start(self) -> None:
        self._pool.start()

    def close(self) -> None:
        self._pool.close()

    def make(self, path: str, size: int) -> Thumbnail | None:
        try:
            outcome = self._pool.thumbnail(path, size).result(THUMBNAIL_TIMEOUT_S + 5.0)
        except (FutureTimeout, RuntimeError):
            return None
        return outcome if isinstance(outcome, Thumbnail) else None
