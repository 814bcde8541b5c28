"""Configuration: real TOML files in tmp dirs, explicit environments, and `dedupd check-config` as a subprocess."""

import grp
import json
import logging
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from dedupd import paths
from dedupd.config import DEFAULT_EXCLUDE, Root, Settings, changed_keys, default_settings, load_settings
from dedupd.errors import ConfigError
from dedupd.search.matcher import MatcherSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "dedupd.toml"

#: The minimal file of DESIGN.md ("Configuration"), verbatim.
DESIGN_MINIMAL = """\
state_dir = "/var/lib/dedupd"            # LMDB environment lives here
report_dir = "/var/lib/dedupd/reports"
socket = "/run/dedupd/control.sock"

[[roots]]
path = "/srv/photos"
recursive = true                         # default true
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def environ(home: Path) -> dict[str, str]:
    """A user's environment with nothing configured, whoever runs the tests (root included)."""
    return {"HOME": str(home), "DEDUPD_SYSTEM": "0", "XDG_RUNTIME_DIR": str(home / "run")}


def write(directory: Path, text: str, name: str = "dedupd.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems(directory: Path, text: str, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(directory, text), environ)
    return str(caught.value)


# Loading


def test_design_minimal_file_loads_as_written(tmp_path: Path, environ: dict[str, str]) -> None:
    settings = load_settings(write(tmp_path, DESIGN_MINIMAL), environ)
    assert settings.state_dir == Path("/var/lib/dedupd")
    assert settings.report_dir == Path("/var/lib/dedupd/reports")
    assert settings.socket == Path("/run/dedupd/control.sock")
    (root,) = settings.roots
    assert root == Root(path=Path("/srv/photos"))
    assert root.recursive and root.polling is False and root.poll_interval_s == 60
    assert root.exclude == DEFAULT_EXCLUDE and root.include == () and not root.protected
    assert settings.methods == ("exact", "phash", "cnn")


def test_defaults_follow_the_user_locations(environ: dict[str, str], home: Path) -> None:
    settings = load_settings(None, environ)
    assert settings.state_dir == home / ".local/state/dedupd"
    assert settings.report_dir == home / ".local/state/dedupd/reports"
    assert settings.socket == home / "run/dedupd/control.sock"
    assert settings.roots == () and settings.socket_group is None
    assert settings.encode_workers == len(os.sched_getaffinity(0))
    assert settings.matcher_settings() == MatcherSettings.defaults()


def test_report_dir_follows_a_configured_state_dir(tmp_path: Path, environ: dict[str, str], home: Path) -> None:
    settings = load_settings(write(tmp_path, 'state_dir = "~/dedupd"\n'), environ)
    assert settings.state_dir == home / "dedupd"
    assert settings.report_dir == home / "dedupd/reports"


def test_values_are_normalised(tmp_path: Path, environ: dict[str, str], home: Path) -> None:
    text = 'log_level = "debug"\nencode_workers = 3\n[cnn]\nmodel = "~/models/mine.onnx"\n'
    settings = load_settings(write(tmp_path, text), environ)
    assert settings.log_level == "DEBUG"
    assert settings.encode_workers == 3
    assert settings.cnn.model == str(home / "models/mine.onnx")


def test_disabling_the_cnn_drops_it_from_the_default_methods(tmp_path: Path, environ: dict[str, str]) -> None:
    settings = load_settings(write(tmp_path, "[cnn]\nenabled = false\n"), environ)
    assert settings.methods == ("exact", "phash")
    assert settings.matcher_settings() == MatcherSettings.defaults().without_cnn()


def test_the_similar_tier_is_on_by_default_and_can_be_turned_off(tmp_path: Path, environ: dict[str, str]) -> None:
    assert default_settings(environ).matcher.similar is True
    assert load_settings(write(tmp_path, "[matcher]\nsimilar = false\n"), environ).matcher.similar is False
    assert "similar" in problems(tmp_path, '[matcher]\nsimilar = "no"\n', environ)


def test_matcher_settings_carry_the_thresholds(tmp_path: Path, environ: dict[str, str]) -> None:
    text = ('methods = ["exact", "phash"]\n[phash]\nthreshold = 8\nconfirm_similarity = 0.4\n'
            'threshold_without_cnn = 3\n[cnn]\nmin_similarity = 0.7\n')
    settings = load_settings(write(tmp_path, text), environ)
    assert settings.matcher_settings() == MatcherSettings(
        hash_threshold=8, hash_confirm_similarity=0.4, cnn_min_similarity=0.7, hash_only_threshold=3,
        cnn_enabled=False)


def test_settings_are_frozen(environ: dict[str, str]) -> None:
    settings = load_settings(None, environ)
    with pytest.raises(ValidationError):
        settings.settle_ms = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.cnn.batch_size = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):  # a frozen dataclass
        settings.notify.json = False  # type: ignore[misc]
    assert hash(settings) == hash(load_settings(None, environ))


