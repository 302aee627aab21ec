"""IR dump instruments, resuming from a dump, and the ``tccc ir`` command.

Checks: ``--dump-ir`` writes one numbered, verifiable file per stage; compiling any dump (or the
output folder's ``quantized.tir``) gives byte-identical binaries to compiling the ONNX model;
``--print-ir-after/before`` print exactly the dumped text; refused inputs exit 2 with one line.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from helpers.cli import run_cli

from tcc_compiler.driver import compile_model
from tcc_compiler.ir.parser import parse_graph
from tcc_compiler.ir.text import graphs_equal, load_ir
from tcc_compiler.ir.verify import verify
from tcc_compiler.passes import PASS_NAMES
from tcc_compiler.passes.instruments import AFTER_PASS_META, DumpIR, PrintIR, stage_names

STAGES = ["import"] + PASS_NAMES + ["quantize"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, residual_net):
    """A tiny residual net on disk, calibration arrays, its dumps and its direct compile."""
    d = tmp_path_factory.mktemp("dumps")
    path = d / "tiny.onnx"
    onnx.save(residual_net(seed=3, hw=16, c=8), path)
    calib = [np.random.default_rng(k).standard_normal((1, 3, 16, 16)).astype(np.float32)
             for k in range(3)]
    dump = DumpIR(d / "ir")
    art = compile_model(str(path), calibration=calib, instruments=[dump])
    return {"dir": d, "path": path, "calib": calib, "dump": dump, "art": art}


def test_dump_files_numbered_and_valid(tiny):
    names = [p.name for p in tiny["dump"].written]
    assert names == [f"{i:02d}-{s}.tir" for i, s in enumerate(STAGES)]
    assert stage_names() == STAGES
    for p, stage in zip(tiny["dump"].written, STAGES):
        text = p.read_text()
        assert text.startswith(f"# after pass {stage}\n")
        g = load_ir(p)
        assert g.meta[AFTER_PASS_META] == stage
        verify(g, quantized=stage == "quantize")
    # the dump instrument must not leak its meta into the graph that flows on
    assert AFTER_PASS_META not in tiny["art"].graph.meta


def test_last_dumps_equal_compiler_graphs(tiny):
    floatg = load_ir(tiny["dump"].written[-2])
    floatg.meta.pop(AFTER_PASS_META)
    assert graphs_equal(floatg, tiny["art"].float_graph) is None
    qg = load_ir(tiny["dump"].written[-1])
    qg.meta.pop(AFTER_PASS_META)
    assert graphs_equal(qg, tiny["art"].graph) is None


@pytest.mark.parametrize("index", [0, 3, 7, 8])
def test_resume_from_dump_is_byte_identical(tiny, index):
    src = tiny["dump"].written[index]
    art = compile_model(str(src), calibration=tiny["calib"])
    assert art.cmd_bin == tiny["art"].cmd_bin
    assert art.weight_bin == tiny["art"].weight_bin
    assert AFTER_PASS_META not in art.graph.meta


def test_resume_runs_only_later_passes(tiny):
    src = tiny["dump"].written[6]  # after fuse-residual-add
    art = compile_model(str(src), calibration=tiny["calib"])
    assert list(art.report["passes"]["fired"]) == PASS_NAMES[6:]


def test_resume_quantized_output_folder(tiny, tmp_path, capsys):
    out = tmp_path / "o1"
    calib = tmp_path / "c.npy"
    np.save(calib, tiny["calib"][0])
    code, _, err = run_cli(["compile", tiny["path"], "-o", out, "--calib", calib], capsys)
    assert code == 0, err
    code, _, err = run_cli(["compile", out / "quantized.tir", "-o", tmp_path / "o2"], capsys)
    assert code == 0, err
    for f in ("npu_cmd.bin", "quantized_network.bin"):
        assert (out / f).read_bytes() == (tmp_path / "o2" / f).read_bytes()


def test_print_ir_after_all_and_before(tiny, tmp_path, capsys):
    calib = tmp_path / "c.npy"
    np.save(calib, tiny["calib"][0])
    code, _, err = run_cli(["compile", tiny["path"], "-o", tmp_path / "o", "--calib", calib,
                         "--print-ir-after", "all", "--print-ir-before", "legalize"], capsys)
    assert code == 0
    headers = [ln for ln in err.splitlines() if ln.startswith("# ")]
    expect = [f"# after pass {s}" for s in STAGES]
    expect.insert(expect.index("# after pass legalize"), "# before pass legalize")
    assert headers == expect
    # the text printed after each stage parses to the dumped graph
    chunks = err.split("# after pass ")[1:]
    for chunk, path in zip(chunks, tiny["dump"].written):
        text = chunk.split("\n", 1)[1].split("# before pass")[0]
        dumped = load_ir(path)
        dumped.meta.pop(AFTER_PASS_META)
        if "@" not in text:
            assert graphs_equal(parse_graph(text, None), dumped) is None
        else:  # large constants print as references only: compare the text's first line
            assert text.splitlines()[0] == path.read_text().splitlines()[1]


def test_print_instrument_selects_passes():
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline

    from conftest import residual_net_impl

    buf = io.StringIO()
    g = import_onnx(residual_net_impl(hw=8, c=4))
    PassManager(default_pipeline(), instruments=[
        PrintIR(before=["canonicalize"], after="legalize", stream=buf)]).run(g)
    heads = [ln for ln in buf.getvalue().splitlines() if ln.startswith("# ")]
    assert heads == ["# before pass canonicalize", "# after pass legalize"]


@pytest.mark.parametrize("opt", ["--print-ir-after", "--print-ir-before"])
def test_unknown_pass_name_refused(tiny, tmp_path, capsys, opt):
    code, _, err = run_cli(["compile", tiny["path"], "-o", tmp_path / "o", opt, "fuse"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "fuse: no such pass" in err and "legalize" in err


def test_resume_with_other_input_size_refused(tiny, tmp_path, capsys):
    code, _, err = run_cli(["compile", tiny["dump"].written[3], "--input", "32x32x3",
                         "-o", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1 and "03-fold-affine" in err and "16x16x3" in err


def test_resume_unknown_stage_refused(tiny, tmp_path, capsys):
    src = tiny["dump"].written[2]
    bad = tmp_path / "x.tir"
    bad.write_text(src.read_text().replace('"canonicalize"', '"canonicalise"'))
    (tmp_path / "x.npz").write_bytes(src.with_suffix(".npz").read_bytes())
    code, _, err = run_cli(["compile", bad, "-o", tmp_path / "o"], capsys)
    assert code == 2 and "canonicalise" in err and "is not a stage" in err


def test_ir_verify_ok_and_broken(tiny, tmp_path, capsys):
    code, out, _ = run_cli(["ir", "verify"] + tiny["dump"].written, capsys)
    assert code == 0 and out.count(": ok (") == len(STAGES)
    # Swap two node lines: a use before its definition breaks topological order.
    src = tiny["dump"].written[7]
    lines = src.read_text().splitlines(keepends=True)
    idx = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("%") and " = " in ln
           and "conv" in ln]
    i, j = idx[0], idx[1]
    lines[i], lines[j] = lines[j], lines[i]
    bad = tmp_path / "bad.tir"
    bad.write_text("".join(lines))
    (tmp_path / "bad.npz").write_bytes(src.with_suffix(".npz").read_bytes())
    code, _, err = run_cli(["ir", "verify", bad], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "bad.tir" in err and "node '" in err and "rule:" in err


def test_ir_print_after_pass_matches_dump(tiny, capsys):
    code, out, _ = run_cli(["ir", "print", tiny["path"], "--after", "fuse-activation",
                         "--inline-limit", "100000"], capsys)
    assert code == 0 and out.startswith("# after pass fuse-activation\n")
    got = parse_graph(out, None)
    dumped = load_ir(tiny["dump"].written[STAGES.index("fuse-activation")])
    dumped.meta.pop(AFTER_PASS_META)
    assert graphs_equal(got, dumped) is None


def test_ir_print_tir_and_errors(tiny, capsys):
    code, out, _ = run_cli(["ir", "print", tiny["dump"].written[3], "--inline-limit", "100000"],
                        capsys)
    assert code == 0
    assert graphs_equal(parse_graph(out, None), load_ir(tiny["dump"].written[3])) is None
    code, _, err = run_cli(["ir", "print", tiny["dump"].written[3], "--after", "canonicalize"],
                        capsys)
    assert code == 2 and "not ahead of this IR" in err


# ---- every zoo model, after every stage: print -> parse -> print, structural equality, verify --

def _roundtrip_instrument(seen: list):
    from tcc_compiler.ir.printer import ConstTable, print_graph

    def check(name, when, index, graph):
        if when != "after":
            return
        table = ConstTable()
        text = print_graph(graph, table)
        back = parse_graph(text, table.arrays)
        assert print_graph(back, ConstTable()) == text, f"{name}: print(parse(print)) differs"
        assert graphs_equal(back, graph) is None, f"{name}: {graphs_equal(back, graph)}"
        verify(back, quantized=name == "quantize")
        seen.append(name)
    return check


@pytest.mark.parametrize("name,quantize", [("resnet18", False)] + [
    pytest.param(n, True, marks=pytest.mark.slow)
    for n in ("resnet18", "resnet50", "resnet50-bn", "resnet50-v2")])
def test_zoo_roundtrip_after_every_stage(name, quantize):
    """Default run: resnet18's float stages (~10 s); slow: every zoo model, every stage."""
    from tcc_compiler import zoo

    model = zoo.build(name)
    seen: list = []
    inst = _roundtrip_instrument(seen)
    calib = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    if quantize:
        compile_model(model, input_whc="32x32x3", calibration=calib, instruments=[inst],
                      verify_ir=True)
        assert seen == STAGES
    else:
        from tcc_compiler.frontend import import_onnx
        from tcc_compiler.passes import PassManager, default_pipeline

        g = import_onnx(model, "32x32x3")
        inst("import", "after", -1, g)
        PassManager(default_pipeline(), verify_each=True, instruments=[inst]).run(g)
        assert seen == STAGES[:-1]
