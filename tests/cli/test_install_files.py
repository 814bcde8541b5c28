"""What the package installs besides the code: shell completion and man pages generated from the parsers (in
real bash, fish, zsh and man), `dedupd install-shell-files`, and `install-unit` from an installed wheel (the units
as data files; PrivateTmp= off when the program or a root lies under /tmp)."""

import filecmp
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from dedupd.cli import shellfiles
from dedupd.service import install

REPO = Path(__file__).resolve().parents[2]
SHARE = REPO / "share"


def test_the_shipped_files_are_what_the_parsers_generate_now(tmp_path: Path) -> None:
    """Regenerate with `python -m dedupd.cli.shellfiles` after changing an option."""
    written = shellfiles.generate(tmp_path)
    assert len(written) == 8
    stale = [str(path.relative_to(tmp_path)) for path in written
             if not filecmp.cmp(path, SHARE / path.relative_to(tmp_path), shallow=False)]
    assert stale == [], "run: python -m dedupd.cli.shellfiles"


def _bash_complete(program: str, line: str) -> list[str]:
    words = line.split(" ")
    script = (f"source {SHARE / 'bash-completion/completions' / program}\n"
              f"COMP_WORDS=({' '.join(repr(word) for word in words)}); COMP_CWORD={len(words) - 1}\n"
              f"COMP_LINE={line!r}; COMP_POINT={len(line)}\n"
              f"_shtab_{program} {program} {words[-1]!r} {words[-2]!r}\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_bash_completes_verbs_and_global_options_after_the_verb() -> None:
    assert {"status", "wait-idle", "to-remove", "watch"} <= set(_bash_complete("dedupctl", "dedupctl "))
    assert "--json" in _bash_complete("dedupctl", "dedupctl status --j")
    assert {"--null", "--under", "--config"} <= set(_bash_complete("dedupctl", "dedupctl to-remove --"))
    assert {"add", "list", "remove"} == set(_bash_complete("dedupctl", "dedupctl watch "))
    assert {"run", "scan", "check-config", "install-shell-files"} <= set(_bash_complete("dedupd", "dedupd "))


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish (CI installs it)")
def test_fish_completes_verbs_options_and_method_names() -> None:
    def complete(line: str) -> list[str]:
        script = f"source {SHARE / 'fish/vendor_completions.d/dedupctl.fish'}; complete -C '{line}'"
        done = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, timeout=60,
                              check=True)
        return [entry.split("\t")[0] for entry in done.stdout.splitlines()]

    assert "status" in complete("dedupctl st")
    assert "--json" in complete("dedupctl status --j")
    assert set(complete("dedupctl watch ")) == {"add", "list", "remove"}
    assert {"exact", "phash", "cnn"} <= set(complete("dedupctl query --method "))


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh (CI installs it)")
def test_zsh_completion_functions_load() -> None:
    for program in shellfiles.PROGRAMS:
        path = SHARE / "zsh/site-functions" / f"_{program}"
        script = f"autoload -Uz compinit && compinit -u -D; source {path}; (( $+functions[_shtab_{program}] ))"
        subprocess.run(["zsh", "-f", "-c", script], check=True, timeout=60, capture_output=True)


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man")
def test_man_pages_render_with_the_new_options() -> None:
    env = {**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0"}
    page = subprocess.run(["man", "-l", str(SHARE / "man/man1/dedupctl.1")], capture_output=True, text=True,
                          timeout=60, env=env, check=True).stdout
    assert "ask a running dedupd" in page and "--config" in page and "--version" in page and "wait-idle" in page
    page = subprocess.run(["man", "-l", str(SHARE / "man/man1/dedupd.1")], capture_output=True, text=True,
                          timeout=60, env=env, check=True).stdout
    assert "check-config" in page and "install-shell-files" in page


def test_install_shell_files_puts_them_where_the_shells_look(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")} | {"HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "dedupd", "install-shell-files"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    for path in (".local/share/bash-completion/completions/dedupctl", ".local/share/zsh/site-functions/_dedupd",
                 ".config/fish/completions/dedupctl.fish", ".local/share/man/man1/dedupd.1"):
        assert (tmp_path / path).is_file() and f"wrote {tmp_path / path}" in run.stdout
    assert "fpath=(" in run.stderr
    prefix = tmp_path / "prefix"
    run = subprocess.run([sys.executable, "-m", "dedupd", "install-shell-files", "--prefix", str(prefix),
                          "--dry-run"], capture_output=True, text=True, timeout=120, env=env)
    assert f"would write {prefix}/share/man/man1/dedupctl.1" in run.stdout and not prefix.exists()


def test_private_tmp_is_off_when_the_program_or_a_root_lies_under_tmp(tmp_path: Path) -> None:
    library = Path("/tmp") / f"dedupd-test-lib-{os.getpid()}"
    home = Path("/var/lib/dedupd-test-home")  # outside /tmp: only the root and the program are there
    config = tmp_path / "config/dedupd/dedupd.toml"  # read through XDG_CONFIG_HOME: the unit's environment
    config.parent.mkdir(parents=True)
    config.write_text(f'state_dir = "{home / "state"}"\n[[roots]]\npath = "{library}"\n')
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": "/run/user/0", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    program = Path("/usr/bin/env")
    plan = install.plan_install(False, unit_dir=tmp_path / "units", executable=program, sandbox=True, environ=env)
    drop_in = next(unit.text for unit in plan.files if unit.path.name == "sandbox.conf")
    assert "PrivateTmp=yes" not in drop_in and f"PrivateTmp=no (dedupd install-unit): {library}" in drop_in
    assert any(f"PrivateTmp= is off: {library}" in note for note in plan.notes)
    elsewhere = tmp_path / "units2"
    config.write_text(f'state_dir = "{home / "state"}"\n[[roots]]\npath = "/srv/photos"\n')
    plan = install.plan_install(False, unit_dir=elsewhere, executable=program, sandbox=True, environ=env)
    assert "PrivateTmp=yes" in next(unit.text for unit in plan.files if unit.path.name == "sandbox.conf")
    plan = install.plan_install(False, unit_dir=elsewhere, executable=tmp_path / "bin/dedupd", sandbox=True,
                                environ=env)
    assert "PrivateTmp=no" in next(unit.text for unit in plan.files if unit.path.name == "sandbox.conf")


def test_an_installed_wheel_has_its_units_and_shell_files(tmp_path: Path) -> None:
    """Built as a user's pip would, installed into a fresh environment (its dependencies borrowed from ours):
    install-unit and install-shell-files work without the source tree."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    environment = tmp_path / "env"
    venv.create(environment, with_pip=False)
    wheel = next((tmp_path / "wheel").glob("dedupd-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(environment / "bin/python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=600)
    site = next(environment.glob("lib/python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "numpy").is_dir())
    (site / "borrowed.pth").write_text(f"{ours}\n")
    assert (environment / "share/bash-completion/completions/dedupctl").is_file()
    assert (environment / "share/man/man1/dedupd.1").is_file()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "DEDUPD_"))}
    env |= {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    code = "import dedupd.service.install as i; print(i.UNITS_DIR)"
    where = subprocess.run([str(environment / "bin/python"), "-c", code], capture_output=True, text=True, env=env,
                           timeout=120, check=True, cwd=tmp_path).stdout.strip()
    assert where == str(environment / "share/dedupd/systemd")
    run = subprocess.run([str(environment / "bin/dedupd"), "install-unit", "--user", "--dry-run"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"ExecStart={environment / 'bin/dedupd'} run" in run.stdout
    run = subprocess.run([str(environment / "bin/dedupd"), "install-shell-files", "--dry-run"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert run.returncode == 0 and "dedupctl.fish" in run.stdout, run.stderr
