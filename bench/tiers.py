"""How the pixel evidence's thresholds were chosen (issue 9): sibling verdicts on true copies vs different captures.

Usage: .venv/bin/python bench/tiers.py [--corpus camera|ukbench|captures ...] [--workers N]

For each corpus, `dedupd scan`'s own encoder and candidate rule (`scan_directory`) give every pair the rule
accepts by the oriented pHash (the only pairs the pixel evidence judges, `search.matcher.tiers`); each pair's
thumbnails are then compared under a grid of `PixelSettings` (aligned median, changed peak, border margin),
and the script prints how many same-capture pairs (a loss: they would be split off as "similar") and how
many different-capture pairs (a gain) would get the SIBLING verdict. Ground truth: the corpus's (capture for
tests/fixtures/captures.py). The chosen defaults are marked with *. Metadata is left out on purpose: this
measures what the pixels alone can tell. Runs in-process; timing is not the point.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from scan import corpus_folder, corpus_truth  # noqa: E402 - bench/scan.py owns the corpora

from dedupd.scan import scan_directory  # noqa: E402
from dedupd.search.matcher import MatcherSettings, _in_order  # noqa: E402
from dedupd.search.pixels import SIBLING, PixelSettings, compare, thumbnails  # noqa: E402

GRID = {"aligned_median": (6.0, 10.0, 15.0), "changed_peak": (40.0, 60.0, 100.0), "margin": (0, 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", choices=("camera", "ukbench", "captures"),
                        default=["captures", "ukbench", "camera"])  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    chosen = PixelSettings()
    for corpus in args.corpus:
        folder = corpus_folder(corpus)
        truth, _, _ = corpus_truth(corpus)
        result = scan_directory(folder, MatcherSettings.defaults(), workers=args.workers)
        pairs = [p for p in result.pairs if p.method == "phash"]
        thumbs = [(result.files[p.first].thumb, result.files[p.second].thumb) for p in pairs]
        kept = [k for k, (x, y) in enumerate(thumbs) if x and y]
        ordered = [_in_order(thumbs[k][0] or b"", thumbs[k][1] or b"") for k in kept]
        a, b = thumbnails([x for x, _ in ordered]), thumbnails([y for _, y in ordered])
        same = np.array([truth.get(result.files[pairs[k].first].path.name) ==
                         truth.get(result.files[pairs[k].second].path.name) for k in kept])  # fmt: skip
        print(f"{corpus}: {len(pairs)} pHash-path pairs, {int(same.sum())} same capture, {int((~same).sum())} not")
        for median, peak, margin in itertools.product(*GRID.values()):
            settings = PixelSettings(aligned_median=median, changed_peak=peak, margin=margin)
            sibling = np.array([e.verdict == SIBLING for e in compare(a, b, settings)])
            mark = "*" if settings == chosen else " "
            print(f" {mark} median <= {median:>4.0f}  peak > {peak:>4.0f}  margin {margin}:  same capture split off "
                  f"{int((sibling & same).sum()):>4}   different captures caught {int((sibling & ~same).sum()):>4}")


if __name__ == "__main__":
    main()
