"""One file -> everything dedupd stores about it, from one read and one reduced decode.

Owns the per-file work the daemon's encode workers and `dedupd scan` run: the content digest of
the bytes read, the four imagededup-style hashes (approximations: reduced decode, stored
orientation, as imagededup would see the file), the orientation-aware sign hash the matcher
indexes (its 8 dihedral variants make EXIF rotation irrelevant to it), and the CNN input tensor
(EXIF orientation applied: the CNN is not rotation invariant), the capture identity from metadata
and a small grey thumbnail of the displayed image (the matcher's verification of candidate pairs).
Runs in worker processes: no LMDB, no ONNX Runtime here.
"""

import os
import stat
from dataclasses import dataclass

import numpy as np
import xxhash
from PIL import Image

from dedupd.errors import Skipped, SkipReason
from dedupd.imaging.cnn import ModelSpec, prepare
from dedupd.imaging.decode import (
    DEFAULT_MAX_PIXELS,
    MATCH_MIN_SIDE,
    open_for_matching,
    preprocess,
    refuse_video,
    skip_for_exception,
)
from dedupd.imaging.hashing import TARGET_SIZES, bits_to_int, dct_sign_bits, dihedral_variants, hash_int
from dedupd.records import Encoding, pack_thumb

#: Bumped when the encoder's output changes meaning: the store (and `dedupd import`) refuse mismatched encodings.
ENCODER_VERSION = "2"  # 2: sign hash of the stored orientation, from the single 256 px resize

#: Long side of the grey thumbnail every encoding keeps (aspect kept, ~12 KiB at 4:3): the smallest on which
#: keypoints still verify a crop or a rotation and a moved object still shows (BENCHMARKS.md "Tiers").
THUMB_LONG_SIDE = 128

#: Name of the matcher's orientation-aware hash in `Encoding.hashes` and in the store.
ORIENTED_HASH = "dct"

#: Larger files are skipped as too_large without being read (a file is read whole: a worker holds it in memory).
DEFAULT_MAX_FILE_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class EncodedFile:
    """An encoding plus what only the matcher and the CNN queue need right after decoding."""

    encoding: Encoding
    variants: tuple[int, ...]
    cnn_input: np.ndarray | None


def content_digest(data: bytes) -> bytes:
    """128-bit xxh3 of the file's bytes: exact duplicates without a threshold."""
    return xxhash.xxh3_128_digest(data)


def read_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_FILE_SIZE) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read once; anything else becomes a counted Skip:
    vanished or unreadable, not a regular file (a FIFO, a device, also through a symlink: opened without
    blocking, never read), a video (`video`, from its first 16 bytes: never read whole), or larger (`too_large`,
    also when it grows while read: at most `max_bytes` + 1 bytes are read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except Exception as exc:  # noqa: BLE001
        raise skip_for_exception(exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Skipped(SkipReason.UNREADABLE, f"not a regular file (mode {stat.filemode(st.st_mode)})")
        refuse_video(os.pread(fd, 16, 0))
        if st.st_size > max_bytes:
            raise Skipped(SkipReason.TOO_LARGE, _too_large(st.st_size, max_bytes))
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except Skipped:
        raise
    except Exception as exc:  # noqa: BLE001
        raise skip_for_exception(exc) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise Skipped(SkipReason.TOO_LARGE, _too_large(len(data), max_bytes))
    return data


def _too_large(size: int, max_bytes: int) -> str:
    return f"{size} bytes or more; max_file_size is {max_bytes}"


def encode_bytes(
    data: bytes, *, cnn_spec: ModelSpec | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> EncodedFile:
    """Encode a file's bytes; raises `Skipped` with a reason when they are not a readable image.

    With `cnn_spec`, the EXIF-oriented image is also prepared as that model's input tensor.
    """
    min_side = max(MATCH_MIN_SIDE, cnn_spec.size) if cnn_spec else MATCH_MIN_SIDE
    with open_for_matching(data, min_side=min_side, max_pixels=max_pixels) as decoded:
        stored, oriented, (width, height), capture = decoded
        try:
            # One LANCZOS resize to wHash's 256x256, the smaller inputs from it: as close to the exact path
            # as resizing each from the decode (BENCHMARKS.md "Fast decode path"), at a third of the cost.
            base = stored.resize(TARGET_SIZES["whash"], Image.Resampling.LANCZOS)
            gray = {method: preprocess(base, size, grayscale=True) for method, size in TARGET_SIZES.items()}
            hashes = {method: hash_int(method, pixels) for method, pixels in gray.items()}
            # The sign hash needs no EXIF rotation: matching compares all 8 orientations anyway.
            sign_bits = dct_sign_bits(gray["phash"])
            cnn_input = prepare(oriented, cnn_spec) if cnn_spec else None
            grey = oriented.convert("L")
            grey.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.BOX)
            thumb = pack_thumb(np.asarray(grey))
        except Skipped:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder error surfacing during resampling
            raise skip_for_exception(exc) from exc
    hashes[ORIENTED_HASH] = bits_to_int(sign_bits)
    encoding = Encoding(
        digest=content_digest(data), width=width, height=height, hashes=hashes, capture=capture, thumb=thumb
    )
    return EncodedFile(encoding=encoding, variants=tuple(dihedral_variants(sign_bits)), cnn_input=cnn_input)


def encode_path(
    path: str | os.PathLike[str],
    *,
    cnn_spec: ModelSpec | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_FILE_SIZE,
) -> EncodedFile:
    """`encode_bytes` of the file at `path` (`read_file`: a regular file of at most `max_bytes`)."""
    return encode_bytes(read_file(path, max_bytes), cnn_spec=cnn_spec, max_pixels=max_pixels)
