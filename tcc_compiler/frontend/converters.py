"""The converter table: ONNX op type -> the function that turns one NodeProto into IR nodes.

Each converter reads the node's attributes with the opset's rules (ONNX operator docs,
https://onnx.ai/onnx/operators/) and raises :class:`Unsupported` with the constraint that
failed. They live by op family:

================================  ==========================================================
module                            ONNX ops
================================  ==========================================================
``frontend/spatial.py``           Conv, BatchNormalization, MaxPool, AveragePool,
                                  GlobalAveragePool, ReduceMean (H, W), Pad
``frontend/eltwise.py``           Relu, Clip, Add, Sum, Mul, Sub, Div
``frontend/views.py``             Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout,
                                  Constant
``frontend/dense.py``             Gemm, MatMul, Softmax, ArgMax
``frontend/activations.py``       lookup-table activations (Sigmoid, Tanh, HardSwish, ...)
``frontend/reduce.py``            ReduceSum, ReduceMax
``frontend/convtranspose.py``     ConvTranspose
``frontend/resize.py``            Resize, Upsample
``frontend/channels.py``          Concat, Split, Slice, Transpose, channel shuffle
================================  ==========================================================

Their shared state (:class:`Ctx`) and exceptions are in :mod:`tcc_compiler.frontend.context`,
re-exported here.
"""

from __future__ import annotations

from typing import Callable

import onnx

from tcc_compiler.frontend import dense, eltwise, spatial, views
from tcc_compiler.frontend.activations import LUT_CONVERTERS
from tcc_compiler.frontend.channels import CHANNEL_CONVERTERS
from tcc_compiler.frontend.context import Ctx, Downstream, Unsupported, attrs_of
from tcc_compiler.frontend.convtranspose import CONVTRANSPOSE_CONVERTERS
from tcc_compiler.frontend.eltwise import is_channel_vector
from tcc_compiler.frontend.reduce import REDUCE_CONVERTERS
from tcc_compiler.frontend.resize import RESIZE_CONVERTERS
from tcc_compiler.frontend.views import emit_view
from tcc_compiler.ir.ops import Op

__all__ = ["CONVERTERS", "REFUSED_OPS", "Ctx", "Downstream", "Unsupported", "attrs_of",
           "emit_view", "is_channel_vector", "unknown_op_reason"]


#: Why common ops outside :data:`CONVERTERS` are refused, and what to do (shown to users and
#: listed in SUPPORTED_OPS.md). The NPU runs conv / fc / add / max+avg pool / global pool with
#: a fused relu or clip epilogue (``tcc_compiler.ir.ops.NPU_OPS``); nothing else.
REFUSED_OPS: dict[str, str] = {
    "LRN": "local response normalization has no NPU command; remove it (most networks that "
           "use it lose little accuracy without it) or run that part on the host",
    "LSTM": "recurrent layers are not image ops; not supported",
    "GRU": "recurrent layers are not image ops; not supported",
    "InstanceNormalization": "normalization with data-dependent statistics is not foldable "
                             "into constants; not supported",
    "LayerNormalization": "normalization with data-dependent statistics is not foldable into "
                          "constants; not supported",
}


def unknown_op_reason(op_type: str) -> str:
    """The refusal reason for an op type without a converter (one clause, no newline)."""
    why = REFUSED_OPS.get(op_type)
    if why:
        return f"op type not supported: {why} (see SUPPORTED_OPS.md)"
    return "op type not supported by tccc (see SUPPORTED_OPS.md)"



CONVERTERS: dict[str, Callable[[Ctx, onnx.NodeProto], None]] = {
    "Conv": spatial.conv,
    "BatchNormalization": spatial.batchnorm,
    "Relu": eltwise.relu,
    "Clip": eltwise.clip,
    "Add": eltwise.binary(Op.ADD),
    "Sum": eltwise.binary(Op.ADD),
    "Mul": eltwise.binary(Op.MUL),
    "Sub": eltwise.sub_op,
    "Div": eltwise.div_op,
    "MaxPool": spatial.pool(Op.MAXPOOL),
    "AveragePool": spatial.pool(Op.AVGPOOL),
    "GlobalAveragePool": spatial.gap,
    "ReduceMean": spatial.reduce_mean,
    "Flatten": views.flatten,
    "Reshape": views.reshape,
    "Squeeze": views.squeeze_like,
    "Unsqueeze": views.squeeze_like,
    "Gemm": dense.gemm,
    "MatMul": dense.matmul,
    "Pad": spatial.pad,
    "Softmax": dense.softmax,
    "ArgMax": dense.argmax,
    "Identity": views.identity,
    "Dropout": views.identity,
    "Cast": views.cast,
    "Constant": views.constant,
    **LUT_CONVERTERS,
    **REDUCE_CONVERTERS,
    **CONVTRANSPOSE_CONVERTERS,
    **RESIZE_CONVERTERS,
    **CHANNEL_CONVERTERS,
}
