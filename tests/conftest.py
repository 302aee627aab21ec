"""Shared fixtures for the per-stage tests: tiny ONNX model builders and an ONNX Runtime runner.

Every numeric check in the stage tests compares against ONNX Runtime (the float reference) or a
hand-computed value, never against tccc's own output. The helpers are exposed as fixtures
(``make_model``, ``ort_run``, ``check_vs_ort``, ``residual_net``, ``run_pipeline``, ``rng``) so
test modules never import this file directly.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.driver import import_model, run_float_passes
from tcc_compiler.interp import run_float
from tcc_compiler.ir.graph import Graph

ort.set_default_logger_severity(3)

#: Float tolerance of the import / pass checks against ONNX Runtime.
RTOL, ATOL = 1e-4, 1e-5


def _tensor(name: str, arr: np.ndarray) -> onnx.TensorProto:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    return numpy_helper.from_array(arr, name)


def make_model_impl(nodes: list[onnx.NodeProto], in_shape: Iterable[int] | None,
                    inits: dict[str, np.ndarray] | None = None, *, opset: int = 13,
                    ir_version: int | None = None, outputs: Iterable[str] = ("y",),
                    inits_as_inputs: bool = False, input_name: str = "x",
                    name: str = "g") -> onnx.ModelProto:
    """Build a one-input float32 ONNX model and run the ONNX checker on it.

    Args:
        nodes: the graph's nodes (``onnx.helper.make_node``).
        in_shape: dims of the single image input (NCHW), None for no shape.
        inits: initializer name -> array (float arrays stored as float32, ints kept).
        opset: default-domain opset. ir_version: model IR version (default: what the opset
            needs, at least 7 so ORT accepts it).
        outputs: graph output names (types and shapes from ONNX shape inference).
        inits_as_inputs: also list every initializer as a graph input (IR version 3 style).

    Returns:
        The checked ModelProto.
    """
    inits = inits or {}
    init_protos = [_tensor(k, v) for k, v in inits.items()]
    ins = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                         list(in_shape) if in_shape is not None else None)]
    if inits_as_inputs:
        ins += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in init_protos]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, name, ins, outs, init_protos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    else:
        model.ir_version = max(3, min(model.ir_version, 8))
    # Output types come from ONNX shape inference (the checker wants a shape on outputs).
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    onnx.checker.check_model(model)
    return model


def ort_run_impl(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """Run ``model`` on ONNX Runtime (CPU) with its single input fed ``x``; all outputs."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def run_pipeline_impl(graph: Graph) -> Graph:
    """The driver's float-pass stage (the default pipeline) with the IR verifier after every
    pass."""
    return run_float_passes(graph, verify_ir=True).graph


def check_vs_ort_impl(model: onnx.ModelProto | str, x: np.ndarray, *, passes: bool = True,
                      input_whc=None, rtol: float = RTOL, atol: float = ATOL) -> Graph:
    """Import ``model``, run the float IR (and, with ``passes``, the float pipeline) and
    compare every graph output with ONNX Runtime.

    Returns:
        The imported graph (after the pipeline when ``passes``).
    """
    proto = onnx.load(model) if isinstance(model, str) else model
    ref = ort_run_impl(proto, x)
    graph, _ = import_model(model, input_whc)
    stages = [("import", graph)]
    if passes:
        graph = run_pipeline_impl(graph)
        stages.append(("pipeline", graph))
    for stage, g in stages:
        got = run_float(g, x)
        assert len(g.outputs) == len(ref)
        for o, r in zip(g.outputs, ref):
            np.testing.assert_allclose(got[o.name].reshape(r.shape), r, rtol=rtol, atol=atol,
                                       err_msg=f"{stage}: output {o.name}")
    return graph


