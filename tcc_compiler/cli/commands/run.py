"""Run a compiled model on the reference executor (optionally checked against the golden
integer model and ONNX Runtime)."""

from __future__ import annotations

import json

import numpy as np

from tcc_compiler.errors import InputError

NAME = "run"
HELP = "run a compiled model on the reference executor"
ORDER = 30


def add_arguments(p) -> None:
    """Arguments of ``tccc run``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("input", help="an image, or a .npy float32 array shaped like the ONNX input")
    p.add_argument("--check", metavar="MODEL.onnx",
                   help="compare with the golden integer model and ONNX Runtime's float output")
    p.add_argument("--topk", type=int, default=1)
    p.add_argument("--logits", action="store_true", help="include the output values (JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load_input(path: str, prog) -> np.ndarray:
    """One float input for ``prog`` from an image (preprocessed as the manifest says) or .npy."""
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    pre = Preprocess.from_dict(prog.manifest["preprocess"])
    arrs = load_inputs([path], pre, prog.input_shape)
    if len(arrs) != 1:
        raise InputError(f"{path}: holds {len(arrs)} inputs; give one image or one array")
    return arrs[0]


def run(args) -> int:
    """tccc run DIR INPUT [--check MODEL] [--json] [--topk K]"""
    from tcc_compiler.runtime import load_program

    prog = load_program(args.dir)
    x = load_input(args.input, prog)
    res = prog.run(x)
    y = prog.final_output(res).reshape(-1)
    k = max(1, min(args.topk, y.size))
    topk = [int(i) for i in np.argsort(-y, kind="stable")[:k]]
    out = {"top1": topk[0], "topk": topk}
    if args.logits:
        out["output"] = [float(v) for v in y]
    if args.check:
        from tcc_compiler.runtime.check import Checker

        out["check"] = Checker(prog, args.check).check(x, res)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"top1: {out['top1']}" + (f"  top{k}: {topk}" if k > 1 else ""))
        if "check" in out:
            c = out["check"]
            print(f"check: bit_exact={str(c['bit_exact']).lower()} sqnr_db={c['sqnr_db']:.2f} "
                  f"top1_agree={str(c['top1_agree']).lower()}")
    if args.check and not out["check"]["bit_exact"]:
        return 1
    return 0
