"""The limits a target puts on a program, checked before the reference executor runs it.

A program compiled for one target may be handed to another (a hand-edited manifest, binaries
copied between output folders, a hostile file). :func:`check_program` walks every command once,
with the layer registers it would see, and refuses the program when it asks for more than the
target has, so an illegal program is never silently run. What the target limits (going through
the ISA table, ``tcc_compiler/isa/spec.py``, and the target file, ``specs/target.md``):

- ``memory.sram_capacity_bytes``: the header's ``sram_peak_bytes``, and the SRAM extent of every
  operand of every command (``DMA_LOAD``/``DMA_STORE`` SRAM side with both strides,
  ``DMA_LOAD_Z`` destination, ``CONV_TILE`` input/weights/params/shortcut/output boxes,
  ``POOL_TILE`` input/output, ``ADD_TILE`` a/b/output, ``LUT_TILE`` input/tables/output, ``EW_TILE``
  a/b/output, ``RESIZE_TILE`` input band/output) lie in ``[0, sram_capacity_bytes)``;
- ``compute.image_mode``: a ``CONV_TILE`` under a ``CONV_CFG`` with flags bit1 (image mode)
  needs a target with image mode;
- ``compute.array_in_channels``: image mode packs ``kw * cin_g`` values into one array input
  vector, which must fit the array's input lanes;
- ``compute.depthwise_mode``, ``depthwise_max_kernel``, ``depthwise_max_stride``: a
  ``CONV_TILE`` under a ``CONV_CFG`` with flags bit2 (depthwise mode) needs a target with the
  depthwise datapath, a kernel and stride within its limits and dilation 1.

The other target numbers bound nothing a command encodes: ``macs_per_cycle``,
``array_out_channels`` (a tile's ``oc`` is looped over the array columns), ``vector_lanes``,
``depthwise_channels_per_cycle``, ``depthwise_taps_per_cycle``,
``clock_hz``, the setup cycles, DRAM bandwidth and ``decompress_bytes_per_cycle`` only set
cycles (the cost model); ``sram_align_bytes``/``dram_align_bytes`` are the allocation granularity
of buffers, while commands address boxes inside buffers (a channel range of a resident tensor, a
halo row), so the modelled hardware requires no alignment of command addresses. The DRAM region
sizes come from the ``npu_cmd.bin`` header, not the target; the executor bounds-checks them as
it runs.
"""

from __future__ import annotations

from tcc_compiler.binfmt.cmdfile import CmdFile
from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import (
    AddTile,
    EwTile,
    LutTile,
    Command,
    ConvCfg,
    ConvTile,
    DmaLoad,
    DmaLoadZ,
    DmaStore,
    PoolTile,
    Registers,
    ResizeTile,
    box_strides,
)
from tcc_compiler.target import Target


def _box(what: str, addr: int, h: int, w: int, px_bytes: int, px_stride: int,
         row_stride: int) -> list[tuple[str, int, int]]:
    """SRAM hull ``(what, start, end)`` of an [h, w, px_bytes] strided box; [] when empty.

    Raises:
        ExecutionError: a stride smaller than the packed one (see :func:`box_strides`).
    """
    if not (h and w and px_bytes):
        return []
    px, row = box_strides(w, px_bytes, px_stride, row_stride)
    return [(what, addr, addr + (h - 1) * row + (w - 1) * px + px_bytes)]


