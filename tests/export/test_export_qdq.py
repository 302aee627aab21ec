"""QDQ ONNX export: ONNX Runtime on the exported model vs tccc's golden integer model.

The issue's wording: ONNX Runtime's output is within 1 LSB of the golden integer model on real
photos. Checked two ways on the bundled eval photos:

* layer by layer (``_layerwise``): every QuantizeLinear of the export is fed the golden model's
  int8 inputs, so each op is compared alone. Every int8 element must be within 1 LSB, and every
  1-LSB difference must be a float32 near-tie: the exact value tccc rounds,
  ``t = (acc * M + sc * M_sc) / 2**S`` recomputed from the golden integers, lies within
  ``_NEAR_TIE`` (1e-4 LSB) of ``k + 1/2`` but is not an exact tie (exact ties are the export's
  job: ``_RoundHalfUp`` offsets). Measured (ORT 1.32, graph optimizations on or off give the
  same counts): ResNet-50 224x224, 3 photos: 70 of 33,950,208 int8 elements differ by 1 LSB,
  none by more; ResNet-18 64x64, 4 photos: 2 of 878,592 (before the tie offsets: 281, of which
  279 in the 2x2 global average pool, a quarter of whose outputs are exact ties).
* end to end (``_chained``): ONNX Runtime runs the whole export from the float input. A 1-LSB
  near-tie difference then propagates and later layers amplify it (ResNet-18 64x64, 4 photos:
  0.31% of int8 elements off by 1 LSB and 0.07% by more, all descending from the 2 near-ties
  above; ResNet-50 224x224: 1.3% by more than 1 LSB from 70 near-ties). So the end-to-end test
  asserts what is provable: a photo with no near-tie layer by layer runs bit-exact end to end,
  and every photo keeps the golden top-1 with logit SQNR >= 30 dB.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.models import gap_net
from onnx import TensorProto, helper

from tcc_compiler import api, zoo
from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_inputs
from tcc_compiler.errors import InputError
from tcc_compiler.export import export_qdq
from tcc_compiler.export.ties import tie_offset as _tie_offset
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics import kernels as K
from tcc_compiler.quant.golden import run_golden, weights_ohwi
from tcc_compiler.quant.params import add_quant, conv_quant, pool_quant, quantize_input
from tcc_compiler.runtime.check import sqnr_db

W, H = 64, 64
#: A 1-LSB difference is accepted only this close (in LSB) to a rounding boundary: ONNX
#: Runtime's float32 rescale errs by about 1e-5 LSB (24-bit multiplier, values below 256).
_NEAR_TIE = 1e-4


@pytest.fixture(scope="module")
def compiled():
    """A small residual net (conftest) at 64x64: stem, maxpool, two residual blocks, GAP, FC."""
    from conftest import residual_net_impl

    return api.compile(residual_net_impl(hw=W, c=16), f"{W}x{H}x3")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _int8_values(g):
    return [n.output for n in g.nodes if n.output.dtype == "int8" and n.op is not Op.RESHAPE]


def _nchw(a: np.ndarray, shape) -> np.ndarray:
    a = a.transpose(2, 0, 1)[None] if a.ndim == 3 and len(shape) == 4 else a
    return a.reshape(shape)


def _exact_fraction(node, gold, idx) -> tuple[int, int]:
    """(numerator mod 2**S, S) of the value tccc rounds at NCHW position ``idx`` of ``node``:
    ``t = num / 2**S`` before ``+ 1/2`` and the floor, from the golden integers (Python ints,
    no overflow)."""
    x = gold["int:" + node.inputs[0].name]
    _, c, h, w = idx if len(idx) == 4 else (0, idx[-1], 0, 0)
    if node.op is Op.CONV:
        q = conv_quant(node)
        a = node.attrs
        acc = K.conv_accumulate(x, q.zp_in, weights_ohwi(node), a.strides, a.pads,
                                a.dilations, a.group)[h, w, c]
        v = (int(acc) + int(q.bias[c])) * int(q.mult[c])
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            sc = gold["int:" + node.inputs[3].name][h, w, c]
            v += (int(sc) - q.zp_sc) * int(q.sc_mult[c])
        s = int(q.shift[c])
    elif node.op in (Op.GAP, Op.AVGPOOL):
        p = pool_quant(node)
        if node.op is Op.GAP:
            tot = int((x[..., c].astype(np.int64) - p.zp_in).sum())
        else:
            a = node.attrs
            xs = np.pad(x[..., c].astype(np.int64) - p.zp_in,
                        ((a.pads[0], a.pads[2]), (a.pads[1], a.pads[3])))
            r0, c0 = h * a.strides[0], w * a.strides[1]
            tot = int(xs[r0:r0 + a.kernel[0], c0:c0 + a.kernel[1]].sum())
        v, s = tot * p.mult, p.shift
    elif node.op is Op.ADD:
        p = add_quant(node)
        b = gold["int:" + node.inputs[1].name]
        v = (int(x[h, w, c]) - p.zp_a) * p.mult_a + (int(b[h, w, c]) - p.zp_b) * p.mult_b
        s = p.shift
    else:
        raise AssertionError(f"{node.op.value} '{node.name}' cannot differ (no rounding)")
    return v % (1 << s), s


def _layerwise(compiled, xs) -> tuple[int, int, list[int]]:
    """Each op alone: its QDQ inputs fed from the golden model. Returns (elements, 1-LSB
    differences, per-photo difference counts); asserts <= 1 LSB and near-tie-only."""
    g = compiled.quantized_graph
    model = export_qdq(g)
    vals = _int8_values(g)
    fed = {f"{v.name}_quantized": v for v in [g.inputs[0]] + vals}
    for nd in model.graph.node:
        if nd.op_type == "DequantizeLinear" and nd.input[0] in fed:
            nd.input[0] += "_golden"
    for k in fed:
        model.graph.input.append(helper.make_tensor_value_info(k + "_golden", TensorProto.INT8,
                                                               None))
    for v in vals:
        model.graph.output.append(helper.make_tensor_value_info(f"{v.name}_quantized",
                                                                TensorProto.INT8, None))
    sess = _session(model)
    names = [o.name for o in sess.get_outputs()]
    n_elems = n_off = 0
    per_photo = []
    for x in xs:
        gold = run_golden(g, x, keep=True)
        gold["int:" + g.inputs[0].name] = quantize_input(x, g.inputs[0])
        feeds = {sess.get_inputs()[0].name: x}
        for k, v in fed.items():
            feeds[k + "_golden"] = _nchw(gold["int:" + v.name], v.shape).astype(np.int8)
        got = dict(zip(names, sess.run(None, feeds)))
        off_here = 0
        for v in vals:
            q = got[f"{v.name}_quantized"].astype(np.int64)
            d = q - _nchw(gold["int:" + v.name].astype(np.int64), q.shape)
            n_elems += d.size
            assert np.abs(d).max() <= 1, f"{v.name}: {np.abs(d).max()} LSB from golden"
            for idx in zip(*np.nonzero(d)):
                num, s = _exact_fraction(v.producer, gold, idx)
                half = 1 << (s - 1)
                assert num != half, f"{v.name}{idx}: exact tie rounded differently"
                assert abs(num - half) < _NEAR_TIE * (1 << s), \
                    f"{v.name}{idx}: {abs(num - half) / (1 << s):.3g} LSB from a tie"
                off_here += 1
        n_off += off_here
        per_photo.append(off_here)
    print(f"layer by layer: {n_elems} int8 elements, {n_off} off by 1 LSB (near-ties)")
    return n_elems, n_off, per_photo


def _chained(compiled, xs) -> list[int]:
    """The whole export from the float input; per photo, the int8 elements that differ from
    golden. Asserts golden top-1 and logit SQNR >= 30 dB."""
    g = compiled.quantized_graph
    model = export_qdq(g)
    vals = _int8_values(g)
    for v in vals:  # expose every QuantizeLinear output
        model.graph.output.append(helper.make_tensor_value_info(f"{v.name}_quantized",
                                                                TensorProto.INT8, None))
    sess = _session(model)
    names = [o.name for o in sess.get_outputs()]
    diffs = []
    for x in xs:
        gold = run_golden(g, x, keep=True)
        got = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
        n = 0
        for v in vals:
            q = got[f"{v.name}_quantized"].astype(np.int64)
            n += int((q != _nchw(gold["int:" + v.name].astype(np.int64), q.shape)).sum())
        diffs.append(n)
        y = got[g.outputs[0].name].reshape(-1).astype(np.float64)
        ref = gold[g.outputs[0].name].reshape(-1).astype(np.float64)
        assert int(np.argmax(y)) == int(np.argmax(ref))
        assert sqnr_db(ref, y) >= 30.0
    return diffs


def _check_on_photos(compiled, w: int, h: int, n_photos: int) -> None:
    xs = load_inputs(bundled_photos("eval")[:n_photos], Preprocess(width=w, height=h),
                     (1, 3, h, w))
    _, _, near_ties = _layerwise(compiled, xs)
    chained = _chained(compiled, xs)
    print(f"per photo: near-ties {near_ties}, end-to-end int8 differences {chained}")
    for nt, ch in zip(near_ties, chained):
        if nt == 0:
            assert ch == 0, "end-to-end difference without a near-tie to explain it"


def test_tie_offset_hand_computed():
    # M / 2**S = 1/4 (a 2x2 average), sums -8..8: ties at 2/4 etc.; the largest fraction
    # below 1/2 is 1/4, so the offset is (1/2 - 1/4) / 2 = 1/8
    assert _tie_offset([1 << 30], [(-8, 8)], 32, "t") == 0.125
    # 1/49 rounded to 31 bits (7x7 average): never exactly k + 1/2
    m = round(2**36 / 49)
    assert _tie_offset([m], [(-255 * 49, 255 * 49)], 36, "t") == 0.0
    # add of two equal scales, (a + b) / 2: ties at odd sums; largest fraction below 1/2 is 0
    assert _tie_offset([1 << 30, 1 << 30], [(-3, 3), (-3, 3)], 31, "t") == 0.25


def test_ort_within_one_lsb_of_golden_on_photos(compiled):
    g = compiled.quantized_graph
    gap = next(n for n in g.nodes if n.op is Op.GAP)
    n = gap.inputs[0].shape[2] * gap.inputs[0].shape[3]
    assert n & (n - 1) == 0  # a power-of-two window: exact ties, so the offset is exercised
    assert any(nd.name == f"{gap.name}_RoundHalfUp" for nd in export_qdq(g).graph.node)
    _check_on_photos(compiled, W, H, 6)


@pytest.mark.slow
@pytest.mark.parametrize("name,size,n_photos", [("resnet18", 64, 12), ("resnet50", 224, 3)])
def test_zoo_ort_within_one_lsb_of_golden_on_photos(request, name, size, n_photos):
    if (name, size) == ("resnet50", 224):   # the default compile: the shared one
        cm = request.getfixturevalue("resnet50_224")[1]
    else:
        cm = api.compile(zoo.build(name, size, size), f"{size}x{size}x3")
    if size == 224:  # 7x7 global average pool: no exact ties, no offset node
        assert not any(nd.op_type == "Add" and nd.name.endswith("_RoundHalfUp")
                       for nd in export_qdq(cm.quantized_graph).graph.node)
    _check_on_photos(cm, size, size, n_photos)


def test_export_keeps_fusion_and_exact_parameters(compiled):
    g = compiled.quantized_graph
    model = export_qdq(g)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == compiled.report["npu_ops"]["conv"]
    assert ops.count("Gemm") == compiled.report["npu_ops"]["fc"]
    assert ops.count("QuantizeLinear") == sum(
        1 for v in [g.inputs[0]] + [n.output for n in g.nodes] if v.dtype == "int8"
        and (v.producer is None or v.producer.op is not Op.RESHAPE))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    conv = next(n for n in g.nodes if n.op is Op.CONV)
    w = conv.inputs[1]
    assert np.array_equal(inits[f"{w.name}_quantized"], w.const)
    assert np.array_equal(inits[f"{w.name}_scale"], w.quant.scale.astype(np.float32))
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
          and n.output[0] == f"{conv.output.name}_quantized"]
    assert len(qs) == 1
    assert inits[qs[0].input[1]] == np.float32(conv.output.quant.scale)
    assert inits[qs[0].input[2]] == np.int8(conv.output.quant.zero_point)


def test_cli_export_and_unquantized_graph_refused(compiled, tmp_path, capsys):
    out = compiled.save(tmp_path / "out")
    assert main(["export-onnx", str(out), "-o", str(tmp_path / "m.onnx"), "--json"]) == 0
    conv = compiled.report["npu_ops"]["conv"]
    assert f'"Conv": {conv}' in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    assert main(["export-onnx", str(tmp_path), "-o", str(tmp_path / "x.onnx")]) == 2
    with pytest.raises(InputError):
        export_qdq(compiled.artifacts.float_graph)


@pytest.mark.parametrize("cin,softmax", [(1, False), (4, False), (1, True)])
def test_export_gap_without_safe_offset_is_exact(cin, softmax):
    r = np.random.default_rng(1)
    calib = [r.uniform(0, 1, (1, cin, 32, 32)).astype(np.float32) for _ in range(4)]
    cm = api.compile(gap_net(cin, softmax), f"32x32x{cin}", calibration=calib)
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

