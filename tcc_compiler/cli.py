"""``tccc`` command line: a thin layer over :mod:`tcc_compiler.api`.

Results go to stdout, diagnostics to stderr. Exit codes: 0 success, 2 bad input or usage (one
line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from tcc_compiler import __version__
from tcc_compiler.errors import InputError, TccError

log = logging.getLogger("tccc")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"tccc: error: {message} (see 'tccc {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"tccc: error: {message} (see 'tccc --help')\n")


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc="calibrating", unit="img", file=sys.stderr, leave=False)


def cmd_zoo(args) -> int:
    """tccc zoo NAME [--input WxHxC] -o FILE.onnx"""
    from tcc_compiler import zoo
    from tcc_compiler.frontend import parse_input_spec

    w, h, c = parse_input_spec(args.input)
    path = zoo.save(args.name, args.output, width=w, height=h, seed=args.seed, channels=c)
    print(path)
    return 0


def cmd_compile(args) -> int:
    """tccc compile MODEL --input WxHxC -o DIR [--calib ...] [--calib-method M] [--target T]"""
    from tcc_compiler import api

    m = api.compile(args.model, args.input, calibration=args.calib, method=args.calib_method,
                    target=args.target, verify=args.verify)
    m.save(args.output)
    r = m.report
    if args.json:
        print(json.dumps({k: r[k] for k in ("command_bytes", "weight_bytes", "macs",
                                            "estimated_cycles", "estimated_latency_ms",
                                            "sram_bytes", "npu_ops")}))
    else:
        ops = ", ".join(f"{v} {k}" for k, v in sorted(r["npu_ops"].items()))
        print(f"wrote {args.output}/: npu_cmd.bin {r['command_bytes']:,} B, "
              f"quantized_network.bin {r['weight_bytes']:,} B; NPU ops: {ops}; "
              f"{r['macs'] / 1e9:.2f} GMAC, estimated {r['estimated_latency_ms']:.2f} ms "
              f"on {r['target']}")
    return 0


def _load_input(path: str, prog) -> np.ndarray:
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    pre = Preprocess.from_dict(prog.manifest["preprocess"])
    arrs = load_inputs([path], pre, prog.input_shape)
    if len(arrs) != 1:
        raise InputError(f"{path}: holds {len(arrs)} inputs; give one image or one array")
    return arrs[0]


def cmd_run(args) -> int:
    """tccc run DIR INPUT [--check MODEL] [--json] [--topk K]"""
    from tcc_compiler.runtime import load_program

    prog = load_program(args.dir)
    x = _load_input(args.input, prog)
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


def cmd_disasm(args) -> int:
    """tccc disasm DIR: the command stream, one command per line."""
    from tcc_compiler.runtime import load_program

    prog = load_program(args.dir)
    print(prog.cmd.disassemble())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = _Parser(prog="tccc", description="ONNX -> Telechips TCC750x NPU compiler")
    p.add_argument("--version", action="version", version=f"tccc {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v info, -vv debug logging on stderr (and tracebacks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    z = sub.add_parser("zoo", help="build a reference model (ResNet-18/50, 50-bn, 50-v2)")
    z.add_argument("name", help="resnet18 | resnet50 | resnet50-bn | resnet50-v2")
    z.add_argument("--input", default="224x224x3", help="W x H x C (default 224x224x3)")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("-o", "--output", required=True, help="output .onnx file")
    z.set_defaults(func=cmd_zoo)

    c = sub.add_parser("compile", help="compile an ONNX model to NPU binaries")
    c.add_argument("model", help="the .onnx model")
    c.add_argument("--input", default=None,
                   help="input size W x H x C, e.g. 640x320x3 (width 640, height 320)")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--calib", nargs="+", default=None,
                   help="calibration images, folders or .npy arrays (default: bundled photos)")
    c.add_argument("--calib-method", default="mse",
                   help="mse (default: range minimising quantization MSE) | minmax | percentile")
    c.add_argument("--target", default=None, help="target name or .toml file (default tcc750x)")
    c.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", help="run a compiled model on the reference executor")
    r.add_argument("dir", help="compiled output folder")
    r.add_argument("input", help="an image, or a .npy float32 array shaped like the ONNX input")
    r.add_argument("--check", metavar="MODEL.onnx",
                   help="compare with the golden integer model and ONNX Runtime's float output")
    r.add_argument("--topk", type=int, default=1)
    r.add_argument("--logits", action="store_true", help="include the output values (JSON)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("disasm", help="disassemble npu_cmd.bin")
    d.add_argument("dir", help="compiled output folder")
    d.set_defaults(func=cmd_disasm)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, map errors to exit codes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return args.func(args)
    except TccError as exc:
        msg = str(exc).replace("\n", " ")
        print(f"tccc: error: {msg}", file=sys.stderr)
        if args.verbose > 1:
            raise
        return exc.exit_code
    except KeyboardInterrupt:
        print("tccc: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("tccc: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so in one line, traceback only with -vv
        if args.verbose > 1:
            raise
        print(f"tccc: internal error: {type(exc).__name__}: {exc} (run with -vv for the "
              "traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
