"""The one reader of /proc/self/mountinfo: which filesystem holds a path, and which types are network ones.

Used by the store (LMDB refuses a state dir on a network filesystem) and the watcher (a root on one is polled:
inotify never sees changes other hosts make). A mount point can hold several mounts: an automounted share is an
`autofs` line with the real mount (`nfs4`, `cifs`, ...) mounted on top of it, listed after it, so the later line
at one mount point wins (the kernel lists mounts in the order they were made).
"""

from __future__ import annotations

import re

from dedupd.pathnames import is_under

MOUNTINFO = "/proc/self/mountinfo"

#: Filesystem types whose changes made by other hosts inotify never sees, and where LMDB's locking is unsafe.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smbfs", "smb2", "smb3", "ncpfs", "9p", "afs", "coda", "ceph",
        "glusterfs", "lustre", "gpfs", "ocfs2", "gfs2", "davfs", "fuse.sshfs", "fuse.glusterfs",
        "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "fuse.davfs2", "fuse.gcsfuse", "fuse.juicefs",
    }
)  # fmt: skip

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mountinfo(path: str = MOUNTINFO) -> str | None:
    """The text of a mountinfo file, None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return file.read()
    except OSError:
        return None


def filesystem_type(path: str, mountinfo: str | None = None) -> str:
    """The type of the filesystem holding absolute `path`: the mount with the longest mount point above it, the
    last listed of those at one point (mounted on top). `mountinfo`: the text (default: this process's); "" if
    unknown."""
    if mountinfo is None:
        mountinfo = read_mountinfo()
        if mountinfo is None:
            return ""
    best, fstype = -1, ""
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5 or not tail.split():
            continue
        mount_point = _unescape(fields[4])
        if is_under(path, mount_point) and len(mount_point) >= best:
            best, fstype = len(mount_point), tail.split()[0]
    return fstype
