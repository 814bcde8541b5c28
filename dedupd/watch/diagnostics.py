"""What the system says about a root's watches: the inotify sysctls, worded for the root's status line (its
filesystem type is dedupd.mounts')."""

from __future__ import annotations


def read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return None


def watch_limit_detail(missing: int, wanted: int, interval_s: float) -> str:
    """Names the sysctl that binds (the per-user-namespace one when it is the lower) and how far to raise it."""
    limits = {
        name: value
        for name, value in (
            ("fs.inotify.max_user_watches", read_int("/proc/sys/fs/inotify/max_user_watches")),
            ("user.max_inotify_watches", read_int("/proc/sys/user/max_inotify_watches")),
        )
        if value is not None
    }
    name, limit = min(limits.items(), key=lambda item: item[1]) if limits else ("fs.inotify.max_user_watches", 0)
    return (
        f"inotify watch limit reached: {missing} of {wanted} directories have no watch, so the root is rescanned "
        f"every {interval_s:g} s; raise {name} (now {limit}) to at least {limit + missing}, "
        f"e.g. sysctl -w {name}={max(limit + missing, 2 * limit)}"
    )
