"""`dedupd install-unit`: the shipped systemd units, rendered for this installation, written where systemd reads them.

Owns which files a system or a user installation gets (systemd/dedupd.service, or systemd/dedupd.user.service
installed as dedupd.service; systemd/dedupd.socket on request), pointing their ExecStart= at this environment's
`dedupd` script, and the user unit's mount-sandbox drop-in: added only where unprivileged user namespaces work
(a user manager needs PrivateUsers= to mount), with the state and report directories the daemon's config names
made writable. The result is a `Plan` that the CLI prints (`--dry-run`) or writes; systemctl is run only by
`enable`, never implicitly.
"""

import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dedupd import paths
from dedupd.config import load_settings
from dedupd.errors import ConfigError, DedupdError

#: The units' sources: systemd/ of the source tree this package runs from (a checkout or an editable install),
#: else where the package installed them (data-files: <prefix>/share/dedupd/systemd).
_TREE_UNITS = Path(__file__).resolve().parents[2] / "systemd"
UNITS_DIR = _TREE_UNITS if (_TREE_UNITS / "dedupd.service").is_file() else Path(sys.prefix) / "share/dedupd/systemd"
#: ExecStart='s program in the shipped files, where a distribution package would install it.
PACKAGED_EXECUTABLE = "/usr/bin/dedupd"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
#: Where the system unit's StateDirectory= and RuntimeDirectory= put the daemon's files.
SYSTEM_WRITABLE = (Path("/var/lib/dedupd"), Path("/run/dedupd"))
SERVICE = "dedupd.service"
SOCKET = "dedupd.socket"


@dataclass(frozen=True, slots=True)
class UnitFile:
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What an installation writes and what the user runs next."""

    system: bool
    files: tuple[UnitFile, ...]
    #: Created before the units are written: ReadWritePaths= fails the start when a directory is missing.
    directories: tuple[Path, ...]
    commands: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]


def dedupd_executable() -> Path:
    """The `dedupd` console script of the running environment: beside the interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "dedupd"  # not resolved: a venv's python is a symlink out of it
    if os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("dedupd")
    if found is None:
        raise DedupdError("no `dedupd` program in this environment; install dedupd or pass --executable")
    return Path(found).absolute()


def user_unit_dir(environ: Mapping[str, str] | None = None) -> Path:
    """~/.config/systemd/user, following XDG_CONFIG_HOME, where a user manager reads its units."""
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME", "")
    return (Path(config) if os.path.isabs(config) else paths.home(env) / ".config") / "systemd" / "user"


