"""The backfill's Ray job as data: what each stage asks Ray for (the GPU path is checked without a GPU)."""

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the `cluster` extra is not installed: .venv/bin/pip install -e '.[cluster]'")

from dedupd.bulk import backfill  # noqa: E402 - after the skip: it needs pyarrow


@pytest.mark.parametrize("gpus", [0.0, 1.0, 0.5])
def test_cnn_actors_ask_ray_for_gpus_only_when_told(gpus: float) -> None:
    import ray.data

    options = backfill.Options(manifest=Path("m"), out=Path("o"), actors=3, gpus_per_actor=gpus)
    (decode, decode_args), (embed, embed_args) = backfill.map_stages(options, object(), "/")  # type: ignore[arg-type]
    assert decode is backfill.encode_files and "num_gpus" not in decode_args
    assert backfill.decode_task_args()["num_cpus"] == 1
    assert embed is backfill.Embedder
    assert isinstance(embed_args["compute"], ray.data.ActorPoolStrategy) and embed_args["compute"].max_size == 3
    assert embed_args.get("num_gpus") == (gpus or None)
    assert backfill.map_stages(backfill.Options(manifest=Path("m"), out=Path("o"), cnn=False), None, "/") == [
        (backfill.encode_files, decode_args | {"fn_kwargs": decode_args["fn_kwargs"] | {"cnn_spec": None}})]
