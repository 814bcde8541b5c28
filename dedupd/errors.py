"""The one exception tree of dedupd, and the reasons a file can be skipped.

Every module raises subclasses of DedupdError so entry points can turn any expected failure into
one clear line; SkipReason names why a file was not encoded, so nothing is ever skipped silently.
"""

import re
from enum import StrEnum

#: An object's repr with its heap address (`<_io.BytesIO object at 0x7f...>`, as Pillow names what it was given).
_HEAP_OBJECT = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def without_addresses(message: str) -> str:
    """`message` without object reprs that carry heap addresses: noise to a user, and different every run."""
    return _HEAP_OBJECT.sub("", message)


class DedupdError(Exception):
    """Base of every error dedupd raises on purpose."""


class ConfigError(DedupdError):
    """The configuration is invalid (unknown key, bad value, unreadable file)."""


class StoreError(DedupdError):
    """The LMDB store cannot be opened or used."""


class StoreLocked(StoreError):
    """Another process (a running daemon, an import) holds the state directory's lock."""


class StoreVersionMismatch(StoreError):
    """The store was written by an incompatible schema, encoder or CNN model."""


class StoreDamaged(StoreError):
    """The store's file is damaged (truncated, overwritten, inconsistent); `dedupd check-store --repair` helps."""


class FormatError(DedupdError):
    """A Parquet file of encodings is not in dedupd's format, or its rows come from another encoder or model."""


class ModelError(DedupdError):
    """A CNN model cannot be found, loaded or run."""


class SkipReason(StrEnum):
    """Why a file was not encoded; counted in `status` and stored so it is not retried."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    TRUNCATED = "truncated"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNREADABLE = "unreadable"
    VANISHED = "vanished"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    DECODE_ERROR = "decode_error"
    DECODE_TIMEOUT = "decode_timeout"
    DECODER_CRASH = "decoder_crash"
    # Not images, and not broken: counted quietly (logged at debug, never listed as broken files).
    VIDEO = "video"  # a video file (its bytes say so), not a Live Photo's motion file
    SIDECAR = "sidecar"  # an image's XMP or AAE sidecar (`IMG_1.xmp`, `IMG_1.CR3.xmp`, `IMG_1.AAE`)
    MOTION = "motion"  # a Live Photo's motion file: a video beside a still of its basename


#: The reasons that are no fault of a file: `status` counts sidecars and motion files apart from the
#: skipped files, videos under their own reason, and none of them is logged above debug.
QUIET_REASONS = frozenset({SkipReason.VIDEO, SkipReason.SIDECAR, SkipReason.MOTION})


class Skipped(DedupdError):
    """A file could not be turned into an image; carries the reason and a human-readable detail."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type["Skipped"], tuple[SkipReason, str]]:
        """Survives pickling, so worker processes can hand a Skip back to the pipeline."""
        return (Skipped, (self.reason, self.detail))