def test_polled_roots_settle_at_least_five_seconds(tmp_path: Path, environ: dict[str, str]) -> None:
    settings = load_settings(write(tmp_path, "settle_ms = 1000\n"), environ)
    assert (settings.settle_ms_for(polled=False), settings.settle_ms_for(polled=True)) == (1000, 5000)
    settings = load_settings(write(tmp_path, "settle_ms = 9000\n"), environ)
    assert settings.settle_ms_for(polled=True) == 9000


# Unknown keys and bad values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("treshold = 3\n", "unknown key 'treshold' at the top level"),
        ("[phash]\ntreshold = 3\n", "unknown key 'treshold' in [phash]"),
        ("[cnn]\nbatch = 3\n", "unknown key 'batch' in [cnn]"),
        ("[notify]\nemail = true\n", "unknown key 'email' in [notify]"),
        ("[[roots]]\npath = \"/a\"\n[[roots]]\npath = \"/b\"\nrecursve = false\n",
         "unknown key 'recursve' in [[roots]] #2 (/b)"),
    ],
)
def test_unknown_keys_are_named_with_their_place(
    tmp_path: Path, environ: dict[str, str], text: str, expected: str
) -> None:
    assert problems(tmp_path, text, environ).splitlines()[1:] == [f"  {expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[phash]\nthreshold = 65\n", "'threshold' in [phash]: input should be less than or equal to 64 (got 65)"),
        ("[phash]\nconfirm_similarity = 1.5\n", "'confirm_similarity' in [phash]: input should be less than or"),
        ("[cnn]\nbatch_size = 0\n", "'batch_size' in [cnn]: input should be greater than or equal to 1 (got 0)"),
        ("[cnn]\nmin_similarity = -2\n", "'min_similarity' in [cnn]: input should be greater than or equal to -1"),
        ('state_dir = "var/lib/dedupd"\n', "'state_dir': must be an absolute path or start with ~"),
        ("socket = 5\n", "'socket': must be a path (a string) (got 5)"),
        ('[[roots]]\npath = "photos"\n', "'path' in [[roots]] #1 (photos): must be an absolute path"),
        ('[[roots]]\nrecursive = true\n', "missing key 'path' in [[roots]] #1"),
        ('[[roots]]\npath = "/a"\npolling = "sometimes"\n', "'polling' in [[roots]] #1 (/a): input should be True, "
                                                            "False or 'auto' (got 'sometimes')"),
        ('[[roots]]\npath = "/a"\n[[roots]]\npath = "/a/"\n', "[[roots]] lists the same path more than once: /a"),
        ('[[roots]]\npath = "/a"\nexclude = [""]\n', "'exclude' in [[roots]] #1 (/a): entries must not be empty"),
        ('log_level = "LOUD"\n', "'log_level': input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ('methods = ["exact", "phash", "ahash"]\n', "item 3 of 'methods': input should be 'exact', 'phash' or 'cnn'"),
        ('methods = ["exact", "cnn"]\n', "'methods': must include 'phash'"),
        ('methods = ["exact", "phash", "phash"]\n', "'methods': listed more than once: phash"),
        ('methods = ["exact", "phash", "cnn"]\n[cnn]\nenabled = false\n',
         "'methods' lists 'cnn' but [cnn] enabled = false"),
        ("mass_deletion_guard = 0\n", "'mass_deletion_guard': input should be greater than 0 (got 0)"),
        ("settle_ms = -1\n", "'settle_ms': input should be greater than or equal to 0 (got -1)"),
        ('[cnn]\nmodel = "resnet"\n', "'model' in [cnn]: unknown model 'resnet': use one of sscd-distilled, sscd"),
        ('[cnn]\nmodel = "/models/m.bin"\n', "'model' in [cnn]: a model path must name an .onnx file"),
        ('[cnn]\nproviders = ["cdua"]\n', "'providers' in [cnn]: unknown provider 'cdua'"),
        ("[cnn]\nproviders = []\n", "'providers' in [cnn]: must name at least one provider"),
        ("[cnn]\nproviders = [3]\n", "item 1 of 'providers' in [cnn]: input should be a valid string (got 3)"),
        ('socket_group = ""\n', "'socket_group': string should have at least 1 character"),
        ("roots = 3\n", "'roots': must be a list (got 3)"),
        ("roots = [3]\n", "item 1 of 'roots': must be a table (got 3)"),
        ("phash = 3\n", "'phash': must be a table (got 3)"),
    ],
)
def test_bad_values_give_one_clear_line(tmp_path: Path, environ: dict[str, str], text: str, expected: str) -> None:
    message = problems(tmp_path, text, environ)
    header, *lines = message.splitlines()
    assert header == f"invalid configuration in {tmp_path / 'dedupd.toml'}:"
    assert len(lines) == 1 and lines[0].startswith(f"  {expected}"), message


