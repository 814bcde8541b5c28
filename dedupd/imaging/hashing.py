"""Perceptual hashes as pure functions: a uint8 grayscale array in, a 64-bit int out.

Owns the maths of imagededup's pHash, aHash, dHash and wHash (imagededup-spec.md §5) and the
hamming distance (§6), and the sign hash's 8 rotations and mirrors (`dihedral_variants` for one
hash, `oriented_variants` for many at once through GF(2) tables). Hex strings exist only at the edges
(`to_hex`, `from_hex`); everything inside dedupd passes ints. Bit (r, c) of the 8x8 matrix has weight
2**(63 - 8r - c), which is imagededup's `np.packbits` layout.
"""

from collections.abc import Callable
from functools import cache
from typing import Final

import numpy as np
import pywt
from scipy.fftpack import dct

#: Input size each hash needs, as PIL's (width, height).
TARGET_SIZES: Final[dict[str, tuple[int, int]]] = {
    "phash": (32, 32),
    "ahash": (8, 8),
    "dhash": (9, 8),
    "whash": (256, 256),
}

def bits_to_int(bits: np.ndarray) -> int:
    """Pack a boolean 8x8 matrix row-major, first element most significant."""
    return int(np.packbits(bits.astype(bool).ravel()).view(">u8")[0])


def int_to_bits(value: int) -> np.ndarray:
    """The boolean 8x8 matrix `bits_to_int` packed into `value` (its inverse): stored hashes back to bits."""
    return np.unpackbits(np.array([value], dtype=">u8").view(np.uint8)).astype(bool).reshape(8, 8)


def dct_block(gray32: np.ndarray) -> np.ndarray:
    """The top-left 8x8 block of the unnormalised 2-D DCT-II (rows: vertical frequency)."""
    coefficients = dct(dct(gray32.astype(np.float64), axis=0), axis=1)
    return coefficients[:8, :8]


def phash_bits_from_dct(block: np.ndarray) -> np.ndarray:
    """pHash bits from an 8x8 DCT block: `>=` the median of the 63 AC coefficients (DC excluded)."""
    return block >= np.median(block.ravel()[1:])


def phash_bits(gray32: np.ndarray) -> np.ndarray:
    """imagededup's pHash bit matrix of a 32x32 grayscale array."""
    return phash_bits_from_dct(dct_block(gray32))


def ahash_bits(gray8: np.ndarray) -> np.ndarray:
    """imagededup's aHash bit matrix of an 8x8 grayscale array: pixel `>=` mean."""
    return gray8 >= gray8.mean()


def dhash_bits(gray9x8: np.ndarray) -> np.ndarray:
    """imagededup's dHash bit matrix of an (8 rows, 9 columns) array: right neighbour strictly brighter."""
    return gray9x8[:, 1:] > gray9x8[:, :-1]


def whash_bits(gray256: np.ndarray) -> np.ndarray:
    """imagededup's wHash bit matrix of a 256x256 array: level-5 Haar approximation `>=` its median."""
    approximation = pywt.wavedec2(gray256 / 255, "haar", level=5)[0]
    return approximation >= np.median(approximation)


#: Bit-matrix function of each hash; `hash_int` turns any of them into the 64-bit int.
HASH_BITS: Final[dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "phash": phash_bits,
    "ahash": ahash_bits,
    "dhash": dhash_bits,
    "whash": whash_bits,
}


def hash_int(method: str, gray: np.ndarray) -> int:
    """The 64-bit hash `method` gives a grayscale array already resized to TARGET_SIZES[method]."""
    return bits_to_int(HASH_BITS[method](gray))


def dct_sign_bits(gray32: np.ndarray) -> np.ndarray:
    """dedupd's orientation-aware hash: signs of the 8x8 low-frequency DCT block, DC bit cleared.

    Signs instead of pHash's median split make every rotation and mirror an exact bit operation
    (see `dihedral_variants`), so hamming distance is the same whichever file is the query.
    """
    bits = dct_block(gray32) > 0
    bits[0, 0] = False
    return bits


_ODD_FREQUENCIES = np.arange(8) % 2 == 1


def dihedral_variants(bits: np.ndarray) -> list[int]:
    """The sign hash of the image under each of the 8 rotations and mirrors, from its bits alone.

    A left-right mirror negates the coefficients of odd horizontal frequency, an up-down mirror
    those of odd vertical frequency, and a transpose transposes the block. Index 0 is the image as is.
    """
    variants = []
    for base in (bits, bits.T):
        for flip_vertical in (False, True):
            for flip_horizontal in (False, True):
                variant = base.copy()
                if flip_vertical:
                    variant[_ODD_FREQUENCIES, :] ^= True
                if flip_horizontal:
                    variant[:, _ODD_FREQUENCIES] ^= True
                variant[0, 0] = False
                variants.append(bits_to_int(variant))
    return variants


@cache
def _variant_tables() -> tuple[np.ndarray, np.ndarray]:
    """`dihedral_variants` is affine over GF(2) (a bit permutation, XOR with fixed bit sets, the DC bit
    cleared): the variants of 0, and per byte of a hash what each of its 256 values adds to them."""
    offset = np.array(dihedral_variants(int_to_bits(0)), np.uint64)
    basis = np.array([dihedral_variants(int_to_bits(1 << bit)) for bit in range(64)], np.uint64) ^ offset
    tables = np.zeros((8, 256, 8), np.uint64)
    values = np.arange(256)
    for bit in range(64):
        tables[bit // 8, (values >> (bit % 8)) & 1 == 1] ^= basis[bit]
    return offset, tables


def oriented_variants(hashes: np.ndarray) -> np.ndarray:
    """`dihedral_variants` of many 64-bit sign hashes at once: (n,) -> (n, 8) uint64 (one table lookup
    per byte instead of a Python call per hash, which matters when a relink covers every record)."""
    offset, tables = _variant_tables()
    hashes = np.asarray(hashes, np.uint64)
    variants = np.tile(offset, (len(hashes), 1))
    for byte in range(8):
        variants ^= tables[byte, ((hashes >> np.uint64(8 * byte)) & np.uint64(0xFF)).astype(np.intp)]
    return variants


def to_hex(value: int) -> str:
    """16 lowercase hex digits, imagededup's on-the-wire form."""
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """Parse a hash string as imagededup does (`int(h, 16)`: case, `0x` and `_` accepted)."""
    return int(text, 16)


def distance(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def hamming_distance(hash1: str, hash2: str) -> np.int64:
    """imagededup's `hamming_distance` on hex strings, including its quirks (§6).

    Both sides are compared as binary strings zero-padded to 64 characters from the most
    significant end, so a hash wider than 64 bits is compared only over the shorter length.
    """
    bits1 = bin(int(hash1, 16))[2:].zfill(64)
    bits2 = bin(int(hash2, 16))[2:].zfill(64)
    return np.int64(sum(c1 != c2 for c1, c2 in zip(bits1, bits2, strict=False)))
