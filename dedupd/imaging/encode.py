"""One file -> everything dedupd stores about it, from one read and one reduced decode.

Owns the per-file work the daemon's encode workers and `dedupd scan` run: the content digest of
the bytes read, the four imagededup-style hashes (approximations: reduced decode, stored
orientation, as imagededup would see the file), the orientation-aware sign hash the matcher
indexes (its 8 dihedral variants make EXIF rotation irrelevant to it), and the CNN input tensor
(EXIF orientation applied: the CNN is not rotation invariant), the capture identity from metadata
and a 32x32 grey thumbnail of the displayed image (the matcher's pixel check of aligned copies).
Runs in worker processes: no LMDB, no ONNX Runtime here.
"""

import os
from dataclasses import dataclass

import numpy as np
import xxhash
from PIL import Image

from dedupd.errors import Skipped
from dedupd.imaging.cnn import ModelSpec, prepare
from dedupd.imaging.decode import DEFAULT_MAX_PIXELS, MATCH_MIN_SIDE, open_for_matching, preprocess, skip_for_exception
from dedupd.imaging.hashing import TARGET_SIZES, bits_to_int, dct_sign_bits, dihedral_variants, hash_int
from dedupd.records import Encoding

#: Side of the grey thumbnail every encoding keeps (1 KiB): enough to see a walking person move between two
#: frames, small enough to compare thousands of pairs a second (BENCHMARKS.md "Tiers").
THUMB_SIDE = 32

#: Name of the matcher's orientation-aware hash in `Encoding.hashes` and in the store.
ORIENTED_HASH = "dct"


@dataclass(frozen=True, slots=True)
class EncodedFile:
    """An encoding plus what only the matcher and the CNN queue need right after decoding."""

    encoding: Encoding
    variants: tuple[int, ...]
    cnn_input: np.ndarray | None


def content_digest(data: bytes) -> bytes:
    """128-bit xxh3 of the file's bytes: exact duplicates without a threshold."""
    return xxhash.xxh3_128_digest(data)


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, read once; a vanished or unreadable file becomes a counted Skip."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except Exception as exc:  # noqa: BLE001
        raise skip_for_exception(exc) from exc


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
            thumb = oriented.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX).tobytes()
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
    path: str | os.PathLike[str], *, cnn_spec: ModelSpec | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> EncodedFile:
    """`encode_bytes` of the file at `path`."""
    return encode_bytes(read_file(path), cnn_spec=cnn_spec, max_pixels=max_pixels)
