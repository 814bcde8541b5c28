"""Watching photo roots: the `Watcher` facade, `RootSpec`, `scan()` and the default excludes (the only package
that imports watchdog). One module per job: policy (globs), walk (the walker), diagnostics (mountinfo, sysctls),
events (watchdog events -> Changes), inotify and polling (the backends), _watchdog_private (the hooks into
watchdog's internals), prober, root (one root's state machine), watcher (the facade)."""

from dedupd.watch.policy import DEFAULT_EXCLUDE, RootSpec
from dedupd.watch.root import DEGRADED, OFFLINE, POLLING, WATCHING
from dedupd.watch.walk import scan
from dedupd.watch.watcher import Watcher

__all__ = ["DEFAULT_EXCLUDE", "DEGRADED", "OFFLINE", "POLLING", "WATCHING", "RootSpec", "Watcher", "scan"]
