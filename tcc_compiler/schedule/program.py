"""The hardware-boundary data model between scheduling and emission (as Vela's ``api.py``).

A :class:`Program` is everything the emitters (:mod:`tcc_compiler.binfmt`, the manifest and
report builders) need and nothing of the graph IR: the command stream with its provenance
comments and history slots, the network's input/output descriptors (:class:`IoTensor`), the
per-op facts (:class:`LayerInfo`), the DRAM/SRAM sizes, and the WEIGHTS region laid out block
by block (:class:`~tcc_compiler.isa.wlayout.WeightLayout`), from which
``quantized_network.bin`` is written. :class:`Tensor` and :class:`Resident` are the tile/IO
descriptors the lowering addresses: where a tensor lives in DRAM, or whole in SRAM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.isa.wlayout import WeightLayout

#: History slots of the DMA streams (specs/isa.md): each stream's addresses advance by a
#: constant stride in its own history, so the encoder spends no bytes on them.
SLOT_INPUT, SLOT_WEIGHTS, SLOT_PARAMS, SLOT_SHORTCUT = 0, 1, 2, 3


class _NhwcSized:
    """Mixin: ``nbytes`` of an NHWC buffer with attributes ``hwc`` and ``elem_bytes``."""

    hwc: tuple[int, int, int]
    elem_bytes: int

    @property
    def nbytes(self) -> int:
        """Size in bytes: H * W * C * element bytes."""
        h, w, c = self.hwc
        return h * w * c * self.elem_bytes


@dataclass(frozen=True)
class Tensor(_NhwcSized):
    """Where an NPU tensor lives in DRAM: region, byte offset, NHWC shape, element bytes, and
    ``px_bytes``, the bytes from one pixel to the next along W (0 = packed, ``C * elem_bytes``;
    more when the tensor is a channel slice of a wider buffer) and ``row_bytes``, from one row
    to the next (0 = ``W * pitch``; more for one phase of an interleave): schedule/views.py."""

    region: Region
    offset: int
    hwc: tuple[int, int, int]
    elem_bytes: int = 1
    px_bytes: int = 0
    row_bytes: int = 0

    @property
    def pitch(self) -> int:
        """Bytes from one pixel to the next along W."""
        return self.px_bytes or self.hwc[2] * self.elem_bytes

    @property
    def row(self) -> int:
        """Bytes from one row to the next."""
        return self.row_bytes or self.hwc[1] * self.pitch

    @property
    def packed(self) -> bool:
        """True when the tensor's bytes are contiguous (not a channel slice or phase)."""
        return self.pitch == self.hwc[2] * self.elem_bytes and self.row == self.hwc[1] * self.pitch

    def addr(self, extra: int = 0) -> int:
        """u32 DRAM address of byte ``extra`` of the tensor (of its first pixel's channels
        when it is not packed)."""
        return dram_address(self.region, self.offset + extra)

    def moved(self, shift: dict) -> "Tensor":
        """This tensor ``shift[region]`` bytes further into its region (another image's copy
        of it, schedule/batch.py); itself when its region is not in ``shift``."""
        d = shift.get(self.region, 0)
        return dataclasses.replace(self, offset=self.offset + d) if d else self

    def channels(self, c0: int, hwc: tuple[int, int, int]) -> "Tensor":
        """The view of channels [c0, c0 + hwc[2]) of this tensor (same H, W)."""
        return self.view((c0, 0, 0, 1, 1), hwc)

    def view(self, spec: tuple[int, int, int, int, int], hwc: tuple[int, int, int]) -> "Tensor":
        """The view ``spec`` = (c0, y0, x0, sy, sx) of this tensor with shape ``hwc``: its
        element (y, x, c) is this tensor's (y0 + sy * y, x0 + sx * x, c0 + c)."""
        c0, y0, x0, sy, sx = spec
        off = self.offset + y0 * self.row + x0 * self.pitch + c0 * self.elem_bytes
        return Tensor(self.region, off, hwc, self.elem_bytes, sx * self.pitch, sy * self.row)


