"""Mixed-precision choice: the precision file's errors, the planner's int8-only rules, and
``auto`` promoting the largest isolated-error gain first: the output where the activations
are the loss, the weights where the weights are."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.driver import import_model, run_float_passes
from tcc_compiler.errors import InputError
from tcc_compiler.quant.auto_precision import auto_precision, check_precision, rank_promotions
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.precision import plan_int16, read_precision_file
from tcc_compiler.quant.ranges import choose_ranges
from tests.helpers.cli import one_line_error, run_cli

N = helper.make_node
HW = 8


def _model(nodes, inits, out_c=4) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_c, HW, HW])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _chain(outlier: float = 1.0) -> onnx.ModelProto:
    """Three 3x3 convs c1 -> c2 -> c3 (+ a sigmoid after c3). ``outlier`` scales one output
    channel of c2 far above the others, so int8 quantization of c2's output (one scale per
    tensor) loses the small channels: c2 then has the worst isolated error."""
    r = np.random.default_rng(3)
    w2 = r.normal(0, .3, (4, 4, 3, 3))
    w2[0] *= outlier
    inits = {"w1": r.normal(0, .4, (4, 3, 3, 3)), "b1": np.zeros(4), "w2": w2,
             "b2": np.zeros(4), "w3": r.normal(0, .3, (4, 4, 3, 3)) / max(1.0, outlier / 4),
             "b3": np.zeros(4)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="c1"),
             N("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1] * 4, name="c2"),
             N("Conv", ["c2", "w3", "b3"], ["c3"], pads=[1] * 4, name="c3"),
             N("Sigmoid", ["c3"], ["y"], name="sig")]
    return _model(nodes, inits)


def _float_graph(model):
    return run_float_passes(*import_model(model, f"{HW}x{HW}x3")).graph


def _xs(n=6):
    r = np.random.default_rng(0)
    return [r.normal(0, 1, (1, 3, HW, HW)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("text, why", [
    ("{", "not a JSON precision file"),
    ('["c1"]', 'a precision file is {"int16": [layer names], "int16_weights"'),
    ('{"int16": ["c1"], "int4": []}', 'a precision file is {"int16"'),
    ("{}", 'a precision file is {"int16"'),
    ('{"int16": "c1"}', '"int16" must be a list of layer names'),
    ('{"int16": [1]}', "must be a list of layer names"),
    ('{"int16_weights": ["c1", ""]}', '"int16_weights" must be a list of layer names'),
])
def test_precision_file_errors(tmp_path, text, why):
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(InputError) as exc:
        read_precision_file(f)
    assert str(exc.value).startswith(str(f)) and why in str(exc.value)


def test_missing_file_and_unknown_layer_are_input_errors(tmp_path):
    fg = _float_graph(_chain())
    with pytest.raises(InputError, match="cannot read the precision file"):
        check_precision(fg, str(tmp_path / "none.json"))
    (tmp_path / "p.json").write_text(json.dumps({"int16": ["c1", "conv9"]}))
    with pytest.raises(InputError, match="no layer named 'conv9'.*e.g. c1"):
        check_precision(fg, str(tmp_path / "p.json"))
    # a name in both lists is named once
    (tmp_path / "p.json").write_text(json.dumps({"int16": ["conv9", "c1"],
                                                 "int16_weights": ["conv9"]}))
    with pytest.raises(InputError, match="no layer named 'conv9' in"):
        check_precision(fg, str(tmp_path / "p.json"))


@pytest.mark.parametrize("content", [{"int16": ["nope"]}, {"int16_weights": ["c1", "nope"]}])
def test_cli_unknown_layer_exits_2_with_one_line(tmp_path, capsys, content):
    onnx.save(_chain(), tmp_path / "m.onnx")
    (tmp_path / "p.json").write_text(json.dumps(content))
    code, _, err = run_cli(["compile", str(tmp_path / "m.onnx"), "--input", f"{HW}x{HW}x3",
                            "-o", str(tmp_path / "out"), "--precision",
                            str(tmp_path / "p.json")], capsys)
    assert code == 2
    assert "no layer named 'nope'" in one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_planner_keeps_lut_inputs_int8_unless_the_epilogue_reads_them_and_pools_follow():
    """c3's output only its sigmoid reads: int16, the table interpolating int16 knots in
    c3's epilogue (specs/quantization.md "int16-input lookup tables"); when the host reads
    the conv output too the table would be a LUT_TILE, which is int8 only."""
    fg = _float_graph(_chain())
    plan = plan_int16(fg, ["c1", "c3"])
    assert plan.layers == ["c1", "c3"] and not plan.kept_int8
    r = np.random.default_rng(1)
    inits = {"w": r.normal(0, .4, (4, 3, 3, 3)), "b": np.zeros(4)}
    two = _model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="c"),
                  N("Sigmoid", ["c"], ["y"], name="sig")], inits)
    two.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT,
                                                          [1, 4, HW, HW]))
    plan = plan_int16(_float_graph(two), ["c"])
    assert plan.layers == [] and "int8 only" in plan.kept_int8["c"]
    pool = _model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="c"),
                   N("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1] * 4,
                     name="mp")], inits)
    plan = plan_int16(_float_graph(pool), ["c", "mp"])
    assert plan.layers == ["c"] and plan.values == {"c", "y"}
    assert "follows its input" in plan.kept_int8["mp"]


def test_cli_malformed_precision_file_exits_2_with_one_line(tmp_path, capsys):
    onnx.save(_chain(), tmp_path / "m.onnx")
    (tmp_path / "p.json").write_text('{"int16_weights": "c1"}')
    code, _, err = run_cli(["compile", str(tmp_path / "m.onnx"), "--input", f"{HW}x{HW}x3",
                            "-o", str(tmp_path / "out"), "--precision",
                            str(tmp_path / "p.json")], capsys)
    assert code == 2
    line = one_line_error(err)
    assert str(tmp_path / "p.json") in line and '"int16_weights" must be a list' in line
    assert not (tmp_path / "out").exists()


def test_planner_keeps_raw_int32_outputs_and_pool_weights_int8():
    r = np.random.default_rng(1)
    m = _model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="c"),
                N("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], pads=[1] * 4, name="mp"),
                N("Conv", ["p", "w2", "b2"], ["y"], pads=[1] * 4, name="last")],
               {"w": r.normal(0, .4, (4, 3, 3, 3)), "b": np.zeros(4),
                "w2": r.normal(0, .4, (4, 4, 3, 3)), "b2": np.zeros(4)})
    plan = plan_int16(_float_graph(m), [], weight_layers=["c", "last", "mp"])
    assert plan.weight_layers == ["c"]
    assert "raw int32" in plan.kept_int8_weights["last"]
    assert "no weights" in plan.kept_int8_weights["mp"]


def _ranges(fg, xs):
    obs = observe(fg, xs, ["minmax"])["minmax"]
    ranges, _ = choose_ranges(obs, "minmax")
    return ranges, {k: o.range() for k, o in obs.items()}


def _heavy_weights_chain() -> onnx.ModelProto:
    """:func:`_chain` whose c2 has, per output channel, one weight 30x the others: int8's
    per-channel scale (set by that weight) rounds the rest to a few levels, so c2's error is
    its weights', not its activations'."""
    m = _chain()
    for init in m.graph.initializer:
        if init.name == "w2":
            w = numpy_helper.to_array(init).copy() * 0.2
            w.reshape(4, -1)[:, 0] = 6.0
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), "w2"))
    return m


def test_auto_promotes_weights_where_the_weights_are_the_loss():
    fg = _float_graph(_heavy_weights_chain())
    xs = _xs()
    ranges, mm = _ranges(fg, xs)
    ranking = rank_promotions(fg, ranges, mm, xs)
    assert ranking[0][:2] == ("c2", "weights")
    auto = auto_precision(fg, ranges, mm, xs, target_db=math.inf)   # the goal form
    assert "c2" in auto.plan.weight_layers
    assert auto.sqnr_db["chosen"] > auto.sqnr_db["int8"] + 3.0
    assert auto.sqnr_db["chosen"] >= auto.sqnr_db["all_int16"] - 0.5
    assert auto.to_dict()["int16_weight_layers"] == auto.plan.weight_layers


def test_auto_promotes_the_worst_isolated_layer_first():
    fg = _float_graph(_chain(outlier=30.0))
    xs = _xs()
    obs = observe(fg, xs, ["minmax"])["minmax"]
    ranges, _ = choose_ranges(obs, "minmax")
    ranking = rank_promotions(fg, ranges, {k: o.range() for k, o in obs.items()}, xs)
    assert ranking[0][:2] == ("c2", "activations")   # the outlier channel's layer
    mm = {k: o.range() for k, o in obs.items()}
    loose = auto_precision(fg, ranges, mm, xs, goal_db=100.0, target_db=math.inf)
    assert loose.plan.layers == [] and loose.plan.weight_layers == []   # within 100 dB
    s8, s16 = loose.sqnr_db["int8"], loose.sqnr_db["all_int16"]
    assert s16 > s8 + 1.0
    # a goal all-int8 misses by 0.5 dB: promoting the worst layer alone meets it
    auto = auto_precision(fg, ranges, mm, xs, goal_db=s16 - s8 - 0.5, target_db=math.inf)
    assert auto.plan.layers == ["c2"]
    assert auto.sqnr_db["chosen"] >= s8 + 0.5


def test_budget_takes_the_cheap_top_of_the_ranking(monkeypatch):
    """``budget`` walks auto's ranking: c2's weights lead it and cost a small share of the
    weight bytes, so they are taken, and the output SQNR on the calibration inputs rises;
    with a weight budget of zero they are skipped and only output promotions remain."""
    from tcc_compiler.quant import auto_precision as ap

    fg = _float_graph(_heavy_weights_chain())
    xs = _xs()
    ranges, mm = _ranges(fg, xs)
    monkeypatch.setattr(ap, "BUDGET_WEIGHT_FRACTION", 1.0)
    b = ap.choose_precision(fg, ranges, mm, xs, "budget")
    assert b.mode == "budget" and "c2" in b.plan.weight_layers
    assert b.sqnr_db["chosen"] > b.sqnr_db["int8"] + 3.0
    d = b.to_dict()
    assert d["budget"]["weight_fraction"] == 1.0 and "goal_db" not in d
    monkeypatch.setattr(ap, "BUDGET_WEIGHT_FRACTION", 0.0)
    none = ap.budget_precision(fg, ranges, mm, xs)
    assert none.plan.weight_layers == []
    assert none.sqnr_db["chosen"] >= none.sqnr_db["int8"]


def test_budget_needs_calibration_inputs():
    from tcc_compiler.quant.auto_precision import choose_precision

    fg = _float_graph(_chain())
    with pytest.raises(InputError, match="budget needs calibration inputs"):
        choose_precision(fg, {}, None, [], "budget")


def _concat_model(first: str = "c1", sigmoid_on: str | None = None,
                  outlier: float = 1.0) -> onnx.ModelProto:
    """c1 = conv(x), c2 = conv(x), y = conv(concat(``first``, c2)) (``first`` "x": the network
    input joins the concat); ``sigmoid_on``: a value also read by a sigmoid (a second output);
    ``outlier`` scales c1's first output channel (the concat's shared int8 step then loses
    the other channels: the group's activations are the loss)."""
    r = np.random.default_rng(2)
    w1 = r.normal(0, .4, (4, 3, 3, 3))
    w1[0] *= outlier
    inits = {"w1": w1, "b1": np.zeros(4),
             "w2": r.normal(0, .4, (4, 3, 3, 3)), "b2": np.zeros(4),
             "w3": r.normal(0, .3, (4, 4 + (3 if first == "x" else 4), 3, 3)), "b3": np.zeros(4)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="c1"),
             N("Conv", ["x", "w2", "b2"], ["c2"], pads=[1] * 4, name="c2"),
             N("Concat", [first, "c2"], ["cat"], axis=1, name="cat"),
             N("Conv", ["cat", "w3", "b3"], ["y"], pads=[1] * 4, name="c3")]
    m = _model(nodes, inits)
    if sigmoid_on:
        m.graph.node.append(N("Sigmoid", [sigmoid_on], ["s"], name="sig"))
        m.graph.output.append(helper.make_tensor_value_info("s", TensorProto.FLOAT,
                                                            [1, 4, HW, HW]))
    return m


