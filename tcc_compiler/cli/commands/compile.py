"""Compile an ONNX model into npu_cmd.bin + quantized_network.bin (+ manifest, report, IR)."""

from __future__ import annotations

import sys

from tcc_compiler.emit.jsonfmt import json_text
from tcc_compiler.options import DEFAULT_TARGET, DEFAULTS, CompileOptions

NAME = "compile"
HELP = "compile an ONNX model to NPU binaries"
ORDER = 20


def add_arguments(p) -> None:
    """Arguments of ``tccc compile``."""
    p.add_argument("model", help="the .onnx model")
    p.add_argument("--input", default=None,
                   help="input size W x H x C, e.g. 640x320x3 (width 640, height 320)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--calib", nargs="+", default=None,
                   help="calibration images, folders, .npy arrays or, with --raw-size, raw "
                        "uint8 files (.bin/.raw/.rgb) (default: bundled photos)")
    from tcc_compiler.cli.raw_options import add_raw_arguments

    add_raw_arguments(p, "calibration files")
    p.add_argument("--calib-method", default=DEFAULTS.method, help=_methods_help())
    p.add_argument("--percentile", type=float, default=None,
                   help=f"percentile of --calib-method percentile (default "
                        f"{DEFAULTS.percentile}); an error with any other method")
    p.add_argument("--calib-table", default=None, metavar="FILE",
                   help="reuse the ranges of a calib_table.json (written into every output "
                        "folder; editable) instead of calibrating")
    from tcc_compiler.quant.bias_correction import BIAS_CORRECTION_MODES

    p.add_argument("--bias-correction", nargs="?", const="on", default=DEFAULTS.bias_correction,
                   choices=BIAS_CORRECTION_MODES,
                   help="fold each conv/fc's mean per-channel INT8 error on the calibration "
                        "inputs into its bias: auto (only when corrections from one half of "
                        "the calibration inputs raise the output SQNR on the other half, "
                        "both ways; report.json's bias_correction), on (alone: "
                        "--bias-correction; needs --calib inputs, refused with only a "
                        "--calib-table), off (default %(default)s)")
    from tcc_compiler.quant.weight_rounding import WEIGHT_ROUNDING

    p.add_argument("--weight-rounding", default=DEFAULTS.weight_rounding,
                   choices=WEIGHT_ROUNDING,
                   help="nearest: each int8 weight rounded to nearest; gptq: rounding chosen to "
                        "minimise each layer's output error on the calibration inputs (GPTQ, "
                        "Frantar et al. 2023) on the layers whose cost is bounded (the others "
                        "nearest); gptq-all: on every conv/fc (slow on large 3x3 convs) "
                        f"(default {DEFAULTS.weight_rounding})")
    p.add_argument("--precision", default=DEFAULTS.precision, metavar="int8|auto|budget|FILE",
                   help="int16 activations and weights per layer: int8 (none, default), auto "
                        "(the fewest promotions, the largest isolated-error gain first, whose "
                        "output SQNR on the worst calibration input reaches "
                        "--precision-target, or comes within --precision-goal of all-int16's "
                        "when that is out of reach; then the costliest left out again where "
                        "not needed), budget (the first 10 of "
                        "auto's ranking whose int16 weights add at most 1%% of the weight "
                        "bytes), or a JSON file "
                        "{\"int16\": [layers whose output is int16], \"int16_weights\": "
                        "[conv/fc layers whose weights are int16]} (layer names as tccc "
                        "analyze lists them; either key optional)")
    p.add_argument("--precision-target", type=float, default=None,
                   metavar="DB", help="auto's target: the output SQNR vs float on its worst "
                                      "calibration input that is enough, e.g. 28 (default "
                                      f"{DEFAULTS.precision_target_db:g}: none, as close to "
                                      "all-int16's as --precision-goal allows; a calibration "
                                      "input's SQNR overstates a held-out one's)")
    p.add_argument("--precision-goal", type=float, default=None,
                   metavar="DB", help="auto's goal when --precision-target is out of int16's "
                                      "reach: that SQNR at most DB below all-int16's "
                                      f"(default {DEFAULTS.precision_goal_db:g})")
    _add_preprocess_arguments(p)
    p.add_argument("--no-compress-weights", action="store_true",
                   help="store weights and parameters raw (default: lossless DEFLATE per "
                        "channel block, expanded by the NPU's DMA_LOAD_Z)")
    p.add_argument("--cores", type=int, choices=(1, 2), default=DEFAULTS.cores,
                   help="NPU cores the program uses (default %(default)s; 2 splits each conv "
                        "between the TCC750x's two cores by rows or output channels, as the "
                        "cost model prices lowest; the report gives latency, stream throughput "
                        "and per-core utilisation)")
    p.add_argument("--target", default=None,
                   help=f"target name or .toml file (default {DEFAULT_TARGET})")
    p.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    p.add_argument("--time-passes", action="store_true",
                   help="print each float pass's time to stderr (also in report.json)")
    p.add_argument("--pass-stats", action="store_true",
                   help="print how often each rewrite fired and the fusion summary to stderr "
                        "(also in report.json)")
    p.add_argument("--dump-ir", metavar="DIR", default=None,
                   help="write the IR after every stage to DIR/NN-<stage>.tir (+ .npz); each "
                        "file is a valid MODEL to resume from and holds all the weights "
                        "(ResNet-50: ~1 GB in all; the size is printed)")
    p.add_argument("--print-ir-after", metavar="PASS", action="append", default=None,
                   help="print the IR to stderr after PASS (repeatable; 'all' for every stage)")
    p.add_argument("--print-ir-before", metavar="PASS", action="append", default=None,
                   help="print the IR to stderr before PASS (repeatable; 'all')")
    p.add_argument("--strict", action="store_true",
                   help="refuse a model the NPU cannot run whole (exit 2, every refused node "
                        "named) instead of running those nodes on the host, in ONNX Runtime, "
                        "between NPU segments")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_preprocess_arguments(p) -> None:
    """``--preset --mean --std --scale --channel-order --resize --interpolation``: how images
    become input values (calibration here; recorded in the manifest for run and eval)."""
    from tcc_compiler.datasets.images import RESIZE_MODES
    from tcc_compiler.datasets.presets import PRESETS

    g = p.add_argument_group("preprocessing (value = (pixel * scale - mean) / std; recorded in "
                             "manifest.json, used by run and eval)")
    g.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="torchvision: short side S/0.875 + center crop, ImageNet mean/std; "
                        "tf-efficientnet: short side S+32 bicubic + crop, (pixel-127)/128; raw: "
                        "pixels 0..255; imagenet (default): ImageNet mean/std, squashed")
    g.add_argument("--pixels", default=None, choices=("raw",),
                   help="raw = values 0..255 (scale 1, mean 0, std 1, as tccc eval --pixels "
                        "raw and --preset raw), with --scale/--mean/--std overriding")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                   help="per-channel mean (1 value or one per input channel, units of "
                        "pixel*scale; 3 are averaged for a 1-channel model)")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                   help="per-channel std (1 value or one per input channel, units of "
                        "pixel*scale; 3 are averaged for a 1-channel model)")
    g.add_argument("--scale", type=float, default=None,
                   help="pixel multiplier before mean/std (default 1/255; 1 = pixel units)")
    g.add_argument("--channel-order", default=None, choices=("rgb", "bgr"),
                   help="channel order of the tensor (default rgb)")
    g.add_argument("--resize", default=None, metavar="squash|N",
                   help="squash to the input size, or resize the short side to N pixels and "
                        "center-crop (default: the preset's; squash)")
    g.add_argument("--interpolation", default=None, choices=list(RESIZE_MODES),
                   help="resize filter (default: the preset's; bilinear)")


