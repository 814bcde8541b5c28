"""The hash maths (dedupd.imaging.hashing): bit layout, imagededup's tie rules, orientation variants."""

import numpy as np
import pytest
from PIL import Image

from dedupd.imaging.decode import preprocess
from dedupd.imaging.hashing import (
    HASH_BITS,
    TARGET_SIZES,
    bits_to_int,
    dct_sign_bits,
    dihedral_variants,
    distance,
    from_hex,
    hamming_distance,
    hash_int,
    to_hex,
)


def test_packing_is_row_major_most_significant_first() -> None:
    bits = np.array([1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0] + [0] * 40, dtype=bool)
    assert to_hex(bits_to_int(bits.reshape(8, 8))).startswith("9191fa")


@pytest.mark.parametrize(("method", "expected"), [
    ("phash", "ffffffffffffffff"), ("ahash", "ffffffffffffffff"),
    ("whash", "ffffffffffffffff"), ("dhash", "0000000000000000"),
])
def test_uniform_image_follows_imagededup_ties(method: str, expected: str) -> None:
    gray = np.full(TARGET_SIZES[method][::-1], 128, dtype=np.uint8)
    assert to_hex(hash_int(method, gray)) == expected


def test_hamming_distance_quirks() -> None:
    assert hamming_distance("1a", "1f") == 2
    assert hamming_distance("1a", "001a") == 0
    assert isinstance(hamming_distance("1a", "1f"), np.int64)
    assert hamming_distance("0xFF", "ff") == 0
    assert distance(from_hex("ff00"), from_hex("0f0f")) == 8


def _gray32(image: Image.Image) -> np.ndarray:
    return preprocess(image, TARGET_SIZES["phash"], grayscale=True)


@pytest.mark.parametrize("transpose", list(Image.Transpose))
def test_dihedral_variants_are_the_hashes_of_rotated_and_mirrored_images(photos, transpose) -> None:
    """Deriving the 8 orientations from the bits must agree with hashing the really transformed image."""
    for path in photos[:4]:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        variants = dihedral_variants(dct_sign_bits(_gray32(rgb)))
        transformed = bits_to_int(dct_sign_bits(_gray32(rgb.transpose(transpose))))
        assert min(distance(v, transformed) for v in variants) <= 2
        assert distance(variants[0], transformed) > 8, "the orientation really changes the plain hash"


def test_variants_make_distance_symmetric(photos) -> None:
    hashes = []
    for path in photos[:3]:
        with Image.open(path) as image:
            hashes.append(dct_sign_bits(_gray32(image.convert("RGB"))))
    a, b = (dihedral_variants(bits) for bits in hashes[:2])
    assert min(distance(v, b[0]) for v in a) == min(distance(v, a[0]) for v in b)


def test_every_method_has_a_bit_function() -> None:
    assert set(HASH_BITS) == set(TARGET_SIZES)
