"""The imagededup-compatible `CNN` facade.

Signatures, defaults, validation, warnings, key order (sorted paths) and return shapes follow
imagededup-spec.md §1, §2, §10, §11 and §13; the work is done by `imaging.decode` and `imaging.cnn`.
Deliberate differences from imagededup:

* Models are ONNX (`model_config`: a registry name, an .onnx path or a `ModelSpec`); imagededup's
  `CustomModel` torch hook is refused with a clear error. The default model is `sscd-distilled`
  (512-d), not MobileNetV3 (576-d): `dedupd model export mobilenet-v3-small` produces that one.
* `min_similarity_threshold=None` means the model's measured default (`ModelSpec.threshold`,
  0.75 for sscd-distilled); any float is validated exactly as imagededup validates it.
* Encodings are L2-normalised, and the model loads on first use, not at construction.
* Similarities are computed in float32 in row chunks, never as an N x N matrix (so there is no
  `cosine_scores` attribute) and never in float16 (imagededup's behaviour above 10,000 images);
  scores are Python floats, keys and names plain `str`; `num_sim_workers` is accepted and unused.
* An empty or all-unreadable directory gives `{}` instead of a RuntimeError; encodings shaped
  (1, D) (as `encode_image` returns them) are accepted in an `encoding_map`;
  `find_duplicates_to_remove` without a directory or encodings raises imagededup's ValueError
  instead of UnboundLocalError.
* A folder is always decoded in `num_enc_workers` worker processes (at least one; `spawn`, never `fork`: the
  ONNX Runtime session has threads), where a crashing or hanging decoder costs one file, so a script using it
  needs the usual `if __name__ == "__main__":` guard.
"""

import itertools
import logging
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from dedupd.errors import ModelError, Skipped
from dedupd.imaging.cnn import CPU, Encoder, ModelSpec, l2_normalise, prepare, resolve_model
from dedupd.imaging.decode import load_rgb, preprocess
from dedupd.methods._files import encodings_to_search, list_image_files, relative_name, removal_list, save_json
from dedupd.methods._workers import decoded, warn_invalid
from dedupd.methods.hashing import CPU_COUNT, check_hash_array

log = logging.getLogger(__name__)

_INPUT_ERROR = "Please provide either image file path or image array!"
_THRESHOLD_ERROR = "Threshold must be a float between -1.0 and 1.0"

#: Files embedded per round in `encode_images`: bounds memory (prepared tensors) whatever the folder size.
_FILES_PER_ROUND = 256

#: Similarity values computed at once in `find_duplicates` (64 MiB of float32 per row chunk).
_CHUNK_ELEMENTS = 1 << 24

type ModelConfig = ModelSpec | str | os.PathLike[str] | None


def validate_similarity_threshold(threshold: object) -> None:
    """imagededup's check: a Python float (numpy.float64 passes, float32 and ints do not) in [-1, 1]."""
    if not isinstance(threshold, float):
        raise TypeError(_THRESHOLD_ERROR)
    if threshold < -1.0 or threshold > 1.0:
        raise ValueError(_THRESHOLD_ERROR)