def preprocess_from_args(args):
    """The :class:`~tcc_compiler.datasets.presets.PreprocessSettings` of the preprocessing
    flags, or None when none is given.

    Raises:
        InputError: ``--resize`` neither ``squash`` nor a positive integer.
    """
    from tcc_compiler.datasets.presets import PreprocessSettings
    from tcc_compiler.errors import InputError

    short = None
    if args.resize is not None:
        if args.resize == "squash":
            short = 0
        else:
            try:
                short = int(args.resize)
            except ValueError:
                short = -1
            if short < 1:
                raise InputError(f"--resize {args.resize}: give 'squash' or a short side in "
                                 "pixels (a positive integer)")
    mean, std, scale = args.mean, args.std, args.scale
    if args.pixels == "raw":   # 0..255 as they are, whatever the preset; explicit flags win
        mean = (0.0,) if mean is None else mean
        std = (1.0,) if std is None else std
        scale = 1.0 if scale is None else scale
    s = PreprocessSettings(preset=args.preset, mean=mean, std=std, scale=scale,
                           channel_order=args.channel_order, resize_short=short,
                           interpolation=args.interpolation)
    return None if s.is_default() else s


#: What each calibration method does, for --help (None: the name says it).
_METHOD_NOTES = {"mse": "range minimising quantization MSE", "minmax": None,
                 "percentile": None, "entropy": "KL divergence, TensorRT style"}