def test_planner_promotes_a_concat_group_whole_or_keeps_it_int8_with_the_reason():
    """Promoting one producer of a concat makes every producer of its group int16 (one shared
    parameter set); the group stays int8 when the network input is in it or a member has an
    int8-only reader."""
    plan = plan_int16(_float_graph(_concat_model()), ["c2"])
    assert plan.layers == ["c1", "c2"] and plan.values == {"c1", "c2", "cat"}
    plan = plan_int16(_float_graph(_concat_model(first="x")), ["c2"])
    assert plan.layers == [] and "network input 'x'" in plan.kept_int8["c2"]
    plan = plan_int16(_float_graph(_concat_model(sigmoid_on="c1")), ["c2"])
    assert plan.layers == [] and "read by lut 'sig'" in plan.kept_int8["c2"]


def test_auto_ranks_a_concat_group_as_one_promotion_and_stops_at_the_target():
    """The concat group is one activations promotion (named by its first producer); ``auto``
    promotes nothing when all-int8 meets ``target_db`` on the worst input, and with a target
    that the first promotion of its ranking meets, that one alone."""
    fg = _float_graph(_concat_model(outlier=30.0))
    xs = _xs()
    ranges, mm = _ranges(fg, xs)
    ranking = rank_promotions(fg, ranges, mm, xs)
    acts = [n for n, k, _, _ in ranking if k == "activations"]
    assert "c1" in acts and "c2" not in acts
    none = auto_precision(fg, ranges, mm, xs, target_db=-math.inf)
    assert none.plan.layers == [] and none.plan.weight_layers == []
    assert none.sqnr_db["all_int16"] is None
    full = auto_precision(fg, ranges, mm, xs, goal_db=0.0, target_db=math.inf)
    s8, s16 = full.sqnr_db["int8"], full.sqnr_db["all_int16"]
    assert s16 > s8 + 3.0
    from tcc_compiler.quant import auto_precision as ap

    order = full.ranking
    w8 = ap.worst_input_sqnr(fg, ap._promoted_copy(fg, ranges, mm, []), xs)
    s1 = ap.worst_input_sqnr(fg, ap._promoted_copy(fg, ranges, mm, order[:1]), xs)
    assert s1 > w8 + 0.1   # the first promotion alone gains on the worst input: a target
    mid = auto_precision(fg, ranges, mm, xs, target_db=s1)
    chosen = set(mid.plan.layers) | {(n, "w") for n in mid.plan.weight_layers}
    taken = [(n, k) for n, k, _, _ in mid.ranking
             if (n if k == "activations" else (n, "w")) in chosen]
    k = len(taken)
    assert k == 1 and taken == [order[0][:2]] and mid.sqnr_db["chosen"] == s1
    assert mid.sqnr_db["int8"] == w8
    assert mid.to_dict()["target_db"] == round(s1, 3)


