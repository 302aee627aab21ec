"""List the ONNX ops tccc converts, or place each node of a model on the NPU or the host.

Without MODEL: the op types of the frontend's converter table (the same table the importer and
SUPPORTED_OPS.md use). With MODEL: :func:`tcc_compiler.placement.partition` per node, with the
reason: ``npu`` (in an NPU program), ``host`` (run on the host: Softmax after the NPU
program, or in a host segment that ONNX Runtime runs between NPU segments) or ``unsupported``
(tccc compile refuses the model because of it: neither runs it, or ``--strict``).

Exit codes: 0 when the model would compile (no unsupported node), 2 when tccc compile would
refuse it (the nodes are listed all the same, on stdout; the reason line on stderr). A model
whose input has a channel count images do not load as (not 1 or 3) compiles only from
``--calib`` ``.npy`` arrays (or a ``--calib-table``, or its own QDQ parameters): a warning on
stderr says so, as ``tccc compile`` without them refuses it.
"""

from __future__ import annotations

import logging
import sys

from tcc_compiler.emit.jsonfmt import json_text
from tcc_compiler.options import DEFAULT_TARGET

NAME = "ops"
HELP = ("supported ONNX ops, or the NPU/host placement of each node of a model (exit 2 when "
        "compile would refuse it)")
ORDER = 70

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    """Arguments of ``tccc ops``."""
    p.add_argument("model", nargs="?", help="an .onnx model to partition (optional)")
    p.add_argument("--input", default=None, help="input size W x H x C for MODEL")
    p.add_argument("--strict", action="store_true",
                   help="place as tccc compile --strict does: no host segments, every node "
                        "the NPU cannot run is unsupported")
    p.add_argument("--target", default=None,
                   help=f"target name or .toml file, as for tccc compile (default "
                        f"{DEFAULT_TARGET}): an op its SRAM cuts into too many tiles is "
                        "unsupported, as compile refuses it")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    """tccc ops [MODEL [--input WxHxC] [--target T] [--strict]] [--json]"""
    from tcc_compiler.api.models import partition, supported_ops

    if args.model is None:
        rows = supported_ops()
        if args.json:
            print(json_text(rows))
        else:
            for r in rows:
                print(f"{r['op_type']:<20} {r['notes']}".rstrip())
        return 0
    places = partition(args.model, args.input, strict=args.strict, target=args.target)
    bad = [p for p in places if not p.supported]
    if args.json:
        print(json_text([p.to_dict() for p in places]))
    else:
        width = max([5] + [len(p.device) for p in places])
        for p in places:
            print(f"{p.device:<{width}} {p.op_type:<20} {p.node}: {p.reason}")
        n_npu = sum(p.device == "npu" for p in places)
        n_host = sum(p.device == "host" for p in places)
        n_folded = sum(p.device == "npu" and p.folded for p in places)
        print(f"{n_npu} node(s) on the NPU ({n_folded} of them folded away or views at compile "
              f"time, no NPU op of their own), {n_host} on the host"
              + (f", {len(bad)} unsupported" if bad else ""))
    if not bad:
        _warn_calibration_channels(args.model, args.input)
    if bad:
        print(f"tccc: error: {args.model}: {len(bad)} unsupported node(s) "
              f"({', '.join(p.node for p in bad[:5])}{' ...' if len(bad) > 5 else ''}): "
              "tccc compile would refuse this model", file=sys.stderr)
        return 2
    return 0


def _input_channels(model: str, input_spec: str | None) -> int | None:
    """Channels of the model's image input: ``--input``'s C, else the model's own dim (NCHW
    axis 1, NHWC axis 3); None when unknown. The model has been read by ``partition``."""
    import onnx

    from tcc_compiler.frontend.loader import parse_input_spec
    from tcc_compiler.frontend.onnx_import import is_nhwc_input

    if input_spec is not None:
        return parse_input_spec(input_spec)[2]
    m = onnx.load(model, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    dims = [d.dim_value for d in ins[0].type.tensor_type.shape.dim] if len(ins) == 1 else []
    if len(dims) != 4:
        return None
    return (dims[3] if is_nhwc_input(m, ins[0].name) else dims[1]) or None


def _warn_calibration_channels(model: str, input_spec: str | None) -> None:
    """Warn when compile needs calibration arrays: images and the bundled photos load as 1 or
    3 channels only (tcc_compiler/datasets/calibration.default_calibration refuses others)."""
    from tcc_compiler.datasets.images import IMAGE_CHANNELS

    c = _input_channels(model, input_spec)
    if c is not None and c not in IMAGE_CHANNELS:
        log.warning("%s: the input takes %d channels; images and the bundled calibration "
                    "photos load as 1 or 3, so tccc compile needs --calib .npy arrays (float32, "
                    "shaped as the model input) or --calib-table, unless the model is fully "
                    "quantized (QDQ)", model, c)