def _conv_extents(t: ConvTile, cfg: ConvCfg) -> list[tuple[str, int, int]]:
    """SRAM hulls of a CONV_TILE's operands under ``cfg``."""
    elem = cfg.out_bytes
    out = _box("input", t.in_sram, t.in_h, t.in_w, t.in_c * cfg.in_bytes, t.in_px_stride,
               t.in_row_stride)
    out.append(("weights", t.w_sram,
                t.w_sram + t.oc * cfg.kh * cfg.kw * cfg.cin_g * cfg.w_bytes))
    out.append(("params", t.p_sram, t.p_sram + t.oc * spec.PARAM_RECORD_BYTES))
    if cfg.has_shortcut:
        out += _box("shortcut", t.sc_sram, t.out_h, t.out_w, t.oc * cfg.sc_bytes,
                    t.sc_px_stride, t.sc_row_stride)
    elif cfg.accumulate:
        out += _box("partial sums", t.sc_sram, t.out_h, t.out_w, t.oc * 4, t.sc_px_stride,
                    t.sc_row_stride)
    out += _box("output", t.out_sram, t.out_h, t.out_w, t.oc * elem, t.out_px_stride,
                t.out_row_stride)
    return out


def _resize_extents(cmd: ResizeTile) -> list[tuple[str, int, int]]:
    """SRAM ranges of a RESIZE_TILE's input band and output tile (packed); none when empty."""
    return [(what, a, a + n) for what, a, n in (("input", cmd.in_sram, cmd.in_bytes),
                                                ("output", cmd.out_sram, cmd.out_bytes)) if n]


def sram_extents(cmd: Command, regs: Registers) -> list[tuple[str, int, int]]:
    """The SRAM byte ranges ``(operand, start, end)`` a command touches, as hulls.

    Args:
        cmd: the command. regs: the layer registers before it (``CONV_TILE`` reads ``regs.conv``).

    Returns:
        One hull per operand (empty operands and commands that touch no SRAM give none; a tile
        with no configuration before it gives none: the executor refuses it when it runs).

    Raises:
        ExecutionError: an operand stride smaller than the packed one.
    """
    if isinstance(cmd, (DmaLoad, DmaStore)):
        if not (cmd.run_bytes and cmd.n1 and cmd.n2):
            return []
        end = (cmd.sram + (cmd.n2 - 1) * cmd.sram_stride2 + (cmd.n1 - 1) * cmd.sram_stride1
               + cmd.run_bytes)
        return [("transfer", cmd.sram, end)]
    if isinstance(cmd, DmaLoadZ):
        return [("destination", cmd.sram, cmd.sram + cmd.dst_bytes)] if cmd.dst_bytes else []
    if isinstance(cmd, ConvTile):
        return _conv_extents(cmd, regs.conv) if regs.conv is not None else []
    if isinstance(cmd, PoolTile):
        if regs.pool is None:
            return []
        eb = regs.pool.elem_bytes
        return (_box("input", cmd.in_sram, cmd.in_h, cmd.in_w, cmd.c * eb, cmd.in_px_stride,
                     cmd.in_row_stride)
                + _box("output", cmd.out_sram, cmd.out_h, cmd.out_w, cmd.c * eb,
                       cmd.out_px_stride, cmd.out_row_stride))
    if isinstance(cmd, EwTile) and cmd.n:
        ea, eb, eo = cmd.elem_bytes()
        return [("a", cmd.a_sram, cmd.a_sram + cmd.n * ea),
                ("b", cmd.b_sram, cmd.b_sram + (cmd.b_period or cmd.n) * eb),
                ("output", cmd.out_sram, cmd.out_sram + cmd.n * eo)]
    if isinstance(cmd, LutTile) and cmd.n:
        return [("input", cmd.in_sram, cmd.in_sram + cmd.n),
                ("tables", cmd.lut_sram, cmd.lut_sram + cmd.table_bytes),
                ("output", cmd.out_sram, cmd.out_sram + cmd.n)]
    if isinstance(cmd, ResizeTile):
        return _resize_extents(cmd)
    if isinstance(cmd, AddTile) and cmd.n:
        return [(what, a, a + cmd.n) for what, a in (("a", cmd.a_sram), ("b", cmd.b_sram),
                                                     ("output", cmd.out_sram))]
    return []


