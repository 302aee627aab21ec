"""Run a compiled model on the reference executor (optionally checked against the golden
integer model and ONNX Runtime)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from tcc_compiler.errors import InputError

log = logging.getLogger(__name__)

NAME = "run"
HELP = "run a compiled model on the reference executor"
ORDER = 30


def add_arguments(p) -> None:
    """Arguments of ``tccc run``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("input", nargs="+",
                   help="images, .npy float32 arrays shaped like the ONNX input, or folders "
                        "of them (several inputs reuse the decoded program)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for several inputs (default 1)")
    p.add_argument("--schedule", default="inorder", choices=("inorder", "random"),
                   help="command order: stream order, or a random legal interleaving of the "
                        "three queues with hazard checks (see --seed)")
    from tcc_compiler.cli.main import non_negative_int, positive_int

    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of --schedule random (an integer >= 0)")
    p.add_argument("--check", metavar="MODEL.onnx",
                   help="compare with the golden integer model and ONNX Runtime's float output")
    p.add_argument("--topk", type=positive_int, default=1,
                   help="print the K best classes (default 1)")
    p.add_argument("--logits", action="store_true",
                   help="also print the output values (dequantized float32): a 'logits:' line, "
                        "or the 'logits' key with --json ('output' is the same list, kept for "
                        "older scripts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load_input(path: str, prog) -> np.ndarray:
    """One float input for ``prog`` from an image (preprocessed as the manifest says) or .npy."""
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    pre = Preprocess.from_dict(prog.manifest["preprocess"])
    arrs = load_inputs([path], pre, prog.input_shape)
    if len(arrs) != 1:
        raise InputError(f"{path}: holds {len(arrs)} inputs; give one image or one array")
    return arrs[0]


def _run_job(prog, item) -> dict:
    """Batch job (module level so worker processes can pickle it): run one float input."""
    from tcc_compiler.runtime.batch import run_input

    x, schedule, seed = item
    return run_input(prog, x, schedule, seed)


def load_labelled(paths: list[str], pre, shape) -> tuple[list[np.ndarray], list[str]]:
    """Inputs as ``load_inputs`` loads them, each with a label naming its file.

    A folder contributes one label per file in it (``folder/name.jpg``); a ``.npy`` file with
    N > 1 arrays contributes ``file.npy[i]``.
    """
    from pathlib import Path

    from tcc_compiler.datasets.images import _folder_entries, load_inputs

    xs, labels = [], []
    for raw in paths:
        files = _folder_entries(Path(raw)) if Path(raw).is_dir() else [Path(raw)]
        for f in files:
            arrs = load_inputs([f], pre, shape)
            xs += arrs
            labels += [str(f)] if len(arrs) == 1 else [f"{f}[{i}]" for i in range(len(arrs))]
    return xs, labels


def _result(prog, x, res, args, checker, label: str) -> dict:
    y = prog.final_output(res).reshape(-1)
    k = max(1, min(args.topk, y.size))
    topk = [int(i) for i in np.argsort(-y, kind="stable")[:k]]
    out = {"input": label, "top1": topk[0], "topk": topk}
    if args.logits:
        out["logits"] = [float(v) for v in y]
        out["output"] = out["logits"]  # the key's name before 'logits'; kept for compatibility
    if checker is not None:
        out["check"] = checker.check(x, res)
    return out


def _print_text(out: dict, prefix: str = "") -> None:
    k = len(out["topk"])
    print(f"{prefix}top1: {out['top1']}" + (f"  top{k}: {out['topk']}" if k > 1 else ""))
    if "check" in out:
        c = out["check"]
        print(f"{prefix}check: bit_exact={str(c['bit_exact']).lower()} "
              f"sqnr_db={c['sqnr_db']:.2f} top1_agree={str(c['top1_agree']).lower()}")
    if "logits" in out:
        print(f"{prefix}logits: " + " ".join(f"{v:.6g}" for v in out["logits"]))


def run(args) -> int:
    """tccc run DIR INPUT... [--check MODEL] [--json] [--topk K] [--jobs N]
    [--schedule inorder|random --seed N]"""
    from tcc_compiler.datasets.images import Preprocess
    from tcc_compiler.runtime import load_program
    from tcc_compiler.runtime.batch import imap

    prog = load_program(args.dir)
    pre = Preprocess.from_dict(prog.manifest["preprocess"])
    xs, labels = load_labelled(args.input, pre, prog.input_shape)
    checker = None
    if args.check:
        from tcc_compiler.runtime.check import Checker

        checker = Checker(prog, args.check)
    items = [(x, args.schedule, args.seed) for x in xs]
    t0 = time.perf_counter()
    outs = []
    for i, (x, label, res) in enumerate(zip(xs, labels, imap(args.dir, items, _run_job,
                                                              args.jobs, prog=prog))):
        t1 = time.perf_counter()
        log.info("run %d/%d %s: %.1f ms (reference executor, host time)", i + 1, len(xs),
                 label, 1e3 * (t1 - t0))
        t0 = t1
        outs.append(_result(prog, x, res, args, checker, label))
    if outs and args.topk > len(outs[0]["topk"]):
        n = len(outs[0]["topk"])
        log.warning("--topk %d: the model outputs %d values; printing all %d", args.topk, n, n)
    if args.json:
        print(json.dumps(outs[0] if len(outs) == 1 else {"results": outs}))
    else:
        for i, out in enumerate(outs):
            _print_text(out, "" if len(outs) == 1 else f"[{i}] {out['input']}: ")
    if checker is not None and not all(o["check"]["bit_exact"] for o in outs):
        return 1
    return 0
