"""Export imagededup's default CNN (torchvision MobileNetV3-small, 576-d) as an ONNX model for dedupd.

The only torch user, imported lazily (the optional `export` extra: torch, torchvision, onnx, onnxscript).
It writes the model plus its description sidecar (`<file>.onnx.json`, read by
`dedupd.imaging.cnn.ModelSpec.from_path`) so dedupd reproduces imagededup's CNN encodings: the network's
`features` + `avgpool`, flattened to (N, 576), fed float32 NCHW 224x224 images made the way
imagededup's transform makes them (resize to 256x256 bilinear, centre crop 224, /255, ImageNet mean/std).

Kept runnable on its own with any Python >= 3.10 that has torch (stdlib imports only, no dedupd imports):

    python export.py OUT.onnx [--weights IMAGENET1K_V1 | none]
"""

import argparse
import json
import sys
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
RESIZE = 256
FEATURES = 576


def sidecar_for(weights: str | None) -> dict:
    """The ModelSpec fields describing the exported model (see dedupd.imaging.cnn.ModelSpec)."""
    return {
        "name": "mobilenet-v3-small" if weights else "mobilenet-v3-small-untrained",
        "size": INPUT_SIZE,
        "resize": RESIZE,
        "keep_aspect": False,
        "layout": "NCHW",
        "dtype": "float32",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "dim": FEATURES,
        "threshold": 0.9,  # imagededup's default for this model
        "weights": weights,
    }


def build_feature_extractor(weights: str | None):  # -> torch.nn.Module (torch is imported lazily)
    """imagededup's MobileNetV3 network in eval mode: `features`, `avgpool`, flattened to (N, 576).

    `weights` is a torchvision weights name (downloaded by torchvision on first use) or None for a
    randomly initialised network, seeded so that tests can rebuild the same one.
    """
    import torch  # the optional `export` extra; nothing else in dedupd needs torch
    import torchvision

    if weights is None:
        torch.manual_seed(0)
    network = torchvision.models.mobilenet_v3_small(weights=weights).eval()
    return torch.nn.Sequential(network.features, network.avgpool, torch.nn.Flatten(1)).eval()


def export_mobilenet_v3_small(out_path: Path, *, weights: str | None = "IMAGENET1K_V1") -> Path:
    """Write imagededup's MobileNetV3-small feature extractor to `out_path` (+ sidecar); return the path."""
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    extractor = build_feature_extractor(weights)
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        torch.onnx.export(
            extractor,
            (example,),
            str(out_path),
            input_names=["image"],
            output_names=["embedding"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    sidecar = out_path.with_name(out_path.name + ".json")
    sidecar.write_text(json.dumps(sidecar_for(weights), indent=2) + "\n")
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export imagededup's MobileNetV3-small CNN as ONNX for dedupd.")
    parser.add_argument("out", type=Path, help="the .onnx file to write (its description goes to OUT.onnx.json)")
    parser.add_argument("--weights", default="IMAGENET1K_V1", help="torchvision weights name, or 'none'")
    args = parser.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights
    print(export_mobilenet_v3_small(args.out, weights=weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
