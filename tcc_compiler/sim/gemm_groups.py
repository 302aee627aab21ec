"""Conv tiles of a repeat in-order run that read the same input bytes with one GEMM geometry
(:func:`shared_input_groups`): the replay (:mod:`tcc_compiler.sim.replay`) gives each group
one integer GEMM over the concatenated weights
(:func:`~tcc_compiler.numerics.accumulator.shared_input`).

Why: a layer whose output channels do not fit one tile is split into tiles that all read one
input (EfficientNet-Lite0's head conv into 20 tiles, its classifier into 15); each tile's GEMM
paid the kernel's fixed cost and the packing of its own small weight block.

Exactness condition: every member reads its input through the same SRAM view (byte range,
shape and strides), with the same zero point and window, and no command run between the
group's first tile and its last writes a byte of that range (the write hulls of the command
stream's SRAM writes, which an in-order run repeats; a command whose hull is unknown ends every
open group). The members need not be adjacent: loads of the next tile's weights and stores of
the previous tile's output run between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tcc_compiler.numerics.accumulator import GemmRoutine


def shared_input_groups(order: Sequence[int], ready: dict, writes: dict,
                        handled: Callable[[int], bool]) -> list[list[int]]:
    """Groups (two or more command indices each, in run order) of the tiles in ``order`` that
    may share one GEMM (module docstring).

    Args:
        order: the command indices a repeat in-order run executes, in order.
        ready: command index -> (plan, params, weights, accumulator routine, plain step) of
            the tiles with kept operands (:attr:`~tcc_compiler.sim.conv_operands.ConvOperands.
            ready`); only tiles whose routine is a
            :class:`~tcc_compiler.numerics.accumulator.GemmRoutine` and whose plan holds a
            view of the input (``plan.x``) take part.
        writes: command index -> (its SRAM write hull (start, end) in bytes or None, ...) of
            every handled command (recorded on an in-order run).
        handled: whether command ``i`` has a handler (else a register or sync command, which
            writes no memory).
    """
    open_: dict[tuple, tuple[tuple[int, int], list[int]]] = {}
    groups: list[list[int]] = []

    def close(keys) -> None:
        for k in list(keys):
            members = open_.pop(k)[1]
            if len(members) > 1:
                groups.append(members)

    for i in order:
        r = ready.get(i)
        if r is not None and isinstance(r[3], GemmRoutine) and r[0].x is not None:
            pl = r[0]
            lo, hi = (a - _address(pl.sram.arr) for a in _bounds(pl.x))
            key = (lo, hi, pl.x.shape, pl.x.strides, r[3].key)
            open_.setdefault(key, ((lo, hi), []))[1].append(i)
        if not handled(i):
            continue
        w = writes.get(i)
        if w is None:   # its writes are not known: nothing stays grouped across it
            close(open_)
        elif w[0] is not None:
            s, e = w[0]
            close([k for k, ((lo, hi), _) in open_.items() if s < hi and lo < e])
    close(open_)
    return sorted(groups)


def _address(a: np.ndarray) -> int:
    """Address of ``a``'s first element."""
    return a.__array_interface__["data"][0]


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """The addresses [start, end) of the bytes a view ``a`` (any strides) reaches."""
    lo = hi = _address(a)
    if a.size == 0:
        return lo, lo
    for n, st in zip(a.shape, a.strides):
        if st < 0:
            lo += (n - 1) * st
        else:
            hi += (n - 1) * st
    return lo, hi + a.itemsize
