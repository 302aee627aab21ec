"""Run a compiled model on the reference executor (optionally checked against the golden
integer model and ONNX Runtime).

Several inputs stream: each is decoded when its turn comes and its result printed as soon as
it is known, whole (memory stays that of a few inputs, however many). An input that cannot be
read (e.g. a corrupt photo, or a ``.npy`` array holding NaN) stops the run in its turn with
one error line (exit 2): the results of the inputs before it stay printed, complete; nothing
of it or after it is. --json prints its one object at the end: nothing on stdout when the run
stops."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque

import numpy as np

from tcc_compiler.emit.jsonfmt import json_text

log = logging.getLogger(__name__)

NAME = "run"
HELP = "run a compiled model on the reference executor"
ORDER = 30


def add_arguments(p) -> None:
    """Arguments of ``tccc run``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("input", nargs="+",
                   help="images, .npy float32 arrays shaped like the ONNX input, raw uint8 "
                        "files (.bin/.raw/.rgb, with --raw-size), or folders of them (several "
                        "inputs reuse the decoded program)")
    from tcc_compiler.cli.raw_options import add_raw_arguments

    add_raw_arguments(p, "input files", pixels=True)
    from tcc_compiler.cli.main import non_negative_int, positive_int

    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes for several inputs (default 1)")
    p.add_argument("--schedule", default="inorder", choices=("inorder", "random"),
                   help="command order: stream order, or a random legal interleaving of the "
                        "three queues with hazard checks (see --seed)")

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


def _result(prog, x, res, args, checker, label: str, pending=None) -> dict:
    y = prog.final_output(res).reshape(-1)
    k = max(1, min(args.topk, y.size))
    topk = [int(i) for i in np.argsort(-y, kind="stable")[:k]]
    out = {"input": label, "top1": topk[0], "topk": topk}
    if args.logits:
        out["logits"] = [float(v) for v in y]
        out["output"] = out["logits"]  # the key's name before 'logits'; kept for compatibility
    if checker is not None:
        out["check"] = checker.check(x, res, pending)
    return out


def _print_text(out: dict, prefix: str = "") -> None:
    """Print one input's text result (top1/topk, the check's line and per-output lines,
    logits), each line starting with ``prefix``, in one write and flushed: a Ctrl-C between
    results never leaves half of one printed."""
    k = len(out["topk"])
    lines = [f"{prefix}top1: {out['top1']}" + (f"  top{k}: {out['topk']}" if k > 1 else "")]
    if "check" in out:
        c = out["check"]
        lines.append(f"{prefix}check: bit_exact={str(c['bit_exact']).lower()} "
                     f"sqnr_db={c['sqnr_db']:.2f} top1_agree={str(c['top1_agree']).lower()}")
        for name, db in c.get("sqnr_db_outputs", {}).items():
            lines.append(f"{prefix}  output {name}: sqnr_db="
                         + ("n/a" if db is None else f"{db:.2f}"))
    if "logits" in out:
        lines.append(f"{prefix}logits: " + " ".join(f"{v:.6g}" for v in out["logits"]))
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def _runs(prog, inputs, args, checker):
    """(input, outputs, pending check) per input of the lazy sequence ``inputs``
    (:func:`~tcc_compiler.api.folders.input_stream`), each decoded when its turn comes, so a
    run over a thousand photos holds a few (:data:`~tcc_compiler.runtime.batch
    .IN_FLIGHT_PER_WORKER` per worker process ahead, one in this process).

    In this process (one job), each input's golden model and float model start on the
    checker's worker threads before its executor run
    (:meth:`~tcc_compiler.runtime.check.Checker.start`): the three run side by side, the
    executor's tiles on its own thread alone
    (:func:`~tcc_compiler.runtime.check.executor_beside_checks`). With worker processes the
    checks start when each result arrives (no threads running while the workers fork).

    Raises:
        InputError: input ``k`` cannot be read, in its turn (after the results before it).
    """
    from contextlib import nullcontext

    from tcc_compiler.api import folders
    from tcc_compiler.runtime.batch import effective_jobs, run_input
    from tcc_compiler.runtime.check import executor_beside_checks

    jobs = effective_jobs(args.jobs, len(inputs))
    if jobs > 1:
        held: deque = deque()   # the inputs sent to the workers, for their checks

        def feed():
            for x in inputs:
                held.append(x)
                yield x
        for res in folders.run_inputs(prog, _Sized(feed(), len(inputs)), args.schedule,
                                      args.seed, jobs, args.dir):
            yield held.popleft(), res, None
        return
    for x in inputs:
        pending = checker.start(x) if checker is not None else None
        try:
            with (executor_beside_checks((pending.golden, pending.floats)) if pending
                  else nullcontext()):
                res = run_input(prog, x, args.schedule, args.seed)
        except BaseException:
            if pending is not None:
                pending.wait()
            raise
        yield x, res, pending


class _Sized:
    """An iterator with the length :func:`~tcc_compiler.api.folders.run_inputs` asks of its
    inputs (for the jobs cap), read once."""

    def __init__(self, it, n: int) -> None:
        self._it, self._n = it, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return self._it


#: Suffixes of model files: given where an input goes, they are refused (not decoded as images).
MODEL_SUFFIXES = (".onnx", ".tir")


def _refuse_model_inputs(inputs) -> None:
    """Refuse an input path naming a model file (``tccc run OUT model.onnx``: the model where
    an input goes, perhaps meant for ``--check``), which was decoded as an image.

    Raises:
        InputError: naming the file and ``--check``.
    """
    from pathlib import Path

    from tcc_compiler.errors import InputError

    for given in inputs:
        if Path(given).suffix.lower() in MODEL_SUFFIXES:
            raise InputError(f"{given}: a model file, not an input (give images, .npy arrays "
                             f"or raw files); to compare the run with the model: --check {given}")


def run(args) -> int:
    """tccc run DIR INPUT... [--raw-size WxHxC [--raw-layout HWC|CHW]] [--pixels manifest|raw]
    [--check MODEL] [--json] [--topk K] [--jobs N] [--schedule inorder|random --seed N]

    Streams the inputs (module docstring): each text result printed and flushed whole when
    it is known; --json's object at the end."""
    from tcc_compiler.api import folders

    from tcc_compiler.cli.raw_options import raw_options

    raw_size, raw_layout = raw_options(args)
    prog = folders.load_program(args.dir)   # a bad folder is said first
    _refuse_model_inputs(args.input)
    inputs = folders.input_stream(args.input, prog, raw_size=raw_size, raw_layout=raw_layout,
                                  pixels=args.pixels)
    checker = folders.checker(prog, args.check) if args.check else None
    n = len(inputs)
    t0 = time.perf_counter()
    outs, exact = [], True
    for i, (x, res, pending) in enumerate(_runs(prog, inputs, args, checker)):
        label = inputs.label(i)
        t1 = time.perf_counter()
        log.info("run %d/%d %s: %.1f ms (reference executor, host time)", i + 1, n, label,
                 1e3 * (t1 - t0))
        t0 = t1
        out = _result(prog, x, res, args, checker, label, pending)
        if i == 0 and args.topk > len(out["topk"]):
            k = len(out["topk"])
            log.warning("--topk %d: the model outputs %d values; printing all %d", args.topk, k,
                        k)
        exact = exact and (checker is None or out["check"]["bit_exact"])
        if args.json:
            outs.append(out)
        else:
            _print_text(out, "" if n == 1 else f"[{i}] {out['input']}: ")
    if args.json:
        print(json_text(outs[0] if len(outs) == 1 else {"results": outs}))
    return 0 if exact else 1
