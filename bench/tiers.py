"""How the pixel verification's thresholds were chosen (issue 9): copies lost vs different captures caught.

Usage: .venv/bin/python bench/tiers.py [--corpus camera|ukbench|captures ...] [--workers N]

For each corpus, `dedupd scan`'s own encoder and candidate rule (`scan_directory`) give every pair the rule
accepts; each pair but byte copies is verified once on the stored thumbnails (`search.verify.Verifier`, the
figures: inliers, keypoint residual, change after alignment, whether the transform is at most a shift), and
the verdict is then re-read under a grid of `VerifySettings` (`verify.judge`). Printed per setting: same-capture
pairs that would fail (a loss: split off as "similar"), different-capture pairs that would pass (a miss).
Pair counts, not groups: bench/scan.py scores the groups the chosen defaults (marked *) give. Ground truth:
the corpus's (capture for tests/fixtures/captures.py). Metadata is left out on purpose: this measures what
the pixels alone can tell. Runs in-process; the verification's time per pair is printed too.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from scan import corpus_folder, corpus_truth  # noqa: E402 - bench/scan.py owns the corpora

from dedupd.records import thumb_pixels  # noqa: E402
from dedupd.scan import scan_directory  # noqa: E402
from dedupd.search.matcher import MatcherSettings  # noqa: E402
from dedupd.search.verify import COPY, Verifier, VerifySettings, judge  # noqa: E402

GRID = {"max_change": (30.0, 40.0, 60.0), "max_change_unscaled": (8.0, 12.0, 16.0, 20.0, 30.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", choices=("camera", "ukbench", "captures"),
                        default=["captures", "ukbench", "camera"])  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    chosen = VerifySettings()
    for corpus in args.corpus:
        folder = corpus_folder(corpus)  # first: it puts the repo on sys.path for the captures fixture
        truth, _, _ = corpus_truth(corpus)
        result = scan_directory(folder, MatcherSettings.defaults(), workers=args.workers)
        pairs = [p for p in result.pairs if p.method != "exact"]
        images = {id(f): thumb_pixels(f.thumb) for f in result.files}
        verifier, found, same = Verifier(), [], []
        started = time.process_time()
        for p in pairs:
            a, b = images[id(result.files[p.first])], images[id(result.files[p.second])]
            if a is None or b is None:
                continue
            check = verifier.verify(a, b)
            if check is None:  # too little structure: no verdict, the rule stands
                continue
            found.append(check)
            same.append(truth.get(result.files[p.first].path.name) == truth.get(result.files[p.second].path.name))
        spent = time.process_time() - started
        print(f"{corpus}: {len(found)} verified pairs ({sum(same)} same capture, {len(same) - sum(same)} not), "
              f"{1000 * spent / max(1, len(found)):.2f} ms CPU a pair (keypoints of {len(result.files)} files "
              "included)")
        for values in itertools.product(*GRID.values()):
            settings = replace(chosen, **dict(zip(GRID, values, strict=True)))
            copy = [judge(f, settings) == COPY for f in found]
            lost = sum(c is False and s for c, s in zip(copy, same, strict=True))
            missed = sum(c and not s for c, s in zip(copy, same, strict=True))
            mark = "*" if settings == chosen else " "
            shown = "  ".join(f"{name} {value:>4}" for name, value in zip(GRID, values, strict=True))
            print(f" {mark} {shown}:  same capture split off {lost:>5}   different captures passed {missed:>5}")


if __name__ == "__main__":
    main()
