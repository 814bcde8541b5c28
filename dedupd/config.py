"""Configuration: a TOML file plus `DEDUPD_*` environment variables -> one frozen, validated `Settings`.

Owns the setting names, their defaults and ranges, where values come from, and how a bad config is
explained. `load_settings` reads the file `paths.find_config_file` picks (`--config`, `$DEDUPD_CONFIG`,
the user's or the system's default file, else built-in defaults), lays the environment over it
(`DEDUPD_SETTLE_MS=500`, nested with `__`: `DEDUPD_CNN__BATCH_SIZE=32`; lists and tables as JSON:
`DEDUPD_METHODS='["exact", "phash"]'`) and validates the result with pydantic. Every problem becomes one
line of a `ConfigError` that names the key and where it is (`unknown key 'treshold' in [phash]`), so an
operator never reads a pydantic traceback. `config/dedupd.toml` is the commented example; a test keeps it
equal to the defaults here.
"""

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from dedupd import paths
from dedupd.encodepool import DEFAULT_DECODE_TIMEOUT_S
from dedupd.errors import ConfigError
from dedupd.imaging.cnn import registry_names
from dedupd.imaging.decode import DEFAULT_MAX_PIXELS
from dedupd.imaging.encode import DEFAULT_MAX_FILE_SIZE
from dedupd.search.matcher import MatcherSettings
from dedupd.watch.policy import DEFAULT_EXCLUDE, DEFAULT_POLL_INTERVAL_S
from dedupd.watch.polling import DEFAULT_MASS_DELETION_GUARD

log = logging.getLogger(__name__)

ENV_PREFIX = "DEDUPD_"
#: `DEDUPD_*` variables that are not settings (read by `paths`); anything else unknown is warned about.
_NOT_SETTINGS = {paths.CONFIG_ENV, paths.SYSTEM_ENV}

#: Polled roots see a file's size and mtime only once per poll, so a shorter settle would encode half-copied files.
POLLED_SETTLE_MS = 5000
DAY_S = 86400.0
#: `encode_workers` is bounded by this many processes per CPU.
WORKERS_PER_CPU = 4
#: Short names the CNN accepts for ONNX Runtime providers (full `*ExecutionProvider` names also pass).
PROVIDER_SHORT_NAMES = ("cuda", "cpu", "tensorrt")

type Method = Literal["exact", "phash", "cnn"]
type Polling = Literal[True, False, "auto"]
type LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _environ_of(info: ValidationInfo) -> Mapping[str, str] | None:
    return (info.context or {}).get("environ")


def _expanded(value: Any, info: ValidationInfo) -> Any:
    """`~` becomes the home directory of the environment being loaded."""
    return paths.expand(value, _environ_of(info)) if isinstance(value, str | os.PathLike) else value


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path or start with ~ (got {str(path)!r})")
    return path


#: A path setting: `~` expanded, then required to be absolute (a relative path would depend on the cwd).
type AbsolutePath = Annotated[Path, BeforeValidator(_expanded), AfterValidator(_absolute)]


def _non_empty(items: tuple[str, ...]) -> tuple[str, ...]:
    if any(not item.strip() for item in items):
        raise ValueError("entries must not be empty")
    return items


