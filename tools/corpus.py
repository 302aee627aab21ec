#!/usr/bin/env python3
"""Issue #16's standing guarantee: every ONNX model tccc can reach without a network goes
through ``tccc ops``, ``tccc compile`` and ``tccc run --check`` as child processes with a
per-command time limit, and each either compiles and runs bit-exact or is refused with exit 2
and one line naming the file (and the node and reason, where a node is at fault).

Sources (``--sources``, default all; see ``corpus_models.py``): the onnx wheel's node tests,
its ``pytorch-converted``, ``pytorch-operator``, ``simple`` and ``light`` models, every
``tccc zoo`` model at every seed resolution (224x224x3, 640x320x3, 960x520x3; ``--quick``:
32x32x3, 64x32x3, 96x52x3, 128x64x3) and ``--mutants N`` seeded mutants (``corpus_mutants.py``).

Per model (``corpus_exec.judge`` holds the contract):

1. ``tccc ops MODEL [--input WxHxC] --json``;
2. ``tccc compile MODEL [--input WxHxC] -o DIR [--calib X.npy]``;
3. when it compiled: ``tccc run DIR INPUT.npy --check MODEL --json``.

``--input``: derived from the model's input when it is one rank-4 ``[N, C, H, W]`` tensor with
fixed dims; otherwise none is given and the compiler must refuse the model itself (several
inputs, other ranks, symbolic dims: "not an image model" is an expected exit-2 outcome).
Calibration and the run input are seeded standard-normal ``.npy`` arrays of the model's input
shape (any channel count; fast), except for zoo models, which calibrate on the bundled photos
as a user would.

Outcomes: ``compiled, ran bit-exact``, ``refused (exit 2, one line)``, ``zoo refused the size``
(a zoo model cannot be built at that resolution, e.g. a YOLO at 960x520, whose height is no
multiple of its stride 32: ``tccc zoo`` says so in one line, exit 2), or a violation (exit
1 or another code, timeout, killed by a signal, an exit 2 whose stderr is not one clean error
line naming the file, ops and compile disagreeing, ops's node list contradicting its exit code,
run refusing a compiled model, run not bit-exact). Whether a model compiles is read from the
exit codes (``ops``: 0 = compile would succeed, 2 = it would refuse), never inferred from which
ops tccc supports, so nodes ``ops`` places on the ``host`` (host segments) count as compiled
and are tallied in the summary's ``(host)`` column. The tool prints the corpus size and the
counts per source and outcome, writes every case to ``--json-out``, and exits 1 when any
case violates the contract (2: usage).

Usage::

    PYTHONPATH=$PWD python3 tools/corpus.py [--quick] [--jobs N] [--sources node,zoo,...]
        [--mutants 300] [--seed 0] [--timeout 120] [--zoo-timeout S] [--mem-gb 10]
        [--only REGEX] [--limit N] [--mode fork|exec] [--workdir DIR] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus_exec
from corpus_exec import OK_COMPILED, OK_REFUSED, judge, run_cli
from corpus_models import SOURCES, Case, collect, image_input_whc, run_input

#: Outcome of a zoo case whose size the zoo builder refuses (exit 2, one line naming the
#: model): the model does not exist at that size, so there is nothing to compile.
OK_ZOO_REFUSED = "zoo refused the size (exit 2, one line)"


@dataclass(frozen=True)
class Config:
    """Run settings shared by every case (limits in seconds and bytes)."""

    workdir: str
    timeout_s: float
    zoo_timeout_s: float
    mem_bytes: int
    mode: str
    keep: bool


def _whc(case: Case) -> str | None:
    if case.zoo is not None:
        return case.zoo[1]
    try:
        import onnx

        return image_input_whc(onnx.load(case.path, load_external_data=False))
    except Exception:  # noqa: BLE001 - unreadable: the compiler must say so itself
        return None


def _npy(case: Case, whc: str | None, out: Path, salt: str) -> list[str]:
    if whc is None:
        return []
    w, h, c = (int(v) for v in whc.split("x"))
    return [str(run_input(case.path + salt, out, [1, c, h, w]))]


def process(case: Case, cfg: Config) -> dict:
    """Run one case's three commands and judge them; the JSON-ready record."""
    t0 = time.monotonic()
    # zoo and light models are full-size networks (a 224x224 VGG-19 compiles in minutes)
    limit = cfg.zoo_timeout_s if case.zoo or case.source == "light" else cfg.timeout_s
    out = Path(cfg.workdir) / "out" / case.source / re.sub(r"[^\w.@-]", "_", case.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = {"source": case.source, "name": case.name, "path": case.path,
           "mutations": list(case.mutations)}
    if case.zoo is not None:
        build = run_cli(["-q", "zoo", case.zoo[0], "--input", case.zoo[1], "-o", case.path],
                        limit, cfg.mem_bytes, cfg.mode)
        if build.status != "exit" or build.code != 0:
            # the zoo refusing a size its model cannot take (a YOLO at 960x520: 520 is no
            # multiple of its stride 32) in one clean line is a refusal, not a violation
            clean = build.status == "exit" and build.code == 2 and \
                corpus_exec.error_line_problem(build, "zoo:") is None  # "tccc: error: zoo: ..."
            rec.update(outcome=OK_ZOO_REFUSED if clean else "zoo build failed",
                       violations=[] if clean else ["zoo build failed"],
                       message=build.stderr.strip(), calls=[build.to_dict()],
                       seconds=round(time.monotonic() - t0, 2))
            return rec
    whc = _whc(case)
    inp = ["--input", whc] if whc else []
    calib = [] if case.zoo else _npy(case, whc, out, ":calib")
    ops = run_cli(["-q", "ops", case.path, *inp, "--json"], limit, cfg.mem_bytes, cfg.mode)
    comp = run_cli(["-q", "compile", case.path, *inp, "-o", str(out)]
                   + (["--calib", *calib] if calib else []), limit, cfg.mem_bytes, cfg.mode)
    run = None
    if comp.status == "exit" and comp.code == 0:
        shape = json.loads((out / "manifest.json").read_text())["input"]["shape"]
        x = run_input(case.path + ":run", out, list(shape))
        run = run_cli(["-q", "run", str(out), str(x), "--check", case.path, "--json"], limit,
                      cfg.mem_bytes, cfg.mode)
    v = judge(case.path, ops, comp, run)
    rec.update(input=whc, outcome=v.outcome, violations=v.violations,
               ops_supported=v.ops_supported, placements=v.placements, message=v.message,
               calls=[c.to_dict() for c in (ops, comp, run) if c is not None],
               seconds=round(time.monotonic() - t0, 2))
    if not cfg.keep:
        shutil.rmtree(out, ignore_errors=True)
        for f in out.parent.glob(out.name + "_input.npy"):
            f.unlink()
    return rec


def _work(item) -> dict:
    case, cfg = item
    try:
        return process(case, cfg)
    except Exception as exc:  # noqa: BLE001 - a bug of this tool: recorded, not fatal
        return {"source": case.source, "name": case.name, "path": case.path,
                "outcome": "corpus tool error", "violations": [f"corpus tool error: {exc!r}"],
                "calls": [], "seconds": 0}


def run_corpus(cases: list[Case], cfg: Config, jobs: int, log=sys.stderr) -> list[dict]:
    """Process every case with ``jobs`` worker processes (forked after tccc is imported, so
    each command's fork starts warm); records in corpus order."""
    corpus_exec.preload()
    order = sorted(range(len(cases)), key=lambda i: cases[i].zoo is None)  # slow ones first
    items = [(cases[i], cfg) for i in order]
    recs: list[dict] = []
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        for rec in pool.imap_unordered(_work, items, chunksize=1):
            recs.append(rec)
            if rec["violations"]:
                print(f"VIOLATION {rec['source']}/{rec['name']}: {rec['violations'][0]}",
                      file=log, flush=True)
            if len(recs) % 100 == 0:
                print(f"... {len(recs)}/{len(items)} models, {time.monotonic() - t0:.0f} s",
                      file=log, flush=True)
    key = {(c.source, c.name): i for i, c in enumerate(cases)}
    return sorted(recs, key=lambda r: key[(r["source"], r["name"])])


def summarize(recs: list[dict]) -> dict:
    """Counts per source and outcome, how many compiled models have nodes on the host (ops's
    ``host`` label: Softmax/ArgMax at the end, or host segments), and the violations (one line
    each)."""
    by_source: dict[str, Counter] = {}
    with_host: Counter = Counter()
    for r in recs:
        by_source.setdefault(r["source"], Counter())[r["outcome"]] += 1
        if r["outcome"] == OK_COMPILED and (r.get("placements") or {}).get("host"):
            with_host[r["source"]] += 1
    return {"corpus_size": len(recs),
            "outcomes": dict(Counter(r["outcome"] for r in recs)),
            "by_source": {s: dict(c) for s, c in by_source.items()},
            "compiled_with_host_nodes": dict(with_host),
            "violations": [f"{r['source']}/{r['name']}: " + "; ".join(r["violations"])
                           for r in recs if r["violations"]]}


def print_summary(s: dict, seconds: float, out=None) -> None:
    """The console table (on ``out``, default stdout): corpus size, per-source counts (the
    ``host`` column: compiled models with nodes on the host), violations."""
    out = out or sys.stdout
    print(f"corpus: {s['corpus_size']} models in {seconds:.0f} s", file=out)
    cols = [OK_COMPILED, OK_REFUSED, OK_ZOO_REFUSED]
    host = s.get("compiled_with_host_nodes", {})
    print(f"  {'source':<18} {'models':>6} {'compiled':>9} {'(host)':>7} {'refused':>8} "
          f"{'violations':>10}", file=out)
    for src, c in s["by_source"].items():
        n = sum(c.values())
        bad = n - sum(c.get(k, 0) for k in cols)
        refused = c.get(OK_REFUSED, 0) + c.get(OK_ZOO_REFUSED, 0)
        print(f"  {src:<18} {n:>6} {c.get(OK_COMPILED, 0):>9} {host.get(src, 0):>7} "
              f"{refused:>8} {bad:>10}", file=out)
    for k, n in sorted(s["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:>6}  {k}", file=out)
    print(f"violations: {len(s['violations'])}", file=out)
    for line in s["violations"]:
        print(f"  {line}", file=out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default=",".join(SOURCES),
                   help=f"comma-separated subset of {','.join(SOURCES)}")
    p.add_argument("--quick", action="store_true", help="zoo models at small inputs")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (capped at the cores)")
    p.add_argument("--mutants", type=int, default=300, help="number of mutants")
    p.add_argument("--seed", type=int, default=0, help="seed of the mutant generator")
    p.add_argument("--timeout", type=float, default=120.0, help="per-command limit, s")
    p.add_argument("--zoo-timeout", type=float, default=None,
                   help="per-command limit for zoo and light models, s (default 1200, "
                        "--quick 600)")
    p.add_argument("--mem-gb", type=float, default=10.0,
                   help="address-space limit of each command, GiB")
    p.add_argument("--only", default=None, help="regex: only cases whose source/name matches")
    p.add_argument("--limit", type=int, default=None, help="at most N cases per source")
    p.add_argument("--mode", choices=("fork", "exec"), default="fork",
                   help="fork a warm tccc per command (default) or exec a fresh interpreter")
    p.add_argument("--workdir", default=None, help="where models and outputs go (default tmp)")
    p.add_argument("--keep", action="store_true", help="keep the compiled folders")
    p.add_argument("--json-out", default="corpus.json", help="the JSON report")
    return p


def select(cases: list[Case], only: str | None, limit: int | None) -> list[Case]:
    """Cases matching ``only`` (regex on ``source/name``), at most ``limit`` per source."""
    if only:
        rx = re.compile(only)
        cases = [c for c in cases if rx.search(f"{c.source}/{c.name}")]
    if limit is not None:
        seen: Counter = Counter()
        kept = []
        for c in cases:
            seen[c.source] += 1
            if seen[c.source] <= limit:
                kept.append(c)
        cases = kept
    return cases


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every case keeps the contract, 1 otherwise, 2 on usage errors."""
    args = _parser().parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    bad = [s for s in sources if s not in SOURCES]
    if bad or args.jobs < 1:
        print(f"corpus: error: unknown source(s) {bad} or --jobs < 1", file=sys.stderr)
        return 2
    jobs = min(args.jobs, os.cpu_count() or 1)
    workdir = args.workdir or tempfile.mkdtemp(prefix="tccc-corpus-")
    zoo_t = args.zoo_timeout or (600.0 if args.quick else 1200.0)
    cfg = Config(workdir, args.timeout, zoo_t, int(args.mem_gb * 2**30), args.mode, args.keep)
    t0 = time.monotonic()
    cases = select(collect(sources, Path(workdir) / "models", args.quick, args.mutants,
                           args.seed), args.only, args.limit)
    recs = run_corpus(cases, cfg, min(jobs, max(1, len(cases))))
    seconds = time.monotonic() - t0
    s = summarize(recs)
    print_summary(s, seconds)
    report = {**s, "seconds": round(seconds, 1), "argv": sys.argv[1:] if argv is None else argv,
              "config": asdict(cfg), "jobs": jobs, "cases": recs}
    Path(args.json_out).write_text(json.dumps(report, indent=1, allow_nan=False))
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if s["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
