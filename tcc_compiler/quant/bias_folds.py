"""The pieces of bias correction's two-fold check (:func:`~tcc_compiler.quant.bias_correction.
gated_bias_correction`): a half of the calibration inputs, the network output SQNR summed over
held-out inputs, and whether outputs kept from calibration are those of the check's own float
pass."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class Sqnr:
    """Running ``10 log10(sum ref^2 / sum (ref - got)^2)`` in dB over every output element
    (float64 sums, added in the order given)."""

    def __init__(self):
        self.ref = 0.0
        self.err = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Add one output: ``ref`` the float value, ``got`` the network's (any shape, same
        size; any real dtype, taken as float64)."""
        r = np.asarray(ref, np.float64).reshape(-1)
        self.ref += float(np.dot(r, r))
        e = r - np.asarray(got, np.float64).reshape(-1)
        self.err += float(np.dot(e, e))

    def db(self) -> float:
        """The SQNR so far in dB (inf without error)."""
        if self.err == 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.ref, 1e-300) / self.err)


class Half(Sequence):
    """The inputs at positions ``first, first + 2, ...`` of ``inputs`` (a view: a lazy
    sequence still loads one input at a time).

    Raises:
        IndexError: an index outside the half (``__getitem__``)."""

    def __init__(self, inputs: Sequence, first: int):
        self.inputs, self.first = inputs, first

    def __len__(self) -> int:
        return (len(self.inputs) - self.first + 1) // 2

    def __getitem__(self, j):
        if not 0 <= j < len(self):
            raise IndexError(j)
        return self.inputs[self.first + 2 * j]


def add_fold(sq: tuple, outs: list, ref: dict, got: dict, fix: dict) -> None:
    """Add one held-out input to a fold's SQNRs ``sq`` (:class:`Sqnr` without and with the
    correction): for each output name in ``outs``, ``ref`` its float value, ``got`` and
    ``fix`` the uncorrected and corrected networks' ({name: array})."""
    base, fixed = sq
    for o in outs:
        base.add(ref[o], got[o])
        fixed.add(ref[o], fix[o])


def same_outputs(kept: dict, outs: list, values: list) -> bool:
    """Whether ``kept`` ({output name: array}) holds ``values`` (arrays, in ``outs`` order)
    bit for bit: the same dtypes, shapes and bytes."""
    return all(o in kept and kept[o].dtype == v.dtype and kept[o].shape == v.shape
               and kept[o].tobytes() == v.tobytes() for o, v in zip(outs, values))