def _depthwise_problem(cfg: ConvCfg, target: Target) -> str | None:
    """Why a depthwise-mode CONV_CFG (flags bit2) exceeds ``target``; None if it does not."""
    if not target.depthwise_mode:
        return (f"depthwise mode (CONV_CFG flags bit2), which target {target.name} does not "
                "have (compute.depthwise_mode = false)")
    if max(cfg.kh, cfg.kw) > target.depthwise_max_kernel:
        return (f"depthwise kernel {cfg.kh}x{cfg.kw}, target {target.name} has "
                f"depthwise_max_kernel = {target.depthwise_max_kernel}")
    if max(cfg.sh, cfg.sw) > target.depthwise_max_stride:
        return (f"depthwise stride {cfg.sh}x{cfg.sw}, target {target.name} has "
                f"depthwise_max_stride = {target.depthwise_max_stride}")
    if (cfg.dh, cfg.dw) != (1, 1):
        return f"depthwise dilation {cfg.dh}x{cfg.dw}: depthwise mode has dilation 1 only"
    return None


def command_problem(cmd: Command, regs: Registers, target: Target) -> str | None:
    """Why ``cmd`` (with the layer registers ``regs`` before it) exceeds ``target``; None if
    it does not. The message names the limit and the target field, e.g.
    ``sram range 0x1ff000-0x201000 (output) outside the target's SRAM (tcc750x:
    sram_capacity_bytes = 2097152)``."""
    cfg = regs.conv
    if isinstance(cmd, ConvTile) and cfg is not None and cfg.flags & spec.CONV_FLAG_IMAGE:
        if not target.image_mode:
            return (f"image mode (CONV_CFG flags bit1), which target {target.name} does not "
                    "have (compute.image_mode = false)")
        if cfg.kw * cfg.cin_g > target.array_in_channels:
            return (f"image mode packs kw * cin_g = {cfg.kw} * {cfg.cin_g} = "
                    f"{cfg.kw * cfg.cin_g} values per input vector, target {target.name} has "
                    f"array_in_channels = {target.array_in_channels}")
    if isinstance(cmd, ConvTile) and cfg is not None and cfg.flags & spec.CONV_FLAG_DEPTHWISE:
        problem = _depthwise_problem(cfg, target)
        if problem:
            return problem
    try:
        extents = sram_extents(cmd, regs)
    except ExecutionError as exc:
        return str(exc)
    cap = target.sram_capacity_bytes
    for what, start, end in extents:
        if end > cap:
            return (f"sram range {start:#x}-{end:#x} ({what}) outside the target's SRAM "
                    f"({target.name}: sram_capacity_bytes = {cap})")
    return None


def check_program(cmd: CmdFile, target: Target) -> None:
    """Refuse a program that exceeds ``target``'s limits (see the module docstring).

    Args:
        cmd: the decoded ``npu_cmd.bin``. target: the machine to run it on (the manifest's).

    Raises:
        ExecutionError: one line naming ``cmd.path``, the first offending command's index and
            mnemonic (or, when every command fits, the header field ``sram_peak_bytes``) and
            the target field it exceeds.
    """
    cores = getattr(cmd, "cores", 1)
    if cores > target.cores:
        raise ExecutionError(f"{cmd.path}: header field cores = {cores} exceeds the target's "
                             f"cores ({target.name}: compute.cores = {target.cores})")
    regs = Registers()
    for i, c in enumerate(cmd.commands):  # first: name the command that does not fit
        regs.update(c)
        problem = command_problem(c, regs, target)
        if problem:
            raise ExecutionError(f"{cmd.path}: command {i} ({c.name}): {problem}")
        if c.opcode == spec.END.opcode:   # each core's stream has its own registers
            regs = Registers()
    cap = target.sram_capacity_bytes
    if cmd.sram_peak_bytes > cap:
        raise ExecutionError(f"{cmd.path}: header field sram_peak_bytes = "
                             f"{cmd.sram_peak_bytes} exceeds the target's SRAM "
                             f"({target.name}: sram_capacity_bytes = {cap})")
