"""A conv tile's operands the reference executor prepares once and reuses: its decoded
parameter records (:class:`~tcc_compiler.sim.conv_params.ConvParamCache`), its GEMM-ready
weights (:class:`~tcc_compiler.sim.conv_exec.ConvWeightCache`), both found by the weight load
their SRAM bytes came from (:mod:`tcc_compiler.sim.provenance`), and the accumulator routine
chosen once for the tile (:func:`~tcc_compiler.numerics.accumulator.accumulator`).

Remembered sources: provenance is a function of the commands run before and their layer
registers only, never of the data; every run starts from empty provenance; and an in-order
run executes the same commands in the same order every time (each core's stream; with
several cores, :attr:`~tcc_compiler.sim.hazards.Ordering.base_order`). So command i sees the
same sources on every in-order run: the sources each tile saw on one complete in-order run
are remembered, and later in-order runs take them from there and track no provenance at all
(:meth:`ConvOperands.start`). A tile with both sources also keeps its params, weights and
accumulator routine (:attr:`ConvOperands.ready`), from its first in-order run on (the sources
it sees there are the ones every in-order run sees): the caches would return those very
objects again. A tile with a source of None gets None again, which is always correct (the
caches then compare the bytes). A random schedule (another order) tracks as before and
remembers nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.commands import Command, ConvTile
from tcc_compiler.numerics.accumulator import accumulator, depthwise_epilogue, packed
from tcc_compiler.numerics.int8_gemm import PACKED_MAX_ROWS
from tcc_compiler.sim.conv_exec import ConvWeightCache, plain_step
from tcc_compiler.sim.conv_params import ConvParamCache, ParamRecordError
from tcc_compiler.sim.conv_tile import ConvPlan
from tcc_compiler.sim.param_origin import record_origin
from tcc_compiler.sim.provenance import Provenance

#: How a run finds the sources (module docstring): tracked as the commands run; tracked and
#: remembered per command index (an in-order run); remembered, nothing tracked.
TRACK, RECORD, REUSE = 0, 1, 2


def _no_track(i: int, cmd: Command) -> None:
    """What a run that remembers its sources does after a command (:data:`REUSE`)."""


class ConvOperands:
    """The conv tiles' prepared operands of one executor (module docstring).

    Args:
        weight_file: the decoded ``quantized_network.bin`` (named in errors about its bytes),
            or None. cmd_path: the ``npu_cmd.bin`` path (named likewise).

    Attributes:
        params, weights: the parameter and weight caches.
        ready: command index -> (plan, params, weights, accumulator routine or None, its
            :func:`~tcc_compiler.sim.conv_exec.plain_step` or None) of a tile whose sources
            are known on an in-order run (:data:`RECORD` or :data:`REUSE`).
        mode: :data:`TRACK`, :data:`RECORD` or :data:`REUSE` for the current run.
    """

    def __init__(self, weight_file, cmd_path: str):
        self.params = ConvParamCache()
        self.weights = ConvWeightCache()
        self.ready: dict[int, tuple] = {}
        self.mode = TRACK
        self._weight_file = weight_file
        self._cmd_path = cmd_path
        self._srcs: dict[int, tuple] = {}   # command index -> (params source, weights source)
        self._complete = False              # an in-order run went through every command

    def start(self, schedule: str, track: Callable[[int, Command], None]):
        """Begin a run under ``schedule`` ("inorder" or another): set :attr:`mode` and return
        what the executor calls after each handled command: ``track`` (its provenance
        update), or nothing when the sources are remembered."""
        if schedule != "inorder":
            self.mode = TRACK
        else:
            self.mode = REUSE if self._complete else RECORD
        return _no_track if self.mode == REUSE else track

    def finish(self) -> None:
        """The run went through every command: a recording run's sources are complete."""
        self._complete |= self.mode == RECORD

    def sources(self, i: int, t: ConvTile, pl: ConvPlan, prov: Provenance) -> tuple:
        """(params source, weights source) of tile ``i`` (either None): looked up in
        ``prov``, or remembered (:data:`REUSE`)."""
        if self.mode == REUSE:
            return self._srcs.get(i, (None, None))
        srcs = (prov.source_of(t.p_sram, pl.p_raw.size), prov.source_of(t.w_sram, pl.w.nbytes))
        if self.mode == RECORD:
            self._srcs[i] = srcs
        return srcs

    def get(self, i: int, t: ConvTile, pl: ConvPlan, prov: Provenance,
            err: Callable[[int, Command, str], ExecutionError]) -> tuple:
        """(decoded parameter records, prepared weights, accumulator routine or None) of tile
        ``i`` under its plan ``pl``; kept in :attr:`ready` when both sources are known on an
        in-order run (recorded or remembered: the same on every such run).

        Raises:
            ExecutionError: a bad parameter record (``err``'s message naming the command, or
                the weight file's bytes when a weight load brought them).
        """
        cfg = pl.cfg
        p_src, w_src = self.sources(i, t, pl, prov)
        try:
            cp = self.params.get(pl.p_raw, cfg, p_src, pl.fields)
        except ParamRecordError as exc:   # bytes a weight load brought: the weight file's fault
            origin = record_origin(self._weight_file, p_src, exc.record)
            if origin is None:
                raise err(i, t, str(exc)) from None
            raise ExecutionError(f"{origin}: {exc} (read by command {i} ({t.name}) of "
                                 f"{os.path.basename(self._cmd_path)})") from None
        except ValueError as exc:
            raise err(i, t, str(exc)) from None
        cw = self.weights.get(t.w_sram, pl.w, pl.groups, w_src)
        acc_fn = fused = None
        if self.mode != TRACK and p_src is not None and w_src is not None:
            if cfg.in_bytes == 1 and not cfg.wide_weights and pl.x is not None:
                acc_fn = packed(accumulator(pl.x.shape, cfg.zp_in, cw, pl.strides, t.pads,
                                            pl.dilations, pl.oh * pl.ow <= PACKED_MAX_ROWS))
                # run many times: b packed once (from the second run on), so a GEMM of few
                # rows takes the integer kernel whatever its size (EfficientNet-Lite0's last
                # classifier tile)
                if acc_fn is not None and cw.dw is not None and not cfg.has_shortcut:
                    fused = depthwise_epilogue(pl.x.shape, cfg.zp_in, cw, pl.strides,
                                               t.pads, pl.dilations, cp.jit, cfg.zp_out,
                                               cfg.act_lo, cfg.act_hi)
            self.ready[i] = (pl, cp, cw, acc_fn, plain_step(pl, cp, cw, acc_fn, fused, t.pads))
        return cp, cw, acc_fn
