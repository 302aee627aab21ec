#!/usr/bin/env python3
"""Record or check the golden outputs: every ``tccc zoo`` model at every seed resolution.

For each (model, resolution) it compiles with the default options (bundled calibration photos,
``mse``) and keeps the SHA-256 of ``npu_cmd.bin`` and ``quantized_network.bin`` and the
report's estimates (total and per-layer cycles, DRAM bytes, roofline and SRAM-capacity bound).
A refactoring that must not change behaviour is checked with ``--check``; a change that means
to move these numbers re-records them with ``--record`` and says why in its commit.

Usage: python tools/golden.py --record|--check [--file tests/data/golden_outputs.json]
       [--only resnet18:224x224x3 ...]
Exit codes: 0 all equal (or recorded), 1 a difference (listed on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

MODELS = ("resnet18", "resnet50", "resnet50-bn", "resnet50-v2")
#: The seed resolutions (W x H x C): the vendor's published ResNet rows.
RESOLUTIONS = ("224x224x3", "640x320x3", "960x520x3")
DEFAULT_FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden_outputs.json"

_LAYER_KEYS = ("name", "op", "estimated_cycles", "dram_read_bytes", "dram_write_bytes",
               "commands", "tiles", "tiling", "weight_bytes")


def estimates(report: dict) -> dict:
    """The behaviour-defining estimates of a report.json dict (no timings, no field whose
    name is only a label)."""
    return {
        "estimated_cycles": report["estimated_cycles"],
        "dram_read_bytes": report["dram_read_bytes"],
        "dram_write_bytes": report["dram_write_bytes"],
        "roofline_cycles": report["roofline"]["cycles"],
        "capacity_bound_cycles": report["capacity_bound"]["cycles"],
        "layers": [[li.get(k) for k in _LAYER_KEYS] for li in report["layers"]],
    }


def one(name: str, whc: str, workdir: Path) -> dict:
    """Compile one zoo model at one resolution; return its golden record."""
    from tcc_compiler import api, zoo
    from tcc_compiler.frontend import parse_input_spec

    w, h, c = parse_input_spec(whc)
    path = workdir / f"{name}-{whc}.onnx"
    zoo.save(name, path, width=w, height=h, channels=c)
    out = workdir / f"out-{name}-{whc}"
    api.compile(path, whc).save(out)
    report = json.loads((out / "report.json").read_text())
    sha = {f: hashlib.sha256((out / f).read_bytes()).hexdigest()
           for f in ("npu_cmd.bin", "quantized_network.bin")}
    return {"sha256": sha, "estimates": hashlib.sha256(
        json.dumps(estimates(report), sort_keys=True).encode()).hexdigest(),
        "estimated_cycles": report["estimated_cycles"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", action="store_true")
    mode.add_argument("--check", action="store_true")
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--only", nargs="*", help="model:WxHxC cases (default: all)")
    a = ap.parse_args(argv)
    cases = [tuple(s.split(":")) for s in a.only] if a.only else \
        [(m, r) for m in MODELS for r in RESOLUTIONS]
    got = {}
    with tempfile.TemporaryDirectory() as d:
        for name, whc in cases:
            got[f"{name}:{whc}"] = one(name, whc, Path(d))
            print(f"{name}:{whc} {got[f'{name}:{whc}']['estimated_cycles']} cycles", flush=True)
    if a.record:
        old = json.loads(a.file.read_text()) if a.file.exists() and a.only else {}
        old.update(got)
        a.file.parent.mkdir(parents=True, exist_ok=True)
        a.file.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(got)} cases in {a.file}")
        return 0
    want = json.loads(a.file.read_text())
    bad = [k for k in got if want.get(k) != got[k]]
    for k in bad:
        print(f"DIFFERENT {k}: want {want.get(k)} got {got[k]}", file=sys.stderr)
    print(f"{len(got) - len(bad)} of {len(got)} cases equal")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
