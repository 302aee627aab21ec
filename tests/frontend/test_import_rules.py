"""Before (an ONNX graph built with onnx.helper) / expected (IR text) for every import rule.

One case per import rule of the frontend (issue #3's import list, one per variant). The expected
IR is written by hand from the ONNX operator semantics (https://onnx.ai/onnx/operators/), never
copied from the importer's output: folded constants are tiny and their arithmetic is spelled out
in a comment next to them. Each case checks, in this order:

1. the imported graph is structurally equal (:func:`graphs_equal`: ops, names, attributes,
   shapes, provenance, constant payloads bit-exact) to the parsed expected text;
2. the imported graph, and the graph after the float pipeline, compute what ONNX Runtime
   computes (``onnx.reference`` for opset 6, older than ONNX Runtime's BatchNormalization);
3. where the rule's point is what a later pass makes of it (MatMul+Add -> one fc with the Add
   as its bias), the op list after the float pipeline.

Refused variants of these rules (Clip without a lower bound, Dropout in training mode, ...)
are at the end: exit code 2 and one line naming the file, the node and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tcc_compiler.cli.main import main
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.parser import parse_graph
from tcc_compiler.ir.text import graphs_equal

N = helper.make_node
F = np.float32

_HEAD = ('graph "g" {{\n  meta source : str = "g"\n  meta opset : int = {opset}\n'
         '  meta input_layout : str = "{layout}"\n  meta onnx_input : str = "x"\n')


@dataclass
class Rule:
    """One import rule: the ONNX graph (``nodes`` on one input ``x`` of ``shape``) and the IR
    body expected after import (the text after the ``meta`` lines)."""

    nodes: list
    shape: list
    inits: dict
    opset: int
    body: str
    layout: str = "NCHW"
    #: compare with onnx.reference instead of ONNX Runtime (opsets ONNX Runtime lacks)
    reference: bool = False
    #: model options (make_model keywords): ir_version, inits_as_inputs
    model_kw: dict = field(default_factory=dict)
    #: --input (W, H, C) for models with symbolic dims
    input_whc: tuple | None = None
    #: op list expected after the float pipeline (None: not checked)
    after_pipeline: list | None = None
    #: False: check the imported graph only (legalize refuses a lone reshape that reorders the
    #: NPU's NHWC data, as for Flatten of a 2x2 map; Flatten -> Gemm merges, see the Gemm cases)
    pipeline: bool = True


def _conv_line(out: str, shape: str, ins: str, kernel: str, strides="[1,1]", pads="[0,0,0,0]",
               dil="[1,1]", group=1, name="conv") -> str:
    return (f'  %{out} : f32[{shape}] = conv "{name}" ({ins}) {{kernel={kernel}, '
            f'strides={strides},\n      pads={pads}, dilations={dil}, group={group}, act=none}} '
            f'src=["{name}"]\n')


_ONES9 = "dense<[" + ", ".join(["1.0"] * 9) + "]>"

# ---- BatchNormalization: every opset form imports to one batchnorm node ---------------------
_BN_INITS = {"s": np.array([1., 2.]), "b": np.array([0., 1.]), "m": np.array([0., -1.]),
             "v": np.array([0.5, 1.5])}
_BN_BODY = """  input %x : f32[1,2,3,3]
  const %bn_scale : f32[2] = dense<[1.0, 2.0]>
  const %bn_B : f32[2] = dense<[0.0, 1.0]>
  const %bn_mean : f32[2] = dense<[0.0, -1.0]>
  const %bn_var : f32[2] = dense<[0.5, 1.5]>
  %y : f32[1,2,3,3] = batchnorm "bn" (%x, %bn_scale, %bn_B, %bn_mean, %bn_var)
      {epsilon=0.5} src=["bn"]
  output %y
}"""


def _bn(opset: int, **kw) -> Rule:
    return Rule([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn",
                   epsilon=0.5, **kw)], [1, 2, 3, 3], _BN_INITS, opset, _BN_BODY,
                reference=opset < 7)


def _clip(opset: int, ins: list[str], inits: dict, act: str, **kw) -> Rule:
    return Rule([N("Clip", ["x"] + ins, ["y"], name="clip", **kw)], [1, 2, 3, 3], inits, opset,
                f"""  input %x : f32[1,2,3,3]
  %y : f32[1,2,3,3] = clip "clip" (%x) {{act={act}}} src=["clip"]
  output %y
}}""")


def _pool(op: str, ir_op: str, shape: list, out: str, attrs: str, **kw) -> Rule:
    dims = ",".join(map(str, shape))
    return Rule([N(op, ["x"], ["y"], name="pool", **kw)], shape, {}, 13, f"""\
  input %x : f32[{dims}]
  %y : f32[{out}] = {ir_op} "pool" (%x) {attrs} src=["pool"]
  output %y
}}""")


def _view(nodes, shape, inits, opset, out_shape: str, in_shape="1,2,2,2") -> Rule:
    return Rule(nodes, shape, inits, opset, f"""  input %x : f32[{in_shape}]
  %y : f32[{out_shape}] = reshape "view" (%x) {{shape=[{out_shape}]}} src=["view"]
  output %y
}}""", pipeline=False)


def _dynamic_batch_reshape() -> tuple[list, dict]:
    """What torch.onnx writes for x.view(x.size(0), -1): Shape->Gather->Unsqueeze->Concat."""
    inits = {"ax0": np.array([0], np.int64), "idx": np.array(0, np.int64),
             "m1": np.array([-1], np.int64)}
    return [N("GlobalAveragePool", ["x"], ["r"]), N("Shape", ["r"], ["s"], name="shape"),
            N("Gather", ["s", "idx"], ["n"], axis=0, name="gather"),
            N("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
            N("Concat", ["n1", "m1"], ["target"], axis=0, name="concat"),
            N("Reshape", ["r", "target"], ["y"], name="reshape")], inits


RULES: dict[str, Rule] = {
    # -- BatchNormalization: opset 6 is_test/spatial, 7-8 spatial, 9-14 plain, 15+ training_mode
    # (consumed_inputs is BatchNormalization-1's, opset < 6: refused as too old, see below)
    "batchnorm_opset6_is_test_spatial": _bn(6, is_test=1, spatial=1),
    "batchnorm_opset7_spatial": _bn(7, spatial=1),
    "batchnorm_opset9": _bn(9),
    "batchnorm_opset15_training_mode0": _bn(15, training_mode=0),
    # -- Clip: attributes before opset 11, optional inputs from 11; (0, +inf) -> relu,
    # finite (lo <= 0 <= hi) -> clip(lo, hi) (relu6 is clip(0, 6))
    "clip_opset6_min_attr_is_relu": _clip(6, [], {}, "relu", min=0.0),
    "clip_opset6_min_max_attrs_relu6": _clip(6, [], {}, "clip(0.0, 6.0)", min=0.0, max=6.0),
    "clip_opset11_min_input_is_relu": _clip(11, ["lo"], {"lo": np.array(0, F)}, "relu"),
    "clip_opset13_absent_max_is_relu": _clip(13, ["lo", ""], {"lo": np.array(0, F)}, "relu"),
    "clip_opset13_min_max_inputs": _clip(13, ["lo", "hi"], {"lo": np.array(-1, F),
                                                            "hi": np.array(1.5, F)},
                                         "clip(-1.0, 1.5)"),
    # no bounds at all (both inputs omitted): Clip is the identity
    "clip_opset11_no_bounds_is_identity": Rule(
        [N("Clip", ["x"], ["c"], name="clip"), N("Relu", ["c"], ["y"], name="relu")],
        [1, 2, 3, 3], {}, 11, """  input %x : f32[1,2,3,3]
  %y : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  output %y
}"""),
    # -- Relu, Add of two activations, n-ary Sum, Sum of one input
    "relu": Rule([N("Relu", ["x"], ["y"], name="relu")], [1, 2, 3, 3], {}, 13, """
  input %x : f32[1,2,3,3]
  %y : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  output %y
}"""),
    "add_two_activations": Rule([N("Relu", ["x"], ["r"], name="relu"),
                                 N("Add", ["x", "r"], ["y"], name="add")], [1, 2, 3, 3], {}, 13,
                                """  input %x : f32[1,2,3,3]
  %r : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  %y : f32[1,2,3,3] = add "add" (%x, %r) {act=none} src=["add"]
  output %y
}"""),
    # Sum(d, x, i) with d = i = x: a chain of binary adds, one per extra operand
    "identity_dropout_sum": Rule([N("Identity", ["x"], ["i"]), N("Dropout", ["i"], ["d"],
                                                                   ratio=0.5),
                                  N("Sum", ["d", "x", "i"], ["y"], name="sum")],
                                 [1, 2, 3, 3], {}, 7, """  input %x : f32[1,2,3,3]
  %y__sum1 : f32[1,2,3,3] = add "sum" (%x, %x) {act=none} src=["sum"]
  %y : f32[1,2,3,3] = add "sum_1" (%y__sum1, %x) {act=none} src=["sum"]
  output %y
}"""),
    "sum_of_one_input_is_its_input": Rule([N("Relu", ["x"], ["r"], name="relu"),
                                           N("Sum", ["r"], ["y"], name="sum")],
                                          [1, 2, 3, 3], {}, 13, """  input %x : f32[1,2,3,3]
  %r : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  output %r
}"""),
    # -- Mul / Add by per-channel constants (and a scalar): mul/add with the constant second,
    # whichever side ONNX has it on; canonicalize turns them into one per-channel affine
    "mul_add_per_channel_constants": Rule(
        [N("Mul", ["k", "x"], ["m"], name="mul"), N("Add", ["m", "o"], ["y"], name="add")],
        [1, 2, 3, 3], {"k": np.array([2., -0.5]).reshape(1, 2, 1, 1),
                       "o": np.array([0.5, -1.]).reshape(2, 1, 1)}, 13, """
  input %x : f32[1,2,3,3]
  const %k : f32[1,2,1,1] = dense<[2.0, -0.5]>
  const %o : f32[2,1,1] = dense<[0.5, -1.0]>
  %m : f32[1,2,3,3] = mul "mul" (%x, %k) {act=none} src=["mul"]
  %y : f32[1,2,3,3] = add "add" (%m, %o) {act=none} src=["add"]
  output %y
}""", after_pipeline=[Op.CONV]),
    "add_scalar_constant": Rule([N("Add", ["x", "c"], ["y"], name="add")], [1, 2, 3, 3],
                                {"c": np.array(1.5)}, 13, """  input %x : f32[1,2,3,3]
  const %c : f32[] = dense<[1.5]>
  %y : f32[1,2,3,3] = add "add" (%x, %c) {act=none} src=["add"]
  output %y
}"""),
    # -- Conv: auto_pad on a 4x4 map, 3x3 kernel, stride 2 -> out ceil(4/2) = 2, total padding
    # (2-1)*2 + 3 - 4 = 1: SAME_UPPER puts it at the end (t,l,b,r = 0,0,1,1), SAME_LOWER at
    # the beginning (1,1,0,0). No bias input -> a zero bias named <weight>_bias.
    "conv_auto_pad_same_upper": Rule(
        [N("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2])],
        [1, 1, 4, 4], {"w": np.ones((1, 1, 3, 3))}, 13, f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,3,3] = {_ONES9}
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("y", "1,1,2,2", "%x, %w, %w_bias", "[3,3]", "[2,2]", "[0,0,1,1]")}  output %y
}}"""),
    "conv_auto_pad_same_lower": Rule(
        [N("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_LOWER", strides=[2, 2])],
        [1, 1, 4, 4], {"w": np.ones((1, 1, 3, 3))}, 13, f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,3,3] = {_ONES9}
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("y", "1,1,2,2", "%x, %w, %w_bias", "[3,3]", "[2,2]", "[1,1,0,0]")}  output %y
}}"""),
    # VALID: no padding, out = 4 - 3 + 1 = 2; the bias input keeps its name
    "conv_auto_pad_valid_bias": Rule(
        [N("Conv", ["x", "w", "b"], ["y"], name="conv", auto_pad="VALID")],
        [1, 1, 4, 4], {"w": np.ones((1, 1, 3, 3)), "b": np.array([0.25])}, 11,
        f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,3,3] = {_ONES9}
  const %b : f32[1] = dense<[0.25]>
{_conv_line("y", "1,1,2,2", "%x, %w, %b", "[3,3]")}  output %y
}}"""),
    # ONNX pads [h_begin, w_begin, h_end, w_end] = (t, l, b, r) = (0, 1, 2, 1): out H = 4+0+2-3+1
    # = 4, W = 4+1+1-3+1 = 4
    "conv_asymmetric_pads": Rule(
        [N("Conv", ["x", "w"], ["y"], name="conv", pads=[0, 1, 2, 1])],
        [1, 1, 4, 4], {"w": np.ones((1, 1, 3, 3))}, 13, f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,3,3] = {_ONES9}
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("y", "1,1,4,4", "%x, %w, %w_bias", "[3,3]", pads="[0,1,2,1]")}  output %y
}}"""),
    # 2x2 kernel dilated (2, 1): effective 3x2 -> out (4-3+1) x (4-2+1) = 2x3
    "conv_dilations": Rule(
        [N("Conv", ["x", "w"], ["y"], name="conv", dilations=[2, 1])],
        [1, 1, 4, 4], {"w": np.array([1., 2., 3., 4.]).reshape(1, 1, 2, 2)}, 13,
        f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,2,2] = dense<[1.0, 2.0, 3.0, 4.0]>
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("y", "1,1,2,3", "%x, %w, %w_bias", "[2,2]", dil="[2,1]")}  output %y
}}"""),
    # group 2 on 2 channels, 2 outputs per group: weight [4, 2/2, 1, 1]
    "conv_group": Rule(
        [N("Conv", ["x", "w"], ["y"], name="conv", group=2)],
        [1, 2, 3, 3], {"w": np.array([1., 2., 3., 4.]).reshape(4, 1, 1, 1)}, 13,
        f"""  input %x : f32[1,2,3,3]
  const %w : f32[4,1,1,1] = dense<[1.0, 2.0, 3.0, 4.0]>
  const %w_bias : f32[4] = dense<[0.0, 0.0, 0.0, 0.0]>
{_conv_line("y", "1,4,3,3", "%x, %w, %w_bias", "[1,1]", group=2)}  output %y
}}"""),
    # initializers listed as graph inputs (IR version 3): still constants
    "initializers_as_inputs_ir3": Rule(
        [N("Conv", ["x", "w", "b"], ["y"], name="conv")],
        [1, 2, 3, 3], {"w": np.array([1., -1.]).reshape(1, 2, 1, 1), "b": np.array([0.5])}, 7,
        f"""  input %x : f32[1,2,3,3]
  const %w : f32[1,2,1,1] = dense<[1.0, -1.0]>
  const %b : f32[1] = dense<[0.5]>
{_conv_line("y", "1,1,3,3", "%x, %w, %b", "[1,1]")}  output %y
}}""", model_kw={"ir_version": 3, "inits_as_inputs": True}),
    # symbolic dims (N, 2, H, W) fixed by --input 3x3x2 (W x H x C), batch 1
    "symbolic_dims_fixed_by_input": Rule(
        [N("Relu", ["x"], ["y"], name="relu")], ["N", 2, "H", "W"], {}, 13, """
  input %x : f32[1,2,3,3]
  %y : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  output %y
}""", input_whc=(3, 3, 2)),
    # -- Pad (zero, spatial) folded into the next Conv's padding: ONNX Pad pads
    # [n0, c0, h0, w0, n1, c1, h1, w1] = [0,0,1,2, 0,0,2,1] -> (t, l, b, r) = (1, 2, 2, 1);
    # 4x4 + 1x1 kernel -> (4+1+2) x (4+2+1) = 7x7
    "pad_input_conv_clip_inputs_relu6": Rule(
        [N("Pad", ["x", "p"], ["q"], name="pad"), N("Conv", ["q", "w"], ["c"], name="conv"),
         N("Clip", ["c", "lo", "hi"], ["y"], name="relu6")], [1, 2, 4, 4],
        {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "w": np.ones((1, 2, 1, 1)),
         "lo": np.array(0, F), "hi": np.array(6, F)}, 13, f"""  input %x : f32[1,2,4,4]
  const %w : f32[1,2,1,1] = dense<[1.0, 1.0]>
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("c", "1,1,7,7", "%x, %w, %w_bias", "[1,1]", pads="[1,2,2,1]")}\
  %y : f32[1,1,7,7] = clip "relu6" (%c) {{act=clip(0.0, 6.0)}} src=["relu6"]
  output %y
}}"""),
    # opset < 11: pads and value are attributes; Pad (t,l,b,r) (1,0,0,1) plus the Conv's own
    # pads (1,1,1,1) = (2,1,1,2); out H = 4+2+1-3+1 = 5, W = 4+1+2-3+1 = 5
    "pad_attr_opset7_conv_pads_summed": Rule(
        [N("Pad", ["x"], ["q"], name="pad", pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.0),
         N("Conv", ["q", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [1, 1, 4, 4], {"w": np.ones((1, 1, 3, 3))}, 7, f"""  input %x : f32[1,1,4,4]
  const %w : f32[1,1,3,3] = {_ONES9}
  const %w_bias : f32[1] = dense<[0.0]>
{_conv_line("y", "1,1,5,5", "%x, %w, %w_bias", "[3,3]", pads="[2,1,1,2]")}  output %y
}}"""),
    # -- MaxPool: 3x3/s2 on 4x4; pads 1 -> out floor((4+2-3)/2)+1 = 2
    "maxpool_pads": _pool("MaxPool", "maxpool", [1, 1, 4, 4], "1,1,2,2",
                          "{kernel=[3,3], strides=[2,2], pads=[1,1,1,1], count_include_pad=false}",
                          kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    # ceil_mode: out ceil((4-3)/2)+1 = 2 (floor would give 1); the last window starts at 2 < 4
    # and needs (2-1)*2 + 3 - 4 = 1 extra row/column at the end -> pads (0,0,1,1)
    "maxpool_ceil_mode": _pool("MaxPool", "maxpool", [1, 1, 4, 4], "1,1,2,2",
                               "{kernel=[3,3], strides=[2,2], pads=[0,0,1,1], "
                               "count_include_pad=false}",
                               kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    # auto_pad: same arithmetic as the Conv cases above
    "maxpool_auto_pad_same_upper": _pool("MaxPool", "maxpool", [1, 1, 4, 4], "1,1,2,2",
                                         "{kernel=[3,3], strides=[2,2], pads=[0,0,1,1], "
                                         "count_include_pad=false}", kernel_shape=[3, 3],
                                         strides=[2, 2], auto_pad="SAME_UPPER"),
    "maxpool_auto_pad_same_lower": _pool("MaxPool", "maxpool", [1, 1, 4, 4], "1,1,2,2",
                                         "{kernel=[3,3], strides=[2,2], pads=[1,1,0,0], "
                                         "count_include_pad=false}", kernel_shape=[3, 3],
                                         strides=[2, 2], auto_pad="SAME_LOWER"),
    # -- AveragePool: count_include_pad=1 with pads; unpadded; window == map -> gap
    "avgpool_count_include_pad": _pool("AveragePool", "avgpool", [1, 1, 4, 4], "1,1,4,4",
                                       "{kernel=[3,3], strides=[1,1], pads=[1,1,1,1], "
                                       "count_include_pad=true}", kernel_shape=[3, 3],
                                       pads=[1, 1, 1, 1], count_include_pad=1),
    "avgpool_unpadded": _pool("AveragePool", "avgpool", [1, 1, 4, 4], "1,1,2,2",
                              "{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], "
                              "count_include_pad=false}", kernel_shape=[2, 2], strides=[2, 2]),
    "avgpool_whole_window_is_gap": _pool("AveragePool", "gap", [1, 2, 3, 3], "1,2,1,1", "",
                                         kernel_shape=[3, 3]),
    "nhwc_input_whole_window_avgpool": Rule(
        [N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="nhwc"),
         N("AveragePool", ["t"], ["y"], kernel_shape=[3, 3], name="ap")], [1, 3, 3, 2], {}, 13,
        """  input %x : f32[1,3,3,2]
  %t : f32[1,2,3,3] = transpose "nhwc" (%x) {perm=[0,3,1,2]} src=["nhwc"]
  %y : f32[1,2,1,1] = gap "ap" (%t) src=["ap"]
  output %y
}""", layout="NHWC"),
    "global_average_pool": _pool("GlobalAveragePool", "gap", [1, 2, 3, 3], "1,2,1,1", ""),
    # -- ReduceMean over (H, W): axes attribute (opset 13, keepdims=0 -> gap + reshape) and
    # axes input (opset 18, negative axes, keepdims defaults to 1 -> gap)
    "reduce_mean_opset13_keepdims0": Rule(
        [N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0, name="rm")], [1, 2, 3, 3], {},
        13, """  input %x : f32[1,2,3,3]
  %y__gap : f32[1,2,1,1] = gap "rm" (%x) src=["rm"]
  %y : f32[1,2] = reshape "rm_1" (%y__gap) {shape=[1,2]} src=["rm"]
  output %y
}"""),
    "reduce_mean_opset18_axes_input": Rule(
        [N("ReduceMean", ["x", "axes"], ["y"], name="rm")], [1, 2, 3, 3],
        {"axes": np.array([-1, -2], np.int64)}, 18, """  input %x : f32[1,2,3,3]
  %y : f32[1,2,1,1] = gap "rm" (%x) src=["rm"]
  output %y
}"""),
    # -- Flatten(axis) on [1,2,2,2]: (prod dims[:axis], prod dims[axis:])
    "flatten_axis0": _view([N("Flatten", ["x"], ["y"], axis=0, name="view")], [1, 2, 2, 2], {},
                           13, "1,8"),
    "flatten_axis2": _view([N("Flatten", ["x"], ["y"], axis=2, name="view")], [1, 2, 2, 2], {},
                           13, "2,4"),
    "flatten_axis_minus1": _view([N("Flatten", ["x"], ["y"], axis=-1, name="view")],
                                 [1, 2, 2, 2], {}, 13, "4,2"),
    # -- Reshape: 0 copies the input dim, -1 takes the rest: [0, 2, -1] of [1,2,2,2] = [1,2,4]
    "reshape_zero_minus_one": _view([N("Reshape", ["x", "s"], ["y"], name="view")],
                                    [1, 2, 2, 2], {"s": np.array([0, 2, -1], np.int64)}, 13,
                                    "1,2,4"),
    "reshape_opset7_to_same_shape_is_alias": Rule(
        [N("Reshape", ["x", "s"], ["v"], name="view"), N("Relu", ["v"], ["y"], name="relu")],
        [1, 2, 2, 2], {"s": np.array([0, 0, -1, 2], np.int64)}, 7, """
  input %x : f32[1,2,2,2]
  %y : f32[1,2,2,2] = relu "relu" (%x) {act=relu} src=["relu"]
  output %y
}"""),
    # -- Gemm -> fc with weight [M, K, 1, 1] = alpha * (transB ? B : B^T), bias = beta * C
    # transB=0: W = 0.5 * [[1, 2], [3, 4]]^T = [[0.5, 1.5], [1.0, 2.0]]; bias = 2 * [1, -1]
    "gemm_alpha_beta": Rule(
        [N("Flatten", ["x"], ["f"]),
         N("Gemm", ["f", "B", "C"], ["y"], alpha=0.5, beta=2.0, name="gemm")],
        [1, 2, 1, 1], {"B": np.array([[1., 2.], [3., 4.]]), "C": np.array([1., -1.])}, 13,
        """  input %x : f32[1,2,1,1]
  const %B : f32[2,2,1,1] = dense<[0.5, 1.5, 1.0, 2.0]>
  const %y_bias : f32[2] = dense<[2.0, -2.0]>
  %f : f32[1,2] = reshape "f" (%x) {shape=[1,2]} src=["f"]
  %y : f32[1,2] = fc "gemm" (%f, %B, %y_bias) {act=none} src=["gemm"]
  output %y
}""", after_pipeline=[Op.FC]),
    # transB=1: W = B = [[1, 2], [3, 4]] ([M=2, K=2]); C of one element broadcast: 0.5 * 3
    "gemm_transb_scalar_c": Rule(
        [N("Flatten", ["x"], ["f"]),
         N("Gemm", ["f", "B", "C"], ["y"], transB=1, beta=0.5, name="gemm")],
        [1, 2, 1, 1], {"B": np.array([[1., 2.], [3., 4.]]), "C": np.array([3.])}, 13,
        """  input %x : f32[1,2,1,1]
  const %B : f32[2,2,1,1] = dense<[1.0, 2.0, 3.0, 4.0]>
  const %y_bias : f32[2] = dense<[1.5, 1.5]>
  %f : f32[1,2] = reshape "f" (%x) {shape=[1,2]} src=["f"]
  %y : f32[1,2] = fc "gemm" (%f, %B, %y_bias) {act=none} src=["gemm"]
  output %y
}"""),
    # C is optional from opset 11: zero bias; transB=1, B [M=3, K=2]
    "gemm_opset11_no_c": Rule(
        [N("Flatten", ["x"], ["f"]), N("Gemm", ["f", "B"], ["y"], transB=1, name="gemm")],
        [1, 2, 1, 1], {"B": np.array([[1., 0.], [0., 1.], [1., 1.]])}, 11,
        """  input %x : f32[1,2,1,1]
  const %B : f32[3,2,1,1] = dense<[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]>
  const %y_bias : f32[3] = dense<[0.0, 0.0, 0.0]>
  %f : f32[1,2] = reshape "f" (%x) {shape=[1,2]} src=["f"]
  %y : f32[1,3] = fc "gemm" (%f, %B, %y_bias) {act=none} src=["gemm"]
  output %y
}"""),
    # -- MatMul [1,2] x W [2,3] -> fc with weight W^T = [[1,4],[2,5],[3,6]] and a zero bias;
    # the Add of a per-output constant stays an add at import and is folded into the fc's bias
    # by the float pipeline (one fc left)
    "matmul_add_is_fc": Rule(
        [N("Flatten", ["x"], ["f"]), N("MatMul", ["f", "W"], ["mm"], name="mm"),
         N("Add", ["mm", "b"], ["y"], name="add")], [1, 2, 1, 1],
        {"W": np.array([[1., 2., 3.], [4., 5., 6.]]), "b": np.array([0.5, -0.5, 1.])}, 13,
        """  input %x : f32[1,2,1,1]
  const %W : f32[3,2,1,1] = dense<[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]>
  const %mm_bias : f32[3] = dense<[0.0, 0.0, 0.0]>
  const %b : f32[3] = dense<[0.5, -0.5, 1.0]>
  %f : f32[1,2] = reshape "f" (%x) {shape=[1,2]} src=["f"]
  %mm : f32[1,3] = fc "mm" (%f, %W, %mm_bias) {act=none} src=["mm"]
  %y : f32[1,3] = add "add" (%mm, %b) {act=none} src=["add"]
  output %y
}""", after_pipeline=[Op.FC]),
    # -- Identity and Dropout (opset 13: ratio and training_mode=false inputs) are dropped
    "identity_dropout_opset13_inputs": Rule(
        [N("Identity", ["x"], ["i"], name="id"),
         N("Dropout", ["i", "ratio", "tm"], ["d", "mask"], name="drop"),
         N("Relu", ["d"], ["y"], name="relu")], [1, 2, 3, 3],
        {"ratio": np.array(0.3, F), "tm": np.array(False)}, 13, """  input %x : f32[1,2,3,3]
  %y : f32[1,2,3,3] = relu "relu" (%x) {act=relu} src=["relu"]
  output %y
}"""),
    # -- Constant (value tensor, value_float, value_floats + value_ints through a Reshape) and
    # ConstantOfShape([2,1,1], 0.25): folded into constants named by their ONNX outputs
    "constant_value_tensor": Rule(
        [N("Constant", [], ["k"], value=helper.make_tensor("k", onnx.TensorProto.FLOAT,
                                                           [2, 1, 1], [2.0, 0.5])),
         N("Mul", ["x", "k"], ["y"], name="mul")], [1, 2, 3, 3], {}, 9, """
  input %x : f32[1,2,3,3]
  const %k : f32[2,1,1] = dense<[2.0, 0.5]>
  %y : f32[1,2,3,3] = mul "mul" (%x, %k) {act=none} src=["mul"]
  output %y
}"""),
    "constant_value_float_floats_ints": Rule(
        [N("Constant", [], ["k"], value_floats=[0.5, 1.0]),
         N("Constant", [], ["shp"], value_ints=[2, 1, 1]),
         N("Reshape", ["k", "shp"], ["k3"]),
         N("Constant", [], ["o"], value_float=0.25),
         N("Mul", ["x", "k3"], ["m"], name="mul"),
         N("Add", ["m", "o"], ["y"], name="add")], [1, 2, 3, 3], {}, 13, """
  input %x : f32[1,2,3,3]
  const %k3 : f32[2,1,1] = dense<[0.5, 1.0]>
  const %o : f32[] = dense<[0.25]>
  %m : f32[1,2,3,3] = mul "mul" (%x, %k3) {act=none} src=["mul"]
  %y : f32[1,2,3,3] = add "add" (%m, %o) {act=none} src=["add"]
  output %y
}"""),
    "constant_of_shape": Rule(
        [N("ConstantOfShape", ["shp"], ["b"], name="cos",
           value=helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.25])),
         N("Add", ["x", "b"], ["y"], name="add")], [1, 2, 3, 3],
        {"shp": np.array([2, 1, 1], np.int64)}, 9, """  input %x : f32[1,2,3,3]
  const %b : f32[2,1,1] = dense<[0.25, 0.25]>
  %y : f32[1,2,3,3] = add "add" (%x, %b) {act=none} src=["add"]
  output %y
}"""),
    # -- the dynamic-batch shape chain folds to the one Reshape it computes: [1, -1] -> [1, 2]
    "dynamic_batch_chain_folded": Rule(_dynamic_batch_reshape()[0], [1, 2, 3, 3],
                                       _dynamic_batch_reshape()[1], 13, """  input %x : f32[1,2,3,3]
  %r : f32[1,2,1,1] = gap "r" (%x) src=["r"]
  %y : f32[1,2] = reshape "reshape" (%r) {shape=[1,2]} src=["reshape"]
  output %y
}"""),
    # -- Softmax / ArgMax at the end: host ops over the last axis (Softmax opset 11's default
    # axis 1 is the last axis of [1, 2]); ArgMax keeps its axis and keepdims
    "softmax_at_end": Rule(
        [N("Flatten", ["x"], ["f"]), N("Softmax", ["f"], ["y"], name="sm")], [1, 2, 1, 1], {},
        11, """  input %x : f32[1,2,1,1]
  %f : f32[1,2] = reshape "f" (%x) {shape=[1,2]} src=["f"]
  %y : f32[1,2] = softmax "sm" (%f) {axis=-1, keepdims=true} src=["sm"]
  output %y
}"""),
}