def user_namespaces_available() -> bool:
    """Whether this user may create a user namespace, what PrivateUsers= needs; tried in a child process."""
    probe = subprocess.run([sys.executable, "-c", "import os; os.unshare(os.CLONE_NEWUSER)"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return probe.returncode == 0


def unit_word(path: Path | str) -> str:
    """A path as one word of a unit setting: '%' escaped (specifiers), quoted when it has spaces or quotes."""
    text = str(path).replace("%", "%%")
    if any(char in text for char in " \t\"'\\"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def with_executable(text: str, executable: Path) -> str:
    """The unit text with ExecStart= running `executable` instead of the packaged path."""
    packaged = f"ExecStart={PACKAGED_EXECUTABLE} "
    lines = [f"ExecStart={unit_word(executable)} " + line.removeprefix(packaged) if line.startswith(packaged)
             else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _source(name: str) -> str:
    try:
        return (UNITS_DIR / name).read_text()
    except FileNotFoundError:
        raise DedupdError(f"the unit files are not installed with this copy of dedupd ({UNITS_DIR / name} is "
                          "missing); reinstall the package, or run install-unit from a source checkout") from None


def _unit_environ(system: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the daemon will see under the unit: no DEDUPD_* from this shell, the unit's mode, and
    the runtime directory a user manager always sets."""
    env = {key: value for key, value in environ.items() if not key.startswith("DEDUPD_")}
    env[paths.SYSTEM_ENV] = "1" if system else "0"
    if not system and not os.path.isabs(env.get("XDG_RUNTIME_DIR", "")):
        env["XDG_RUNTIME_DIR"] = f"/run/user/{os.getuid()}"
    return env


def _daemon_locations(env: Mapping[str, str], notes: list[str]) -> tuple[list[Path], list[Path]]:
    """The directories the daemon will write (state, reports, socket) and its roots, from its config."""
    try:
        settings = load_settings(None, env)
    except ConfigError as exc:
        notes.append(f"note: the config does not load ({exc}); the units assume the default locations")
        defaults = paths.default_locations(env)
        return [defaults.state_dir, defaults.report_dir, defaults.socket.parent], []
    return ([settings.state_dir, settings.report_dir, settings.socket.parent],
            [Path(root.path) for root in settings.roots])


def _outermost(directories: list[Path]) -> list[Path]:
    """The directories not inside another one of them, in order, without repeats."""
    unique = list(dict.fromkeys(directories))
    return [d for d in unique if not any(d != other and d.is_relative_to(other) for other in unique)]


def _others_can_read(path: Path) -> bool:
    """Whether a user with no relation to `path` (the system unit's dynamic user) can read it."""
    try:
        for ancestor in reversed(path.parents):
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def _system_notes(writable: list[Path], roots: list[Path], executable: Path) -> list[str]:
    notes = []
    outside = [d for d in _outermost(writable) if not any(d.is_relative_to(w) for w in SYSTEM_WRITABLE)]
    if outside:
        notes.append(f"note: {', '.join(map(str, outside))} is outside /var/lib/dedupd and /run/dedupd: add "
                     "ReadWritePaths= and a User= that owns it with `systemctl edit dedupd`")
    for program in (executable, _interpreter(executable)):
        if program is not None and not _others_can_read(program):
            notes.append(f"warning: {program} is not readable by other users, so not by the service's dynamic "
                         "user: install dedupd where it is (e.g. a venv under /opt)")
    unreadable = [str(root) for root in roots if not _others_can_read(root)]
    if unreadable:
        notes.append(f"warning: the service's dynamic user cannot read {', '.join(unreadable)}: make the roots "
                     "readable by others, or add SupplementaryGroups= or User= with `systemctl edit dedupd`")
    return notes


def _interpreter(script: Path) -> Path | None:
    """The program on a script's `#!` line, resolved (a venv's python links to the real one)."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return Path(words[0]).resolve() if words and os.path.isabs(words[0]) else None


#: What PrivateTmp= replaces by an empty private directory: a unit with it cannot see files there.
TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))


def _under_tmp(paths_seen: list[Path]) -> list[Path]:
    return [path for path in dict.fromkeys(paths_seen)
            if any(Path(os.path.abspath(path)).is_relative_to(tmp) for tmp in TMP_DIRS)]


def _private_tmp_off(text: str, needed: list[Path]) -> str:
    """The unit text with PrivateTmp= off, saying why: the program or the daemon's files lie under /tmp."""
    reason = f"# PrivateTmp=no (dedupd install-unit): {', '.join(map(str, needed))} lie under /tmp or /var/tmp"
    return text.replace("PrivateTmp=yes\n", f"{reason}\nPrivateTmp=no\n")


def plan_install(system: bool, *, socket: bool = False, unit_dir: Path | None = None,
                 executable: Path | None = None, sandbox: bool | None = None,
                 environ: Mapping[str, str] | None = None) -> Plan:
    """The files, directories and commands of a system (`system`) or a user installation.

    `sandbox` (user units): whether to add the mount-sandbox drop-in; None tries whether user namespaces work.
    """
    env = os.environ if environ is None else environ
    program = executable if executable is not None else dedupd_executable()
    target = unit_dir if unit_dir is not None else SYSTEM_UNIT_DIR if system else user_unit_dir(env)
    notes: list[str] = []
    if not os.access(program, os.X_OK):
        notes.append(f"warning: {program} is not an executable file; ExecStart= will fail")
    unit_env = _unit_environ(system, env)
    writable, roots = _daemon_locations(unit_env, notes)
    in_tmp = _outermost(_under_tmp([program, *([p] if (p := _interpreter(program)) else []), *writable, *roots]))
    service = with_executable(_source("dedupd.service" if system else "dedupd.user.service"), program)
    files = [UnitFile(target / SERVICE, _private_tmp_off(service, in_tmp) if in_tmp else service)]
    if socket:
        files.append(UnitFile(target / SOCKET, _source(SOCKET)))
    directories: list[Path] = []
    if system:
        notes += _system_notes(writable, roots, program)
    elif sandbox if sandbox is not None else user_namespaces_available():
        runtime = Path(unit_env["XDG_RUNTIME_DIR"]) / "dedupd"  # RuntimeDirectory=, already in the drop-in
        directories = [d for d in _outermost(writable) if not d.is_relative_to(runtime)]
        drop_in = _source("dedupd.user-sandbox.conf")
        drop_in = _private_tmp_off(drop_in, in_tmp) if in_tmp else drop_in
        if directories:  # an empty ReadWritePaths= would reset the list
            drop_in += ("# The directories your config names (added by dedupd install-unit):\n"
                        f"ReadWritePaths={' '.join(unit_word(d) for d in directories)}\n")
        files.append(UnitFile(target / f"{SERVICE}.d" / "sandbox.conf", drop_in))
    else:
        notes.append("note: user namespaces are not available to you, so the user unit runs without its mount "
                     "sandbox (ProtectSystem=, ProtectHome= need PrivateUsers=); the daemon logs this at start")
    if in_tmp:
        notes.append(f"note: PrivateTmp= is off: {', '.join(map(str, in_tmp))} lie under /tmp or /var/tmp, which "
                     "a private /tmp would hide from the daemon")
    scope = ("systemctl",) if system else ("systemctl", "--user")
    units = (SOCKET, SERVICE) if socket else (SERVICE,)
    commands = ((*scope, "daemon-reload"), (*scope, "enable", "--now", *units))
    notes.append(f"if dedupd was running already: {shlex.join((*scope, 'restart', SERVICE))}")
    return Plan(system, tuple(files), tuple(directories), commands, tuple(notes))


def write(plan: Plan) -> None:
    """Create the plan's directories and write its unit files."""
    try:
        for directory in plan.directories:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for unit in plan.files:
            unit.path.parent.mkdir(parents=True, exist_ok=True)
            unit.path.write_text(unit.text)
    except OSError as exc:
        hint = " (run as root, or install the user unit with --user)" if plan.system else ""
        raise DedupdError(f"cannot write {exc.filename}: {exc.strerror or exc}{hint}") from None


def enable(plan: Plan) -> None:
    """Run the plan's systemctl commands (daemon-reload, enable --now)."""
    for command in plan.commands:
        try:
            subprocess.run(command, check=True)
        except FileNotFoundError:
            raise DedupdError(f"{command[0]} not found: is this a systemd system?") from None
        except subprocess.CalledProcessError as exc:
            raise DedupdError(f"`{shlex.join(command)}` failed with status {exc.returncode}") from None
