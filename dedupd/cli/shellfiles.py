"""Shell completion (bash, zsh, fish) and man pages for `dedupd` and `dedupctl`, generated from their parsers.

The files live in the source tree's `share/` in the layout of `<prefix>/share` and are installed there by the
package (data-files: `<venv>/share/bash-completion/completions/dedupctl`, `share/man/man1/dedupctl.1`, ...).
`dedupd install-shell-files` copies them where a user's shells and `man` look (or, as root, under
/usr/local/share). They are generated, never edited: `python -m dedupd.cli.shellfiles` rewrites them from the
parsers (needs the `dev` extra); a test fails when they are out of date.

Chosen tools: shtab (bash and zsh completion from an argparse parser; static scripts, no import at TAB time)
and argparse-manpage (man pages from the same parsers). argcomplete was considered too: it covers fish, but
runs the program on every TAB, and needs a hook in it. shtab has no fish output, so `fish_completion` writes
fish's `complete` lines from the parser itself.
"""

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dedupd import __release_date__, __version__, paths
from dedupd.errors import DedupdError

PROGRAMS = ("dedupd", "dedupctl")
#: Where each kind of file goes below a `share` directory, by its name there.
LAYOUT = {
    "bash": ("bash-completion/completions", "{program}"),
    "zsh": ("zsh/site-functions", "_{program}"),
    "fish": ("fish/vendor_completions.d", "{program}.fish"),
    "man": ("man/man1", "{program}.1"),
}
#: Positional arguments and options that take a path, by `dest`: offered file-name completion.
_PATH_DESTS = {"file", "path", "paths", "dir", "config", "socket", "under", "output", "outfile", "model",
               "unit_dir", "executable"}


def source_share() -> Path:
    """`share/` of the source tree (a checkout or an editable install), else the installed `<prefix>/share`."""
    tree = Path(__file__).resolve().parents[2] / "share"
    return tree if (tree / "man" / "man1" / "dedupd.1").is_file() else Path(sys.prefix) / "share"


def parser_of(program: str) -> argparse.ArgumentParser:
    from dedupd.cli import dedupctl, dedupd

    return (dedupd if program == "dedupd" else dedupctl).build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[list[str], argparse.ArgumentParser, str]]:
    """(words leading to it, parser, help) for every sub-command, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield [name], sub, helps.get(name, "")
                for words, deeper, help_text in _subparsers(sub):
                    yield [name, *words], deeper, help_text


def _mark_paths(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """shtab's file completion (its `complete` attribute) on every argument that takes a path."""
    import shtab

    for current in [parser, *(sub for _, sub, _ in _subparsers(parser))]:
        for action in current._actions:
            if action.dest in _PATH_DESTS and action.nargs != 0:
                action.complete = shtab.DIRECTORY if action.dest in ("dir", "unit_dir") else shtab.FILE  # type: ignore[attr-defined]
    return parser


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_completion(program: str, parser: argparse.ArgumentParser) -> str:
    """fish `complete` lines: sub-commands after their parents, each one's options after it, paths as files."""
    lines = [f"# fish completion for {program}, generated from its parser by dedupd.cli.shellfiles",
             f"complete -c {program} -f"]
    commands = list(_subparsers(parser))
    top = [words[0] for words, _, _ in commands if len(words) == 1]
    for words, _, help_text in commands:
        if len(words) == 1:
            condition = f"not __fish_seen_subcommand_from {' '.join(top)}"
        else:
            siblings = [w[-1] for w, _, _ in commands if w[:-1] == words[:-1]]
            condition = (f"__fish_seen_subcommand_from {words[-2]}; and not __fish_seen_subcommand_from "
                         f"{' '.join(siblings)}")
        lines.append(f"complete -c {program} -n {_fish_quote(condition)} -a {words[-1]} -d {_fish_quote(help_text)}")
    everywhere = {flag for action in parser._actions for flag in action.option_strings}  # said once, unconditioned
    for words, current in [([], parser), *((w, s) for w, s, _ in commands)]:
        condition = f" -n {_fish_quote('__fish_seen_subcommand_from ' + words[-1])}" if words else ""
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS or \
                    words and set(action.option_strings) & everywhere:
                continue
            takes_path = action.dest in _PATH_DESTS and action.nargs != 0
            if not action.option_strings:
                if takes_path:
                    lines.append(f"complete -c {program}{condition} -F")
                continue
            flags = " ".join(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
                             for flag in action.option_strings)
            value = ""
            if action.choices:
                value = f" -xa {_fish_quote(' '.join(map(str, action.choices)))}"
            elif takes_path:
                value = " -rF"
            elif action.nargs != 0:
                value = " -x"
            lines.append(f"complete -c {program}{condition} {flags}{value} -d {_fish_quote(action.help or '')}")
    return "\n".join(lines) + "\n"


