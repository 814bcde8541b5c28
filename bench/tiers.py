"""How the pixel verification's thresholds were chosen (issue 9): copies lost vs different captures caught.

Usage: .venv/bin/python bench/tiers.py [--corpus camera|ukbench|captures ...] [--workers N] [--files [--groups N]]

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
import contextlib
import itertools
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from scan import corpus_folder, corpus_truth  # noqa: E402 - bench/scan.py owns the corpora

from dedupd.records import Capture, thumb_pixels  # noqa: E402
from dedupd.scan import scan_directory  # noqa: E402
from dedupd.search.matcher import MatcherSettings, capture_verdict  # noqa: E402
from dedupd.search.verify import COPY, Verification, Verifier, VerifySettings, _change, judge  # noqa: E402

MAX_CHANGE = (30.0, 40.0, 60.0)  # the grid of `VerifySettings` re-read (module docstring)
MAX_CHANGE_UNSCALED = (8.0, 12.0, 16.0, 20.0, 30.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", choices=("camera", "ukbench", "captures"),
                        default=["captures", "ukbench", "camera"])  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", action="store_true", help="re-read the files of the pairs only finer pixels "
                        "could split (module docstring)")  # fmt: skip
    parser.add_argument("--cap", type=int, default=1024, help="--files: long side at most (px)")
    parser.add_argument("--groups", type=int, default=0, help="--files: only the first N capture groups (0: all)")
    args = parser.parse_args()
    chosen = VerifySettings()
    for corpus in args.corpus:
        folder = corpus_folder(corpus)  # first: it puts the repo on sys.path for the captures fixture
        truth, rows, _ = corpus_truth(corpus)
        result = scan_directory(folder, MatcherSettings.defaults(), workers=args.workers)
        pairs = [p for p in result.pairs if p.method != "exact"]
        images = {id(f): thumb_pixels(f.thumb) for f in result.files}
        verifier, found, same, framed = Verifier(), [], [], []
        started = time.process_time()
        for p in pairs:
            first, second = result.files[p.first], result.files[p.second]
            a, b = images[id(first)], images[id(second)]
            if a is None or b is None:
                continue
            check = verifier.verify(a, b)
            if check is None:  # too little structure: no verdict, the rule stands
                continue
            found.append(check)
            same.append(truth.get(first.path.name) == truth.get(second.path.name))
            if _undecided(check, first.capture, second.capture):
                framed.append((first.path, second.path, a, b, same[-1]))
        spent = time.process_time() - started
        print(f"{corpus}: {len(found)} verified pairs ({sum(same)} same capture, {len(same) - sum(same)} not), "
              f"{1000 * spent / max(1, len(found)):.2f} ms CPU a pair (keypoints of {len(result.files)} files "
              "included)")
        for max_change, max_change_unscaled in itertools.product(MAX_CHANGE, MAX_CHANGE_UNSCALED):
            settings = replace(chosen, max_change=max_change, max_change_unscaled=max_change_unscaled)
            copy = [judge(f, settings) == COPY for f in found]
            lost = sum(c is False and s for c, s in zip(copy, same, strict=True))
            missed = sum(c and not s for c, s in zip(copy, same, strict=True))
            mark = "*" if settings == chosen else " "
            shown = f"max_change {max_change:>4}  max_change_unscaled {max_change_unscaled:>4}"
            print(f" {mark} {shown}:  same capture split off {lost:>5}   different captures passed {missed:>5}")
        if args.files:
            kinds = {row["file"]: row["kind"] for row in rows}
            _files(corpus, framed, truth, kinds, args.cap, args.groups)


def _undecided(check: Verification, x: Capture | None, y: Capture | None) -> bool:
    """A pair the thumbnails pass as a copy at most shifted, metadata silent: what only finer pixels could split."""
    silent = capture_verdict(x, y)[0] is None
    return check.verdict == COPY and check.framed and not check.direct and silent


def _files(corpus: str, framed: list[tuple[Path, Path, np.ndarray, np.ndarray, bool]], truth: dict[str, str],
           kinds: dict[str, str], cap: int, groups: int) -> None:  # fmt: skip
    """`--files` (module docstring)."""
    if groups:
        kept = sorted({truth.get(a.name, "") for a, *_ in framed})[:groups]
        framed = [f for f in framed if truth.get(f[0].name, "") in kept]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4)
    started = time.process_time()
    pixels = {}
    for path in sorted({f[0] for f in framed} | {f[1] for f in framed}):
        with Image.open(path) as image:
            pixels[path] = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    read = time.process_time() - started
    started = time.process_time()
    changes: dict[tuple[bool, str], list[float]] = defaultdict(list)
    for first, second, a, b, same in framed:
        (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32))  # at most shifted: the shift
        warp: np.ndarray = np.array([[1, 0, dx], [0, 1, dy]], np.float32)  # then cv2's refinements of it
        with contextlib.suppress(cv2.error):  # no convergence: the shift stands
            warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria)[1]
        x, y = pixels[first], pixels[second]
        side = min(max(x.shape), max(y.shape), cap)
        x, y = _sized(x, side), _sized(y, side)
        warp[:, 2] *= y.shape[1] / b.shape[1]
        with contextlib.suppress(cv2.error):
            warp = cv2.findTransformECC(x, y, warp, cv2.MOTION_AFFINE, criteria)[1]
        kind = " + ".join(sorted((kinds.get(first.name, "?"), kinds.get(second.name, "?"))))
        changes[(same, kind)].append(_change(x, y, warp))
    compared = time.process_time() - started
    count = sum(len(v) for v in changes.values())
    print(f"{corpus} --files: {count} pairs at most shifted, metadata silent; read {len(pixels)} files "
          f"{1000 * read / max(1, len(pixels)):.0f} ms CPU a file, compared at <= {cap} px "
          f"{1000 * compared / max(1, count):.0f} ms CPU a pair")  # fmt: skip
    for (same, kind), values in sorted(changes.items()):
        v = np.array(values)
        label = "same capture" if same else "different"
        print(f"   {label:12s} {kind:24s} {len(v):5d} pairs  change min {v.min():6.2f}  median {np.median(v):6.2f}  "
              f"p90 {np.percentile(v, 90):6.2f}  max {v.max():6.2f}")  # fmt: skip


def _sized(image: np.ndarray, side: int) -> np.ndarray:
    """`image` area-resized so its long side is `side` (as it is when it already is)."""
    height, width = image.shape
    scale = side / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


if __name__ == "__main__":
    main()