def cosine_duplicates(
    encoding_map: Mapping[str, np.ndarray],
    threshold: float,
    scores: bool = False,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> dict[str, list[Any]]:
    """For each key in map order, the other keys with cosine similarity >= threshold, in map order.

    Rows are compared a chunk at a time (about `chunk_elements` similarities), so memory stays
    O(N * D + chunk) rather than O(N^2).
    """
    names = list(encoding_map)
    if not names:
        return {}
    matrix = l2_normalise(np.stack([np.asarray(encoding_map[name], np.float32).reshape(-1) for name in names]))
    rows_per_chunk = max(1, chunk_elements // len(names))
    results: dict[str, list[Any]] = {}
    for start in range(0, len(names), rows_per_chunk):
        block = matrix[start : start + rows_per_chunk] @ matrix.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # never oneself
        for offset, row in enumerate(block):
            hits = np.flatnonzero(row >= threshold)
            results[names[start + offset]] = (
                [(names[col], float(row[col])) for col in hits] if scores else [names[col] for col in hits]
            )
    return results


def _decode_side(spec: ModelSpec) -> int:
    """Shortest side worth decoding for this model: JPEGs then decode at 1/2-1/8 scale in the IDCT."""
    return max(spec.size, spec.resize or 0)


def prepare_file(spec: ModelSpec, path: str) -> np.ndarray:
    """Decode (imagededup's loader) and prepare one file; raises `Skipped` (a worker job of `encode_images`)."""
    return prepare(load_rgb(path, min_side=_decode_side(spec)), spec)


def _check_model_config(model_config: object) -> None:
    """Only ONNX models run here; imagededup's CustomModel (torch) gets a way forward, not a traceback."""
    if model_config is None or isinstance(model_config, (ModelSpec, str, os.PathLike)):
        return
    raise ModelError(
        f"dedupd runs ONNX models, not {type(model_config).__name__} (imagededup's torch CustomModel hook "
        "is not supported): export the model with torch.onnx.export and pass its path or a "
        "dedupd.imaging.cnn.ModelSpec; `dedupd model export mobilenet-v3-small` writes imagededup's default"
    )


class CNN:
    """Find duplicates with CNN embeddings, imagededup's `CNN` API on ONNX Runtime."""

    def __init__(self, verbose: bool = True, model_config: ModelConfig = None) -> None:
        _check_model_config(model_config)
        self.model_config: ModelSpec = resolve_model(model_config)
        self.verbose = 1 if verbose else 0
        self.batch_size = 16
        self.encoding_map: dict[str, np.ndarray] = {}
        self.results: dict[str, list[Any]] = {}
        self._encoder: Encoder | None = None

    @property
    def model(self) -> Encoder:
        """The ONNX Runtime encoder, created on first use (imagededup builds its model at construction)."""
        if self._encoder is None:
            self._encoder = Encoder(self.model_config, batch_size=self.batch_size)
            self.model_config = self._encoder.spec
        return self._encoder

    @property
    def device(self) -> str:
        """'cuda' or 'cpu', as imagededup reports it; `model.provider` has ONNX Runtime's own name."""
        return "cpu" if self.model.provider == CPU else "cuda"

    @property
    def transform(self) -> partial[np.ndarray]:
        """The model's preprocessing: RGB image (PIL or uint8 array) -> model input tensor."""
        return partial(prepare, spec=self.model_config)

    def encode_image(
        self, image_file: str | os.PathLike[str] | None = None, image_array: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The (1, D) embedding of one file or array; None for an existing file that cannot be decoded."""
        if isinstance(image_file, str):
            image_file = Path(image_file)
        if isinstance(image_file, PurePath):
            if not Path(image_file).is_file():
                raise ValueError(_INPUT_ERROR)
            try:
                rgb = load_rgb(image_file, min_side=_decode_side(self.model_config))
            except Skipped as skip:
                warn_invalid(image_file, skip)
                return None
        elif isinstance(image_array, np.ndarray):
            check_hash_array(image_array)
            if image_array.ndim == 2:
                image_array = np.repeat(image_array[..., np.newaxis], 3, axis=2)
            rgb = preprocess(image_array)
        else:
            raise ValueError(_INPUT_ERROR)
        return self.model.embed([rgb])

    def encode_images(
        self, image_dir: str | os.PathLike[str], recursive: bool = False, num_enc_workers: int = 0
    ) -> dict[str, np.ndarray]:
        """`{relative name: (D,) embedding}` for every decodable file, in sorted path order."""
        if isinstance(image_dir, str):
            image_dir = Path(image_dir)
        if not isinstance(image_dir, PurePath) or not Path(image_dir).is_dir():
            raise ValueError("Please provide a valid directory path!")
        files = sorted(list_image_files(image_dir, recursive))
        encoder = self.model
        log.info("Start: Image encoding generation")
        encodings: dict[str, np.ndarray] = {}
        prepared = decoded(partial(prepare_file, encoder.spec), files, num_enc_workers, bool(self.verbose))
        for round_ in itertools.batched(prepared, _FILES_PER_ROUND):
            ready = [(path, tensor) for path, tensor in round_ if tensor is not None]
            vectors = encoder.embed_prepared([tensor for _, tensor in ready])
            for (path, _), vector in zip(ready, vectors, strict=True):
                encodings[relative_name(path, image_dir)] = vector
        log.info("End: Image encoding generation")
        self.encoding_map = encodings
        return encodings

    def find_duplicates(
        self,
        image_dir: str | os.PathLike[str] | None = None,
        encoding_map: Mapping[str, np.ndarray] | None = None,
        min_similarity_threshold: float | None = None,
        scores: bool = False,
        outfile: str | os.PathLike[str] | None = None,
        recursive: bool = False,
        num_enc_workers: int = 0,
        num_sim_workers: int = CPU_COUNT,
    ) -> dict[str, list[Any]]:
        """Every image's duplicates (cosine >= threshold), lists in key order; `(name, score)` with scores."""
        threshold = self.model_config.threshold if min_similarity_threshold is None else min_similarity_threshold
        validate_similarity_threshold(threshold)
        encoding_map = encodings_to_search(self.encode_images, image_dir, encoding_map, recursive, num_enc_workers)
        self.results = cosine_duplicates(encoding_map, threshold, scores)
        if outfile:
            save_json(self.results, outfile)
        return self.results

    def find_duplicates_to_remove(
        self,
        image_dir: str | os.PathLike[str] | None = None,
        encoding_map: Mapping[str, np.ndarray] | None = None,
        min_similarity_threshold: float | None = None,
        outfile: str | os.PathLike[str] | None = None,
        recursive: bool = False,
        num_enc_workers: int = 0,
        num_sim_workers: int = CPU_COUNT,
    ) -> list[str]:
        """One file of every duplicate group is kept (the first in sorted order); the rest are listed."""
        duplicates = self.find_duplicates(
            image_dir=image_dir,
            encoding_map=encoding_map,
            min_similarity_threshold=min_similarity_threshold,
            scores=False,
            recursive=recursive,
            num_enc_workers=num_enc_workers,
            num_sim_workers=num_sim_workers,
        )
        return removal_list(duplicates, outfile)
