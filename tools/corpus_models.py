"""The corpus: every ONNX model tccc can reach without a network, written to a folder.

Sources (:data:`SOURCES`):

- ``node``: the onnx wheel's node tests (``onnx.backend.test`` generates them in memory; each
  is written to ``node/<test>.onnx``);
- ``pytorch-converted``, ``pytorch-operator``, ``simple``, ``light``: the model files shipped
  in the wheel (``onnx/backend/test/data/<kind>/*``; ``real`` only points at ``light``);
- ``zoo``: every ``tccc zoo`` model at every seed resolution (``--quick``: small inputs);
- ``mutants``: seeded mutations of small models that compile (:mod:`corpus_mutants`).

``--input`` (decided here, documented in tools/corpus.py): derived from the model's own input
when it has exactly one non-initializer graph input of rank 4 with positive fixed dims
``[N, C, H, W]`` (``WxHxC``; N is left to the compiler, which refuses N > 1); otherwise no
``--input`` is given and the compiler must refuse the model by itself (not an image model:
several inputs, another rank, symbolic dims) with exit 2 and one line.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
WHEEL_KINDS = ("pytorch-converted", "pytorch-operator", "simple", "light")
SOURCES = ("node",) + WHEEL_KINDS + ("zoo", "mutants")
#: The seed resolutions (W x H x C) of every zoo model, and the --quick ones (the same aspect
#: ratios, one tenth of the size, at least the zoo's 32 px; plus 128x64x3, a size every zoo
#: model takes, since FlowNetS needs multiples of 64, the YOLOs of 32 and SSDLite 64 px: a
#: size a model refuses is an expected zoo refusal, and each model still compiles once).
ZOO_SIZES = ("224x224x3", "640x320x3", "960x520x3")
ZOO_QUICK_SIZES = ("32x32x3", "64x32x3", "96x52x3", "128x64x3")


@dataclass(frozen=True)
class Case:
    """One corpus model.

    Attributes:
        source: one of :data:`SOURCES`.
        name: unique within the source.
        path: the .onnx file (zoo: written by ``tccc zoo`` in the worker, as a case step).
        zoo: ``(model name, "WxHxC")`` for zoo cases, else None.
        mutations: what the mutant generator did (mutants only).
    """

    source: str
    name: str
    path: str
    zoo: tuple[str, str] | None = None
    mutations: tuple[str, ...] = ()


def image_input_whc(model: onnx.ModelProto) -> str | None:
    """``"WxHxC"`` of the model's single rank-4 NCHW input with fixed dims, else None."""
    inits = {t.name for t in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1 or not ins[0].type.HasField("tensor_type"):
        return None
    shape = ins[0].type.tensor_type.shape
    if not ins[0].type.tensor_type.HasField("shape") or len(shape.dim) != 4:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.dim]
    if min(dims) <= 0:
        return None
    return f"{dims[3]}x{dims[2]}x{dims[1]}"


def node_cases(folder: Path) -> list[Case]:
    """Write every node test model of the onnx wheel into ``folder``; one Case each."""
    from onnx.backend.test.loader import load_model_tests

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators warn about float overflow
        tests = load_model_tests(kind="node")
    out = []
    for t in sorted(tests, key=lambda t: t.name):
        if t.model is None:
            continue
        p = folder / f"{t.name}.onnx"
        p.write_bytes(t.model.SerializeToString())
        out.append(Case("node", t.name, str(p)))
    return out


def wheel_cases(kind: str) -> list[Case]:
    """The model files the onnx wheel ships under ``backend/test/data/<kind>``."""
    root = ONNX_DATA / kind
    if not root.is_dir():
        return []
    files = sorted(root.glob("*/model.onnx")) + sorted(root.glob("*.onnx"))
    return [Case(kind, p.parent.name if p.name == "model.onnx" else p.stem, str(p))
            for p in files]


def zoo_cases(folder: Path, quick: bool) -> list[Case]:
    """Every zoo model at every seed resolution (small ones with ``quick``)."""
    from tcc_compiler.zoo import NAMES

    sizes = ZOO_QUICK_SIZES if quick else ZOO_SIZES
    folder.mkdir(parents=True, exist_ok=True)  # tccc zoo -o wants an existing folder
    return [Case("zoo", f"{n}@{s}", str(folder / f"{n}_{s}.onnx"), (n, s))
            for n in NAMES for s in sizes]


def collect(sources: list[str], folder: Path, quick: bool, n_mutants: int,
            seed: int) -> list[Case]:
    """Every case of ``sources`` (model files written under ``folder``), in a stable order."""
    cases: list[Case] = []
    for src in sources:
        if src == "node":
            cases += node_cases(folder / "node")
        elif src in WHEEL_KINDS:
            cases += wheel_cases(src)
        elif src == "zoo":
            cases += zoo_cases(folder / "zoo", quick)
        elif src == "mutants":
            from corpus_mutants import mutant_cases

            cases += mutant_cases(folder / "mutants", n_mutants, seed)
        else:
            raise ValueError(f"unknown corpus source {src!r} (one of {', '.join(SOURCES)})")
    return cases


def run_input(model_path: str, out_dir: Path, shape: list[int]) -> Path:
    """A seeded float32 standard-normal ``.npy`` of ``shape`` (NCHW) for ``run --check``
    (any channel count, unlike photos), written next to the compiled folder."""
    rng = np.random.default_rng(zlib.crc32(Path(model_path).name.encode()))
    p = out_dir.parent / (out_dir.name + "_input.npy")
    np.save(p, rng.standard_normal(shape).astype(np.float32))
    return p