def residual_net_impl(seed: int = 0, hw: int = 16, c: int = 8) -> onnx.ModelProto:
    """A small ResNet-like net (NCHW input [1, 3, hw, hw]).

    stem conv3x3/s2 + BN + Relu -> MaxPool 3x3/s2/p1 -> basic block (conv3x3+BN+Relu,
    conv3x3+BN, identity shortcut, Relu) -> down block (conv3x3/s2+BN+Relu, conv3x3+BN,
    1x1/s2 conv shortcut, Relu) -> GlobalAveragePool -> Flatten -> Gemm (10 logits).
    """
    r = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []

    def conv(name, x, cin, cout, k, s, bn=True, relu=True):
        inits[name + "_w"] = r.standard_normal((cout, cin, k, k)) * (1.5 / np.sqrt(cin * k * k))
        inits[name + "_b"] = r.standard_normal(cout) * 0.1
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name],
                                      kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                                      name=name))
        y = name
        if bn:
            for nm, v in (("g", r.uniform(0.5, 1.5, cout)), ("be", r.standard_normal(cout) * .1),
                          ("m", r.standard_normal(cout) * .1), ("v", r.uniform(0.5, 1.5, cout))):
                inits[f"{name}_{nm}"] = v
            nodes.append(helper.make_node(
                "BatchNormalization", [y] + [f"{name}_{nm}" for nm in ("g", "be", "m", "v")],
                [name + "_bn"], name=name + "_bn"))
            y = name + "_bn"
        if relu:
            nodes.append(helper.make_node("Relu", [y], [name + "_relu"], name=name + "_relu"))
            y = name + "_relu"
        return y

    y = conv("stem", "x", 3, c, 3, 2)
    nodes.append(helper.make_node("MaxPool", [y], ["pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1], name="pool"))
    a = conv("b1c1", "pool", c, c, 3, 1)
    a = conv("b1c2", a, c, c, 3, 1, relu=False)
    nodes.append(helper.make_node("Add", [a, "pool"], ["b1add"], name="b1add"))
    nodes.append(helper.make_node("Relu", ["b1add"], ["b1out"], name="b1out"))
    d = conv("b2c1", "b1out", c, 2 * c, 3, 2)
    d = conv("b2c2", d, 2 * c, 2 * c, 3, 1, relu=False)
    sc = conv("b2sc", "b1out", c, 2 * c, 1, 2, relu=False)
    nodes.append(helper.make_node("Add", [sc, d], ["b2add"], name="b2add"))
    nodes.append(helper.make_node("Relu", ["b2add"], ["b2out"], name="b2out"))
    nodes.append(helper.make_node("GlobalAveragePool", ["b2out"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    inits["fc_w"] = r.standard_normal((10, 2 * c)) * 0.5
    inits["fc_b"] = r.standard_normal(10) * 0.1
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1, name="fc"))
    return make_model_impl(nodes, [1, 3, hw, hw], inits, name="resnet_tiny")


def conv_gap_fc_net_impl(channels: int = 3, hw: int = 16, seed: int = 3,
                        name: str = "conv_gap_fc") -> onnx.ModelProto:
    """A minimal classifier (NCHW input [1, channels, hw, hw]): conv3x3 (C -> 4, pads 1) + Relu
    -> GlobalAveragePool -> Flatten -> Gemm (5 logits)."""
    r = np.random.default_rng(seed)
    inits = {"w": r.standard_normal((4, channels, 3, 3)) * 0.5, "b": r.standard_normal(4) * 0.1,
             "fw": r.standard_normal((5, 4)), "fb": r.standard_normal(5) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    return make_model_impl(nodes, [1, channels, hw, hw], inits, name=name)


def quantize_on_noise(g: Graph, seed: int = 3) -> np.ndarray:
    """Quantize the passed graph ``g`` in place on ranges of two standard-normal inputs of its
    input shape (float32 NCHW, ``np.random.default_rng(seed)``) and return a third one from
    the same generator, an input calibration did not see."""
    from tcc_compiler.quant import collect_ranges, quantize_graph

    r = np.random.default_rng(seed)
    xs = [r.standard_normal(tuple(g.inputs[0].shape)).astype(np.float32) for _ in range(3)]
    quantize_graph(g, collect_ranges(g, xs[:2]))
    return xs[2]


def quantized_model(model: onnx.ModelProto, seed: int = 3) -> tuple[Graph, np.ndarray]:
    """(graph, fresh input) of ``model`` imported, through the default float passes and
    :func:`quantize_on_noise`."""
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline

    g = PassManager(default_pipeline()).run(import_onnx(model))
    return g, quantize_on_noise(g, seed)


def record_lowerings(monkeypatch, what: Callable = lambda lw: lw.hoist) -> list:
    """From now on (for the test), every ``Lowering.run`` appends ``what(lowering)`` to the
    returned list and then lowers as before: how many lowerings a search makes, and which."""
    from tcc_compiler.schedule import lowering

    runs: list = []
    real = lowering.Lowering.run

    def run(self):
        runs.append(what(self))
        return real(self)

    monkeypatch.setattr(lowering.Lowering, "run", run)
    return runs


def run_program_impl(prog, budget: int, g: Graph, x: np.ndarray, schedule: str = "inorder",
                     seed: int = 0) -> tuple[dict[str, np.ndarray], list]:
    """Encode and decode a lowered ``prog`` (both binaries), check its stream for hazards and
    run it on the reference executor with an SRAM of ``budget`` bytes pre-filled with 0xA5.

    Args:
        x: float32 NCHW input, quantized with the graph input's parameters.

    Returns:
        (flat int8/int32 output arrays by output name, hazards found by the static checker).
    """
    from tcc_compiler.binfmt import read_cmd_file, read_weight_file, write_cmd_file
    from tcc_compiler.binfmt.weightfile import write_weight_file
    from tcc_compiler.isa.commands import Space
    from tcc_compiler.quant.params import quantize_input
    from tcc_compiler.sim.executor import Executor
    from tcc_compiler.target import load_target
    from tcc_compiler.sim.hazards import check_stream

    cmd = read_cmd_file(write_cmd_file(
        prog.commands, sram_peak_bytes=prog.sram_peak_bytes, act_arena_bytes=prog.act_arena_bytes,
        input_bytes=prog.input_bytes, output_bytes=prog.output_bytes, tool_version="test",
        slots=prog.slots))
    wf = read_weight_file(write_weight_file(prog.weights, "test"))
    sizes = {Space.SRAM: budget, Space.ACT: prog.act_arena_bytes,
             Space.INPUT: prog.input_bytes, Space.OUTPUT: prog.output_bytes,
             Space.WEIGHTS: len(wf.data)}
    hazards = check_stream(list(cmd.commands), sizes)
    q = quantize_input(x, g.inputs[0]).tobytes()
    out = Executor(cmd, wf, load_target().with_sram(budget), fill=0xA5).run(
        q + bytes(prog.input_bytes - len(q)), schedule=schedule, seed=seed)
    got = {}
    for o in prog.outputs:
        dt = np.int8 if o.dtype == "int8" else np.int32
        got[o.name] = np.frombuffer(out, dtype=dt, count=int(np.prod(o.hwc)), offset=o.offset)
    return got, hazards


def assert_bit_exact_schedules(prog, budget: int, g: Graph, x: np.ndarray,
                               seeds: tuple[int, ...] = (1, 2)) -> None:
    """:func:`run_program_impl` of ``prog`` in order and in random interleavings (one per seed
    in ``seeds``): no hazard, and every output equal byte for byte to the golden integer
    model's on ``x`` (float32 NCHW).

    Raises:
        AssertionError: a hazard, or an output that differs (named).
    """
    from tcc_compiler.quant import run_golden

    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), *(("random", s) for s in seeds)):
        got, hazards = run_program_impl(prog, budget, g, x, schedule, seed)
        assert hazards == [], (schedule, seed)
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1),
                                          err_msg=f"{o.name} ({schedule}, seed {seed})")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator (deterministic tests)."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def make_model() -> Callable[..., onnx.ModelProto]:
    """The :func:`make_model_impl` builder."""
    return make_model_impl


@pytest.fixture(scope="session")
def ort_run() -> Callable[[onnx.ModelProto, np.ndarray], list[np.ndarray]]:
    """The :func:`ort_run_impl` runner."""
    return ort_run_impl


@pytest.fixture(scope="session")
def check_vs_ort() -> Callable[..., Graph]:
    """The :func:`check_vs_ort_impl` checker (import [+ passes] vs ONNX Runtime)."""
    return check_vs_ort_impl


@pytest.fixture(scope="session")
def run_pipeline() -> Callable[[Graph], Graph]:
    """The default float pipeline with verification after every pass."""
    return run_pipeline_impl


@pytest.fixture(scope="session")
def residual_net() -> Callable[..., onnx.ModelProto]:
    """The :func:`residual_net_impl` builder."""
    return residual_net_impl


# Session-scoped compiled models (compiled once per run, read by many test folders).
pytest_plugins = ("helpers.compiled", "helpers.prefetch_net")
