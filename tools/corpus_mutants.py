"""Seeded mutants of small models that compile: the hostile part of the corpus.

Each mutant is one of :func:`base_models` with one to three mutations (:data:`MUTATIONS`)
drawn by ``random.Random(seed)``; the same seed and count give the same files. Mutations:
attribute values across their schema's type range (ints, int lists, floats, strings, including
absent and out-of-range values), removed attributes, default-domain opsets and IR versions
(too old, current, from the future), dropped or duplicated initializers, renamed (dangling or
consistent) or repeated graph outputs, NaN / inf / huge / subnormal constants, odd input
shapes and dtypes, shuffled or duplicated nodes, unknown domains. Mutants skip the ONNX checker
on purpose: tccc must refuse what the checker would refuse, cleanly.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INTS = (-(2**31), -2, -1, 0, 1, 2, 3, 4, 7, 65536, 2**31 - 1)
SMALL_INTS = (-1, 0, 1, 2, 3, 5)
FLOATS = (0.0, -1.0, 1e-12, 0.5, 1.0, 6.0, 1e30, float("nan"), float("inf"), -float("inf"))
STRINGS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "", "bogus")
CONSTS = (float("nan"), float("inf"), -float("inf"), 3.0e38, -3.0e38, 0.0, 1e-45, 1e20)


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _model(nodes, inputs_shape, inits, name, opset=13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, inputs_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [_init(k, v) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def base_models() -> list[onnx.ModelProto]:
    """Three small classifiers tccc compiles (NCHW float32 inputs): conv/relu/gap/fc (3 ch,
    16x16); conv+BN+relu, maxpool, residual add, average pool, gemm, softmax (3 ch, 20x12);
    strided conv + clip, gap, reshape, matmul + add (1 ch, 9x15)."""
    r = np.random.default_rng(7)
    n = helper.make_node
    a = _model([n("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                  name="conv"),
                n("Relu", ["c"], ["r"], name="relu"),
                n("GlobalAveragePool", ["r"], ["g"], name="gap"),
                n("Flatten", ["g"], ["f"], name="flat"),
                n("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")],
               [1, 3, 16, 16], {"w": r.standard_normal((4, 3, 3, 3)) * .5,
                                "b": r.standard_normal(4) * .1,
                                "fw": r.standard_normal((5, 4)), "fb": r.standard_normal(5)},
               "conv_gap_fc")
    bn = {f"bn_{k}": v for k, v in (("s", r.uniform(.5, 1.5, 6)), ("b", r.standard_normal(6)),
                                    ("m", r.standard_normal(6) * .1), ("v", r.uniform(.5, 2, 6)))}
    b = _model([n("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                  name="c1"),
                n("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"],
                  name="bn1"),
                n("Relu", ["n1"], ["r1"], name="r1"),
                n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
                n("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                  name="c2"),
                n("Add", ["c2", "p1"], ["s"], name="add"),
                n("Relu", ["s"], ["r2"], name="r2"),
                n("AveragePool", ["r2"], ["a"], kernel_shape=[2, 2], strides=[2, 2],
                  name="avg"),
                n("GlobalAveragePool", ["a"], ["g"], name="gap"),
                n("Flatten", ["g"], ["f"], name="flat"),
                n("Gemm", ["f", "fw", "fb"], ["l"], transB=1, name="fc"),
                n("Softmax", ["l"], ["y"], axis=1, name="softmax")],
               [1, 3, 12, 20], {"w1": r.standard_normal((6, 3, 3, 3)) * .4,
                                "w2": r.standard_normal((6, 6, 3, 3)) * .2,
                                "b2": r.standard_normal(6) * .1, **bn,
                                "fw": r.standard_normal((7, 6)), "fb": r.standard_normal(7)},
               "residual_softmax")
    c = _model([n("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                  name="conv"),
                n("Clip", ["c", "lo", "hi"], ["k"], name="clip"),
                n("GlobalAveragePool", ["k"], ["g"], name="gap"),
                n("Reshape", ["g", "shape"], ["f"], name="reshape"),
                n("MatMul", ["f", "mw"], ["m"], name="matmul"),
                n("Add", ["m", "mb"], ["y"], name="bias")],
               [1, 1, 15, 9], {"w": r.standard_normal((8, 1, 3, 3)), "b": r.standard_normal(8),
                               "lo": np.float32(0), "hi": np.float32(6),
                               "mw": r.standard_normal((8, 3)), "mb": r.standard_normal(3)},
               "conv_clip_matmul")
    c.graph.initializer.append(numpy_helper.from_array(np.array([1, 8], np.int64), "shape"))
    return [a, b, c]


def _schema_attrs(node, opset: int) -> dict:
    try:
        return dict(onnx.defs.get_schema(node.op_type, opset, node.domain).attributes)
    except Exception:  # noqa: BLE001 - unknown op or opset: mutate what the node has
        return {}


def _attr_value(rng: random.Random, kind):
    A = onnx.AttributeProto
    if kind == A.INT:
        return rng.choice(INTS)
    if kind == A.INTS:
        return [rng.choice(SMALL_INTS) for _ in range(rng.choice((0, 1, 2, 3, 4, 8)))]
    if kind == A.FLOAT:
        return rng.choice(FLOATS)
    if kind == A.FLOATS:
        return [rng.choice(FLOATS) for _ in range(rng.choice((0, 1, 2, 4)))]
    if kind == A.STRING:
        return rng.choice(STRINGS)
    return None


def m_attr(m, rng) -> str:
    """Set one attribute of one node to a value of its schema type."""
    opset = m.opset_import[0].version if m.opset_import else 13
    options = []
    for node in m.graph.node:  # nodes with attributes to set (Relu and Add have none)
        kinds = {k: int(v.type) for k, v in _schema_attrs(node, opset).items()}
        kinds.update({a.name: int(a.type) for a in node.attribute})
        if kinds:
            options.append((node, kinds))
    if not options:
        return "attr: none"
    node, kinds = rng.choice(options)
    name = rng.choice(sorted(kinds))
    value = _attr_value(rng, kinds[name])
    if value is None:
        return f"attr {node.name}.{name}: not mutable"
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(name, value,
                                                        attr_type=kinds[name])])
    return f"attr {node.name}.{name}={value!r}"


def m_drop_attr(m, rng) -> str:
    """Remove one attribute of one node."""
    nodes = [nd for nd in m.graph.node if nd.attribute]
    if not nodes:
        return "drop attr: none"
    node = rng.choice(nodes)
    i = rng.randrange(len(node.attribute))
    name = node.attribute[i].name
    del node.attribute[i]
    return f"drop attr {node.name}.{name}"


def m_opset(m, rng) -> str:
    """Change the default-domain opset."""
    v = rng.choice((1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, onnx.defs.onnx_opset_version(),
                    onnx.defs.onnx_opset_version() + 1, 99))
    m.opset_import[0].version = v
    return f"opset {v}"


def m_ir_version(m, rng) -> str:
    """Change the model's IR version."""
    v = rng.choice((0, 1, 3, 4, 7, 9, 10, 11, 99))
    m.ir_version = v
    return f"ir_version {v}"