# Softmax over axis 1 of [1, 2, 1, 1] (what a global pool gives; SqueezeNet, opset 9): opset
# < 13 normalises over dims[1:] = 2 values, opset 13 over axis 1 alone: the same 2 values
for _opset in (9, 13):
    RULES[f"softmax_opset{_opset}_axis1_of_1x1_map"] = Rule(
        [N("GlobalAveragePool", ["x"], ["p"], name="gap"),
         N("Softmax", ["p"], ["y"], axis=1, name="sm")], [1, 2, 3, 3], {}, _opset, """
  input %x : f32[1,2,3,3]
  %p : f32[1,2,1,1] = gap "gap" (%x) src=["gap"]
  %y : f32[1,2,1,1] = softmax "sm" (%p) {axis=1, keepdims=true} src=["sm"]
  output %y
}""")


def _argmax_rule() -> Rule:
    return Rule([N("Flatten", ["x"], ["f"]), N("ArgMax", ["f"], ["y"], axis=1, keepdims=1,
                                                 name="am")], [1, 3, 1, 1], {}, 13, """
  input %x : f32[1,3,1,1]
  %f : f32[1,3] = reshape "f" (%x) {shape=[1,3]} src=["f"]
  %y : f32[1,1] = argmax "am" (%f) {axis=1, keepdims=true} src=["am"]
  output %y
}""")


