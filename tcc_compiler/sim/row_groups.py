"""Consecutive 1x1 conv tiles of a repeat in-order run that cut one layer's input into bands
of rows lying one after another in the SRAM (:func:`row_groups`): the replay
(:mod:`tcc_compiler.sim.replay`) gives each group one integer GEMM over the union of their
inputs, then each tile's own epilogue into its own output box (:func:`row_group_step`).

Why: EfficientNet-Lite0's 14x14 layers run as two tiles of 7 rows, its 7x7 projections as 4
and 3 rows, ResNet-50's stage 4 likewise; each tile paid the integer GEMM's fixed cost (an ONNX
Runtime call, about 3 us here) and its own ``x + 128`` copy (about 1 us).

Exactness condition: the members run one right after the other (only register updates between
them, which write no memory), under the same CONV_CFG command, with the same decoded
parameters and the same prepared weights; each is a 1x1, stride-1, unpadded GEMM tile on its
plainest route (:func:`~tcc_compiler.sim.conv_exec.plain_gemm_args`); their inputs are
C-contiguous int8 views of the SRAM, each starting where the one before ends; and no member's
output shares a byte with a later member's input (the union's GEMM reads every input before
any member writes; a later member's shortcut is read by its own epilogue, after the earlier
members' epilogues, as on the general route). A 1x1 stride-1 unpadded conv's accumulator row of
a pixel depends on that pixel's input row alone, and the integer GEMM's every output row is the
exact int32 sum of its own row of ``a`` (:mod:`~tcc_compiler.numerics.int8_gemm`), so the
union's rows are each member's accumulators; each member's epilogue is then the call its own
plain step makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.accumulator import GemmRoutine, accumulator, packed
from tcc_compiler.numerics.epilogue import channel_clamp
from tcc_compiler.numerics.int8_gemm import PACKED_MAX_ROWS
from tcc_compiler.sim.conv_exec import plain_gemm_args


def _address(a: np.ndarray) -> int:
    """Address of ``a``'s first element."""
    return a.__array_interface__["data"][0]


def _member(r: tuple | None):
    """(plan, params, weights, epilogue args) of a tile that may join a group (module
    docstring: a 1x1 stride-1 unpadded integer-GEMM tile on its plainest route, its input a
    C-contiguous int8 view), else None. ``r``: its entry in
    :attr:`~tcc_compiler.sim.conv_operands.ConvOperands.ready`."""
    if r is None or r[4] is None or not isinstance(r[3], GemmRoutine):
        return None
    pl, cp, cw, acc = r[:4]
    k = acc.key
    if k[4:] != (1, 1, (1, 1), (0, 0, 0, 0), (1, 1)) or pl.x is None \
            or pl.x.dtype != np.int8 or not pl.x.flags.c_contiguous:
        return None
    args = plain_gemm_args(pl, cp, acc)
    return None if args is None else (pl, cp, cw, args)


def _joins(prev: tuple, cur: tuple, members: list) -> bool:
    """Whether tile ``cur`` may follow ``prev`` (the last of ``members``) in a group."""
    (pa, ca, wa, _), (pb, cb, wb, _) = prev, cur
    if pa.cfg is not pb.cfg or ca is not cb or wa is not wb or pa.sram is not pb.sram \
            or pa.x.shape[2] != pb.x.shape[2] or _address(pb.x) != _address(pa.x) + pa.x.nbytes:
        return False
    return not any(np.may_share_memory(m[3][0][-1], pb.x) for m in members)


def row_groups(order: Sequence[int], ready: dict, handled: Callable[[int], bool],
               taken: set) -> list[list[int]]:
    """Groups (two or more command indices each, in run order) of the tiles in ``order``
    that may share one GEMM over their joined inputs (module docstring).

    Args:
        order: the command indices a repeat in-order run executes, in order.
        ready: command index -> (plan, params, weights, accumulator routine, plain step) of
            the tiles with kept operands (:attr:`~tcc_compiler.sim.conv_operands.
            ConvOperands.ready`).
        handled: whether command ``i`` has a handler (else a register or sync command,
            which writes no memory).
        taken: command indices already given another shared GEMM (left out).
    """
    groups: list[list[int]] = []
    run: list[int] = []
    info: list[tuple] = []

    def close() -> None:
        if len(run) > 1:
            groups.append(list(run))
        run.clear()
        info.clear()

    for i in order:
        if not handled(i):
            continue
        m = None if i in taken else _member(ready.get(i))
        if m is None:
            close()
            continue
        if run and not _joins(info[-1], m, info):
            close()
        run.append(i)
        info.append(m)
    close()
    return groups


def row_group_step(members: list[tuple]) -> Callable[[], bool]:
    """One step computing every member of a group (:func:`row_groups`): the integer GEMM of
    their joined inputs (:func:`~tcc_compiler.numerics.accumulator.accumulator` over the
    union, its weights packed once as a tile's, :func:`~tcc_compiler.numerics.accumulator.
    packed`), then per member, in order, the compiled epilogue of its rows straight into its
    output box and its per-channel clamp. Returns False (nothing written) when the compiled
    kernels are off by then (the caller runs the members' own steps).

    Args:
        members: per tile, in run order, its :attr:`~tcc_compiler.sim.conv_operands.
            ConvOperands.ready` entry (plan, params, weights, routine, plain step).
    """
    pl0, cp0, cw = members[0][:3]
    rows = [m[0].oh * m[0].ow for m in members]
    total, c = sum(rows), pl0.x.shape[2]
    sram = pl0.sram.arr
    start = _address(pl0.x) - _address(sram)
    x = sram[start:start + total * c].view(np.int8).reshape(1, total, c)
    acc = packed(accumulator(x.shape, pl0.cfg.zp_in, cw, (1, 1), (0, 0, 0, 0), (1, 1),
                             total <= PACKED_MAX_ROWS))
    if acc is None:
        raise ValueError("row group: no integer GEMM for the joined input")
    cuts = np.cumsum([0] + rows).tolist()
    parts = []
    for (pl, cp, _, routine, _), a, b in zip(members, cuts[:-1], cuts[1:]):
        epi, clamp = plain_gemm_args(pl, cp, routine)
        parts.append((a, b, (pl.oh, pl.ow, pl.direct.shape[2]), epi, clamp))
    available, epilogue_into = jit.available, jit.epilogue_into

    def step() -> bool:
        if not available():
            return False
        y = acc(x).reshape(total, -1)
        for a, b, shape, epi, clamp in parts:
            epilogue_into(y[a:b].reshape(shape), *epi)
            channel_clamp(epi[-1], *clamp)
        return True
    return step