def m_drop_init(m, rng) -> str:
    """Remove one initializer (its consumers now read an undefined tensor)."""
    i = rng.randrange(len(m.graph.initializer))
    name = m.graph.initializer[i].name
    del m.graph.initializer[i]
    return f"drop initializer {name}"


def m_dup_init(m, rng) -> str:
    """Append a second initializer of the same name (same or other values)."""
    t = copy.deepcopy(rng.choice(m.graph.initializer))
    if rng.random() < 0.5 and t.data_type == TensorProto.FLOAT:
        t = numpy_helper.from_array(numpy_helper.to_array(t) * 2 + 1, t.name)
    m.graph.initializer.append(t)
    return f"duplicate initializer {t.name}"


def m_rename_output(m, rng) -> str:
    """Rename a graph output: dangling (no producer) or consistently (producer too)."""
    out = m.graph.output[rng.randrange(len(m.graph.output))]
    old = out.name
    out.name = rng.choice(("renamed", "x", old + "_z"))
    if rng.random() < 0.5:
        for nd in m.graph.node:
            for i, o in enumerate(nd.output):
                if o == old:
                    nd.output[i] = out.name
                    return f"rename output {old}->{out.name} (consistent)"
    return f"rename output {old}->{out.name} (dangling)"


def m_repeat_output(m, rng) -> str:
    """List an output twice, or add an intermediate tensor or the input as an output."""
    pick = rng.choice(("same", "inner", "input"))
    name = {"same": m.graph.output[0].name, "input": "x",
            "inner": rng.choice([o for nd in m.graph.node for o in nd.output])}[pick]
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return f"extra output {name} ({pick})"