@dataclass(frozen=True)
class Resident(_NhwcSized):
    """An NHWC tensor kept in the SRAM resident zone: byte offset, shape (the whole tensor's),
    element bytes. Producers' compute writes it and consumers' compute reads boxes of it
    (strided operands), with no DMA. ``rows`` = (lo, hi): only rows [lo, hi) of the tensor
    are kept, packed from ``sram`` (one core's band of a tensor split by rows between two
    cores, schedule/corebands.py); None: the whole tensor. ``c0``: a channel slice of the
    tensor kept there (a concat input or a slice of a concat kept in per-core bands): its
    channels start at channel ``c0`` of the NHWC pixels of ``hwc`` (the whole buffer's shape,
    whose bytes ``nbytes`` / ``span`` cover), read and written as strided boxes (:meth:`box`);
    0: the tensor itself."""

    sram: int
    hwc: tuple[int, int, int]
    elem_bytes: int = 1
    rows: tuple[int, int] | None = None
    c0: int = 0

    @property
    def nbytes(self) -> int:
        """SRAM bytes held: the kept rows x W x C x element bytes."""
        h, w, c = self.hwc
        lo, hi = self.rows or (0, h)
        return (hi - lo) * w * c * self.elem_bytes

    @property
    def span(self) -> tuple[int, int]:
        """The SRAM byte interval [start, end) the tensor occupies."""
        return self.sram, self.sram + self.nbytes

    def at(self, e0: int) -> int:
        """SRAM address of element ``e0`` of the tensor in NHWC order (in the kept rows).

        Raises:
            InternalError: the resident is a channel slice (its elements are not flat)."""
        if self.c0:
            raise InternalError("flat element address of a channel slice kept in SRAM")
        h, w, c = self.hwc
        lo = self.rows[0] if self.rows else 0
        return self.sram + (e0 - lo * w * c) * self.elem_bytes

    def moved(self, sram_bytes: int) -> "Resident":
        """This tensor ``sram_bytes`` higher in the SRAM (another image's copy of it,
        schedule/batch.py)."""
        return dataclasses.replace(self, sram=self.sram + sram_bytes) if sram_bytes else self

    def box(self, y0: int, x0: int, c0: int, cols: int, nch: int) -> dict:
        """SRAM address and (pixel, row) strides of the box starting at (y0, x0, c0) (tensor
        coordinates, ``y0`` within the kept rows) with ``cols`` columns and ``nch`` channels;
        a stride equal to the packed one is coded 0."""
        _, w, c = self.hwc
        eb = self.elem_bytes
        px, row = c * eb, w * c * eb
        y = y0 - (self.rows[0] if self.rows else 0)
        return dict(addr=self.sram + ((y * w + x0) * c + self.c0 + c0) * eb,
                    px=0 if px == nch * eb else px, row=0 if cols == w else row)


@dataclass
class LayerInfo:
    """Per-NPU-op facts for the report and the disassembly (filled while the op is lowered).

    Attributes:
        name: IR node name. kind: op kind (conv, fc, maxpool, gap, avgpool, add).
        source: ONNX node names it came from. in_shape/out_shape: NCHW.
        tiles: compute tiles. macs: multiply-accumulates. plan: tile shape description.
        first_cmd, end_cmd: command index range [first, end). weight_bytes: weights + params
        as stored in quantized_network.bin (compressed when so), bytes. weight_raw_bytes: the
        same before compression (int8 OHWI weights + 16-byte parameter records), bytes; 0 for
        ops without weights. weight_file_bytes: the layer's blob bytes in the file (its layer
        table entry's stored size; may exceed weight_bytes by the compressed blobs' block
        index). sram_peak_bytes: SRAM the op's buffers use.
        cmds: indices of the op's own commands when they interleave with other ops' (a
            cascaded chain, schedule/cascade.py); None when they are [first_cmd, end_cmd).
        depthwise: the op's MACs run on the depthwise datapath (CONV_CFG flags bit2), not the
            MAC array.
    """

    name: str
    kind: str
    source: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    tiles: int = 0
    macs: int = 0
    plan: str = ""
    first_cmd: int = 0
    end_cmd: int = 0
    weight_bytes: int = 0
    weight_raw_bytes: int = 0
    weight_file_bytes: int = 0
    sram_peak_bytes: int = 0
    cmds: list[int] | None = None
    depthwise: bool = False


@dataclass(frozen=True)
class IoTensor:
    """A network input or output as the host sees it in its DRAM region (NHWC ``hwc``,
    ``shape`` the IR's NCHW shape, per-tensor or per-channel ``scale``/``zero_point``)."""

    name: str
    region: Region
    offset: int
    hwc: tuple[int, int, int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Program:
    """A lowered network, the input of emission.

    Attributes:
        commands: the command stream; comments: one provenance line per command (IR node and
            ONNX sources); slots: one history slot per command (:data:`SLOT_INPUT`, ...).
        weights: the WEIGHTS region (every block the load commands address).
        sram_peak_bytes: peak SRAM bytes the program uses. act_arena_bytes, input_bytes,
            output_bytes: sizes of the ACT, INPUT and OUTPUT DRAM regions.
        inputs, outputs: the network's I/O descriptors. layers: per-op facts, execution order.
        cores: NPU cores the program uses; with more than one, ``commands`` holds the per-core
            streams one after the other, each ending with END (schedule/cores.py), and
            ``sram_peak_bytes`` is the largest core's.
        estimates: figures of other schedules for the report (``--cores 2``: the latencies
            tried, the stream program's ``stream_period_cycles`` per image).
        stream: ``--cores 2``: the stream program (several images per run, each core on its
            own; a :class:`~tcc_compiler.schedule.corestream.StreamProgram`), else None.
        deps: per command, the (queue, index within that queue) of the commands it must
            follow, as the lowering derived them before clamping its waits to 6
            (schedule/emitter.py ``WaitTracker``); None when not recorded. Used by
            schedule/reorder.py; not part of the emitted binaries.
    """

    commands: list[C.Command]
    comments: list[str]
    weights: WeightLayout
    sram_peak_bytes: int
    act_arena_bytes: int
    input_bytes: int
    output_bytes: int
    inputs: list[IoTensor]
    outputs: list[IoTensor]
    layers: list[LayerInfo] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    cores: int = 1
    estimates: dict = field(default_factory=dict)
    stream: object | None = None
    deps: list | None = field(default=None, compare=False, repr=False)