def test_every_problem_is_listed_without_pydantic_noise(tmp_path: Path, environ: dict[str, str]) -> None:
    text = ('treshold = 1\nsettle_ms = "soon"\n[phash]\nthreshold = 99\n[cnn]\nenabled = 3\n'
            '[[roots]]\npath = "/a"\nfollow = true\n')
    message = problems(tmp_path, text, environ)
    assert len(message.splitlines()) == 6, message  # header + 5 problems (the methods default is not one)
    for fragment in ("unknown key 'treshold' at the top level", "'settle_ms': ", "'threshold' in [phash]",
                     "'enabled' in [cnn]", "unknown key 'follow' in [[roots]] #1 (/a)"):
        assert fragment in message
    for noise in ("validation error", "pydantic", "Traceback", "type=", "For further information"):
        assert noise not in message


def test_malformed_toml_names_the_file_and_line(tmp_path: Path, environ: dict[str, str]) -> None:
    message = problems(tmp_path, "[phash]\nthreshold = \n", environ)
    assert message.startswith(f"config file {tmp_path / 'dedupd.toml'} is not valid TOML:")
    assert "line 2" in message


# The environment


def test_environment_overrides_the_file_key_by_key(tmp_path: Path, environ: dict[str, str], home: Path) -> None:
    config = write(tmp_path, '[cnn]\nbatch_size = 8\nmodel = "sscd"\n[[roots]]\npath = "/from/file"\n')
    settings = load_settings(config, {
        **environ,
        "DEDUPD_CNN__BATCH_SIZE": "32",
        "DEDUPD_STATE_DIR": "~/elsewhere",
        "DEDUPD_SETTLE_MS": "500",
        "DEDUPD_NOTIFY__JSON": "false",
        "DEDUPD_METHODS": '["exact", "phash"]',
        "DEDUPD_ROOTS": '[{"path": "/from/env", "polling": "auto"}]',
        "DEDUPD_SOCKET_GROUP": "",  # empty = not set
    })
    assert (settings.cnn.batch_size, settings.cnn.model) == (32, "sscd")
    assert settings.state_dir == home / "elsewhere" and settings.report_dir == home / "elsewhere/reports"
    assert settings.settle_ms == 500 and settings.notify.json is False
    assert settings.methods == ("exact", "phash") and settings.socket_group is None
    assert settings.roots == (Root(path=Path("/from/env"), polling="auto"),)


