"""Run a command under the seccomp rules a unit file asks systemd for, as test_units.py does with the daemon.

Usage: unit_sandbox.py UNIT_FILE COMMAND...

Applies, as systemd.exec(5) describes them: SystemCallFilter= (an allow-list of the sets, expanded by
`systemd-analyze syscall-filter`) with SystemCallErrorNumber= for the rest, RestrictAddressFamilies= (other
families: EAFNOSUPPORT), MemoryDenyWriteExecute=yes (no writable+executable mmap, no mprotect to executable),
and NoNewPrivileges (libseccomp sets it). Mount and user namespaces are not applied here.
"""

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyseccomp as seccomp

PROT_WRITE, PROT_EXEC = 0x2, 0x4


def unit_settings(path: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def expand(group: str) -> set[str]:
    """The system calls of a `@set` (nested sets expanded) on this machine's systemd."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1:]
    names: set[str] = set()
    for line in listing:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= expand(word) if word.startswith("@") else {word}
    return names


def add(rules: seccomp.SyscallFilter, action: object, name: str, *args: object) -> None:
    try:
        rules.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):
        pass  # a name this architecture does not have (systemd skips those too)


def main() -> int:
    unit = unit_settings(Path(sys.argv[1]))
    default = seccomp.ERRNO(getattr(errno, unit.get("SystemCallErrorNumber", "EPERM")))
    rules = seccomp.SyscallFilter(defaction=default)
    (family,) = (getattr(socket, name) for name in unit["RestrictAddressFamilies"].split())  # one, in our units
    deny_wx = unit.get("MemoryDenyWriteExecute") == "yes"
    allowed = set().union(*(expand(group) for group in unit["SystemCallFilter"].split()))
    for name in sorted(allowed):
        if name in ("socket", "socketpair"):  # RestrictAddressFamilies= answers other families EAFNOSUPPORT
            add(rules, seccomp.ALLOW, name, seccomp.Arg(0, seccomp.EQ, family))
            add(rules, seccomp.ERRNO(errno.EAFNOSUPPORT), name, seccomp.Arg(0, seccomp.NE, family))
        elif name == "mmap" and deny_wx:
            for prot in (0, PROT_WRITE, PROT_EXEC):
                add(rules, seccomp.ALLOW, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_WRITE | PROT_EXEC, prot))
        elif name in ("mprotect", "pkey_mprotect") and deny_wx:
            add(rules, seccomp.ALLOW, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, 0))
        else:
            add(rules, seccomp.ALLOW, name)
    rules.load()
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