def _methods_help() -> str:
    """``--calib-method``'s help: every method, the default (:class:`CompileOptions`) marked."""
    out = []
    for m, note in _METHOD_NOTES.items():
        mark = "default: " if m == DEFAULTS.method else ""
        out.append(f"{m} ({mark}{note})" if note else f"{m} (default)" if mark else m)
    return " | ".join(out)


def run(args) -> int:
    """tccc compile MODEL --input WxHxC -o DIR [--calib ...] [--calib-method M] [--target T]"""
    from tcc_compiler import api

    if args.percentile is not None and args.calib_method != "percentile":
        from tcc_compiler.errors import InputError

        raise InputError(f"--percentile applies to --calib-method percentile only (method is "
                         f"{args.calib_method}); add --calib-method percentile")
    from tcc_compiler.cli.raw_options import raw_options

    raw_options(args)   # --raw-layout without --raw-size, a bad size: refused before any work
    # (--raw-size without --calib: refused by CompileOptions, for the API too)
    for flag, given in (("--precision-goal", args.precision_goal),
                        ("--precision-target", args.precision_target)):
        if given is not None and args.precision != "auto":
            from tcc_compiler.errors import InputError

            raise InputError(f"{flag} applies to --precision auto only (precision is "
                             f"{args.precision}); add --precision auto")
    from tcc_compiler.fsutil import check_output_folder

    check_output_folder(args.output)  # a bad -o fails now, not after the compile
    _check_dump_ir_outside(args.dump_ir, args.output)
    from tcc_compiler.cli.main import progress
    from tcc_compiler.sigint import InterruptedAfterWrite, deferred_sigint

    shown = str(args.output).rstrip("/") + "/"
    after_write = False
    try:
        m = api.compile(args.model, options=options_from_args(args),
                        progress=progress(args.quiet, "calibration"))
        m.save(args.output)
    except InterruptedAfterWrite:  # Ctrl-C during the swap: the new output is in place
        after_write = True
    except KeyboardInterrupt:
        print(f"tccc: interrupted; {shown} is unchanged (nothing was written)", file=sys.stderr)
        return 130
    with deferred_sigint() as intr:  # the summary says what is on disk: never cut it short
        _print_summary(args, m.report)
    if args.dump_ir:
        _note_dump_size(args.dump_ir)
    if after_write or intr.hit:
        print(f"tccc: interrupt received after {shown} was written; the new output is "
              "complete", file=sys.stderr)
    return 0


