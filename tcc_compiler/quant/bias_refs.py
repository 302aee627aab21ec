"""The float network outputs of every calibration input, kept from calibration's float pass for
bias correction's two-fold check (:func:`~tcc_compiler.quant.bias_correction.
gated_bias_correction`).

The check judges the corrections of one half of the inputs by the network output SQNR on the
other half; its first fold needs, on the odd inputs, only the float outputs and two golden-model
runs. With the outputs kept here that fold runs without a float pass over the odd inputs, and
their float values and per-layer errors are computed only when the fold gains (ResNet-50, 8
photos, where it loses: 4 of the check's 8 ONNX Runtime runs and half its error jobs left out).
"""

from __future__ import annotations

import threading

import numpy as np

from tcc_compiler.ir.graph import Graph

#: Most bytes of float outputs kept over all calibration inputs; beyond it nothing is kept
#: (the check then runs its own float pass over every input, as without this module).
REFS_BYTES = 64 << 20


class OutputRefs:
    """Collects the graph outputs of each calibration input as calibration's float pass computes
    them (:meth:`visit`, handed to :func:`~tcc_compiler.quant.calibrate.observe` as ``also``:
    called for every value, from worker threads, each name once per input and in input order).

    Args:
        graph: the float graph calibrated (its ``outputs`` are kept).
        budget: most bytes kept (:data:`REFS_BYTES`); past it everything is dropped.
    """

    def __init__(self, graph: Graph, budget: int = REFS_BYTES) -> None:
        self.names = [o.name for o in graph.outputs]
        self.budget = budget
        self._kept: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self._bytes = 0
        self._over = False
        self._lock = threading.Lock()

    def visit(self, name: str, value: np.ndarray) -> None:
        """Keep a copy of ``value`` when ``name`` is a graph output (any array, any dtype)."""
        if name not in self._kept or self._over:
            return
        copy = np.array(value, copy=True)   # the float pass may reuse its buffers
        with self._lock:
            self._bytes += copy.nbytes
            if self._bytes > self.budget:
                self._over = True
                for kept in self._kept.values():
                    kept.clear()
                return
            self._kept[name].append(copy)

    def per_input(self, count: int) -> list[dict] | None:
        """[{output name: array}] for inputs ``0 .. count - 1`` in order, or None: over the
        budget, or not exactly ``count`` values of every output seen."""
        if self._over or not self.names \
                or any(len(kept) != count for kept in self._kept.values()):
            return None
        return [{name: self._kept[name][i] for name in self.names} for i in range(count)]
