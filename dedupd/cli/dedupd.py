"""The `dedupd` command: `run` (the daemon), one-shot `scan` and `encode`, and `model export`.

Owns argument parsing and output formatting only (clear text by default, one JSON document with
`--json`, a progress bar only when stderr is a terminal); the work is done by `dedupd.methods`
(imagededup semantics, `--method`) and `dedupd.matcher` and `dedupd.scan` (dedupd's own matcher, the default).
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dedupd import __version__
from dedupd.errors import DedupdError, SkipReason
from dedupd.names import shown

HASH_METHODS = ("phash", "ahash", "dhash", "whash")
EXIT_FAILED = 1
EXIT_USAGE = 2
#: What `model export` needs: the optional `export` extra of the package.
EXPORT_EXTRA = ("torch", "torchvision", "onnx", "onnxscript")


def _hasher(method: str, verbose: bool) -> Any:
    from dedupd import methods

    return getattr(methods, "CNN" if method == "cnn" else method[0].upper() + "Hash")(verbose=verbose)


def _show_progress() -> bool:
    return sys.stderr.isatty()


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


class _Skips(logging.Handler):
    """Turns the library's two-line "Invalid image file PATH:\nWHY" warnings (imagededup's) into one line per
    skipped file: collected and printed sorted after the results, or at once when an encode worker process (a
    fork, whose copy of this handler the parent never sees) logs it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped: dict[str, str] = {}
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Invalid image file %s:\n%s" and isinstance(record.args, tuple) and len(record.args) == 2:
            path, why = str(record.args[0]), str(record.args[1]).splitlines()[-1]
            if os.getpid() != self._pid:
                print(shown(f"skipped {path}: {why}"), file=sys.stderr)
            self.skipped.setdefault(path, why)
        else:
            print(f"{record.levelname} {record.name}: {record.getMessage()}", file=sys.stderr)

    def __enter__(self) -> "_Skips":
        library = logging.getLogger("dedupd.methods")
        self._saved = library.propagate
        library.addHandler(self)
        library.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        library = logging.getLogger("dedupd.methods")
        library.removeHandler(self)
        library.propagate = self._saved
        for path, why in sorted(self.skipped.items()):
            print(shown(f"skipped {path}: {why}"), file=sys.stderr)


def _scan_with_method(args: argparse.Namespace) -> int:
    """imagededup's find_duplicates for one method, its dict printed as is with --json; in text, each pair once,
    sorted."""
    hasher = _hasher(args.method, _show_progress())
    if args.method == "cnn":
        if args.threshold is not None:
            raise DedupdError("--threshold is for hash methods; use --min-similarity with --method cnn")
        kwargs: dict[str, Any] = {}
        if args.min_similarity is not None:
            kwargs["min_similarity_threshold"] = args.min_similarity
    else:
        if args.min_similarity is not None:
            raise DedupdError("--min-similarity is for --method cnn; use --threshold with hash methods")
        kwargs = {"max_distance_threshold": 10 if args.threshold is None else args.threshold,
                  "num_enc_workers": args.workers}
    with _Skips():
        results = hasher.find_duplicates(
            image_dir=args.dir, scores=args.scores, outfile=args.outfile, recursive=args.recursive, **kwargs
        )
    if args.json:
        _print_json(_plain_json(results))
        return 0
    paired: set[frozenset[str]] = set()
    for name in sorted(results):
        pairs = sorted((item[0], f" ({_score_text(item[1])})") if isinstance(item, tuple) else (str(item), "")
                       for item in results[name])
        new = [f"{other}{score}" for other, score in pairs if frozenset((name, other)) not in paired]
        paired.update(frozenset((name, other)) for other, _ in pairs)
        if new:
            print(shown(f"{name}: {', '.join(new)}"))
    total = sum(1 for found in results.values() if found)
    print(f"{total} of {len(results)} images have duplicates, {len(paired)} pairs ({args.method}).", file=sys.stderr)
    return 0


def _score_text(score: Any) -> str:
    return f"{float(score):.3f}" if isinstance(score, float) or hasattr(score, "dtype") and score.dtype.kind == "f" \
        else str(int(score))


