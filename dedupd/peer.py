"""Who may serve the control socket: one rule for the daemon and for `dedupctl`.

The socket's directory decides who can put a socket at its path. The daemon refuses to serve in a directory
owned by another user or writable by its group or others (anyone able to rename there could swap in their own
socket). `dedupctl` believes an answer only from a server running as root, as itself, or as the owner of the
socket's directory when nobody but root or that owner could have made the directory there (its parent is
writable by no one else): `/run/dedupd` of the system service, `$XDG_RUNTIME_DIR/dedupd` of a user daemon,
yes; a `/tmp/dedupd-<uid>` that another local user made first, no. The server's uid comes from the kernel
(SO_PEERCRED), not from anything the server says. Stdlib only: `dedupctl` imports it.
"""

import os
import socket
import stat
import struct

#: struct ucred {pid_t pid; uid_t uid; gid_t gid;} as SO_PEERCRED returns it.
_UCRED = struct.Struct("3i")
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket, from the kernel."""
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


def socket_dir_refusal(directory: str | os.PathLike[str], uid: int) -> str | None:
    """Why a daemon running as `uid` must not serve a socket in `directory` (None: it may)."""
    st = os.stat(directory)
    if st.st_uid not in (uid, 0):
        return (f"the socket directory {os.fspath(directory)} belongs to uid {st.st_uid}, not to this dedupd "
                f"(uid {uid}) or root: another user may have made it to answer in dedupd's place")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        who = "everyone" if st.st_mode & stat.S_IWOTH else "its group"
        return (f"the socket directory {os.fspath(directory)} is writable by {who} (mode "
                f"{stat.S_IMODE(st.st_mode):o}): they could put their own socket in dedupd's place")
    return None


def trusted_server_uids(socket_path: str | os.PathLike[str], uid: int) -> set[int]:
    """The uids a client running as `uid` believes on `socket_path` (see the module doc)."""
    trusted = {0, uid}
    directory = os.path.dirname(os.path.abspath(socket_path))
    try:
        own, parent = os.stat(directory), os.stat(os.path.dirname(directory))
    except OSError:
        return trusted
    if not own.st_mode & _WRITABLE_BY_OTHERS and parent.st_uid in (0, own.st_uid) \
            and not parent.st_mode & _WRITABLE_BY_OTHERS:
        trusted.add(own.st_uid)
    return trusted