def m_const(m, rng) -> str:
    """Put NaN / inf / huge / subnormal values into a float initializer (one or all)."""
    floats = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    if not floats:
        return "const: none"
    t = rng.choice(floats)
    arr = numpy_helper.to_array(t).copy()
    v = rng.choice(CONSTS)
    if rng.random() < 0.5 and arr.size:
        arr.reshape(-1)[rng.randrange(arr.size)] = v
        what = "one"
    else:
        arr[...] = v
        what = "all"
    t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    return f"const {t.name} {what}={v}"


def m_input(m, rng) -> str:
    """Change the input's dims (0, symbolic, batch 2, big, rank 3 or 5) or dtype."""
    tt = m.graph.input[0].type.tensor_type
    pick = rng.choice(("dim", "sym", "rank", "dtype", "noshape"))
    if pick == "dtype":
        tt.elem_type = rng.choice((TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
                                   TensorProto.UINT8, TensorProto.INT64, 0))
        return f"input dtype {tt.elem_type}"
    if pick == "noshape":
        tt.ClearField("shape")
        return "input without shape"
    if pick == "rank":
        if rng.random() < 0.5:
            del tt.shape.dim[0]
        else:
            tt.shape.dim.add().dim_value = 2
        return f"input rank {len(tt.shape.dim)}"
    d = tt.shape.dim[rng.randrange(len(tt.shape.dim))]
    if pick == "sym":
        d.dim_param = "N"
        return "input dim symbolic"
    d.dim_value = rng.choice((0, 1, 2, 3, 5000))
    return f"input dim {d.dim_value}"


def m_nodes(m, rng) -> str:
    """Reverse the node order, duplicate a node, or move a node to an unknown domain."""
    pick = rng.choice(("reverse", "dup", "domain"))
    nodes = list(m.graph.node)
    if pick == "reverse":
        del m.graph.node[:]
        m.graph.node.extend(reversed(nodes))
        return "nodes reversed"
    node = rng.choice(nodes)
    if pick == "dup":
        m.graph.node.append(copy.deepcopy(node))
        return f"node {node.name} duplicated"
    node.domain = rng.choice(("com.microsoft", "ai.onnx.ml", "bogus.domain"))
    return f"node {node.name} domain {node.domain}"


MUTATIONS = (m_attr, m_attr, m_attr, m_drop_attr, m_opset, m_ir_version, m_drop_init,
             m_dup_init, m_rename_output, m_repeat_output, m_const, m_const, m_input, m_nodes)


def _apply(mutation, m: onnx.ModelProto, rng: random.Random) -> str:
    """Apply one mutation; one that does not apply (nothing left to drop) says so."""
    try:
        return mutation(m, rng)
    except (IndexError, ValueError, TypeError) as exc:
        return f"{mutation.__name__}: not applicable ({type(exc).__name__})"


def mutant_cases(folder: Path, count: int, seed: int) -> list:
    """Write the unmutated bases and ``count`` mutants into ``folder``; one corpus Case
    each."""
    from corpus_models import Case

    folder.mkdir(parents=True, exist_ok=True)
    bases = base_models()
    rng = random.Random(seed)
    out = []
    for base in bases:  # the unmutated bases first: each must compile and run bit-exact
        p = folder / f"{base.graph.name}_base.onnx"
        p.write_bytes(base.SerializeToString())
        out.append(Case("mutants", f"{base.graph.name}_base", str(p)))
    for i in range(count):
        base = bases[i % len(bases)]
        m = copy.deepcopy(base)
        done = [_apply(rng.choice(MUTATIONS), m, rng) for _ in range(rng.choice((1, 1, 2, 3)))]
        name = f"{base.graph.name}_{seed}_{i:04d}"
        p = folder / f"{name}.onnx"
        p.write_bytes(m.SerializeToString())
        out.append(Case("mutants", name, str(p), None, tuple(done)))
    return out