def _unique[T](items: tuple[T, ...]) -> tuple[T, ...]:
    repeated = sorted({str(item) for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return items


type Globs = Annotated[tuple[str, ...], AfterValidator(_non_empty)]


class _Section(BaseModel):
    """A table of the config: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class Root(_Section):
    """One watched directory (`[[roots]]`)."""

    path: AbsolutePath
    recursive: StrictBool = True
    #: True: poll instead of inotify; "auto": poll when the root is on nfs/cifs/smb/sshfs (watcher decides).
    polling: Polling = False
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, ge=1, le=DAY_S, strict=True)
    #: Globs a file name must match to be considered (empty: every file).
    include: Globs = ()
    #: Globs of file and directory names never looked at; directories are excluded before they are watched.
    exclude: Globs = DEFAULT_EXCLUDE
    follow_symlinks: StrictBool = False
    #: A reference root: its files are never proposed by `to-remove`.
    protected: StrictBool = False


class PhashSettings(_Section):
    """`[phash]`: the orientation-aware pHash evidence of the matcher (`dedupd.search.matcher`)."""

    #: Max pHash distance in bits for a pair the CNN confirms.
    threshold: int = Field(default=10, ge=0, le=64, strict=True)
    #: CNN similarity that confirms a pHash match.
    confirm_similarity: float = Field(default=0.5, ge=-1, le=1, strict=True)
    #: Max pHash distance when the CNN is not among `methods` (no confirmation, so strict).
    threshold_without_cnn: int = Field(default=2, ge=0, le=64, strict=True)


class MatcherSection(_Section):
    """`[matcher]`: what the matcher reports besides duplicates (`dedupd.search.matcher`, two tiers)."""

    #: Report the similar tier (different captures of one scene: bursts, series, stereo pairs) through
    #: `dedupctl similar` and `query`; duplicates never hold two captures the evidence tells apart either way.
    similar: StrictBool = True


def _model_name(value: str, info: ValidationInfo) -> str:
    """A registry name, or a path to an .onnx file (`~` expanded, absolute)."""
    if "/" in value or value.endswith(".onnx"):
        path = _absolute(paths.expand(value, _environ_of(info)))
        if path.suffix != ".onnx":
            raise ValueError(f"a model path must name an .onnx file (got {value!r})")
        return str(path)
    names = registry_names()
    if value.replace("_", "-") not in names:
        raise ValueError(f"unknown model {value!r}: use one of {', '.join(names)} or a path to an .onnx file")
    return value


def _provider_names(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        raise ValueError("must name at least one provider")
    unknown = [name for name in names
               if name.lower() not in PROVIDER_SHORT_NAMES and not name.endswith("ExecutionProvider")]
    if unknown:
        raise ValueError(f"unknown provider {unknown[0]!r}: use {', '.join(PROVIDER_SHORT_NAMES)} "
                         "or an ONNX Runtime name such as 'CUDAExecutionProvider'")
    return _unique(names)


class CnnSettings(_Section):
    """`[cnn]`: the embedding model and its batch queue."""

    enabled: StrictBool = True
    model: Annotated[str, AfterValidator(_model_name)] = "sscd-distilled"
    #: Cosine similarity at which the CNN alone calls a pair a duplicate.
    min_similarity: float = Field(default=0.62, ge=-1, le=1, strict=True)
    batch_size: int = Field(default=16, ge=1, le=1024, strict=True)
    #: How long a partial batch waits for more images before it runs.
    max_wait_ms: int = Field(default=50, ge=0, le=60_000, strict=True)
    #: Tried in order; CPU always remains as the last resort.
    providers: Annotated[tuple[str, ...], AfterValidator(_provider_names)] = ("cuda", "cpu")
    #: ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose. 1 by default: while files come in, the encode
    #: workers keep every core busy, and a second thread only costs CPU (BENCHMARKS.md "Daemon (live import)").
    intra_op_threads: int = Field(default=1, ge=0, le=1024, strict=True)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class NotifySettings:
    """`[notify]`: where duplicate events are reported. A pydantic dataclass, not a model, so that its key
    `json` can be an attribute (`settings.notify.json`) without shadowing `BaseModel.json`."""

    #: Write a JSON report file per duplicate event.
    json: StrictBool = True
    #: Desktop notifications over the session D-Bus.
    desktop: StrictBool = True


def _methods(methods: tuple[Method, ...]) -> tuple[Method, ...]:
    missing = [name for name in ("exact", "phash") if name not in methods]
    if missing:
        raise ValueError(f"must include {' and '.join(repr(name) for name in missing)}: the matcher always uses "
                         "'exact' and 'phash'; only 'cnn' can be left out")
    return _unique(methods)


def _default_methods(validated: dict[str, Any]) -> tuple[Method, ...]:
    cnn = validated.get("cnn")
    return ("exact", "phash", "cnn") if cnn is None or cnn.enabled else ("exact", "phash")


def _cpu_count(workers: int) -> int:
    """0 means one encode process per CPU this process may run on; more than a few per CPU only costs memory
    (each is a Python process with its decoders), so the count is bounded by that."""
    cpus = len(os.sched_getaffinity(0))
    if workers > WORKERS_PER_CPU * cpus:
        raise ValueError(f"must be at most {WORKERS_PER_CPU * cpus} ({WORKERS_PER_CPU} per CPU; this process may use "
                         f"{cpus}), or 0 for one per CPU")
    return workers or cpus


def _known_group(name: str | None) -> str | None:
    """The group must exist: the daemon gives the socket to it at start."""
    import grp

    if name is not None:
        try:
            grp.getgrnam(name)
        except KeyError:
            raise ValueError(f"no such group {name!r} on this system (see `getent group`)") from None
    return name


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class Settings(_Section):
    """Every setting of dedupd, validated and frozen. Build it with `load_settings` (file + environment) or
    `default_settings` (built-in defaults only)."""

    roots: tuple[Root, ...] = ()
    #: LMDB environment (default: `$XDG_STATE_HOME/dedupd`, or /var/lib/dedupd for the system service).
    state_dir: AbsolutePath
    #: Report files (default: `<state_dir>/reports`).
    report_dir: AbsolutePath
    #: Control socket (default: `$XDG_RUNTIME_DIR/dedupd/control.sock`, or /run/dedupd/control.sock).
    socket: AbsolutePath
    #: Group allowed to use the socket (mode 0660); unset: the daemon's user only (0600).
    socket_group: Annotated[str | None, AfterValidator(_known_group)] = Field(default=None, min_length=1)
    phash: PhashSettings = PhashSettings()
    cnn: CnnSettings = CnnSettings()
    matcher: MatcherSection = MatcherSection()
    #: The evidence the matcher uses (default: all three, without 'cnn' when [cnn] enabled = false).
    methods: Annotated[tuple[Method, ...], AfterValidator(_methods)] = Field(default_factory=_default_methods)
    #: Encode processes; 0 = one per CPU core (the loaded value is the resolved count).
    encode_workers: Annotated[int, Field(ge=0, strict=True), AfterValidator(_cpu_count)] = 0
    #: The encode workers start with the first file and stop after this long without one; 0 = they start
    #: with the daemon and never stop for idleness.
    encode_idle_stop_s: float = Field(default=120.0, ge=0, le=86400, strict=True)
    #: A file is encoded once its size and mtime have not changed for this long (polled roots: at least 5 s).
    settle_ms: int = Field(default=2000, ge=0, le=3_600_000, strict=True)
    decode_timeout_s: float = Field(default=DEFAULT_DECODE_TIMEOUT_S, gt=0, le=3600, strict=True)
    #: Larger images are skipped as decompression bombs; fits 200 MP panoramas.
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, le=10_000_000_000, strict=True)
    #: Full reconcile scan period; 0 = only at start, reload and on demand.
    rescan_interval_s: float = Field(default=86400.0, ge=0, le=366 * DAY_S, strict=True)
    #: Report files older than this are deleted; 0 = keep them forever.
    report_retention_days: int = Field(default=90, ge=0, le=36_600, strict=True)
    notify: NotifySettings = NotifySettings()
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    #: Files smaller than this many bytes are skipped as too_small.
    min_file_size: int = Field(default=0, ge=0, le=1 << 50, strict=True)
    #: Larger files are skipped as too_large, never read (a worker holds a file whole in memory).
    max_file_size: int = Field(default=DEFAULT_MAX_FILE_SIZE, ge=1, le=1 << 50, strict=True)
    #: A poll that loses more than this share of a root's files is an outage, not deletions.
    mass_deletion_guard: float = Field(default=DEFAULT_MASS_DELETION_GUARD, gt=0, le=1, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _default_locations(cls, data: Any, info: ValidationInfo) -> Any:
        """Paths not given come from `paths` (user or system); reports follow a configured state_dir."""
        if not isinstance(data, dict):
            return data
        defaults = paths.default_locations(_environ_of(info))
        filled = dict(data)
        state_dir = filled.get("state_dir")
        if "report_dir" not in filled and isinstance(state_dir, str | Path):
            state_dir = paths.expand(state_dir, _environ_of(info))
            if state_dir.is_absolute():
                filled["report_dir"] = state_dir / "reports"
        for key in ("state_dir", "report_dir", "socket"):
            filled.setdefault(key, getattr(defaults, key))
        return filled

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if "cnn" in self.methods and not self.cnn.enabled:
            raise ValueError("'methods' lists 'cnn' but [cnn] enabled = false: remove 'cnn' from methods "
                             "or enable the CNN")
        roots = [root.path for root in self.roots]
        repeated = sorted({str(path) for path in roots if roots.count(path) > 1})
        if repeated:
            raise ValueError(f"[[roots]] lists the same path more than once: {', '.join(repeated)}")
        nested = [(inner, outer) for inner in roots for outer in roots if inner != outer and outer in inner.parents]
        if nested:
            inner, outer = nested[0]
            raise ValueError(f"[[roots]] {inner} lies inside the root {outer}: its files would be watched twice; "
                             "keep the outer root (use its `exclude` to leave folders out) or list separate folders")
        files = [str(path) for path in roots if path.exists() and not path.is_dir()]
        if files:
            raise ValueError(f"[[roots]] must be directories: {', '.join(files)} is not one")
        for key in ("state_dir", "report_dir"):
            path = getattr(self, key)
            if path.exists() and not path.is_dir():
                raise ValueError(f"'{key}' must be a directory (or not exist yet): {path} is a file")
        return self

    def missing_roots(self) -> list[Path]:
        """Roots that do not exist now: allowed (a disk that is not mounted yet is watched when it appears),
        but worth a warning in `check-config`."""
        return [root.path for root in self.roots if not root.path.exists()]

    def matcher_settings(self) -> MatcherSettings:
        """The duplicate rule these settings ask for."""
        return MatcherSettings(
            hash_threshold=self.phash.threshold,
            hash_confirm_similarity=self.phash.confirm_similarity,
            cnn_min_similarity=self.cnn.min_similarity,
            hash_only_threshold=self.phash.threshold_without_cnn,
            cnn_enabled="cnn" in self.methods,
        )

    def settle_ms_for(self, polled: bool) -> int:
        """How long a file must stay unchanged before it is encoded, on a watched or a polled root."""
        return max(self.settle_ms, POLLED_SETTLE_MS) if polled else self.settle_ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the key names of the config file (`socket_group` is None when unset)."""
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        """The effective settings as a config file that loads back to these settings."""
        document = {key: value for key, value in self.as_dict().items() if value is not None}
        return tomli_w.dumps(document)


def default_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The built-in defaults, with the default locations for `environ` (user or system); no file, no overrides."""
    return Settings.model_validate({}, context={"environ": os.environ if environ is None else environ})


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted names of the settings that differ (`cnn.batch_size`, `roots`), in declaration order."""
    before, after = dict(_flatten(old.as_dict())), dict(_flatten(new.as_dict()))
    return [key for key in after if before.get(key) != after[key]]


def _flatten(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of the config tables; `roots` (a list) stays one value."""
    for key, value in document.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class _BadEnvironmentJSON(ValueError):
    """A list or table given in the environment that is not JSON; carries the setting for the message."""

    def __init__(self, field_name: str, cause: ValueError) -> None:
        super().__init__(f"{field_name}: {cause}")
        self.field_name = field_name
        self.cause = cause


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' `DEDUPD_*` parsing (prefix, `__` nesting, JSON for lists and tables) over any
    mapping, not only `os.environ`, so tests and `check-config` see exactly what a daemon would."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(Settings, case_sensitive=False, env_prefix=ENV_PREFIX,  # type: ignore[arg-type]
                         env_nested_delimiter="__", env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items() if value != ""}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:  # still a ValueError: nested values that may be plain strings stay strings
            raise _BadEnvironmentJSON(field_name, exc) from exc


def _setting_variables(environ: Mapping[str, str]) -> list[str]:
    """The upper-cased `DEDUPD_*` names in `environ`, warning about those that name no setting."""
    fields = {name.upper() for name in Settings.model_fields}
    names = []
    for name in environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in _NOT_SETTINGS:
            if upper[len(ENV_PREFIX):].split("__")[0] in fields:
                names.append(upper)
            else:
                log.warning("ignoring environment variable %s: no such setting", name)
    return names


def _environment_values(environ: Mapping[str, str], variables: list[str]) -> dict[str, Any]:
    try:
        return _EnvironmentSource(environ)()
    except ValueError as exc:
        cause = exc.__cause__
        if not isinstance(cause, _BadEnvironmentJSON):
            raise ConfigError(f"invalid configuration in the environment: {exc}") from None
        key = cause.field_name.upper()
        named = [name for name in variables if name == ENV_PREFIX + key or name.endswith("__" + key)]
        raise ConfigError(f"invalid configuration: {named[0] if named else ENV_PREFIX + key} must be JSON, "
                          f"like '[\"a\", \"b\"]' for a list ({cause.cause})") from None


def _lax(values: Mapping[str, Any], fields: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """Environment values are strings: each number or boolean becomes its setting's type the way pydantic's lax
    mode converts (`"500"` -> 500, `"yes"` -> True), so the strict checks meant for the file's typed values
    accept them. A value that does not convert stays as given and fails validation with its own message."""
    typed: dict[str, Any] = {}
    for key, value in values.items():
        field = fields.get(key)
        nested = _fields_of(field.annotation) if field is not None else None
        if field is not None and nested is not None and isinstance(value, Mapping):
            typed[key] = _lax(value, nested)
        elif field is not None and field.annotation in (bool, int, float) and isinstance(value, str):
            try:
                typed[key] = TypeAdapter(field.annotation).validate_python(value)
            except ValidationError:
                typed[key] = value
        else:
            typed[key] = value
    return typed


def _fields_of(annotation: Any) -> Mapping[str, FieldInfo] | None:
    """The fields of a table's model (a BaseModel or a pydantic dataclass), None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_fields
    return getattr(annotation, "__pydantic_fields__", None)


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, table by table (an environment value replaces one key of a file's table)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The effective settings: built-in defaults < config file < `DEDUPD_*` environment.

    `config` is `--config` (None: `$DEDUPD_CONFIG`, then the default file if it exists); `environ`
    defaults to `os.environ`. Raises ConfigError with one line per problem.
    """
    env = os.environ if environ is None else environ
    source = paths.find_config_file(config, env)
    file_values = paths.read_toml(source) if source is not None else {}
    variables = _setting_variables(env)
    env_values = _lax(_environment_values(env, variables), Settings.model_fields)
    data = _merged(file_values, env_values)
    try:
        return Settings.model_validate(data, context={"environ": env})
    except ValidationError as exc:
        where = f"in {source}" if source is not None else "(built-in defaults)"
        if env_values:
            where += " with the environment"
        problems = _problems(exc, data, variables)
        raise ConfigError("\n  ".join([f"invalid configuration {where}:", *problems])) from None


# Error messages


def _problems(error: ValidationError, data: Mapping[str, Any], variables: list[str]) -> list[str]:
    """One readable line per problem; union members that failed the same key are one problem."""
    seen: set[tuple[Any, ...]] = set()
    lines = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        if loc in seen or detail["type"] == "default_factory_not_called":  # follows from another problem
            continue
        seen.add(loc)
        lines.append(_describe(detail["type"], loc, detail, data) + _origin(loc, variables))
    return lines


#: pydantic's wording where it names Python types instead of TOML ones.
_PLAIN_REASONS = {
    "tuple_type": "must be a list", "list_type": "must be a list", "path_type": "must be a path (a string)",
    "model_type": "must be a table", "dict_type": "must be a table", "dataclass_type": "must be a table",
}


def _describe(kind: str, loc: tuple[Any, ...], detail: Any, data: Mapping[str, Any]) -> str:
    if kind == "value_error" and "error" in detail.get("ctx", {}):
        reason = str(detail["ctx"]["error"])
    elif kind in _PLAIN_REASONS:
        reason = _PLAIN_REASONS[kind]
    else:
        message = str(detail["msg"])
        reason = message[:1].lower() + message[1:]
    if not loc:
        return reason
    *parents, last = loc
    place = _place(parents, data)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key {last!r} {place or 'at the top level'}"
    if kind == "missing":
        return f"missing key {last!r} {place}".rstrip()
    name = f"item {last + 1} of {parents[-1]!r}" if isinstance(last, int) and parents else f"{last!r}"
    if isinstance(last, int):
        place = _place(parents[:-1], data)
    shown = "" if kind == "value_error" else f" (got {_shown(detail.get('input'))})"
    return f"{name}{' ' + place if place else ''}: {reason}{shown}"


def _place(parents: list[Any], data: Mapping[str, Any]) -> str:
    """`in [cnn]`, `in [[roots]] #2 (/srv/photos)`, or '' for the top level."""
    if not parents:
        return ""
    if parents[0] == "roots" and len(parents) >= 2 and isinstance(parents[1], int):
        entry = parents[1]
        roots = data.get("roots")
        path = roots[entry].get("path") if isinstance(roots, list | tuple) and len(roots) > entry \
            and isinstance(roots[entry], Mapping) else None
        return f"in [[roots]] #{entry + 1}" + (f" ({path})" if isinstance(path, str) else "")
    return "in [" + ".".join(str(part) for part in parents) + "]"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _origin(loc: tuple[Any, ...], variables: list[str]) -> str:
    """Which environment variable set a bad value, when one did (`DEDUPD_CNN__BATCH_SIZE` or `DEDUPD_CNN`)."""
    names = [f"{ENV_PREFIX}{loc[0]}__{loc[1]}".upper()] if len(loc) > 1 and isinstance(loc[1], str) else []
    names += [f"{ENV_PREFIX}{loc[0]}".upper()] if loc else []
    found = [name for name in names if name in variables]
    return f" (from {found[0]})" if found else ""