RULES["argmax_at_end"] = _argmax_rule()


def _build(make_model, rule: Rule) -> onnx.ModelProto:
    """make_model, except that the output's element type comes from shape inference (ArgMax
    gives int64), and an output shape inference cannot know (a Reshape to a shape computed by
    the graph) is declared with its rank only."""
    try:
        return make_model(rule.nodes, rule.shape, rule.inits, opset=rule.opset, **rule.model_kw)
    except onnx.checker.ValidationError:
        pass
    inits = [onnx.numpy_helper.from_array(np.asarray(v, F) if np.asarray(v).dtype.kind == "f"
                                          else np.asarray(v), k) for k, v in rule.inits.items()]
    g = helper.make_graph(rule.nodes, "g", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, rule.shape)], [], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", rule.opset)])
    m.ir_version = max(3, min(m.ir_version, 8))
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(m).graph.value_info}
    vi = inferred.get("y")
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        vi = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "k"])
    m.graph.output.append(vi)
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("case", sorted(RULES))
def test_import_rule_expected_ir(make_model, check_vs_ort, ort_run, run_pipeline, case):
    rule = RULES[case]
    m = _build(make_model, rule)
    head = _HEAD.format(opset=rule.opset, layout=rule.layout)
    expected = parse_graph(head + rule.body.lstrip("\n") + "\n", None)
    got = import_onnx(m, rule.input_whc)
    diff = graphs_equal(got, expected)
    assert diff is None, diff
    x = np.random.default_rng(0).standard_normal(got.inputs[0].shape).astype(F)
    if rule.reference:  # opsets ONNX Runtime does not run: onnx.reference, both stages
        ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
        for g in (got, run_pipeline(import_onnx(m, rule.input_whc))):
            np.testing.assert_allclose(run_float(g, x)[g.outputs[0].name], ref, rtol=1e-5,
                                       atol=1e-6)
        return
    if rule.layout == "NHWC":  # canonicalize drops the input transpose: the IR input is NCHW
        check_vs_ort(m, x, passes=False)
        g = run_pipeline(import_onnx(m))
        ref = ort_run(m, x)[0]
        np.testing.assert_allclose(run_float(g, x.transpose(0, 3, 1, 2))["y"], ref, rtol=1e-5,
                                   atol=1e-6)
        return
    final = check_vs_ort(m, x, input_whc=rule.input_whc, passes=rule.pipeline)
    if rule.after_pipeline is not None:
        assert [nd.op for nd in final.nodes] == rule.after_pipeline, final.nodes


