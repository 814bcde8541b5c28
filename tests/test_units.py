"""The shipped systemd units (systemd/) and `dedupd install-unit`: `systemd-analyze verify` on the units as
install-unit renders them (system, user with its sandbox drop-in, socket), the settings the requirements name,
agreement with dedupd.paths, and what install-unit writes, prints and never runs."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedupd import paths
from dedupd.service import install

UNITS = install.UNITS_DIR
ANALYZE = shutil.which("systemd-analyze")
NEEDS_ANALYZE = pytest.mark.skipif(ANALYZE is None,
                                   reason="needs systemd-analyze (the systemd package; CI installs it)")
#: Sandboxing that needs a mount namespace: a user manager can apply it only with PrivateUsers=.
MOUNT_NAMESPACE_SETTINGS = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths", "ReadOnlyPaths",
    "InaccessiblePaths", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectHostname", "ProtectClock", "ProtectProc", "PrivateNetwork", "PrivateMounts", "PrivateUsers",
    "DynamicUser", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
}


def settings_of(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (any section) -> {key: [values in order]}."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def one(text: str, key: str) -> str:
    values = settings_of(text)[key]
    assert len(values) == 1, (key, values)
    return values[0]


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose home, XDG directories and runtime directory are under tmp_path."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "DEDUPD_"))}
    return {**env, "HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime)}


def write_plan(system: bool, unit_dir: Path, environ: dict[str, str], **options: object) -> install.Plan:
    plan = install.plan_install(system, socket=True, unit_dir=unit_dir, environ=environ, **options)  # type: ignore[arg-type]
    install.write(plan)
    return plan


def analyze(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, env=environ, timeout=120)


def about(output: str, unit_dir: Path) -> list[str]:
    """The lines of systemd-analyze's output about our units (it may also complain about the host's own)."""
    return [line for line in output.splitlines() if str(unit_dir) in line or "dedupd" in line]


# ---- systemd-analyze ----

@NEEDS_ANALYZE
def test_the_system_units_verify_cleanly(tmp_path, home):
    unit_dir = tmp_path / "system"
    write_plan(True, unit_dir, home)
    run = analyze("verify", str(unit_dir / "dedupd.service"), str(unit_dir / "dedupd.socket"), environ=home)
    assert run.returncode == 0 and about(run.stdout + run.stderr, unit_dir) == [], run.stdout + run.stderr


@NEEDS_ANALYZE
@pytest.mark.parametrize("sandbox", [True, False])
def test_the_user_units_verify_cleanly_with_and_without_the_sandbox(tmp_path, home, sandbox):
    unit_dir = tmp_path / "user"
    plan = write_plan(False, unit_dir, home, sandbox=sandbox)
    assert (unit_dir / "dedupd.service.d" / "sandbox.conf").exists() == sandbox
    assert all(directory.is_dir() for directory in plan.directories)  # ReadWritePaths= must exist at start
    # --user needs a runtime directory for its (unstarted) manager; the drop-in beside the unit is read too.
    run = analyze("--user", "verify", str(unit_dir / "dedupd.service"), str(unit_dir / "dedupd.socket"),
                  environ=home)
    assert run.returncode == 0 and about(run.stdout + run.stderr, unit_dir) == [], run.stdout + run.stderr


@NEEDS_ANALYZE
def test_verify_reads_the_drop_in_so_a_broken_one_would_show(tmp_path, home):
    """Guards the two tests above: an unknown setting in the drop-in is reported, so their silence means something."""
    unit_dir = tmp_path / "user"
    write_plan(False, unit_dir, home, sandbox=True)
    with (unit_dir / "dedupd.service.d" / "sandbox.conf").open("a") as drop_in:
        drop_in.write("NoSuchSetting=yes\n")
    run = analyze("--user", "verify", str(unit_dir / "dedupd.service"), environ=home)
    assert "NoSuchSetting" in run.stdout + run.stderr


@NEEDS_ANALYZE
def test_an_executable_path_with_spaces_and_percent_is_escaped(tmp_path, home):
    odd = tmp_path / "my 100% bin" / "dedupd"
    odd.parent.mkdir()
    odd.symlink_to(install.dedupd_executable())
    unit_dir = tmp_path / "system"
    write_plan(True, unit_dir, home, executable=odd)
    text = (unit_dir / "dedupd.service").read_text()
    assert one(text, "ExecStart") == f'"{tmp_path}/my 100%% bin/dedupd" run'
    run = analyze("verify", str(unit_dir / "dedupd.service"), environ=home)
    assert run.returncode == 0 and about(run.stdout + run.stderr, unit_dir) == [], run.stdout + run.stderr


@NEEDS_ANALYZE
def test_the_system_unit_exposure_stays_low(tmp_path, home):
    unit_dir = tmp_path / "system"
    write_plan(True, unit_dir, home)
    run = analyze("security", "--offline=yes", "--threshold=20", str(unit_dir / "dedupd.service"), environ=home)
    if "--offline" in run.stderr and "unrecognized" in run.stderr:
        pytest.skip("this systemd-analyze has no offline security review (systemd < 250)")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr  # exposure <= 2.0 of 10


@pytest.mark.e2e
@NEEDS_ANALYZE
def test_the_daemon_indexes_every_format_under_the_system_units_seccomp_rules(tmp_path, photos):
    """SystemCallFilter=@system-service, RestrictAddressFamilies=AF_UNIX and MemoryDenyWriteExecute=yes around a
    real daemon with the CNN: onnxruntime, the decoders (HEIC, AVIF, ...) and the encode workers must live with them."""
    pytest.importorskip("pyseccomp", reason="needs pyseccomp (dev extra) and libseccomp")
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    library = tmp_path / "photos"
    library.mkdir()
    formats = ("jpg", "png", "gif", "webp", "tiff", "heic", "avif")
    for photo in photos[:2]:
        with Image.open(photo) as image:
            small = image.convert("RGB").resize((192, 192))
        for extension in formats:
            small.save(library / f"{photo.stem}.{extension}")
    control = tmp_path / "run" / "control.sock"
    config = tmp_path / "dedupd.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nsocket = "{control}"\nsettle_ms = 300\n'
                      f'encode_workers = 1\n\n[[roots]]\npath = "{library}"\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(0.5)
        daemon = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("unit_sandbox.py")), str(UNITS / "dedupd.service"),
             sys.executable, "-m", "dedupd", "run", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while daemon.poll() is None and time.monotonic() < deadline:
                try:
                    if "READY=1" in notify.recv(4096).decode().splitlines():
                        break
                except TimeoutError:
                    continue
            assert daemon.poll() is None, daemon.communicate()[0]
            ctl = [sys.executable, "-m", "dedupd.cli.dedupctl", "--socket", str(control)]
            subprocess.run([*ctl, "wait-idle", "--timeout", "120"], check=True, capture_output=True, timeout=180)
            status = json.loads(subprocess.run([*ctl, "--json", "status"], check=True, capture_output=True,
                                               text=True, timeout=60).stdout)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
            output = daemon.communicate()[0]
    assert status["counts"]["indexed"] == 2 * len(formats), output
    assert status["counts"]["skipped"] == {} and status["cnn"]["enabled"], output


# ---- what the units say ----

def test_the_system_unit_is_a_hardened_notify_service():
    unit = settings_of((UNITS / "dedupd.service").read_text())
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
        "TimeoutStopSec": "60", "Environment": "DEDUPD_SYSTEM=1", "DynamicUser": "yes", "StateDirectory": "dedupd",
        "RuntimeDirectory": "dedupd", "ConfigurationDirectory": "dedupd", "ProtectSystem": "strict",
        "ProtectHome": "read-only", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX", "SystemCallFilter": "@system-service", "ExecStart": "/usr/bin/dedupd run",
        "ExecReload": "/bin/kill -HUP $MAINPID", "KillMode": "mixed", "WantedBy": "multi-user.target",
        "MemoryDenyWriteExecute": "yes",
    }
    assert {key: unit.get(key) for key in expected} == {key: [value] for key, value in expected.items()}
    assert "ProtectProc" not in unit  # the control socket reads a client's groups from /proc/PID/status


def test_the_user_unit_has_no_mount_sandbox_and_its_drop_in_has_it_with_private_users():
    unit = settings_of((UNITS / "dedupd.user.service").read_text())
    for key, value in {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "StateDirectory": "dedupd",
                       "RuntimeDirectory": "dedupd", "ExecReload": "/bin/kill -HUP $MAINPID",
                       "WantedBy": "default.target", "SystemCallFilter": "@system-service"}.items():
        assert unit.get(key) == [value], key
    assert MOUNT_NAMESPACE_SETTINGS.isdisjoint(unit)  # starts on any user manager, with or without user namespaces
    assert "MemoryDenyWriteExecute" not in unit  # the desktop's GPU driver was not tested under W^X
    drop_in = settings_of((UNITS / "dedupd.user-sandbox.conf").read_text())
    assert drop_in["PrivateUsers"] == ["yes"] and drop_in["ProtectHome"] == ["read-only"]
    assert drop_in["ReadWritePaths"] == ["%S/dedupd %t/dedupd"]


@pytest.mark.parametrize("system", [True, False])
def test_the_units_put_the_socket_where_dedupctl_looks(system):
    """%t is /run (system manager) or $XDG_RUNTIME_DIR (user manager); paths.py must name the same socket."""
    runtime = "/run" if system else "/run/user/1000"
    environ = {"DEDUPD_SYSTEM": "1" if system else "0", "XDG_RUNTIME_DIR": runtime, "HOME": "/home/someone"}
    listen = one((UNITS / "dedupd.socket").read_text(), "ListenStream").replace("%t", runtime)
    assert Path(listen) == paths.default_locations(environ).socket
    service = (UNITS / ("dedupd.service" if system else "dedupd.user.service")).read_text()
    assert Path(runtime, one(service, "RuntimeDirectory")) == Path(listen).parent


def test_the_system_unit_directories_are_the_system_defaults():
    unit = (UNITS / "dedupd.service").read_text()
    system = paths.default_locations({"DEDUPD_SYSTEM": "1"})
    assert Path("/var/lib", one(unit, "StateDirectory")) == system.state_dir
    assert Path("/etc", one(unit, "ConfigurationDirectory")) == system.config_file.parent


# ---- install-unit ----

def test_the_user_plan_points_at_this_environment_and_makes_the_configured_directories_writable(tmp_path, home):
    config = Path(home["HOME"]) / ".config" / "dedupd" / "dedupd.toml"
    config.parent.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    config.write_text(f'state_dir = "{elsewhere / "state"}"\nreport_dir = "{tmp_path / "reports"}"\n')
    plan = install.plan_install(False, unit_dir=tmp_path / "units", sandbox=True,
                                environ={**home, "DEDUPD_STATE_DIR": "/ignored/by/the/unit"})
    service, drop_in = plan.files
    assert service.path == tmp_path / "units" / "dedupd.service"
    assert one(service.text, "ExecStart") == f"{install.dedupd_executable()} run"
    assert drop_in.path == tmp_path / "units" / "dedupd.service.d" / "sandbox.conf"
    assert settings_of(drop_in.text)["ReadWritePaths"] == ["%S/dedupd %t/dedupd",
                                                           f"{elsewhere / 'state'} {tmp_path / 'reports'}"]
    assert plan.directories == (elsewhere / "state", tmp_path / "reports")
    assert plan.commands == (("systemctl", "--user", "daemon-reload"),
                             ("systemctl", "--user", "enable", "--now", "dedupd.service"))


def test_without_user_namespaces_the_user_plan_has_no_drop_in_and_says_so(tmp_path, home):
    plan = install.plan_install(False, socket=True, unit_dir=tmp_path, sandbox=False, environ=home)
    assert [f.path.name for f in plan.files] == ["dedupd.service", "dedupd.socket"] and plan.directories == ()
    assert any("without its mount sandbox" in note for note in plan.notes)
    assert plan.commands[-1] == ("systemctl", "--user", "enable", "--now", "dedupd.socket", "dedupd.service")


def test_the_sandbox_is_offered_exactly_when_user_namespaces_work():
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to compare with")
    unshare = subprocess.run(["unshare", "--user", "true"], capture_output=True)
    assert install.user_namespaces_available() == (unshare.returncode == 0)


def test_the_system_plan_warns_about_an_executable_the_dynamic_user_cannot_read(tmp_path, home):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    program = private / "dedupd"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    plan = install.plan_install(True, unit_dir=tmp_path / "units", executable=program, environ=home)
    assert any(note.startswith(f"warning: {program} is not readable by other users") for note in plan.notes)
    assert plan.commands == (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", "dedupd.service"))
    readable = install.plan_install(True, unit_dir=tmp_path / "units", executable=Path("/bin/sh"), environ=home)
    assert not any("is not readable by other users" in note for note in readable.notes)


def dedupd_cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd", "install-unit", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_dry_run_prints_the_units_and_the_commands_and_writes_nothing(tmp_path, home):
    unit_dir = tmp_path / "units"
    run = dedupd_cli("--user", "--socket", "--dry-run", "--unit-dir", str(unit_dir), environ=home)
    assert run.returncode == 0, run.stderr
    assert f"# {unit_dir / 'dedupd.service'}\n" in run.stdout and f"# {unit_dir / 'dedupd.socket'}\n" in run.stdout
    assert f"ExecStart={install.dedupd_executable()} run\n" in run.stdout
    assert "  systemctl --user enable --now dedupd.socket dedupd.service\n" in run.stdout
    assert not unit_dir.exists() and not (Path(home["HOME"]) / ".local").exists()


def test_install_writes_the_units_and_runs_systemctl_only_with_enable(tmp_path, home):
    no_systemctl = {**home, "PATH": str(tmp_path / "empty-path")}  # systemctl cannot be run from here
    unit_dir = tmp_path / "units"
    run = dedupd_cli("--user", "--unit-dir", str(unit_dir), environ=no_systemctl)
    assert run.returncode == 0, run.stderr  # so it did not try to run systemctl
    assert f"wrote {unit_dir / 'dedupd.service'}" in run.stdout
    assert "  systemctl --user daemon-reload\n" in run.stdout
    assert one((unit_dir / "dedupd.service").read_text(), "ExecStart") == f"{install.dedupd_executable()} run"
    enabled = dedupd_cli("--user", "--unit-dir", str(unit_dir), "--enable", environ=no_systemctl)
    assert enabled.returncode == 2 and "systemctl not found" in enabled.stderr