def test_auto_leaves_out_again_the_costly_promotions_the_goal_does_not_need():
    """After the bisection, the costliest chosen promotions are tried without, most cycles
    first: kept only when the rest misses the target (``a``, the one that matters, here)."""
    from tcc_compiler.quant.auto_precision import _prune

    chosen = [("a", "activations", 20.0, 30.0), ("b", "activations", 20.0, 30.0),
              ("c", "weights", 20.0, 30.0)]
    cycles = {("a", "activations"): 5e5, ("b", "activations"): 1e6, ("c", "weights"): 10.0}
    tried = []

    def sqnr_of(rest):
        tried.append([p[0] for p in rest])
        return 26.0 if any(p[0] == "a" for p in rest) else 22.0

    kept, worst = _prune(chosen, cycles, 25.0, sqnr_of)
    assert [p[0] for p in kept] == ["a"] and worst == 26.0
    assert tried == [["a", "c"], ["c"], ["a"]]   # b (1e6 cycles), then a, then c


def test_promotion_cost_counts_the_group_bytes_and_the_slower_reader_tiles():
    """A concat group's int16 outputs: every byte its producers write and its readers read once
    more, plus the reading conv's MACs at half rate; int16 weights: one byte per weight plus the
    layer's own MACs at half rate (quant/promotion_cost.py)."""
    from tcc_compiler.quant.precision import layer_nodes
    from tcc_compiler.quant.promotion_cost import activation_cost, weights_cost
    from tcc_compiler.target import load_target

    t = load_target()
    fg = _float_graph(_concat_model())
    nodes = layer_nodes(fg)
    px = HW * HW
    extra = t.int16_rate_divisor - 1
    c3_macs = 4 * px * 8 * 9
    want = (4 * px * 2 + 8 * px) / t.dram_bytes_per_cycle + extra * c3_macs / t.macs_per_cycle
    assert activation_cost(fg, nodes["c2"], t) == pytest.approx(want)
    assert activation_cost(fg, nodes["c1"], t) == pytest.approx(want)   # the same group
    assert weights_cost(nodes["c3"], t) == pytest.approx(
        4 * 8 * 9 / t.dram_bytes_per_cycle + extra * c3_macs / t.macs_per_cycle)
