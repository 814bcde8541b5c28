"""What the system says about a root: its filesystem type (from /proc/self/mountinfo) and the inotify sysctls,
worded for the root's status line."""

from __future__ import annotations

import re

#: Filesystem types (/proc/self/mountinfo) whose changes made by other hosts inotify never sees: polled on "auto".
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "fuse.rclone", "fuse.glusterfs", "ceph", "9p", "davfs"}
)


def filesystem_type(path: str, mountinfo: str | None = None) -> str:
    """Type of the filesystem holding `path` (longest mount point prefix in /proc/self/mountinfo), "" if unknown."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
                mountinfo = file.read()
        except OSError:
            return ""
    best, fstype = -1, ""
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail:
            continue
        mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best:
            best, fstype = len(mount_point), tail.split()[0]
    return fstype


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