def _check_dump_ir_outside(dump_ir, output) -> None:
    """Refuse, before any work, a ``--dump-ir`` folder that is the output folder or inside it:
    the output folder holds only tccc's outputs, so the compile was refused only at the end,
    leaving hundreds of MB of dumps behind.

    Raises:
        InputError: naming both folders.
    """
    from pathlib import Path

    from tcc_compiler.errors import InputError

    if not dump_ir:
        return
    d, o = Path(dump_ir).resolve(), Path(output).resolve()
    if d == o or o in d.parents:
        raise InputError(f"--dump-ir {dump_ir}: is inside the output folder {output} (which "
                         "holds only the compiled files); give a folder outside it")


def _note_dump_size(folder) -> None:
    """Say on stderr how much ``--dump-ir`` wrote: every stage's IR with all its constants
    (about 945 MB for ResNet-50), which used to fill a disk without a word."""
    from pathlib import Path

    files = [p for p in Path(folder).glob("*") if p.is_file() and p.suffix in (".tir", ".npz")]
    size = sum(p.stat().st_size for p in files)
    print(f"tccc: --dump-ir wrote {len(files)} files, {size / 1e6:,.1f} MB, to {folder} (each "
          "stage's IR with all its weights; delete the folder when done)", file=sys.stderr)


def _print_summary(args, r: dict) -> None:
    """The compile summary: pass report on stderr if asked, then the JSON or the one line."""
    from tcc_compiler.emit.report import format_latency

    if args.time_passes or args.pass_stats:
        from tcc_compiler.passes.summary import format_pass_report

        print(format_pass_report(r, times=args.time_passes, stats=args.pass_stats),
              file=sys.stderr)
    if r.get("layout") == "segmented":
        _print_segmented(args, r)
    elif args.json:
        print(json_text({k: r[k] for k in ("command_bytes", "weight_bytes", "macs",
                                            "estimated_cycles", "estimated_latency_ms",
                                            "sram_peak_bytes", "npu_ops", "weight_compression")}))
    else:
        ops = ", ".join(f"{v} {k}" for k, v in sorted(r["npu_ops"].items()))
        wc = r["weight_compression"]
        ratio = f" (weights {wc['ratio']:.3f} of raw)" if wc["compressed_layers"] else ""
        print(f"wrote {str(args.output).rstrip('/')}/: npu_cmd.bin {r['command_bytes']:,} B, "
              f"quantized_network.bin {r['weight_bytes']:,} B{ratio}; NPU ops: {ops}; "
              f"{r['macs'] / 1e9:.2f} GMAC, estimated "
              f"{format_latency(r['estimated_latency_ms'])} on {r['target']}")
        _print_cores(r.get("cores"))
        _print_precision(r.get("precision"))


def _print_cores(c: dict | None, prefix: str = "") -> None:
    """One line on a ``--cores 2`` compile (:func:`tcc_compiler.emit.report.cores_line`)."""
    from tcc_compiler.emit.report import cores_line

    line = cores_line(c, prefix)
    if line:
        print(line)


def _print_precision(p: dict | None) -> None:
    """One line on the int16 layers a --precision choice made, and what they cost (a
    segmented model's: all NPU segments', their auto SQNRs per segment folder)."""
    from tcc_compiler.emit.report import format_latency

    if not p:
        return
    line = (f"precision {p['mode']}: {len(p['int16_layers'])} layer output(s) int16, "
            f"{len(p.get('int16_weight_layers', ()))} layer(s) with int16 weights")
    s = p.get("output_sqnr_db")
    if s and "chosen" in s:
        line += f", output SQNR {_sqnr_text(s, p.get('goal_db'), p.get('target_db'))}"
    elif s:   # segmented: {segment folder: SQNRs}
        line += ", output SQNR " + "; ".join(
            f"{k} {_sqnr_text(v, p.get('goal_db'), p.get('target_db'))}" for k, v in s.items())
    c = p.get("cost")
    if c:
        lat, dram = c["estimated_latency_ms"], c["dram_bytes_per_image"]
        sign = "+" if lat["added"] >= 0 else ""   # a saving prints -0.4 µs, not +-0.4 µs
        line += (f"; cost {sign}{format_latency(lat['added'])} latency, {dram['added']:+,} B "
                 "DRAM traffic per image vs int8")
        if c.get("layer_weight_bytes", {}).get("added"):
            line += f", {c['layer_weight_bytes']['added']:+,} B weights"
    kept = len(p["kept_int8"]) + len(p.get("kept_int8_weights", ()))
    if kept:
        line += f"; {kept} asked for stay int8 (report.json says why)"
    print(line)


