"""imagededup-compatible API: `from dedupd.methods import PHash, AHash, DHash, WHash, CNN`.

CNN is imported lazily so that `from dedupd.methods import PHash` never loads ONNX Runtime.
"""

from typing import TYPE_CHECKING, Any

from dedupd.methods.hashing import AHash, DHash, Hashing, PHash, WHash

if TYPE_CHECKING:
    from dedupd.methods.cnn import CNN

__all__ = ["CNN", "AHash", "DHash", "Hashing", "PHash", "WHash"]


def __getattr__(name: str) -> Any:
    if name == "CNN":
        from dedupd.methods.cnn import CNN

        return CNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
