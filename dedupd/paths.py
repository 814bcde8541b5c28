"""Default locations of dedupd's files, for a user daemon and for the system service.

Owns where state, reports, the control socket and the config file live when the config does not say,
and which config file is read. A user daemon follows the XDG base directories (state in
`$XDG_STATE_HOME/dedupd`, the socket in `$XDG_RUNTIME_DIR/dedupd`, the config in `$XDG_CONFIG_HOME/dedupd`);
the system service (uid 0, or `DEDUPD_SYSTEM=1`) uses /var/lib, /run and /etc. `DEDUPD_SYSTEM=0` makes
root use the user locations. Stdlib only: `dedupctl` imports this module and must start fast.
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dedupd.errors import ConfigError

#: Environment variable naming the config file (after `--config`, before the default locations).
CONFIG_ENV = "DEDUPD_CONFIG"
#: Environment variable choosing the system ("1") or the user ("0") locations, whatever the uid.
SYSTEM_ENV = "DEDUPD_SYSTEM"
#: Environment variable naming the control socket; it also overrides the config's `socket`.
SOCKET_ENV = "DEDUPD_SOCKET"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Locations:
    """Where dedupd keeps its files when the config does not say otherwise."""

    state_dir: Path
    report_dir: Path
    socket: Path
    config_file: Path


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def is_system(environ: Mapping[str, str] | None = None, uid: int | None = None) -> bool:
    """The system service's locations: `DEDUPD_SYSTEM` when set, else whether we run as root."""
    flag = _environ(environ).get(SYSTEM_ENV, "").strip().lower()
    if flag in _TRUE:
        return True
    if flag in _FALSE:
        return False
    if flag:
        raise ConfigError(f"{SYSTEM_ENV} must be 1 or 0, not {flag!r}")
    return (os.getuid() if uid is None else uid) == 0


def home(environ: Mapping[str, str] | None = None) -> Path:
    """The home directory: `$HOME` of `environ`, else the password database's."""
    value = _environ(environ).get("HOME")
    return Path(value) if value else Path.home()


def expand(value: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Path:
    """A path with a leading `~` replaced by the home directory of `environ`."""
    text = os.fspath(value)
    if text == "~" or text.startswith("~/"):
        return home(environ) / text[2:]
    return Path(os.path.expanduser(text))  # `~user/...`


def _xdg_dir(environ: Mapping[str, str], name: str, fallback: str) -> Path:
    """An XDG base directory; relative values are invalid by the spec and ignored."""
    value = environ.get(name, "")
    return Path(value) if os.path.isabs(value) else home(environ) / fallback


def default_locations(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Locations:
    """The user's (XDG) or the system service's default locations."""
    env = _environ(environ)
    if is_system(env, uid):
        state = Path("/var/lib/dedupd")
        return Locations(state, state / "reports", Path("/run/dedupd/control.sock"), Path("/etc/dedupd/dedupd.toml"))
    state = _xdg_dir(env, "XDG_STATE_HOME", ".local/state") / "dedupd"
    runtime = env.get("XDG_RUNTIME_DIR", "")
    socket_dir = Path(runtime) / "dedupd" if os.path.isabs(runtime) else \
        Path(f"/tmp/dedupd-{os.getuid() if uid is None else uid}")
    config = _xdg_dir(env, "XDG_CONFIG_HOME", ".config") / "dedupd" / "dedupd.toml"
    return Locations(state, state / "reports", socket_dir / "control.sock", config)


def find_config_file(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to read: `explicit` (`--config`), else `$DEDUPD_CONFIG`, else the default
    location if a file is there; None means built-in defaults. A named file that is missing is an error."""
    env = _environ(environ)
    named, origin = (explicit, "--config") if explicit is not None else (env.get(CONFIG_ENV) or None, CONFIG_ENV)
    if named is not None:
        path = expand(named, env)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from {origin})")
        return path
    default = default_locations(env).config_file
    return default if default.is_file() else None


def no_config_reason(environ: Mapping[str, str] | None = None) -> str:
    """Why `find_config_file` found no file (said by `check-config` and at start): where it looked, and a user
    file that exists but is not read because these are the system service's locations."""
    env = _environ(environ)
    looked = default_locations(env).config_file
    reason = f"{looked} does not exist"
    if is_system(env):
        user = default_locations({**env, SYSTEM_ENV: "0"}).config_file
        if user.is_file():
            reason += (f"; {user} is a user's file, not read with the system locations (as root or "
                       f"{SYSTEM_ENV}=1): name it with --config, or set {SYSTEM_ENV}=0")
    return reason


def read_toml(path: Path) -> dict[str, object]:
    """A TOML file as a dict; unreadable or malformed files are a ConfigError naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SocketChoice:
    """The control socket a client talks to, and why that one (said when nothing answers there)."""

    path: Path
    origin: str


def locate_socket(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> SocketChoice:
    """The socket a client talks to, as the daemon would choose it: `explicit` (`--socket`), else
    `$DEDUPD_SOCKET`, else the `socket` of the config file (`config`, i.e. `--config`, else
    `$DEDUPD_CONFIG`, else the default file), else the default. Reads only that one key, so a client needs no
    settings validation."""
    env = _environ(environ)
    if explicit is not None:
        return SocketChoice(expand(explicit, env), "--socket")
    if env.get(SOCKET_ENV):
        return SocketChoice(expand(env[SOCKET_ENV], env), f"from ${SOCKET_ENV}")
    config_file = find_config_file(config, env)
    value = read_toml(config_file).get("socket") if config_file is not None else None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"'socket' in {config_file} must be a string")
    if value is not None:
        return SocketChoice(expand(value, env), f"the `socket` of {config_file}")
    system = "system" if is_system(env) else "user"
    origin = f"the {system} default" + (f"; {config_file} sets no `socket`" if config_file is not None else "")
    return SocketChoice(default_locations(env).socket, origin)


def control_socket(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                   config: str | os.PathLike[str] | None = None) -> Path:
    """The socket a client talks to (see `locate_socket`)."""
    return locate_socket(explicit, environ, config).path
