"""UX round 3 (B): QDQ export of exact-tie pools, report/inspect notes and robustness."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.export.qdq import export_qdq
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.golden import run_golden


def _gap_net(cin: int, softmax: bool, seed: int = 0) -> onnx.ModelProto:
    """1 x cin x 32 x 32 -> Conv 3x3 (8 channels, pad 1) -> Relu -> GAP (1024 values, whose
    sums are 1/1024 LSB apart: no safe tie offset) -> Flatten -> Gemm 10 [-> Softmax]."""
    r = np.random.default_rng(seed)
    inits = {"w": r.normal(0, 0.3, (8, cin, 3, 3)), "b": r.normal(0, 0.1, 8),
             "fw": r.normal(0, 0.3, (10, 8)), "fb": r.normal(0, 0.1, 10)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["z" if softmax else "y"], transB=1)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    g = helper.make_graph(
        nodes, "gapnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("cin,softmax", [(1, False), (4, False), (1, True)])
def test_export_gap_without_safe_offset_is_exact(cin, softmax):
    from test_export_qdq import _layerwise, _nchw, _session

    r = np.random.default_rng(1)
    calib = [r.uniform(0, 1, (1, cin, 32, 32)).astype(np.float32) for _ in range(4)]
    cm = api.compile(_gap_net(cin, softmax), f"32x32x{cin}", calibration=calib)
    g = cm.quantized_graph
    model = export_qdq(g)  # raised "rounding ties with no safe offset" before
    assert any(n.op_type == "ReduceSum" for n in model.graph.node)  # the integer-side GAP
    xs = [r.uniform(0, 1, (1, cin, 32, 32)).astype(np.float32) for _ in range(3)]
    _layerwise(cm, xs)  # each op fed golden inputs: <= 1 LSB, only at near-ties
    gap = next(n.output for n in g.nodes if n.op is Op.GAP)
    model.graph.output.append(helper.make_tensor_value_info(f"{gap.name}_quantized",
                                                            TensorProto.INT8, None))
    sess = _session(model)
    for x in xs:  # end to end from the float input: the GAP output is bit-exact
        gold = run_golden(g, x, keep=True)
        got = sess.run([f"{gap.name}_quantized", g.outputs[0].name], {"x": x})
        want = _nchw(gold["int:" + gap.name], got[0].shape)
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_allclose(got[1].reshape(-1), gold[g.outputs[0].name].reshape(-1),
                                   rtol=0, atol=1e-3 if softmax else 0.05)


# --- report / inspect on a compiled folder ---------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    r = np.random.default_rng(2)
    calib = [r.uniform(0, 1, (1, 1, 32, 32)).astype(np.float32) for _ in range(2)]
    cm = api.compile(_gap_net(1, False), "32x32x1", calibration=calib)
    return cm.save(tmp_path_factory.mktemp("r3b") / "out")


def _run(argv, capsys):
    from tcc_compiler.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_html_notes_match_the_folder(folder, tmp_path):
    import json
    import shutil

    from tcc_compiler.report.html import render_html

    page = render_html(folder)
    assert "halo re-reads not included" not in page  # the column is what the DMA moves
    assert "bytes the layer&#x27;s own DMA commands read + write" in page
    # calib_table.json is present but has no histograms: the note says how to get them
    assert (folder / "calib_table.json").is_file() and "--histograms" in page
    assert "No per-layer SQNR" in page
    out = tmp_path / "o"
    shutil.copytree(folder, out)
    names = [l["name"] for l in json.loads((out / "report.json").read_text())["layers"]]
    (out / "analysis.json").write_text(json.dumps(
        {"layers": [{"name": n, "sqnr_db": 30.0} for n in names]}))
    page = render_html(out)
    assert "<h2>Per-layer SQNR</h2>" in page and "No per-layer SQNR" not in page
    assert "No calibration histograms or per-layer SQNR" not in page


def test_layers_tables_show_tiling_and_latency_note(folder, capsys):
    import json

    from tcc_compiler.report.html import render_html

    layers = json.loads((folder / "report.json").read_text())["layers"]
    page = render_html(folder)
    assert "<th>tiling</th>" in page and "overlap" in page
    for l in layers:
        assert f"<td class=w>{l['tiling']}</td>" in page
    code, out, err = _run(["inspect", str(folder)], capsys)
    assert code == 0, err
    for l in layers:
        assert f"tiling: {l['tiling']}" in out
    assert "spans of consecutive ops overlap" in out


@pytest.mark.parametrize("content,field", [
    ("[]", "top level"), ('{"layers": [{"name": 5}]}', "layers[0].name"),
    ('{"layers": {}}', "layers: expected a list"),
    ('{"layers": [{"name": "a"}]}', "layers[0].op: missing"),
    ("SOURCE_NULL", "layers[0].source"),
    ('{"estimated_latency_ms": "x"}', "estimated_latency_ms")])
def test_corrupt_report_fields_one_line_exit_2(folder, tmp_path, capsys, content, field):
    import json
    import shutil

    out = tmp_path / "o"
    shutil.copytree(folder, out)
    if content == "SOURCE_NULL":
        rep = json.loads((out / "report.json").read_text())
        rep["layers"][0]["source"] = None
        content = json.dumps(rep)
    (out / "report.json").write_text(content)
    for argv in (["report", str(out), "-o", str(tmp_path / "r.html")], ["inspect", str(out)],
                 ["inspect", str(out), "--json"]):
        code, stdout, err = _run(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and stdout == "" and len(lines) == 1, (argv, err)
        assert "report.json" in lines[0] and field in lines[0], (argv, lines[0])
    assert not (tmp_path / "r.html").exists()


def test_inspect_csv_and_json_weight_columns(folder, tmp_path, capsys):
    import csv
    import json

    from tcc_compiler.binfmt.weightfile import read_weight_file

    wf = read_weight_file((folder / "quantized_network.bin").read_bytes())
    code, out, err = _run(["inspect", str(folder), "--csv", str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    with_w = [r for r in rows if r["weight_raw_bytes"]]
    assert [r["op"] for r in with_w] == ["conv", "fc"]
    assert with_w == [r for r in rows if int(r["weight_bytes"]) > 0]
    for r, e in zip(with_w, wf.layers):  # raw = OHWI int8 weights + 16-byte params per channel
        o, k = (8, 9) if r["op"] == "conv" else (10, 8)
        assert int(r["weight_raw_bytes"]) == o * k + 16 * o
        assert float(r["weight_ratio"]) == pytest.approx(e.stored_bytes / e.raw_bytes, abs=1e-3)
    code, out, err = _run(["inspect", str(folder), "--json"], capsys)
    js = json.loads(out)
    assert [x["name"] for x in js["quantized_network.bin"]["layers"]] == \
        [r["name"] for r in with_w]
    with pytest.raises(SystemExit):
        _run(["inspect", "--help"], capsys)
    helptext = capsys.readouterr().out
    assert all(k in helptext for k in ("npu_cmd.bin", "quantized_network.bin", "report"))
