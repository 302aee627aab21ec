"""One input of a graph, as every stage that runs it takes it.

A whole model has one graph input (the image); an NPU segment cut from a bigger model may
have several (specs/manifest.md, "Segmented layout"). One input of such a graph -- one
calibration sample, one run -- is then a dict ``{graph input name: float32 array}``; a graph
with one input also takes the bare array. Calibration, GPTQ, bias correction, ``analyze`` and
the golden model all turn what they are given into the dict with :func:`feeds`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph


def feeds(graph: Graph, x) -> dict[str, np.ndarray]:
    """``{input name: float32 array}`` of one input ``x`` of ``graph``.

    Args:
        graph: the graph (its ``inputs`` in order, NCHW shapes).
        x: an array (the first input's; only for a graph with one input) or a mapping with
            an array for every graph input (extra keys are ignored).

    Returns:
        The arrays as float32, keyed by graph input name, in ``graph.inputs`` order (not
        copied when already float32).

    Raises:
        InputError: an array for a graph with several inputs, a missing input, or an array
            whose shape is not its input's.
    """
    if isinstance(x, Mapping):
        missing = [v.name for v in graph.inputs if v.name not in x]
        if missing:
            raise InputError(f"input: no array for graph input(s) {', '.join(missing)}")
        out = {v.name: np.asarray(x[v.name], dtype=np.float32) for v in graph.inputs}
    elif len(graph.inputs) != 1:
        raise InputError(f"input: the graph takes {len(graph.inputs)} inputs "
                         f"({', '.join(v.name for v in graph.inputs)}); give a dict of arrays")
    else:
        out = {graph.inputs[0].name: np.asarray(x, dtype=np.float32)}
    for v in graph.inputs:
        if tuple(out[v.name].shape) != tuple(v.shape):
            raise InputError(f"input '{v.name}': shape {tuple(out[v.name].shape)}, the graph "
                             f"expects {tuple(v.shape)}")
    return out


def first(x) -> np.ndarray:
    """The first input's array of one input ``x`` (a mapping's first value, else ``x``)."""
    if isinstance(x, Mapping):
        return next(iter(x.values()))
    return x
