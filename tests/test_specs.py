"""Specs and code agree: specs/target.md lists exactly the TOML's keys and values, and the
worked examples of specs/quantization.md and specs/target.md evaluate to their stated results."""

from __future__ import annotations

import ast
import math
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tcc_compiler import numerics as nm
from tcc_compiler.ir.graph import QuantParams, Value
from tcc_compiler.ir.ops import ActKind, Activation
from tcc_compiler.isa import commands as C
from tcc_compiler.quant import params as qp
from tcc_compiler.quant import quantize as qz
from tcc_compiler.schedule.cost import command_cycles
from tcc_compiler.target import load_target

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def _fenced(path: Path, info: str) -> list[str]:
    """Non-comment lines of every ```<info> fenced block of a markdown file."""
    text = path.read_text()
    blocks = re.findall(rf"^```{re.escape(info)}\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks, f"{path.name}: no ```{info} block"
    return [ln.strip() for b in blocks for ln in b.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def _parse_example(line: str) -> tuple[str, list, dict, object]:
    """``f(args) = result`` -> (f, positional literals, keyword literals, result literal)."""
    lhs, rhs = line.rsplit(" = ", 1)
    call = ast.parse(lhs, mode="eval").body
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), line
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return call.func.id, args, kwargs, ast.literal_eval(rhs)


def _same(got, want) -> bool:
    if isinstance(want, (tuple, list)):
        got = list(got)
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, float):   # float32 weights / outputs: 1e-6 relative
        return math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-12)
    return int(got) == want


# ---- target.md <-> tcc750x.toml ------------------------------------------------------------

def _toml_flat() -> dict[str, object]:
    data = tomllib.loads((SPECS / "targets" / "tcc750x.toml").read_text())
    return {f"{sec}.{k}": v for sec, table in data.items() for k, v in table.items()}


def _md_table() -> dict[str, object]:
    rows = {}
    for line in (SPECS / "target.md").read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z_]+\.[a-z0-9_]+)`\s*\|\s*`([^`]*)`\s*\|", line)
        if m:
            key, val = m.groups()
            assert key not in rows, f"target.md lists {key} twice"
            rows[key] = tomllib.loads(f"v = {val}")["v"]
    return rows


def test_target_table_matches_toml():
    md, toml = _md_table(), _toml_flat()
    assert set(md) == set(toml), (sorted(set(md) ^ set(toml)))
    for k, v in toml.items():
        assert md[k] == v and type(md[k]) is type(v), k


def test_packaged_target_is_the_spec_file():
    t = load_target()
    toml = _toml_flat()
    for k, v in toml.items():
        sec, key = k.split(".")
        if sec in ("compute", "memory"):
            assert getattr(t, key) == v, k
    assert t.name == toml["target.name"]
    packaged = Path(t.source).read_text()
    assert packaged == (SPECS / "targets" / "tcc750x.toml").read_text()


# ---- quantization.md worked examples -------------------------------------------------------

def _conv_epilogue(acc, bias, m, s, zp_y, lo, hi, sc, zp_sc, m_sc):
    return nm.conv_epilogue(np.array([acc], np.int32), np.array([bias], np.int32),
                            np.array([m]), np.array([s]), zp_y, lo, hi,
                            None if sc is None else np.array([sc], np.int8), zp_sc,
                            np.array([m_sc]))[0]


def _add_int8(a, zp_a, m_a, b, zp_b, m_b, s, zp_y, lo, hi):
    return nm.add_int8(np.array([a], np.int8), zp_a, m_a, np.array([b], np.int8), zp_b, m_b, s,
                       zp_y, lo, hi)[0]


def _avgpool(window, zp_x, m, s, zp_y):
    x = np.array(window, np.int8)[:, :, None]
    return nm.avgpool_int8(x, zp_x, x.shape[:2], (1, 1), (0, 0, 0, 0), m, s, zp_y)[0, 0, 0]


def _qvalue(scale, zp, shape=(1, 1, 1, 1)):
    return Value("v", shape, "int8", quant=QuantParams(np.float64(scale), np.int64(zp)))


def _quantize_input(x, scale, zp):
    return qp.quantize_input(np.full((1, 1, 1, 1), x, np.float32), _qvalue(scale, zp))[0, 0, 0]


def _activation_params(lo, hi):
    q = qz.activation_params(lo, hi)
    return float(q.scale), int(q.zero_point)


def _bounds(act, scale, zp):
    node = SimpleNamespace(attrs=SimpleNamespace(act=act))
    return qp.act_bounds(node, _qvalue(scale, zp))


def _quantize_weights(values):
    q, s = qz.quantize_weights(np.array([values], np.float32).reshape(1, -1, 1, 1))
    return q.reshape(-1).tolist(), float(s[0])


def _dequantize(q, scale, zp):
    return float(qp.dequantize_output(np.array([[[q]]], np.int8 if abs(q) < 128 else np.int32),
                                      _qvalue(scale, zp)).reshape(-1)[0])


QUANT_FUNCS = {
    "requantize": nm.requantize,
    "quantize_multiplier": nm.quantize_multiplier,
    "quantize_multipliers_shared": nm.quantize_multipliers_shared,
    "conv_epilogue": _conv_epilogue,
    "add_int8": _add_int8,
    "avgpool": _avgpool,
    "quantize_input": _quantize_input,
    "activation_params": _activation_params,
    "relu_bounds": lambda zp: _bounds(Activation(ActKind.RELU), 1.0, zp),
    "clip_bounds": lambda lo, hi, s, zp: _bounds(Activation(ActKind.CLIP, lo, hi), s, zp),
    "quantize_weights": _quantize_weights,
    "bias_int32": lambda b, s: qz._bias_int32(np.array([b]), np.array([s]))[0],
    "dequantize": _dequantize,
}

QUANT_EXAMPLES = _fenced(SPECS / "quantization.md", "tccc-examples")


def test_quantization_examples_cover_every_topic():
    used = {_parse_example(ln)[0] for ln in QUANT_EXAMPLES}
    assert used == set(QUANT_FUNCS)
    assert len(QUANT_EXAMPLES) >= 30


@pytest.mark.parametrize("line", QUANT_EXAMPLES)
def test_quantization_example(line):
    name, args, kwargs, want = _parse_example(line)
    got = QUANT_FUNCS[name](*args, **kwargs)
    assert _same(got, want), f"{line}: got {got!r}"


# ---- target.md cycle examples --------------------------------------------------------------

def _cycles(kind: str, **f) -> int:
    t = load_target()
    regs = C.Registers()
    if kind == "dma":
        cmd = C.DmaLoad(dram=0, sram=0, run_bytes=f["run_bytes"], n1=f["n1"], n2=f["n2"],
                        dram_stride1=f["run_bytes"], dram_stride2=f["run_bytes"] * f["n1"],
                        sram_stride1=f["run_bytes"], sram_stride2=f["run_bytes"] * f["n1"])
    elif kind == "conv":
        groups = f["in_c"] // f["cin_g"]
        regs.update(C.ConvCfg(kh=f["kh"], kw=f["kw"], sh=1, sw=1, dh=1, dw=1,
                              out_mode=f.get("out_mode", 0), flags=f.get("flags", 0),
                              group=groups, cin_g=f["cin_g"], zp_in=0, zp_out=0,
                              zp_sc=0, act_lo=-128, act_hi=127))
        cmd = C.ConvTile(in_sram=0, w_sram=0, p_sram=0, out_sram=0, sc_sram=0,
                         in_h=f["out_h"] + f["kh"] - 1, in_w=f["out_w"] + f["kw"] - 1,
                         in_c=f["in_c"], oc=f["oc"], out_h=f["out_h"], out_w=f["out_w"],
                         pad_t=0, pad_l=0, pad_b=0, pad_r=0)
    elif kind == "pool":
        regs.update(C.PoolCfg(kind=0, kh=f["kh"], kw=f["kw"], sh=1, sw=1, zp_in=0, zp_out=0,
                              shift=1, mult=0))
        cmd = C.PoolTile(in_sram=0, out_sram=0, in_h=f["out_h"] + f["kh"] - 1,
                         in_w=f["out_w"] + f["kw"] - 1, c=f["c"], out_h=f["out_h"],
                         out_w=f["out_w"], pad_t=0, pad_l=0, pad_b=0, pad_r=0)
    elif kind == "resize":
        cmd = C.ResizeTile(in_sram=0, out_sram=0, in_h=f["in_h"], in_w=f["in_w"], c=f["c"],
                           out_h=f["out_h"], full_h=f["in_h"], in_y0=0, out_y0=0, fh=2,
                           fw=f["fw"], mode=0)
    else:
        cmd = C.AddTile(a_sram=0, b_sram=0, out_sram=0, n=f["n"])
    return command_cycles(cmd, regs, t)


@pytest.mark.parametrize("line", _fenced(SPECS / "target.md", "tccc-cycles"))
def test_cycle_example(line):
    name, args, kwargs, want = _parse_example(line)
    assert not args
    assert _cycles(name, **kwargs) == want, line