def test_environment_problems_name_the_variable(tmp_path: Path, environ: dict[str, str]) -> None:
    bad = {**environ, "DEDUPD_CNN__BATCH_SIZE": "many", "DEDUPD_CNN__BATCH_SZ": "2"}
    with pytest.raises(ConfigError) as caught:
        load_settings(None, bad)
    assert str(caught.value).splitlines() == [
        "invalid configuration (built-in defaults) with the environment:",
        "  'batch_size' in [cnn]: input should be a valid integer (got 'many') (from DEDUPD_CNN__BATCH_SIZE)",
        "  unknown key 'batch_sz' in [cnn] (from DEDUPD_CNN__BATCH_SZ)",
    ]
    with pytest.raises(ConfigError, match=r"DEDUPD_CNN__PROVIDERS must be JSON"):
        load_settings(None, {**environ, "DEDUPD_CNN__PROVIDERS": "cpu"})
    with pytest.raises(ConfigError, match=r"DEDUPD_METHODS must be JSON"):
        load_settings(None, {**environ, "DEDUPD_METHODS": "exact,phash"})


def test_unknown_top_level_variables_are_warned_about(
    environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dedupd.config"):
        load_settings(None, {**environ, "DEDUPD_STATEDIR": "/x", "DEDUPD_CONFIG": ""})
    assert [record.getMessage() for record in caplog.records] == [
        "ignoring environment variable DEDUPD_STATEDIR: no such setting"]


# Where the file and the default locations come from


def test_config_file_lookup_order(tmp_path: Path, environ: dict[str, str], home: Path) -> None:
    user_file = home / ".config/dedupd/dedupd.toml"
    assert load_settings(None, environ).settle_ms == 2000  # nothing anywhere: built-in defaults
    user_file.parent.mkdir(parents=True)
    user_file.write_text("settle_ms = 1\n")
    assert load_settings(None, environ).settle_ms == 1
    xdg = tmp_path / "xdg"
    (xdg / "dedupd").mkdir(parents=True)
    write(xdg / "dedupd", "settle_ms = 3\n")
    assert load_settings(None, {**environ, "XDG_CONFIG_HOME": str(xdg)}).settle_ms == 3
    named = write(tmp_path, "settle_ms = 4\n", "named.toml")
    assert load_settings(None, {**environ, "DEDUPD_CONFIG": str(named)}).settle_ms == 4
    explicit = write(tmp_path, "settle_ms = 5\n", "explicit.toml")
    assert load_settings(explicit, {**environ, "DEDUPD_CONFIG": str(named)}).settle_ms == 5
    assert paths.find_config_file(None, environ) == user_file
    with pytest.raises(ConfigError, match=r"config file not found: .*missing.toml \(from --config\)"):
        load_settings(tmp_path / "missing.toml", environ)
    with pytest.raises(ConfigError, match=r"config file not found: .*gone.toml \(from DEDUPD_CONFIG\)"):
        load_settings(None, {**environ, "DEDUPD_CONFIG": str(tmp_path / "gone.toml")})


def test_user_locations_follow_xdg(home: Path) -> None:
    env = {"HOME": str(home), "DEDUPD_SYSTEM": "0", "XDG_STATE_HOME": "/xdg/state", "XDG_RUNTIME_DIR": "/run/u",
           "XDG_CONFIG_HOME": "/xdg/config"}
    assert paths.default_locations(env) == paths.Locations(
        Path("/xdg/state/dedupd"), Path("/xdg/state/dedupd/reports"), Path("/run/u/dedupd/control.sock"),
        Path("/xdg/config/dedupd/dedupd.toml"))
    # Unset or relative XDG values (invalid by the spec) fall back.
    fallback = paths.default_locations({"HOME": str(home), "XDG_STATE_HOME": "state"}, uid=1234)
    assert fallback == paths.Locations(
        home / ".local/state/dedupd", home / ".local/state/dedupd/reports", Path("/tmp/dedupd-1234/control.sock"),
        home / ".config/dedupd/dedupd.toml")


def test_system_locations_for_root_or_when_asked(home: Path) -> None:
    system = paths.Locations(Path("/var/lib/dedupd"), Path("/var/lib/dedupd/reports"),
                             Path("/run/dedupd/control.sock"), Path("/etc/dedupd/dedupd.toml"))
    assert paths.default_locations({"HOME": str(home)}, uid=0) == system
    assert paths.default_locations({"HOME": str(home), "DEDUPD_SYSTEM": "1"}, uid=1000) == system
    assert paths.default_locations({"HOME": str(home), "DEDUPD_SYSTEM": "0"}, uid=0).state_dir == \
        home / ".local/state/dedupd"
    assert default_settings({"HOME": str(home), "DEDUPD_SYSTEM": "1"}).socket == system.socket
    with pytest.raises(ConfigError, match="DEDUPD_SYSTEM must be 1 or 0"):
        paths.default_locations({"DEDUPD_SYSTEM": "maybe"})


def test_control_socket_for_clients(tmp_path: Path, environ: dict[str, str], home: Path) -> None:
    assert paths.control_socket(None, environ) == home / "run/dedupd/control.sock"
    config = home / ".config/dedupd/dedupd.toml"
    config.parent.mkdir(parents=True)
    config.write_text('socket = "~/sock"\n[cnn]\nnot_checked_here = 1\n')
    assert paths.control_socket(None, environ) == home / "sock"
    assert paths.control_socket(None, {**environ, "DEDUPD_SOCKET": "/env.sock"}) == Path("/env.sock")
    assert paths.control_socket("/given.sock", {**environ, "DEDUPD_SOCKET": "/env.sock"}) == Path("/given.sock")


def test_paths_needs_neither_pydantic_nor_numpy() -> None:
    code = "import sys, dedupd.paths; print(sorted(m for m in sys.modules if m.split('.')[0] in {'pydantic', " \
           "'pydantic_settings', 'numpy', 'PIL'}))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]"


# Reload


def test_changed_keys_names_what_a_reload_changes(tmp_path: Path, environ: dict[str, str]) -> None:
    old = load_settings(None, environ)
    assert changed_keys(old, load_settings(None, environ)) == []
    new = load_settings(write(tmp_path, '[[roots]]\npath = "/p"\n[cnn]\nbatch_size = 4\n[notify]\njson = false\n'),
                        environ)
    assert changed_keys(old, new) == ["roots", "cnn.batch_size", "notify.json"]
    assert changed_keys(new, old) == ["roots", "cnn.batch_size", "notify.json"]


# The example file


def test_example_equals_the_built_in_defaults(environ: dict[str, str]) -> None:
    assert load_settings(EXAMPLE, environ) == default_settings(environ)


def _example_keys(text: str) -> set[str]:
    """Dotted keys the example sets or shows commented out (`#key = ...`, `#[[roots]]`)."""
    keys, table = set(), ""
    for line in text.splitlines():
        if header := re.fullmatch(r"#?\[\[?([\w.]+)\]\]?", line):
            table = header.group(1) + "."
        elif key := re.match(r"#?(\w+) = ", line):
            keys.add(table + key.group(1))
    return keys


def _setting_keys(model: type, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.__pydantic_fields__.items():  # type: ignore[attr-defined]
        if hasattr(field.annotation, "__pydantic_fields__"):  # a [table]: a model or a pydantic dataclass
            keys |= _setting_keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_example_shows_every_key() -> None:
    expected = (_setting_keys(Settings) - {"roots"}) | {f"roots.{key}" for key in _setting_keys(Root)}
    assert _example_keys(EXAMPLE.read_text()) == expected


def test_example_commented_values_are_the_defaults_too(tmp_path: Path, home: Path) -> None:
    """Uncommenting every commented setting changes nothing but the illustrative root and socket group (the
    example's group "photos" becomes one that exists here: a socket group must exist)."""
    group = grp.getgrgid(os.getgid()).gr_name
    uncommented = re.sub(r"(?m)^#(?=\w|\[)", "", EXAMPLE.read_text()).replace('"photos"', f'"{group}"')
    system = {"HOME": str(home), "DEDUPD_SYSTEM": "1"}
    settings = load_settings(write(tmp_path, uncommented), system)
    assert settings.roots == (Root(path=Path("/srv/photos")),)
    assert settings.socket_group == group
    assert settings.model_copy(update={"roots": (), "socket_group": None}) == default_settings(system)


# `dedupd check-config`


def check_config(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DEDUPD_", "XDG_"))}
    return subprocess.run([sys.executable, "-m", "dedupd", "check-config", *args], capture_output=True, text=True,
                          timeout=120, env={**env, **environ})


def test_check_config_prints_settings_that_load_back(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write(tmp_path, DESIGN_MINIMAL + 'include = ["*.jpg"]\n[cnn]\nbatch_size = 8\n')
    run = check_config("--config", str(config), environ={**environ, "DEDUPD_SETTLE_MS": "700"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"# effective settings: {config}, then DEDUPD_* environment variables\n")
    printed = write(tmp_path, run.stdout, "printed.toml")
    expected = load_settings(config, {**environ, "DEDUPD_SETTLE_MS": "700"})
    assert load_settings(printed, environ) == expected
    assert tomllib.loads(run.stdout)["cnn"]["batch_size"] == 8 and expected.settle_ms == 700


def test_check_config_json(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write(tmp_path, DESIGN_MINIMAL)
    run = check_config("--config", str(config), "--json", environ=environ)
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document == load_settings(config, environ).as_dict()
    assert document["roots"][0]["path"] == "/srv/photos" and document["notify"]["json"] is True
    assert document["socket_group"] is None


def test_check_config_uses_dedupd_config(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write(tmp_path, "settle_ms = 1234\n")
    run = check_config("--json", environ={**environ, "DEDUPD_CONFIG": str(config)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["settle_ms"] == 1234


def test_check_config_rejects_a_bad_file_with_exit_2(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write(tmp_path, "[phash]\ntreshold = 3\n")
    run = check_config("--config", str(config), environ=environ)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == f"dedupd: error: invalid configuration in {config}:\n  unknown key 'treshold' in [phash]\n"
    missing = check_config("--config", str(tmp_path / "nope.toml"), environ=environ)
    assert missing.returncode == 2 and "config file not found" in missing.stderr and "Traceback" not in missing.stderr


# strictness and bounds (issues 13.12 and 10.14)


@pytest.mark.parametrize(("text", "problem"), [
    ('[[roots]]\npath = "/srv/photos"\nrecursive = "yes"\n',
     "'recursive' in [[roots]] #1 (/srv/photos): input should be a valid boolean (got 'yes')"),
    ('encode_workers = "2"\n', "'encode_workers': input should be a valid integer (got '2')"),
    ("settle_ms = 2.0\n", "'settle_ms': input should be a valid integer (got 2.0)"),
    ("[notify]\njson = 1\n", "'json' in [notify]: input should be a valid boolean (got 1)"),
    ("decode_timeout_s = inf\n", "'decode_timeout_s': input should be a finite number (got inf)"),
    ("decode_timeout_s = nan\n", "'decode_timeout_s': input should be a finite number (got nan)"),
    ("[cnn]\nmax_wait_ms = 9223372036854775807\n",
     "'max_wait_ms' in [cnn]: input should be less than or equal to 60000 (got 9223372036854775807)"),
    ('[[roots]]\npath = "/srv/photos"\npoll_interval_s = inf\n',
     "'poll_interval_s' in [[roots]] #1 (/srv/photos): input should be a finite number (got inf)"),
    ("report_retention_days = 1e9\n", "'report_retention_days': input should be a valid integer (got 1000000000.0)"),
    ("report_retention_days = 1000000000\n",
     "'report_retention_days': input should be less than or equal to 36600 (got 1000000000)"),
    ('socket_group = "nosuchgroup-dedupd"\n',
     "'socket_group': no such group 'nosuchgroup-dedupd' on this system (see `getent group`)"),
])
def test_values_are_strictly_typed_and_bounded_to_what_works(tmp_path: Path, environ: dict[str, str], text: str,
                                                             problem: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ)
    assert str(caught.value).splitlines() == [f"invalid configuration in {config}:", f"  {problem}"]


def test_encode_workers_is_bounded_by_the_cpus(tmp_path: Path, environ: dict[str, str]) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert load_settings(write(tmp_path, f"encode_workers = {4 * cpus}\n"), environ).encode_workers == 4 * cpus
    with pytest.raises(ConfigError, match=f"'encode_workers': must be at most {4 * cpus}"):
        load_settings(write(tmp_path, "encode_workers = 100000\n"), environ)


def test_environment_strings_still_convert_under_strict_types(environ: dict[str, str]) -> None:
    settings = load_settings(None, {**environ, "DEDUPD_SETTLE_MS": "700", "DEDUPD_NOTIFY__DESKTOP": "no",
                                    "DEDUPD_DECODE_TIMEOUT_S": "5", "DEDUPD_CNN__ENABLED": "false",
                                    "DEDUPD_METHODS": '["exact", "phash"]'})
    assert (settings.settle_ms, settings.notify.desktop, settings.decode_timeout_s, settings.cnn.enabled) == \
        (700, False, 5.0, False)
    with pytest.raises(ConfigError, match="finite number"):
        load_settings(None, {**environ, "DEDUPD_DECODE_TIMEOUT_S": "inf"})


def test_roots_that_are_files_or_nested_are_refused(tmp_path: Path, environ: dict[str, str]) -> None:
    (tmp_path / "lib" / "inner").mkdir(parents=True)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    config = write(tmp_path, f'[[roots]]\npath = "{tmp_path / "photo.jpg"}"\n')
    with pytest.raises(ConfigError, match=f"must be directories: {tmp_path / 'photo.jpg'} is not one"):
        load_settings(config, environ)
    config = write(tmp_path, f'[[roots]]\npath = "{tmp_path / "lib"}"\n[[roots]]\npath = "{tmp_path / "lib/inner"}"\n')
    with pytest.raises(ConfigError, match=f"{tmp_path / 'lib/inner'} lies inside the root {tmp_path / 'lib'}"):
        load_settings(config, environ)


def test_check_config_warns_about_a_missing_root(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write(tmp_path, f'[[roots]]\npath = "{tmp_path / "not-mounted"}"\n')
    run = check_config("--config", str(config), environ=environ)
    assert run.returncode == 0
    assert run.stderr == f"dedupd: warning: root {tmp_path / 'not-mounted'} does not exist (it is watched once it " \
                         "appears)\n"


def test_check_config_says_why_it_read_no_file(tmp_path: Path, home: Path) -> None:
    user_file = home / ".config/dedupd/dedupd.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("settle_ms = 100\n")
    if Path("/etc/dedupd/dedupd.toml").exists():
        pytest.skip("this machine has a system config file")
    system = {"HOME": str(home), "DEDUPD_SYSTEM": "1"}
    first = check_config(environ=system).stdout.splitlines()[0]
    assert first == ("# effective settings: built-in defaults (no config file: /etc/dedupd/dedupd.toml does not "
                     f"exist; {user_file} is a user's file, not read with the system locations (as root or "
                     "DEDUPD_SYSTEM=1): name it with --config, or set DEDUPD_SYSTEM=0), then DEDUPD_* environment "
                     "variables")
    user = {"HOME": str(home), "DEDUPD_SYSTEM": "0"}
    assert check_config(environ=user).stdout.splitlines()[0] == \
        f"# effective settings: {user_file}, then DEDUPD_* environment variables"