def _sqnr_text(s: dict, goal_db, target_db=None) -> str:
    """An auto/budget choice's output SQNRs: "26.3 dB on the calibration inputs (int8 15.7,
    all int16 26.6, goal within 0.5)" (auto: with all int16 and the goal; with a target, on the
    worst calibration input, the target first and all int16 only when it was evaluated)."""
    if target_db is None:
        text = f"{s['chosen']} dB on the calibration inputs (int8 {s['int8']}"
        return text + (f", all int16 {s['all_int16']}, goal within {goal_db})"
                       if "all_int16" in s else ")")
    text = f"{s['chosen']} dB on the worst calibration input (int8 {s['int8']}"
    if s.get("all_int16") is not None:
        text += f", all int16 {s['all_int16']}"
    return text + f", target {target_db}, else within {goal_db} of all int16)"


def _print_segmented(args, r: dict) -> None:
    """The compile summary of a segmented model: segments, NPU/host split, estimates."""
    from tcc_compiler.emit.report import format_latency

    keys = ("command_bytes", "weight_bytes", "macs", "estimated_latency_ms",
            "estimated_host_ms", "estimated_boundary_ms", "estimated_total_ms",
            "boundary_bytes", "sram_peak_bytes", "placement")
    if args.json:
        print(json_text({k: r[k] for k in keys}))
        return
    pl = r["placement"]
    print(f"wrote {str(args.output).rstrip('/')}/: {pl['npu_segments']} NPU segment(s) "
          f"({pl['npu_nodes']} nodes; npu_cmd.bin {r['command_bytes']:,} B, "
          f"quantized_network.bin {r['weight_bytes']:,} B in all) and {pl['host_segments']} "
          f"host segment(s) ({pl['host_nodes']} nodes, ONNX Runtime); {r['macs'] / 1e9:.2f} "
          f"GMAC on the NPU, estimated {format_latency(r['estimated_latency_ms'])} NPU + "
          f"{format_latency(r['estimated_host_ms'] + r['estimated_boundary_ms'])} host "
          f"({r['boundary_bytes']:,} B converted at the boundaries) on {r['target']}")
    for seg in r.get("segments", []):
        if seg["device"] == "npu":
            _print_cores(seg.get("cores"), f"{seg['folder']}: ")
    _print_precision(r.get("precision"))


def options_from_args(args) -> CompileOptions:
    """The :class:`CompileOptions` of ``tccc compile``'s arguments (an option not given keeps
    the record's default)."""
    from tcc_compiler.cli.raw_options import raw_options

    percentile = DEFAULTS.percentile if args.percentile is None else args.percentile
    raw_size, raw_layout = raw_options(args)
    return CompileOptions(
        input_whc=args.input, target=args.target, calibration=args.calib,
        raw_size=raw_size, raw_layout=raw_layout, method=args.calib_method,
        percentile=percentile, calib_table=args.calib_table,
        bias_correction=args.bias_correction, compress_weights=not args.no_compress_weights,
        preprocess=preprocess_from_args(args), weight_rounding=args.weight_rounding,
        verify_ir=args.verify, dump_ir=args.dump_ir, print_ir_before=args.print_ir_before,
        print_ir_after=args.print_ir_after, strict=args.strict, precision=args.precision,
        precision_goal_db=(DEFAULTS.precision_goal_db if args.precision_goal is None
                           else args.precision_goal),
        precision_target_db=(DEFAULTS.precision_target_db if args.precision_target is None
                             else args.precision_target), cores=args.cores)