def man_page(program: str, parser: argparse.ArgumentParser) -> str:
    from argparse_manpage.manpage import Manpage

    summary = {"dedupd": "find duplicate images, once or live (the daemon)",
               "dedupctl": "ask a running dedupd"}[program]
    return str(Manpage(parser, _data={"project_name": "dedupd", "version": __version__, "date": __release_date__,
                                      "description": summary, "manual_title": "dedupd manual",
                                      "url": "docs/operators-guide.md in the source"}))


def generate(share: Path) -> list[Path]:
    """Write every completion script and man page below `share` (the dev tools shtab and argparse-manpage)."""
    import shtab

    makers: Mapping[str, Callable[[str, argparse.ArgumentParser], str]] = {
        "bash": lambda program, parser: shtab.complete(_mark_paths(parser), shell="bash"),
        "zsh": lambda program, parser: shtab.complete(_mark_paths(parser), shell="zsh"),
        "fish": fish_completion,
        "man": man_page,
    }
    written = []
    for kind, (folder, name) in LAYOUT.items():
        for program in PROGRAMS:
            target = share / folder / name.format(program=program)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(makers[kind](program, parser_of(program)))
            written.append(target)
    return written


@dataclass(frozen=True, slots=True)
class Copy:
    source: Path
    target: Path


def user_targets(environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Where a user's bash-completion, zsh (with the fpath line the guide gives), fish and man look."""
    env = os.environ if environ is None else environ
    home = paths.home(env)
    data = Path(env["XDG_DATA_HOME"]) if os.path.isabs(env.get("XDG_DATA_HOME", "")) else home / ".local/share"
    config = Path(env["XDG_CONFIG_HOME"]) if os.path.isabs(env.get("XDG_CONFIG_HOME", "")) else home / ".config"
    return {"bash": data / "bash-completion/completions", "zsh": data / "zsh/site-functions",
            "fish": config / "fish/completions", "man": data / "man/man1"}


def plan(prefix: Path | None, environ: Mapping[str, str] | None = None) -> list[Copy]:
    """The copies `install-shell-files` makes: into `prefix/share/...` when given, else the user's directories."""
    share = source_share()
    targets = user_targets(environ) if prefix is None else {kind: prefix / "share" / folder
                                                            for kind, (folder, _) in LAYOUT.items()}
    copies = []
    for kind, (folder, name) in LAYOUT.items():
        for program in PROGRAMS:
            source = share / folder / name.format(program=program)
            if not source.is_file():
                raise DedupdError(f"{source} is missing: this copy of dedupd was installed without its shell files")
            copies.append(Copy(source, targets[kind] / source.name))
    return copies


def install(copies: list[Copy]) -> None:
    try:
        for copy in copies:
            copy.target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copy.source, copy.target)
    except OSError as exc:
        raise DedupdError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m dedupd.cli.shellfiles [SHARE]`: regenerate the files (default: the source tree's share/)."""
    args = argv if argv is not None else sys.argv[1:]
    share = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "share"
    for path in generate(share):
        print(f"wrote {shlex.quote(str(path))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
