"""Pixel evidence on two aligned thumbnails: a copy, a sibling shot, or no evidence.

Why: a static scene filmed or shot in a burst gives frames that every global descriptor (pHash,
the copy-detection CNN) calls near-identical (BENCHMARKS.md "Tiers": sibling frames reach CNN
similarity 0.995 and 1 bit of pHash, more than some true copies), yet the frames differ *locally*:
someone moved. On 32x32 grey thumbnails (EXIF orientation applied, aspect squashed, so resized
copies line up) the pair is compared in the best of the 8 rotations/mirrors after a least-squares
brightness/contrast fit:

* `COPY`: no cell differs by more than `copy_max` grey levels (re-encodes, resizes, format
  changes, brightness edits, stripped metadata; measured <= 14 on copies, >= 24 on siblings);
* `SIBLING`: the pictures are mostly aligned (median cell difference <= `aligned_median`) but
  some cell of the central region (`margin` cells in from each border) differs by more than
  `changed_peak` even allowing a one-cell shift: something appeared or left between two
  captures. A crop or a small zoom misaligns a picture most at its borders (a 95% crop by up to
  1.6 cells there, under a cell in the middle), so the borders are left out of this test; measured
  on the pairs the oriented pHash accepts, it demotes 86 of 234 sibling pairs of the captures
  fixture, 3 of 1,454 ukbench pairs and 1 of 3,403 camera-import pairs (BENCHMARKS.md "Tiers");
* `None`: not aligned (crops, strong rotations, viewpoint changes, a moving camera): the pixels
  say nothing and the matcher's other evidence decides.

Pure numpy/scipy; ~0.1 ms a pair, vectorised over many pairs.
"""

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

COPY, SIBLING = "copy", "sibling"


@dataclass(frozen=True, slots=True)
class PixelSettings:
    """Thresholds in grey levels (0-255) of the brightness-fitted difference, measured (module doc)."""

    copy_max: float = 20.0
    aligned_median: float = 10.0
    changed_peak: float = 60.0
    margin: int = 8  # cells of each border (of 32) the changed-region test leaves out


@dataclass(frozen=True, slots=True)
class PixelEvidence:
    """What the thumbnails of one pair say: the verdict and the two figures it was read from."""

    verdict: str | None  # COPY, SIBLING or None
    median: float  # median cell difference in the best orientation: how well the pair is aligned
    peak: float  # largest central cell difference allowing a one-cell shift: how much changed locally


def thumbnails(raw: list[bytes]) -> np.ndarray:
    """(n, side, side) float32 from the row-major grey bytes the encodings store."""
    side = int(round(len(raw[0]) ** 0.5)) if raw else 0
    return np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), side, side).astype(np.float32)


def _dihedral(a: np.ndarray) -> np.ndarray:
    """(n, s, s) -> (n, 8, s, s): every rotation and mirror."""
    out = []
    for k in range(4):
        turned = np.rot90(a, k, axes=(1, 2))
        out += [turned, turned[:, :, ::-1]]
    return np.stack(out, axis=1)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=(-2, -1), keepdims=True)


#: Pairs compared at once: bounds the temporaries (8 orientations x 1,024 cells x 4 bytes x ~6 arrays a pair).
_BLOCK = 256


def compare(a: np.ndarray, b: np.ndarray, settings: PixelSettings = PixelSettings()) -> list[PixelEvidence]:
    """Pixel evidence for each pair (a[k], b[k]) of (n, s, s) thumbnails, in blocks of `_BLOCK` pairs."""
    out: list[PixelEvidence] = []
    for start in range(0, len(a), _BLOCK):
        out += _compare_block(a[start : start + _BLOCK], b[start : start + _BLOCK], settings)
    return out


def _compare_block(a: np.ndarray, b: np.ndarray, settings: PixelSettings) -> list[PixelEvidence]:
    if not len(a):
        return []
    variants = _centred(_dihedral(a))  # (n, 8, s, s)
    target = _centred(b)[:, None]  # (n, 1, s, s)
    gain = (variants * target).sum(axis=(-2, -1), keepdims=True) / np.maximum(
        (variants * variants).sum(axis=(-2, -1), keepdims=True), 1e-6
    )
    fitted = gain * variants
    residual = np.abs(target - fitted)
    medians = np.median(residual.reshape(len(a), 8, -1), axis=2)
    best = np.argmin(medians, axis=1)
    rows = np.arange(len(a))
    src, dst = fitted[rows, best], target[:, 0]
    worst = residual[rows, best].max(axis=(-2, -1))
    shift = (1, 3, 3)
    slack = np.maximum(
        _outside(dst, maximum_filter(src, size=shift, mode="nearest"), minimum_filter(src, size=shift, mode="nearest")),
        _outside(src, maximum_filter(dst, size=shift, mode="nearest"), minimum_filter(dst, size=shift, mode="nearest")),
    )
    side = slack.shape[-1]
    inner = slack[:, settings.margin : side - settings.margin, settings.margin : side - settings.margin]
    slack = inner.max(axis=(-2, -1)) if inner.size else slack.max(axis=(-2, -1))
    out = []
    for median, peak_exact, peak in zip(medians[rows, best].tolist(), worst.tolist(), slack.tolist(), strict=True):
        if peak_exact <= settings.copy_max:
            verdict: str | None = COPY
        elif median <= settings.aligned_median and peak > settings.changed_peak:
            verdict = SIBLING
        else:
            verdict = None
        out.append(PixelEvidence(verdict, round(median, 2), round(peak, 1)))
    return out


def _outside(x: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """How far each cell of x lies outside [low, high] (0 inside)."""
    return np.maximum(0.0, np.maximum(x - high, low - x))