def _plain_json(results: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """numpy scalars -> Python numbers so the dict serialises exactly like imagededup's save_json."""
    return {str(key): [[str(item[0]), item[1].item() if hasattr(item[1], "item") else item[1]]
                       if isinstance(item, tuple) else str(item) for item in found]
            for key, found in results.items()}


def _scan_with_matcher(args: argparse.Namespace) -> int:
    """dedupd's own matcher: exact digest, orientation-aware hashes, CNN; groups with how they matched."""
    from dedupd.scan import scan_directory
    from dedupd.search.matcher import MatcherSettings

    settings = MatcherSettings.defaults()
    if args.no_cnn:
        settings = settings.without_cnn()
    if args.threshold is not None:
        settings = settings.with_threshold(args.threshold)
    if args.min_similarity is not None:
        settings = settings.with_min_similarity(args.min_similarity)
    directory = Path(os.path.abspath(args.dir))  # the README shows absolute paths, whatever the cwd
    result = scan_directory(directory, settings, recursive=args.recursive, workers=args.workers,
                            progress=_show_progress(), model=args.model)
    document = result.to_json(directory)
    if args.outfile:
        with open(args.outfile, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
    if args.json:
        _print_json(document)
        return 0
    tiers = [("group", document["groups"])] + ([("similar group", document["similar"])] if args.similar else [])
    for label, groups in tiers:
        for number, group in enumerate(groups, 1):
            print(f"{label} {number}:")
            for member in group:
                score = member.get("distance", member.get("similarity"))
                why = f"  keep: {member['keep']}" if "keep" in member else ""
                evidence = f"  ({member['evidence']})" if label != "group" and member.get("evidence") else ""
                print(shown(f"  {member['path']}  [{member['method']} {score}]{why}{evidence}"))
    broken = [skipped for skipped in document["skipped"] if skipped["reason"] != SkipReason.VIDEO]
    for skipped in broken:
        print(shown(f"skipped {skipped['path']}: {skipped['reason']}"), file=sys.stderr)
    similar = f", {len(document['similar'])} similar groups" if args.similar else ""
    videos = len(document["skipped"]) - len(broken)
    quiet = "".join(f", {n} {what}" for n, what in ((videos, "videos"), (document["companions"]["sidecar"], "sidecars"),
                                                   (document["companions"]["motion"], "motion files")) if n)
    print(f"{len(document['groups'])} duplicate groups{similar} among {result.encoded} images "
          f"({len(broken)} skipped{quiet}).", file=sys.stderr)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.dir):
        raise DedupdError(f"not a directory: {args.dir}")
    if args.threshold is not None and not 0 <= args.threshold <= 64:
        raise DedupdError("--threshold must be between 0 and 64")
    if args.min_similarity is not None and not -1.0 <= args.min_similarity <= 1.0:
        raise DedupdError("--min-similarity must be between -1.0 and 1.0")
    return _scan_with_method(args) if args.method else _scan_with_matcher(args)


def cmd_encode(args: argparse.Namespace) -> int:
    """The encodings of a file (exit 1 when it cannot be decoded) or of a directory's decodable files."""
    path = Path(args.path)
    if not path.exists():
        raise DedupdError(f"no such file or directory: {path}")
    hasher = _hasher(args.method, _show_progress())
    with _Skips() as skips:
        if path.is_dir():
            encodings = hasher.encode_images(path, recursive=args.recursive, **(
                {} if args.method == "cnn" else {"num_enc_workers": args.workers}))
        else:
            value = hasher.encode_image(image_file=path)
            encodings = {path.name: value} if value is not None else {}
    if not path.is_dir() and not encodings:
        reason = next(iter(skips.skipped.values()), "cannot be decoded")
        print(shown(f"dedupd: error: cannot encode {path}: {reason}"), file=sys.stderr)
        return EXIT_FAILED
    if args.method == "cnn":
        encodings = {name: vector.ravel().tolist() for name, vector in encodings.items()}
    if args.json:
        _print_json(encodings)
    else:
        for name, value in encodings.items():
            print(shown(f"{value if isinstance(value, str) else len(value)}  {name}"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dedupd.service.daemon import run

    return run(Path(args.config) if args.config else None)


def cmd_model_export(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [name for name in EXPORT_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise DedupdError(f"model export needs the `export` extra ({', '.join(EXPORT_EXTRA)}); missing: "
                          f"{', '.join(missing)}. Install it with: pip install 'dedupd[export]' (in a clone: "
                          ".venv/bin/pip install -e '.[export]')")
    from dedupd.imaging.export import export_mobilenet_v3_small

    weights = None if args.weights == "none" else args.weights
    written = export_mobilenet_v3_small(Path(args.output), weights=weights)
    print(f"wrote {written}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config the daemon would read and print the effective settings (file + environment); warn
    about roots that do not exist now."""
    from dedupd.config import load_settings
    from dedupd.paths import find_config_file, no_config_reason

    settings = load_settings(args.config)
    for root in settings.missing_roots():
        print(f"dedupd: warning: root {root} does not exist (it is watched once it appears)", file=sys.stderr)
    if args.json:
        _print_json(settings.as_dict())
        return 0
    source = find_config_file(args.config)
    read = str(source) if source is not None else f"built-in defaults (no config file: {no_config_reason()})"
    print(f"# effective settings: {read}, then DEDUPD_* environment variables")
    sys.stdout.write(settings.to_toml())
    return 0


def cmd_check_store(args: argparse.Namespace) -> int:
    """Verify the store (0 sound, 1 damaged); with --repair rebuild a damaged one from what can be read."""
    from dedupd import store
    from dedupd.config import load_settings

    state_dir = load_settings(args.config).state_dir
    problems = store.diagnose(state_dir)
    document: dict[str, Any] = {"state_dir": str(state_dir), "sound": not problems, "problems": problems or []}
    if problems and args.repair:
        done = store.repair(state_dir)
        document["repair"] = {"kept": done.kept, "dropped": done.dropped, "ignored_pairs": done.ignored,
                              "damaged_copy": str(done.damaged_copy) if done.damaged_copy else None,
                              "notes": list(done.notes)}
    if args.json:
        _print_json(document)
    elif problems is None:
        print(f"no store in {state_dir} yet (dedupd creates it at its first start)")
    elif not problems:
        print(f"the store in {state_dir} is sound")
    else:
        print(f"the store in {state_dir} is damaged ({len(problems)} problems):")
        for problem in problems[:20]:
            print(f"  {problem}")
        if "repair" not in document:
            print("run `dedupd check-store --repair` to rebuild it (the damaged store is kept aside)")
        else:
            done = document["repair"]
            print(f"rebuilt: {done['kept']} records kept, {done['dropped']} left for the daemon to re-encode, "
                  f"{done['ignored_pairs']} ignored pairs kept; the damaged store is {done['damaged_copy']}")
            for note in done["notes"]:
                print(f"  {note}")
            print("links between duplicates are recomputed, and lost files re-encoded, when dedupd next starts")
    return 1 if problems and not args.repair else 0


def cmd_import(args: argparse.Namespace) -> int:
    """Parquet encodings (a file, or a directory of shards) into the configured store: counted, restartable."""
    from tqdm import tqdm

    from dedupd.bulk import importer, parquet
    from dedupd.config import load_settings
    from dedupd.imaging.encode import ENCODER_VERSION

    settings = load_settings(args.config)
    files = parquet.shard_files(args.path)
    catalog, model = importer.open_catalog(settings)
    with catalog, tqdm(total=parquet.row_count(files), unit="rows", disable=not _show_progress(),
                       file=sys.stderr) as bar:
        report = importer.import_shards(catalog, files, encoder=ENCODER_VERSION, model=model, progress=bar.update)
    document = {"state_dir": str(settings.state_dir), **report.document()}
    if args.json:
        _print_json(document)
        return 0
    print(f"imported {report.imported:,} of {report.rows:,} rows from {report.shards} shard(s) into "
          f"{settings.state_dir}; {report.already:,} already in the store")
    for reason, count in sorted(report.skipped.items()):
        print(f"  skipped {count:,}: {reason}")
    if report.stripped_embeddings:
        print(f"  {report.stripped_embeddings:,} embeddings left out: the CNN is off in this configuration")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """Encode MANIFEST's files as a Ray Data job into Parquet shards under --out (for `dedupd import`)."""
    from dedupd.bulk import backfill
    from dedupd.config import load_settings

    settings = load_settings(args.config)
    if args.actors < 1 or args.batch_size < 1 or args.files_per_task < 1 or args.gpus_per_actor < 0:
        raise DedupdError("--actors, --batch-size and --files-per-task must be at least 1, --gpus-per-actor >= 0")
    options = backfill.Options(
        manifest=Path(args.manifest), out=Path(args.out), address=args.address,
        model=args.model or settings.cnn.model, cnn=settings.cnn.enabled and not args.no_cnn, actors=args.actors,
        gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size,
        files_per_task=args.files_per_task, num_cpus=args.num_cpus, max_pixels=settings.max_image_pixels,
        max_file_size=settings.max_file_size, min_file_size=settings.min_file_size)
    document = backfill.run(options)
    if args.json:
        _print_json(document)
    else:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in document["skipped_by_reason"].items())
        print(f"wrote {document['rows']:,} rows ({document['encoded']:,} encoded, {document['skipped']:,} skipped"
              f"{': ' + reasons if reasons else ''}) in {document['shards']} shard(s) under {document['out']}; "
              f"import them with `dedupd import {document['out']}`")
    return 0


def cmd_install_unit(args: argparse.Namespace) -> int:
    """Write the systemd units for this environment (or print them with --dry-run); systemctl only with --enable."""
    import shlex

    from dedupd import paths
    from dedupd.service import install

    system = paths.is_system() if args.system is None else args.system
    plan = install.plan_install(system, socket=args.socket, unit_dir=args.unit_dir, executable=args.executable)
    if args.dry_run:
        for unit in plan.files:
            print(f"# {unit.path}\n{unit.text}")
    else:
        install.write(plan)
        for unit in plan.files:
            print(f"wrote {unit.path}")
    for note in plan.notes:
        print(note, file=sys.stderr)
    if args.enable and not args.dry_run:
        install.enable(plan)
    else:
        print("then run:" if not args.dry_run else "# then run:")
        for command in plan.commands:
            print(f"  {shlex.join(command)}")
    return 0


def cmd_install_shell_files(args: argparse.Namespace) -> int:
    """Copy the shell completion (bash, zsh, fish) and the man pages where this user's shells and man look."""
    from dedupd.cli import shellfiles

    copies = shellfiles.plan(args.prefix)
    if not args.dry_run:
        shellfiles.install(copies)
    for copy in copies:
        print(f"{'would write' if args.dry_run else 'wrote'} {copy.target}")
    if args.prefix is None:
        zsh = shellfiles.user_targets()["zsh"]
        print(f"zsh: add `fpath=({zsh} $fpath)` before `compinit` in ~/.zshrc; bash and fish find theirs; "
              "man finds the pages when ~/.local/bin is on PATH (else add ~/.local/share/man to MANPATH)",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedupd", description="Find duplicate images, once or live.")
    parser.add_argument("--version", action="version", version=f"dedupd {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: watch the configured roots and report duplicates")
    run.add_argument("--config", help="TOML config file (default: DEDUPD_CONFIG, then the user/system file)")
    run.set_defaults(handler=cmd_run)

    scan = commands.add_parser("scan", help="find duplicates in a directory, once (no daemon)")
    scan.add_argument("dir")
    scan.add_argument("--method", choices=(*HASH_METHODS, "cnn"),
                      help="imagededup's method and exact semantics; default: dedupd's own matcher")
    scan.add_argument("--threshold", type=int, help="max hamming distance for hash methods (0-64)")
    scan.add_argument("--min-similarity", type=float, help="min cosine similarity for the CNN (-1..1)")
    scan.add_argument("--recursive", action="store_true")
    scan.add_argument("--scores", action="store_true", help="with --method: include distances/similarities")
    scan.add_argument("--json", action="store_true", help="print one JSON document")
    scan.add_argument("--outfile", help="also write the JSON result to this file")
    scan.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    scan.add_argument("--no-cnn", action="store_true", help="matcher without the CNN (exact + strict pHash)")
    scan.add_argument("--similar", action="store_true",
                      help="also list similar groups: different captures of one scene (bursts, stereo pairs)")
    scan.add_argument("--model", help="CNN model for the matcher: sscd-distilled (default), sscd, or an .onnx path")
    scan.set_defaults(handler=cmd_scan)

    encode = commands.add_parser("encode", help="print the encodings of a file or directory")
    encode.add_argument("path")
    encode.add_argument("--method", choices=(*HASH_METHODS, "cnn"), default="phash")
    encode.add_argument("--recursive", action="store_true")
    encode.add_argument("--json", action="store_true")
    encode.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    encode.set_defaults(handler=cmd_encode)

    check = commands.add_parser("check-config", help="validate the configuration and print the effective settings")
    check.add_argument("--config", type=Path, help="config file (default: $DEDUPD_CONFIG, then the default location)")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=cmd_check_config)

    check_store = commands.add_parser("check-store", help="verify the store (exit 1 when damaged); --repair "
                                      "rebuilds a damaged one from what can be read (stop the daemon first)")
    check_store.add_argument("--config", type=Path, help="config file naming the state_dir (default: "
                             "$DEDUPD_CONFIG, then the default location)")
    check_store.add_argument("--repair", action="store_true", help="rebuild a damaged store; the damaged one is "
                             "kept as store.damaged-<time> in the state dir")
    check_store.add_argument("--json", action="store_true", help="print one JSON document")
    check_store.set_defaults(handler=cmd_check_store)

    imports = commands.add_parser("import", help="load Parquet encodings (from `dedupd backfill` or `dedupctl export "
                                  "--format parquet`) into the store; each file is checked on this host first "
                                  "(stop the daemon meanwhile)")
    imports.add_argument("path", help="a .parquet file, or a directory of them (searched recursively)")
    imports.add_argument("--config", type=Path, help="config file naming the state_dir and the CNN model (default: "
                         "$DEDUPD_CONFIG, then the default location)")
    imports.add_argument("--json", action="store_true", help="print one JSON document")
    imports.set_defaults(handler=cmd_import)

    fill = commands.add_parser("backfill", help="encode an archive as a Ray Data job (the `cluster` extra), here or "
                               "on a cluster, into Parquet shards for `dedupd import`")
    fill.add_argument("manifest", help="a text file of paths (one a line), or a directory (walked)")
    fill.add_argument("--out", required=True, help="the directory the Parquet shards are written to")
    fill.add_argument("--address", help="a Ray cluster to run on (e.g. ray://head:10001 or auto); default: a local "
                      "Ray on this machine")
    fill.add_argument("--config", type=Path, help="config file whose [cnn] model and file limits to use (default: "
                      "$DEDUPD_CONFIG, then the default location)")
    fill.add_argument("--model", help="CNN model (default: the configured one): the store importing the shards must "
                      "use the same")
    fill.add_argument("--no-cnn", action="store_true", help="hashes only (for a store whose CNN is off)")
    fill.add_argument("--actors", type=int, default=1, help="CNN actors (default 1)")
    fill.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPU share each CNN actor asks Ray for "
                      "(default 0: CPU; 1 on a GPU cluster)")
    fill.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs each CNN actor holds (default 1)")
    fill.add_argument("--batch-size", type=int, default=32, help="CNN inputs per actor call (default 32)")
    fill.add_argument("--files-per-task", type=int, default=16, help="files one decode task takes (default 16)")
    fill.add_argument("--num-cpus", type=int, help="local Ray only: the CPUs it may use (default: all)")
    fill.add_argument("--json", action="store_true", help="print one JSON document")
    fill.set_defaults(handler=cmd_backfill)

    units = commands.add_parser("install-unit", help="install the systemd units (a user unit, or as root the system "
                                "unit) pointing at this environment's dedupd")
    scope = units.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="system", action="store_false", help="the user unit (default unless root)")
    scope.add_argument("--system", dest="system", action="store_true", help="the system unit (default as root)")
    units.add_argument("--socket", action="store_true", help="also install dedupd.socket (socket activation)")
    units.add_argument("--dry-run", action="store_true", help="print the files and commands; write nothing")
    units.add_argument("--enable", action="store_true", help="then run systemctl daemon-reload and enable --now")
    units.add_argument("--unit-dir", type=Path, help="where to write the units (default: /etc/systemd/system, "
                       "or ~/.config/systemd/user)")
    units.add_argument("--executable", type=Path, help="the program ExecStart= runs (default: this environment's "
                       "dedupd)")
    units.set_defaults(handler=cmd_install_unit, system=None)

    shell = commands.add_parser("install-shell-files", help="install shell completion (bash, zsh, fish) and the "
                                "man pages of dedupd and dedupctl for this user (or under --prefix)")
    shell.add_argument("--prefix", type=Path, help="install under PREFIX/share (e.g. /usr/local) instead of the "
                       "user's own directories")
    shell.add_argument("--dry-run", action="store_true", help="print where the files would go; write nothing")
    shell.set_defaults(handler=cmd_install_shell_files)

    model = commands.add_parser("model", help="CNN model tools")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    export = model_commands.add_parser("export", help="write a model as ONNX (needs the `export` extra)")
    export.add_argument("name", choices=("mobilenet-v3-small",))
    export.add_argument("--output", default="mobilenet_v3_small.onnx")
    export.add_argument("--weights", default="IMAGENET1K_V1", help="torchvision weights name, or 'none'")
    export.set_defaults(handler=cmd_model_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except DedupdError as exc:
        print(f"dedupd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
