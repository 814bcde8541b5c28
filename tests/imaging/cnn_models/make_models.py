"""Write the two tiny ONNX models the CNN tests run (committed; re-run only to change them).

Why: tests need models whose output can be predicted exactly from the input, in both layouts and
both input types dedupd supports, without torch. Needs the `onnx` package (not a dedupd dependency):

    python -m venv /tmp/onnxgen && /tmp/onnxgen/bin/pip install onnx
    /tmp/onnxgen/bin/python tests/imaging/cnn_models/make_models.py

* mean_rgb_nchw.onnx: float32 [batch, 3, 8, 8] -> channel means [r, g, b] times W -> [batch, 4] with
  W = [[1,0,0,1],[0,1,0,1],[0,0,1,1]], i.e. (r, g, b, r+g+b). Fixed 8x8, so other sizes fail to run.
* mean_rgb_nhwc_uint8.onnx: uint8 [batch, height, width, 3] -> float channel means [batch, d], d =
  min(3, width): an output width only running the model reveals (dedupd probes it at `size`).
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def save(graph: onnx.GraphProto, name: str) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dedupd-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, HERE / name)


def main() -> None:
    weights = numpy_helper.from_array(np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float32), "weights")
    save(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[2, 3], keepdims=0),
                helper.make_node("MatMul", ["means", "weights"], ["features"]),
            ],
            "mean_rgb_nchw",
            [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 8, 8])],
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
            [weights],
        ),
        "mean_rgb_nchw.onnx",
    )
    save(
        helper.make_graph(
            [
                helper.make_node("Cast", ["image"], ["floats"], to=TensorProto.FLOAT),
                helper.make_node("ReduceMean", ["floats"], ["means"], axes=[1, 2], keepdims=0),
                # keep the first min(3, width) means: an output width no shape inference can know
                helper.make_node("Shape", ["image"], ["shape"]),
                helper.make_node("Slice", ["shape", "two", "three"], ["width"]),
                helper.make_node("Slice", ["means", "zero", "width", "one"], ["embedding"]),
            ],
            "mean_rgb_nhwc_uint8",
            [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", "d"])],
            [
                numpy_helper.from_array(np.array([value], dtype=np.int64), name)
                for name, value in (("zero", 0), ("one", 1), ("two", 2), ("three", 3))
            ],
        ),
        "mean_rgb_nhwc_uint8.onnx",
    )


if __name__ == "__main__":
    main()
