#!/usr/bin/env python3
"""CNN throughput: images per second of `Encoder.embed_prepared` by batch size and ONNX Runtime threads.

    .venv/bin/python bench/cnn_speed.py [--model sscd-distilled] [--images 64] [--repeats 3]
        [--batch-sizes 1,4,8,16,32] [--threads 1,2] [--shapes 224x224,288x384]

Inference only (tensors prepared beforehand), best of `--repeats` runs, so a busy machine disturbs it
less, with the process CPU time per image beside it (with 1 thread: the model's own cost on this CPU);
then the cost of `prepare` (resize of a 4000x3000 photo) with and without Pillow's reducing_gap.
Prints the machine's load average with the figures.
"""

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np
import onnxruntime
from PIL import Image

from dedupd.imaging.cnn import Encoder, prepare, resolve_model


def best_seconds(action, repeats: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of the fastest of `repeats` runs."""
    timings = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        action()
        timings.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sscd-distilled")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,4,8,16,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--shapes", default="224x224,288x384", help="HxW of the prepared tensors")
    args = parser.parse_args()
    spec = resolve_model(args.model)
    rng = np.random.default_rng(0)
    print(
        f"model {spec.name}; onnxruntime {onnxruntime.__version__}; {os.cpu_count()} cores "
        f"({platform.machine()}); load average {os.getloadavg()[0]:.1f}; best of {args.repeats}"
    )
    print("img/s wall (CPU ms per image, all threads)")
    print("shape     threads  " + "  ".join(f"{'batch ' + b:>11}" for b in args.batch_sizes.split(",")))
    for shape in args.shapes.split(","):
        height, width = (int(v) for v in shape.split("x"))
        tensors = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.images)]
        for threads in (int(t) for t in args.threads.split(",")):
            cells = []
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                encoder = Encoder(spec, batch_size=batch, intra_op_threads=threads)
                encoder.embed_prepared(tensors[:batch])  # warm-up
                seconds, cpu = best_seconds(lambda e=encoder, t=tensors: e.embed_prepared(t), args.repeats)
                cells.append(f"{args.images / seconds:4.0f} ({1000 * cpu / args.images:4.1f})")
            print(f"{shape:9} {threads:7}  " + "  ".join(f"{c:>11}" for c in cells))
    photo = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    for gap in (spec.reducing_gap, None):
        variant = replace(spec, reducing_gap=gap)
        seconds, _ = best_seconds(lambda v=variant: prepare(photo, v), args.repeats * 3)
        print(f"prepare 4000x3000 -> {prepare(photo, variant).shape}, reducing_gap {gap}: {1000 * seconds:.1f} ms")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
