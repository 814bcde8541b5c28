"""Taking a batch off a bounded work queue: the one `gather` of the daemon's pipeline stages and the scan's CNN
thread."""

import queue
import time


def gather[T](source: queue.Queue[T | None], first: T, limit: int, wait_s: float) -> list[T]:
    """A batch: `first` plus what arrives within `wait_s` (0: only what is already queued), at most `limit` items.

    A None (the stop sentinel) ends the batch and is put back for the loop to see.
    """
    batch = [first]
    deadline = time.monotonic() + wait_s
    while len(batch) < limit:
        try:
            item = source.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if item is None:
            source.put(None)
            break
        batch.append(item)
    return batch
