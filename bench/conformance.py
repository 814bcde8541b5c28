"""How often dedupd.methods hashes a corpus bit-identically to imagededup.

Usage: .venv/bin/python bench/conformance.py CORPUS_DIR [CORPUS_DIR ...] [--jobs N] [--limit N]

Every regular file under each corpus (recursively, hidden ones too) is hashed with imagededup's
PHash/AHash/DHash/WHash in .bench/peers311 (see bench/peers.sh) and with dedupd.methods in this
interpreter. A file counts as identical when both give the same hex string or both give None.
Prints per method the identical count and share and the first 10 mismatches; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import _peers

type Hashes = dict[str, dict[str, str | None]]

_DEDUPD: dict[str, Any] = {}  # method -> dedupd hasher, filled before the pool forks


def load_dedupd_hashers() -> None:
    import dedupd.methods  # noqa: PLC0415 - imported here so a broken facade fails before the slow peer run

    logging.getLogger("dedupd").setLevel(logging.ERROR)  # one warning per unreadable file otherwise
    names = {"phash": "PHash", "ahash": "AHash", "dhash": "DHash", "whash": "WHash"}
    _DEDUPD.update({m: getattr(dedupd.methods, names[m])(verbose=False) for m in _peers.HASH_METHODS})


def _dedupd_hash_one(path: str) -> tuple[str, dict[str, str | None]]:
    return path, {method: hasher.encode_image(image_file=path) for method, hasher in _DEDUPD.items()}


def dedupd_hashes(paths: list[str], jobs: int) -> Hashes:
    with Pool(jobs) as pool:
        return dict(pool.imap(_dedupd_hash_one, paths, chunksize=8))


def corpus_files(corpora: list[Path], limit: int | None) -> dict[str, str]:
    """{label: absolute path}, label = corpus folder name / path inside it."""
    files = {}
    for corpus in corpora:
        for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
            files[f"{corpus.name}/{path.relative_to(corpus).as_posix()}"] = str(path.absolute())
    return dict(list(files.items())[:limit]) if limit else files


def compare(files: dict[str, str], reference: Hashes, candidate: Hashes) -> dict[str, Any]:
    summary: dict[str, Any] = {"files": len(files)}
    for method in _peers.HASH_METHODS:
        mismatches = [
            {"file": label, "imagededup": reference[path][method], "dedupd": candidate[path][method]}
            for label, path in files.items()
            if reference[path][method] != candidate[path][method]
        ]
        identical = len(files) - len(mismatches)
        summary[method] = {
            "identical": identical,
            "share": identical / len(files) if files else 1.0,
            "mismatches": len(mismatches),
            "first_mismatches": mismatches[:10],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpora", nargs="+", type=Path, metavar="CORPUS_DIR")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes per side")
    parser.add_argument("--limit", type=int, help="only the first N files (sorted) of all corpora")
    args = parser.parse_args()
    for corpus in args.corpora:
        if not corpus.is_dir():
            parser.error(f"{corpus} is not a directory")

    load_dedupd_hashers()
    files = corpus_files(args.corpora, args.limit)
    paths = list(files.values())
    reference: Hashes = _peers.run_imagededup("hashes", paths, str(args.jobs))
    candidate = dedupd_hashes(paths, args.jobs)
    summary = compare(files, reference, candidate)
    unreadable = sum(reference[p]["phash"] is None for p in paths)

    print(f"{len(files)} files ({unreadable} unreadable for imagededup) in {', '.join(map(str, args.corpora))}")
    for method in _peers.HASH_METHODS:
        row = summary[method]
        print(f"{method}: {row['identical']}/{len(files)} identical ({100 * row['share']:.2f}%)")
        for miss in row["first_mismatches"]:
            print(f"  {miss['file']}: imagededup {miss['imagededup']} dedupd {miss['dedupd']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
