"""Geometric verification of a candidate pair: one capture (a copy) or two (a sibling shot).

Why: every global descriptor (pHash, the copy-detection CNN) calls a burst frame, a pan, a stereo
pair or a static scene filmed a second later "near-identical" (BENCHMARKS.md "Tiers": siblings reach
CNN 0.995 and 1 bit of pHash, more than some true copies). What tells them apart is *local*: a copy
(re-encoded, resized, cropped, flipped, rotated, re-toned) maps onto the other file by one affine
transform, pixel for pixel; a sibling does not: something moved, the camera moved (parallax), or
the light changed.

On the two stored grey thumbnails (`records.thumb_pixels`: long side `THUMB_LONG_SIDE`, EXIF
orientation applied, aspect kept) the check is

1. ORB keypoints (OpenCV) of each thumbnail and of its mirror image (ORB is rotation- but not
   mirror-invariant), mutual nearest neighbours by Hamming distance (not a ratio test: ORB finds the
   same corner at several scales, so a near-identical copy's second-best match is as close as its
   best), and the affine transform RANSAC finds with the
   most inliers (`cv2.estimateAffine2D`, 6 degrees of freedom: a squashed-aspect resize is affine);
2. the first picture warped onto the second, both slightly blurred (what two decoders disagree on),
   a least-squares brightness/contrast fit, and per pixel
   how far it lies outside the range of the other's 3x3 neighbourhood (sub-pixel misalignment and
   resampling cost nothing, a changed object costs its full contrast), averaged over 4x4 blocks of
   the overlap (near-black pixels, the fill of a rotated copy's corners, left out);
3. COPY when enough keypoints agree (`min_inliers`) and the 99th percentile of the block
   differences (`change`) stays under `max_change`; for a pair the transform leaves as it is (not
   resized, rotated or mirrored, at most shifted: every frame of a burst) under the stricter
   `max_change_unscaled`: two frames of a static scene line up as well as a copy, and only what moved
   between them tells them apart (a copy's resampling differences are smallest there);
   otherwise SIBLING. The keypoints are matched first on each side's `_QUICK` strongest alone, a cheap
   pass that settles a clear copy; any other pair is judged on all of them.

A thumbnail with fewer than `_MIN_KEYPOINTS` keypoints (a flat, blurred, dark or tiny picture) is
compared in place with a partner of the same aspect (`_in_place`: as it is and mirrored, shifted by
ECC, the same limits); with a partner of another aspect it gives no verdict: the matcher's rule stands.
What 128 px cannot show: frames of a scene where nothing moved by a thumbnail pixel (BENCHMARKS.md
"Tiers": such frames differ by a mean of 4-12 grey levels at full size, copies by at most 2).

Measured on the bench corpora and the captures fixture (BENCHMARKS.md "Tiers"). Pure arithmetic
on arrays (OpenCV's feature and warp routines; this module is its one user). The keypoints of a
thumbnail (of its mirror image only when needed) are computed once per `KeypointCache`: a `Verifier`
has a cache of its own unless given one to share, as the daemon's catalog does across its commit
batches (a bounded one: least recently used thumbnails dropped beyond a byte budget).
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace

import cv2
import numpy as np

COPY, SIBLING = "copy", "sibling"

# OpenCV's own thread pool off: its callers already verify pairs in threads of their own (`dedupd scan`), and
# splitting 128 px work across threads only added CPU (ukbench's 3,025 pairs in one thread: 14.0-16.2 CPU s
# instead of 16.1-17.2, the same verdicts; BENCHMARKS.md "Tiers").
cv2.setNumThreads(1)


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """Thresholds of the verdict (module docstring). Residuals in thumbnail pixels, changes in grey levels."""

    min_inliers: int = 8
    max_change: float = 40.0
    max_change_unscaled: float = 16.0
    unscaled_tolerance: float = 0.03  # the transform's linear part this close to the identity: same framing


@dataclass(frozen=True, slots=True)
class Verification:
    """What the thumbnails of one pair say, and the figures the verdict was read from."""

    verdict: str  # COPY or SIBLING
    inliers: int  # keypoint matches the transform explains
    matches: int  # ratio-tested keypoint matches
    residual: float  # median distance of the inliers to the transform, thumbnail pixels
    change: float  # 99th percentile of block differences after alignment, grey levels (inf: not aligned)
    scale: float  # the transform's area scale (1: not resized)
    framed: bool = False  # the transform is at most a shift: the stricter thresholds applied
    direct: bool = False  # too few keypoints: aligned in place by intensities (`Verifier.verify`), not keypoints

    def describe(self) -> str:
        """One line for `--explain` and the evidence of a tier."""
        if self.direct:
            return f"too few keypoints, compared in place{' mirrored' if not self.framed else ''}: change {self.change}"
        if self.change == float("inf"):
            return f"no transform maps one onto the other ({self.inliers} of {self.matches} keypoints agree)"
        return (f"{self.inliers}/{self.matches} keypoints on one transform (residual {self.residual} px, "
                f"scale {self.scale}), change after alignment {self.change}")  # fmt: skip


_FEATURES = 500
_ASPECT = 0.03  # thumbnails of aspects this far apart are not compared in place
_ECC_STEPS = 30
_QUICK = 100  # keypoints of each side the first, cheap pass matches
_CLEAR = 0.5  # a first pass's copy with at most this share of the change limit is settled
_PATCH = 15  # ORB's patch and border: its default 31 leaves little of a 128 px thumbnail
_CLEAR_INLIERS = 30
_MIN_KEYPOINTS = 24  # fewer on either side: the picture has too little structure for a verdict
_MAX_DISTANCE = 64  # Hamming bits of 256: a mutual nearest neighbour further off is no match
_BLOCK = 4
_BLUR = 1.0  # Gaussian sigma, thumbnail pixels: what two decoders (a JPEG's reduced DCT, a PNG's box) disagree on
_DARK = 6.0  # grey level at or below which a pixel is fill (a rotated copy's black corners), not content

type _Keypoints = tuple[np.ndarray, np.ndarray | None]  # (k, 2) float32 positions, (k, 32) uint8 descriptors


def _keypoints(orb: "cv2.ORB", image: np.ndarray) -> _Keypoints:
    """Positions and descriptors, strongest (ORB's corner response) first."""
    found, descriptors = orb.detectAndCompute(image, None)
    order = np.argsort([-k.response for k in found], kind="stable")
    points = np.array([k.pt for k in found], np.float32).reshape(-1, 2)[order]
    return points, None if descriptors is None else descriptors[order]


def _strongest(features: _Keypoints, count: int | None) -> _Keypoints:
    points, descriptors = features
    return features if count is None else (points[:count], None if descriptors is None else descriptors[:count])


#: The byte budget of a keypoint cache kept long (the daemon's catalog, across its commit batches) or over many
#: pairs (a scan's thread): ~10 KB a thumbnail with its keypoints, so ~3,000 thumbnails and some mirror images.
KEYPOINT_BUDGET = 32 << 20
_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its arrays (key, tuple, dict slot): an estimate


class KeypointCache:
    """Keypoints of thumbnails and of their mirror images, by the thumbnail's content (its shape and pixels,
    digested), so a changed file's new thumbnail never meets the old one's keypoints and two files with one
    thumbnail share them. Beyond `budget` bytes (None: unbounded) the least recently used are dropped."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.nbytes = 0
        self.computed = 0  # keypoint sets computed (not found)
        self._entries: OrderedDict[tuple[bytes, bool], _Keypoints] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        """The identity of a thumbnail's content."""
        digest = hashlib.blake2b(repr(image.shape).encode(), digest_size=16)
        digest.update(np.ascontiguousarray(image).data)
        return digest.digest()

    def features(self, orb: "cv2.ORB", key: bytes, image: np.ndarray, mirrored: bool) -> _Keypoints:
        """The keypoints of `image` (mirrored: of its mirror image), whose `key` the caller computed."""
        entry = (key, mirrored)
        found = self._entries.get(entry)
        if found is not None:
            self._entries.move_to_end(entry)
            return found
        found = _keypoints(orb, np.ascontiguousarray(image[:, ::-1]) if mirrored else image)
        self.computed += 1
        self._entries[entry] = found
        self.nbytes += _size(found)
        while self.budget is not None and self.nbytes > self.budget and len(self._entries) > 1:
            self.nbytes -= _size(self._entries.popitem(last=False)[1])
        return found


def _size(features: _Keypoints) -> int:
    points, descriptors = features
    return points.nbytes + (0 if descriptors is None else descriptors.nbytes) + _ENTRY_OVERHEAD


class Verifier:
    """Verifies pairs of thumbnails, computing each thumbnail's keypoints once per `cache` (`verify` many pairs;
    None: a cache of this verifier's own, unbounded)."""

    def __init__(self, settings: VerifySettings | None = None, cache: KeypointCache | None = None) -> None:
        self.settings = settings or VerifySettings()
        self._orb = cv2.ORB.create(nfeatures=_FEATURES, fastThreshold=10, patchSize=_PATCH, edgeThreshold=_PATCH)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self._cache = KeypointCache() if cache is None else cache

    def _features(self, image: np.ndarray, key: bytes, mirrored: bool = False) -> _Keypoints:
        """Keypoints of the thumbnail (content `key`) or of its mirror image (`KeypointCache`)."""
        return self._cache.features(self._orb, key, image, mirrored)

    def verify(self, a: np.ndarray, b: np.ndarray) -> Verification | None:
        """The verdict on two (h, w) uint8 thumbnails, None when either has too few keypoints to tell (a flat,
        blurred or tiny picture: no evidence either way).

        First on each side's `_QUICK` strongest keypoints alone (a copy's strongest corners are the same
        corners: most pairs settle there, at a fraction of the matching); unless that shows a clear copy (its
        change at most `_CLEAR` of the limit), again on all of them, whose verdict stands."""
        keys = KeypointCache.key(a), KeypointCache.key(b)
        if min(len(self._features(a, keys[0])[0]), len(self._features(b, keys[1])[0])) < _MIN_KEYPOINTS:
            return _in_place(a, b, self.settings)
        quick = self._verdict(a, b, keys, _QUICK)
        if quick.verdict == COPY and quick.change <= _CLEAR * _limit(quick, self.settings):
            return quick
        return self._verdict(a, b, keys, None)

    def _verdict(self, a: np.ndarray, b: np.ndarray, keys: tuple[bytes, bytes], strongest: int | None) -> Verification:
        """The verdict from the `strongest` keypoints of each side (None: all of them); `keys`: their contents'."""
        points_a, descriptors_a = _strongest(self._features(a, keys[0]), strongest)
        best: tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        most = 0
        for mirrored in (False, True):
            if mirrored and best is not None and best[0] >= max(_CLEAR_INLIERS, best[1] // 2):
                break  # the unmirrored transform explains most matches: no mirror can do better (saves half the work)
            points_b, descriptors_b = _strongest(self._features(b, keys[1], mirrored), strongest)
            if descriptors_a is None or descriptors_b is None or len(descriptors_a) < 2 or len(descriptors_b) < 2:
                continue
            good = [m for m in self._matcher.match(descriptors_a, descriptors_b) if m.distance <= _MAX_DISTANCE]
            most = max(most, len(good))
            if len(good) < max(3, self.settings.min_inliers) or (best is not None and len(good) <= best[0]):
                continue  # too few to fit, or to beat the unmirrored transform (its inliers: no RANSAC needed)
            src = points_a[[m.queryIdx for m in good]]
            dst = points_b[[m.trainIdx for m in good]]
            transform, mask = cv2.estimateAffine2D(src, dst, ransacReprojThreshold=1.5, maxIters=2000,
                                                   confidence=0.995)  # fmt: skip
            if transform is None:
                continue
            inliers = mask.ravel().astype(bool)
            if best is None or inliers.sum() > best[0]:
                best = (int(inliers.sum()), len(good), transform, src[inliers], dst[inliers],
                        b if not mirrored else np.ascontiguousarray(b[:, ::-1]), bool(mirrored))  # fmt: skip
        if best is None or best[0] < self.settings.min_inliers:
            return Verification(SIBLING, 0 if best is None else best[0], most, float("inf"), float("inf"), 1.0)
        count, matched, transform, src, dst, target, mirrored = best
        residual = float(np.median(np.linalg.norm(src @ transform[:, :2].T + transform[:, 2] - dst, axis=1)))
        singular = np.linalg.svd(transform[:, :2], compute_uv=False)
        scale = float(np.sqrt(singular[0] * singular[1]))
        shifted = float(np.abs(transform[:, :2] - np.eye(2)).max()) <= self.settings.unscaled_tolerance
        change = _change(a, target, transform)
        found = Verification(SIBLING, count, matched, round(residual, 3), round(change, 1), round(scale, 3),
                             shifted and not mirrored)
        return replace(found, verdict=judge(found, self.settings))


def _in_place(a: np.ndarray, b: np.ndarray, settings: VerifySettings) -> Verification | None:
    """The verdict on thumbnails too plain for keypoints, when they have one aspect (a flat, blurred or dark
    picture and its copies; None otherwise: no evidence): `b` scaled to `a`'s size, as it is and mirrored, each
    shifted into place by ECC (OpenCV's intensity-based alignment, `_ECC_STEPS` steps, no keypoints needed;
    a shift only: with more freedom it bends one plain picture onto another), the lower change of the two
    judged as a keypoint transform's would be."""
    (ha, wa), (hb, wb) = a.shape, b.shape
    if abs(wa * hb - wb * ha) > _ASPECT * wa * hb:
        return None
    best: Verification | None = None
    scaled = b if b.shape == a.shape else cv2.resize(b, (wa, ha), interpolation=cv2.INTER_AREA)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_STEPS, 1e-4)
    for mirrored in (False, True):
        target = np.ascontiguousarray(scaled[:, ::-1]) if mirrored else scaled
        transform: np.ndarray = np.eye(2, 3, dtype=np.float32)
        try:
            transform = cv2.findTransformECC(a, target, transform, cv2.MOTION_TRANSLATION, criteria)[1]
        except cv2.error:  # no convergence (a flat picture): compare as they lie
            pass
        change = _change(a, target, transform)
        found = Verification(SIBLING, 0, 0, 0.0, round(change, 1), 1.0, not mirrored, direct=True)
        if best is None or found.change < best.change:
            best = found
    assert best is not None
    return replace(best, verdict=judge(best, settings))


def judge(found: Verification, settings: VerifySettings) -> str:
    """COPY or SIBLING from a verification's figures (module docstring, step 3)."""
    if found.inliers < settings.min_inliers and not found.direct:
        return SIBLING
    return COPY if found.change <= _limit(found, settings) else SIBLING


def _limit(found: Verification, settings: VerifySettings) -> float:
    """The change a copy may show: stricter for a pair at most shifted (module docstring, step 3)."""
    return settings.max_change_unscaled if found.framed else settings.max_change


_KERNEL = np.ones((5, 5), np.uint8)  # how far the fill and the border reach into the compared pixels
_NEAR = np.ones((3, 3), np.uint8)  # the neighbourhood whose range a pixel may fall in at no cost


def _change(a: np.ndarray, b: np.ndarray, transform: np.ndarray) -> float:
    """99th percentile of the 4x4-block differences of `a` warped onto `b` (module docstring, step 2)."""
    height, width = b.shape
    warped = cv2.warpAffine(a.astype(np.float32), transform, (width, height), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(a.shape, np.uint8), transform, (width, height), flags=cv2.INTER_NEAREST)
    target = b.astype(np.float32)
    dark = cv2.dilate(((warped <= _DARK) | (target <= _DARK)).view(np.uint8), _KERNEL)
    valid = cv2.erode(inside, _KERNEL) > dark  # inside the warped picture, away from its border and the fill
    if np.count_nonzero(valid) < 100:
        return float("inf")
    source: np.ndarray = cv2.GaussianBlur(warped, (0, 0), _BLUR)
    smooth: np.ndarray = cv2.GaussianBlur(target, (0, 0), _BLUR)
    x, y = source[valid], smooth[valid]
    mean_x, mean_y = x.mean(), y.mean()
    xc, yc = x - mean_x, y - mean_y
    gain = float(xc @ yc) / max(float(xc @ xc), 1e-6)
    fitted = (source - mean_x) * gain + mean_y
    difference = np.maximum(_outside(fitted, smooth), _outside(smooth, fitted))
    difference[~valid] = 0
    blocks, full = _blocks(difference, valid)
    return _percentile_99(blocks[full]) if full.any() else float("inf")


def _outside(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """How far each pixel of `p` lies outside the range of `q`'s 3x3 neighbourhood (0 within it)."""
    above = p - cv2.dilate(q, _NEAR)
    np.maximum(above, cv2.erode(q, _NEAR) - p, out=above)
    return np.maximum(above, 0.0, out=above)


def _blocks(difference: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of each whole `_BLOCK` x `_BLOCK` block of `difference` and whether all its pixels are `valid`.

    By slices, not numpy's `mean` and `all` over two axes of a 4-d view (a third of the time at these sizes): each
    block row's 4 pixels summed in turn, then the 4 rows, which is the order numpy's mean adds them in."""
    rows, cols = difference.shape[0] // _BLOCK, difference.shape[1] // _BLOCK
    cells = difference[: rows * _BLOCK, : cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK)
    across = cells[..., 0] + cells[..., 1]
    for k in range(2, _BLOCK):
        across += cells[..., k]
    total = across[:, 0] + across[:, 1]
    for k in range(2, _BLOCK):
        total += across[:, k]
    # the 4 bools of a block row as one uint32 (`_BLOCK` is 4): the row is all valid when every byte is 1
    words = np.ascontiguousarray(valid[: rows * _BLOCK, : cols * _BLOCK]).view(np.uint32).reshape(rows, _BLOCK, cols)
    whole = np.bitwise_and.reduce(words, axis=1) == 0x01010101
    return total / np.float32(_BLOCK * _BLOCK), whole


def _percentile_99(values: np.ndarray) -> float:
    """`np.percentile(values, 99)` (linear interpolation, its arithmetic), without its general machinery."""
    index = (len(values) - 1) * 0.99
    low = int(index)
    high = min(low + 1, len(values) - 1)
    part = np.partition(values, (low, high))
    below, above = part[low], part[high]
    share = index - low
    step = above - below
    return float(above - step * (1 - share)) if share >= 0.5 else float(below + step * share)