def test_batchnorm_opset6_consumed_inputs_expected_ir():
    """Old converters wrote BatchNormalization-1's ``consumed_inputs`` next to opset 6's
    ``is_test`` (the ONNX checker rejects it, so the model is built without it): the stray
    attribute is ignored and the node imports like any opset-6 BatchNormalization. Values by
    hand for x = 1: channel 0 (1 - 0) / sqrt(0.5 + 0.5) * 1 + 0 = 1, channel 1
    (1 + 1) / sqrt(1.5 + 0.5) * 2 + 1 = 2 * sqrt(2) + 1."""
    node = N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", epsilon=0.5,
             is_test=1, spatial=1, consumed_inputs=[0, 0, 0, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [onnx.numpy_helper.from_array(np.asarray(v, F), k) for k, v in _BN_INITS.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    m.ir_version = 3
    expected = parse_graph(_HEAD.format(opset=6, layout="NCHW") + _BN_BODY + "\n", None)
    got = import_onnx(m)
    assert graphs_equal(got, expected) is None, graphs_equal(got, expected)
    y = run_float(got, np.ones((1, 2, 3, 3), F))["y"]
    np.testing.assert_allclose(y[0, :, 1, 1], [1.0, 2 * np.sqrt(2) + 1], rtol=1e-6)


def test_external_data_model_expected_ir(make_model, check_vs_ort, tmp_path):
    """A model whose initializers live in an external data file next to it imports like any
    other: the constants are read from that file."""
    m = make_model([N("Conv", ["x", "w", "b"], ["y"], name="conv")], [1, 2, 3, 3],
                   {"w": np.array([0.5, -2.0]).reshape(1, 2, 1, 1), "b": np.array([0.75])})
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location="ext.data",
                    size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size == 12  # 3 float32 values
    head = _HEAD.replace('"g"\n  meta opset', f'"{path}"\n  meta opset', 1)
    expected = parse_graph(head.format(opset=13, layout="NCHW") + f"""\
  input %x : f32[1,2,3,3]
  const %w : f32[1,2,1,1] = dense<[0.5, -2.0]>
  const %b : f32[1] = dense<[0.75]>
{_conv_line("y", "1,1,3,3", "%x, %w, %b", "[1,1]")}  output %y
}}
""", None)
    diff = graphs_equal(import_onnx(path), expected)
    assert diff is None, diff
    check_vs_ort(str(path), np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(F))


def test_every_rule_case_is_small():
    """The expected texts stay checkable by eye: every constant prints inline (<= 16 values)."""
    for name, rule in RULES.items():
        for arr in rule.inits.values():
            assert np.asarray(arr).size <= 16, name


# ---- refused variants of the rules: exit code 2, one line naming file, node and reason -------

REFUSED: dict[str, tuple] = {
    # name: (nodes, inits, opset, node name, reason fragment)
    "dropout_training_mode_true": ([N("Dropout", ["x", "r", "t"], ["y"], name="drop_t")],
                                   {"r": np.array(0.5, F), "t": np.array(True)}, 13, "drop_t",
                                   "training_mode=true"),
    "dropout_opset6_is_test0": ([N("Dropout", ["x"], ["y"], is_test=0, name="drop6")], {}, 6,
                                "drop6", "is_test=0"),
    "batchnorm_opset7_spatial0": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                     spatial=0, name="bn_s0")], _BN_INITS, 7, "bn_s0",
                                  "spatial=0"),
    "batchnorm_opset15_training_mode1": ([N("BatchNormalization", ["x", "s", "b", "m", "v"],
                                            ["y"], training_mode=1, name="bn_t")], _BN_INITS,
                                         15, "bn_t", "training_mode=1"),
    "gemm_trans_a": ([N("Flatten", ["x"], ["f"]), N("Transpose", ["f"], ["ft"]),
                      N("Gemm", ["ft", "B"], ["y"], transA=1, name="gemm_ta")],
                     {"B": np.ones((2, 2))}, 13, "gemm_ta", "transA=1"),
    "maxpool_dilations": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2],
                             name="mp_dil")], {}, 13, "mp_dil", "dilated pooling"),
    "reduce_mean_over_c": ([N("ReduceMean", ["x"], ["y"], axes=[1], name="rm_c")], {}, 13,
                           "rm_c", "only over H and W"),
    "softmax_axis1_of_map": ([N("Softmax", ["x"], ["y"], axis=1, name="sm_c")], {}, 13,
                             "sm_c", "Softmax over axis 1 of (1, 2, 3, 3)"),
    "pad_before_maxpool": ([N("Pad", ["x", "p"], ["q"], name="pad_mp"),
                            N("MaxPool", ["q"], ["y"], kernel_shape=[2, 2], name="mp")],
                           {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, 13, "mp",
                           "cannot be folded"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_variant_exit_2_one_line(make_model, tmp_path, capsys, case):
    nodes, inits, opset, node, reason = REFUSED[case]
    shape = [1, 2, 1, 1] if case == "gemm_trans_a" else [1, 2, 3, 3]
    path = tmp_path / f"{case}.onnx"
    onnx.save(_build(make_model, Rule(nodes, shape, inits, opset, "")), path)
    code = main(["compile", str(path), "-o", str(tmp_path / "o"), "--strict"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert str(path) in err and f"'{node}'" in err and reason in err, err


def test_verifier_refuses_non_float32_value_in_float_graph():
    """The importer once left Constant(value_floats) as a float64 constant (onnx-graphsurgeon
    folds it so); the verifier's dtype rule now names such a value, e.g. in an edited dump."""
    from tcc_compiler.ir.verify import VerifyError, verify

    text = _HEAD.format(opset=13, layout="NCHW") + """\
  input %x : f32[1,2,3,3]
  const %k : f64[2,1,1] = dense<[2.0, 0.5]>
  %y : f32[1,2,3,3] = mul "mul" (%x, %k) {act=none} src=["mul"]
  output %y
}
"""
    with pytest.raises(VerifyError, match=r"node 'mul' \(mul\): value 'k' dtype float64"):
        verify(parse_graph(text, None))
    verify(parse_graph(text.replace("f64[2,1,1]", "f32[2,1,1]"), None))


def test_softmax_over_channels_compiles_and_runs(make_model, tmp_path, capsys):
    """conv -> relu -> global pool -> Softmax(axis=1) (opset 9, as SqueezeNet ends): the host
    softmax runs over the channels of [1, C, 1, 1] and the run agrees with ONNX Runtime."""
    import json

    r = np.random.default_rng(0)
    m = make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
                    N("GlobalAveragePool", ["r"], ["p"]), N("Softmax", ["p"], ["y"], axis=1)],
                   [1, 3, 8, 8], {"w": r.standard_normal((6, 3, 3, 3)) * 0.3,
                                  "b": r.standard_normal(6) * 0.1}, opset=9)
    path, out = tmp_path / "sm.onnx", tmp_path / "o"
    onnx.save(m, path)
    x = r.standard_normal((1, 3, 8, 8)).astype(F)
    np.save(tmp_path / "x.npy", x)
    assert main(["-q", "compile", str(path), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), str(tmp_path / "x.npy"), "--check", str(path), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["check"]
    assert check["bit_exact"] is True and check["top1_agree"] is True, check
