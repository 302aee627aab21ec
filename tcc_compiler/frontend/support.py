"""What the frontend accepts, per ONNX op: the source of ``SUPPORTED_OPS.md``.

Each converter in :data:`tcc_compiler.frontend.converters.CONVERTERS` has one
:class:`OpSupport` entry here (a test fails when one is missing or stale), and every op type
refused by name has its reason in :data:`~tcc_compiler.frontend.converters.REFUSED_OPS`. The
opset versions are read from the installed ``onnx.defs`` schemas, so the table shows each
schema revision the converter handles. ``tools/gen_supported_ops.py`` renders the document;
a test regenerates it and compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from tcc_compiler.frontend.converters import CONVERTERS, REFUSED_OPS

#: Oldest and newest default-domain opsets the importer accepts (see onnx_import).
MIN_OPSET = 6
MAX_OPSET_TESTED = 21


@dataclass(frozen=True)
class OpSupport:
    """One ONNX op type as the frontend handles it.

    Attributes:
        accepts: the accepted attribute values / input forms (what the converter checks).
        runs: where it executes: "NPU (<ir op>)", "host", "folded" (absorbed into another
            op or into constants at compile time) or "view" (no data movement).
        refuses: the forms the converter refuses (its ``Unsupported`` reasons), or "".
    """

    accepts: str
    runs: str
    refuses: str = ""


SUPPORT: dict[str, OpSupport] = {
    "Conv": OpSupport("2-D; constant weight and bias (bias optional); strides, dilations, "
                      "group (incl. depthwise), explicit or asymmetric pads, auto_pad "
                      "NOTSET/SAME_UPPER/SAME_LOWER/VALID", "NPU (conv)",
                      "non-constant weights; 1-D/3-D convolution"),
    "BatchNormalization": OpSupport("inference form: is_test=1 (opset 6), spatial=1, "
                                    "training_mode=0; constant scale/B/mean/var",
                                    "folded (into the producing conv, an unpadded consumer, or "
                                    "a per-channel affine conv)",
                                    "training_mode=1, is_test=0, spatial=0"),
    "Relu": OpSupport("any", "folded (epilogue of the producing NPU op)"),
    "Clip": OpSupport("min/max attributes (< 11) or constant inputs (>= 11); [0, inf) -> relu, "
                      "finite [lo, hi] around 0 (e.g. Relu6) -> clip epilogue; other bounds "
                      "(one-sided, excluding 0) -> lookup table; no bounds -> identity",
                      "folded (epilogue of the producing NPU op) / NPU (lut)",
                      "non-constant bounds"),
    "Add": OpSupport("two activations of the same shape or an [N,C,1,1] activation broadcast "
                     "over [N,C,H,W], or an activation and a per-channel (or scalar) constant",
                     "NPU (add) / folded (residual add into conv; constant into bias)",
                     "other broadcasts"),
    "Sum": OpSupport("n-ary, same-shaped inputs (chained adds)", "NPU (add)",
                     "broadcasting inputs"),
    "Mul": OpSupport("activation times a per-channel (or scalar) constant; two activations of "
                     "one shape or an [N,C,1,1] activation broadcast over [N,C,H,W] "
                     "(squeeze-excitation); x * Sigmoid(x) becomes one SiLU table",
                     "folded (into the neighbouring conv as an affine) / NPU (mul, lut)",
                     "other broadcasts"),
    "Sub": OpSupport("activation minus a per-channel (or scalar) constant, constant minus "
                     "activation; two activations of one shape or minus an [N,C,1,1] "
                     "activation broadcast over [N,C,H,W]",
                     "folded (into the neighbouring conv as an affine) / NPU (sub)",
                     "other broadcasts; an [N,C,1,1] activation minus a full map"),
    "Div": OpSupport("activation divided by a per-channel (or scalar) non-zero constant",
                     "folded (multiplication by the reciprocal, an affine)",
                     "division by an activation; constants holding 0"),
    "Sigmoid": OpSupport("any", "NPU (lut)"),
    "Tanh": OpSupport("any (GELU's tanh form, x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) * 0.5 "
                      "as torch.onnx writes it before opset 20, is fused into one gelu_tanh "
                      "table)", "NPU (lut)"),
    "HardSigmoid": OpSupport("alpha, beta", "NPU (lut)"),
    "HardSwish": OpSupport("any", "NPU (lut)"),
    "LeakyRelu": OpSupport("alpha", "NPU (lut)"),
    "PRelu": OpSupport("constant slope, scalar or per channel ([C], [C,1,1]): one table per "
                       "channel", "NPU (lut)", "non-constant slope; other broadcasts"),
    "Elu": OpSupport("alpha", "NPU (lut)"),
    "Softplus": OpSupport("any", "NPU (lut)"),
    "Mish": OpSupport("any", "NPU (lut)"),
    "Erf": OpSupport("any (GELU's erf form is fused into one gelu table)", "NPU (lut)"),
    "Gelu": OpSupport("approximate none (erf) or tanh", "NPU (lut)"),
    "MaxPool": OpSupport("2-D; kernel, strides, pads, auto_pad, ceil_mode", "NPU (maxpool)",
                         "dilations; the Indices output; a Pad before it"),
    "AveragePool": OpSupport("2-D; pads, ceil_mode; count_include_pad=0 divides each pixel "
                             "by its own count of input pixels (one POOL_CFG per border region "
                             "of constant divisor), 1 by the kernel area; a window equal to the "
                             "whole map becomes a global pool", "NPU (avgpool / gap)",
                             "ceil_mode windows overhanging the pads with count_include_pad=1"),
    "GlobalAveragePool": OpSupport("NCHW", "NPU (gap)"),
    "ReduceMean": OpSupport("axes = H and W (attribute < 18, constant input >= 18), keepdims "
                            "0 or 1", "NPU (gap)", "any other axes"),
    "ReduceSum": OpSupport("axes = H and W (attribute < 13, constant input >= 13), keepdims "
                           "0 or 1", "NPU (gap, times H*W folded as an affine)",
                           "any other axes; no axes"),
    "ReduceMax": OpSupport("axes = H and W (attribute < 18, constant input >= 18), keepdims "
                           "0 or 1", "NPU (maxpool over the whole map)",
                           "any other axes; no axes"),
    "Flatten": OpSupport("any axis (negative from 11)", "view", ""),
    "Reshape": OpSupport("constant target shape with 0 (copy) and one -1 (infer); allowzero=0",
                         "view", "shapes computed at run time"),
    "Squeeze": OpSupport("shape known after shape inference", "view"),
    "Unsqueeze": OpSupport("shape known after shape inference", "view"),
    "Transpose": OpSupport("perm=[0,3,1,2] on the graph input (an NHWC model input), a "
                           "permutation moving only size-1 axes, or a channel shuffle "
                           "(Reshape [1, g, C/g, H, W], perm=[0,2,1,3,4], Reshape back)",
                           "NPU input layout / view / NPU (shuffle: DMA only, one strided "
                           "store per group)", "other permutations that move data"),
    "Gemm": OpSupport("transA=0, transB 0/1, alpha, beta; constant B and C (per output or "
                      "scalar)", "NPU (fc)", "transA=1; non-constant B"),
    "MatMul": OpSupport("[N,K] x constant [K,M] (a following Add folds into the bias)",
                        "NPU (fc)", "batched or activation x activation"),
    "Pad": OpSupport("mode=constant, value 0, spatial axes only (attribute < 11, constant "
                     "input >= 11)", "folded (into the next Conv's padding)",
                     "reflect/edge modes; non-zero value; N/C padding; a Pad not followed by "
                     "Conv"),
    "Concat": OpSupport("activations along the channel axis (axis 1 / -3 of NCHW rank 4); "
                        "inputs share the output's quantization", "view / NPU (concat: a DMA "
                        "copy of the inputs that cannot be written in place)",
                        "other axes; constant inputs"),
    "Split": OpSupport("channel axis (axis 1 / -3 of NCHW rank 4); split attribute (< 13), "
                       "input (>= 13) or equal parts / num_outputs (18)", "view / NPU (slice "
                       "copy where a view is impossible)", "other axes"),
    "Slice": OpSupport("constant starts/ends/axes/steps; step 1 on the channel axis (ranges "
                       "covering a whole axis are no-ops)", "view / NPU (slice copy where a "
                       "view is impossible)", "other axes; steps other than 1; computed bounds"),
    "Resize": OpSupport("NCHW, upsampling of H and W by integer factors (scales or sizes): "
                        "mode nearest whose coordinate_transformation_mode / nearest_mode map "
                        "repeats pixels (asymmetric+floor, half_pixel, ...); mode linear "
                        "(bilinear, factors <= 255, output sides <= 65535) with half_pixel, "
                        "pytorch_half_pixel, align_corners or asymmetric",
                        "NPU (resize: nearest DMA only, each "
                        "input row stored factor_h x factor_w times; bilinear RESIZE_TILE on "
                        "the vector unit, 11-bit weights; rows too wide for the SRAM in "
                        "channel groups)",
                        "cubic mode; downsampling; non-integer factors; axes; "
                        "tf_crop_and_resize, tf_half_pixel_for_nn with linear"),
    "Upsample": OpSupport("mode nearest or linear (asymmetric coordinates), integer scales on "
                          "H and W", "NPU (resize)", "non-integer scales"),
    "ConvTranspose": OpSupport("2-D, group 1, dilation 1, constant weight and bias; explicit "
                               "pads, output_padding or a matching output_shape; output a "
                               "multiple of the strides", "NPU (one conv per output phase, "
                               "written interleaved into the output: no zero-stuffing)",
                               "groups; dilations; auto_pad; phases needing a crop"),
    "Softmax": OpSupport("at the graph's end, over the last axis or an axis followed only "
                         "by size-1 dims (e.g. axis 1 of [1, C, 1, 1]); anywhere over channel "
                         "groups, axis 2 of a Reshape of [N, C, H, W] to [N, C/g, g, H*W], "
                         "opset >= 13 (YOLOv8's DFL), which runs on the NPU (group_softmax)",
                         "host", "other axes"),
    "ArgMax": OpSupport("at the graph's end; select_last_index=0", "host",
                        "select_last_index=1"),
    "Identity": OpSupport("any", "view"),
    "Dropout": OpSupport("inference (ratio attribute < 12 or input >= 12, constant "
                         "training_mode=false); mask output ignored", "view",
                         "is_test=0 (opset 6); training_mode=true with a non-zero ratio"),
    "Cast": OpSupport("to FLOAT of a float32 tensor (torch.onnx's `x.float()`): a no-op",
                      "view", "any other target type (Casts of constants are folded)"),
    "Constant": OpSupport("tensor value (other value_* forms are folded before import)",
                          "folded"),
}

#: Ops removed before conversion by constant folding (onnx-graphsurgeon) once shapes are
#: fixed: the Shape->Gather->Unsqueeze->Concat chains exporters write for a dynamic batch, and
#: the Shape->Div->Ceil->...->Pad arithmetic of timm's "SAME" padding (folded round by round:
#: each padded map's shape is known once its pads are).
FOLDED_BEFORE_IMPORT = ("ConstantOfShape", "Shape", "Gather", "Concat (of constants)", "Cast",
                        "Range", "Slice (of constants)", "Ceil/Floor/Max/Min (of constants)",
                        "arithmetic of constants")


def schema_versions(op_type: str, lo: int = MIN_OPSET, hi: int = MAX_OPSET_TESTED) -> list[int]:
    """The opsets in [lo, hi] in which ``op_type``'s schema changed (its revisions), from the
    installed onnx; the earliest entry is the revision in force at ``lo``."""
    out: list[int] = []
    for v in range(lo, hi + 1):
        try:
            since = onnx.defs.get_schema(op_type, max_inclusive_version=v, domain="").since_version
        except onnx.defs.SchemaError:
            continue
        if not out or since != out[-1]:
            out.append(since)
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The full text of ``SUPPORTED_OPS.md``.

    Raises:
        KeyError: a converter without a :data:`SUPPORT` entry (the generator test names it).
    """
    lines = [
        "# Supported ONNX operators",
        "",
        "Generated by `python3 tools/gen_supported_ops.py` from the frontend's converter table",
        "(`tcc_compiler/frontend/converters.py`) and its support records",
        "(`tcc_compiler/frontend/support.py`); `tests/frontend/test_opsets.py` checks each op",
        "against ONNX Runtime at every opset from 7 to 21. Do not edit by hand.",
        "",
        f"Default-domain opsets {MIN_OPSET} to {onnx.defs.onnx_opset_version()} are read; "
        f"{7}-{MAX_OPSET_TESTED} are tested.",
        "*Schema revisions* lists the opsets (from the installed onnx) in which the op's",
        "definition changed; the converter handles each of them.",
        "*Runs on*: `NPU (op)` is an NPU command group, `folded` disappears into another op or",
        "into constants at compile time, `view` moves no data, `host` runs in the host runtime",
        "on the dequantized NPU output (`tccc run` prints the top-1 index either way).",
        "*Refused* means refused by the NPU: by default such a node, and any op missing from this",
        "table that ONNX Runtime runs, goes to a host segment (ONNX Runtime, float32) between NPU",
        "segments; `--strict` refuses the model instead (README, \"Host segments\"; `tccc ops`",
        "shows each node's placement).",
        "",
        "| ONNX op | Schema revisions | Accepted | Runs on | Refused |",
        "|---|---|---|---|---|",
    ]
    for op in sorted(CONVERTERS):
        s = SUPPORT[op]
        revs = ", ".join(str(v) for v in schema_versions(op))
        lines.append(f"| {op} | {revs} | {_md_escape(s.accepts)} | {_md_escape(s.runs)} | "
                     f"{_md_escape(s.refuses) or '-'} |")
    lines += ["", "## Folded away before conversion", "",
              "Constant subgraphs are evaluated at compile time once `--input` fixes the shapes: "
              + ", ".join(f"`{o}`" for o in FOLDED_BEFORE_IMPORT) + ".", "",
              "## Refused by name", "",
              "Any other op type is refused. All unsupported nodes of a model are listed in one",
              "message (exit code 2). Reasons given for common ones:", "",
              "| ONNX op | Why |", "|---|---|"]
    for op in sorted(REFUSED_OPS):
        lines.append(f"| {op} | {_md_escape(REFUSED_OPS[op])} |")
    return "\n".join(lines) + "\n"
