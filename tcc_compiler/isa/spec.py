"""THE definition of the TCC750x NPU command set (as modelled by tccc).

Everything about the binary command encoding lives in the table :data:`COMMANDS`: the encoder,
decoder and disassembler (:mod:`tcc_compiler.isa.codec`, :mod:`tcc_compiler.isa.disasm`), the
command dataclasses (:mod:`tcc_compiler.isa.commands`, checked against the table at import) and
the generated tables in ``specs/isa.md`` (``tools/gen_isa_doc.py``) are all driven by it.

Encoding (format 3, "register-history" encoding, see specs/isa.md): every command is a control
byte (:data:`CONTROL_BITS`: 4-bit opcode, 2-bit history slot, W and F flags), an optional 16-bit
wait word (:data:`WAIT_WORD_BITS`), optional 2-bit field codes (:class:`FieldCode`) and one
zigzag LEB128 delta per explicit field. The command parser keeps, per (opcode, slot), the last
two values of every field, so a field that repeats, continues its stride or ping-pongs between
two buffers costs no bytes: a tile loop in steady state is one byte per command. Fields keep
their table type, which bounds every value on encode and on decode.

The building blocks live beside it and are re-exported here, so ``spec.X`` names every one:
field types, queues, waits, the control byte, wait word and field codes in
:mod:`tcc_compiler.isa.encoding`; DRAM address regions (:class:`Region`) in
:mod:`tcc_compiler.isa.dram`; the 16-byte per-output-channel conv parameter record
(:data:`PARAM_RECORD_DTYPE`, :func:`pack_conv_params`) in :mod:`tcc_compiler.isa.param_record`.
This module holds the table itself and the register values with a fixed meaning (CONV_CFG
out_mode and flags bits, the ``wide`` element-width bits, the int16-weight bounds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tcc_compiler.errors import InternalError
from tcc_compiler.isa.dram import (  # noqa: F401 (re-exported)
    REGION_OFFSET_MASK,
    REGION_SHIFT,
    Region,
    dram_address,
    split_dram_address,
)
from tcc_compiler.isa.encoding import (  # noqa: F401 (re-exported)
    CONTROL_BITS,
    I8,
    I16,
    I32,
    N_SLOTS,
    U8,
    U16,
    U32,
    WAIT_MAX,
    WAIT_NONE,
    WAIT_QUEUES,
    WAIT_WORD_BITS,
    FieldCode,
    FieldType,
    Queue,
    varint_max_bytes,
)
from tcc_compiler.isa.param_record import (  # noqa: F401 (re-exported)
    PARAM_RECORD_BYTES,
    PARAM_RECORD_DTYPE,
    pack_conv_params,
    unpack_conv_params,
)

# ---------------------------------------------------------------------------------------------
# Command table


class Display(str, enum.Enum):
    """How the disassembler prints a field."""

    INT = "int"      # decimal
    DRAM = "dram"    # region name + hex offset
    SRAM = "sram"    # hex byte address
    HEX = "hex"      # hex


@dataclass(frozen=True)
class Field:
    """One payload field of a command.

    Attributes:
        name: field name (also the attribute of the command dataclass).
        type: its :class:`FieldType`.
        doc: one-line meaning, with units.
        display: how the disassembler prints it.
    """

    name: str
    type: FieldType
    doc: str
    display: Display = Display.INT


@dataclass(frozen=True)
class CommandSpec:
    """One command of the NPU: opcode, queue and fields (the payload is history-encoded).

    Attributes:
        name: mnemonic ("DMA_LOAD").
        opcode: control-byte bits 0-3 (1..15).
        queue: queue it is dispatched to.
        fields: payload fields in table order (the order of codes and explicit deltas).
        doc: one-paragraph semantics (rendered into specs/isa.md).
    """

    name: str
    opcode: int
    queue: Queue
    fields: tuple[Field, ...]
    doc: str

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the payload fields in table order."""
        return tuple(f.name for f in self.fields)

    @property
    def code_bytes(self) -> int:
        """Bytes of 2-bit field codes when the F flag is set: ceil(2 * fields / 8)."""
        return (2 * len(self.fields) + 7) // 8

    @property
    def max_bytes(self) -> int:
        """Longest encoding: control byte, wait word, codes and every field explicit."""
        return 3 + self.code_bytes + sum(varint_max_bytes(f.type) for f in self.fields)



def _command(name: str, opcode: int, queue: Queue, fields: list[tuple], doc: str) -> CommandSpec:
    """Build a :class:`CommandSpec` from ``fields`` given as (name, type, doc[, display])."""
    if not 1 <= opcode <= 15:
        raise InternalError(f"isa: {name}: opcode {opcode} does not fit 4 bits (1..15)")
    return CommandSpec(name, opcode, queue, tuple(Field(*f) for f in fields), doc)


_DMA_FIELDS = [
    ("dram", U32, "DRAM address: region (bits 31..30) and byte offset", Display.DRAM),
    ("sram", U32, "SRAM byte address", Display.SRAM),
    ("run_bytes", U32, "bytes per contiguous run"),
    ("n1", U16, "runs in the inner loop"),
    ("n2", U16, "iterations of the outer loop"),
    ("dram_stride1", U32, "DRAM byte step between inner runs"),
    ("dram_stride2", U32, "DRAM byte step between outer iterations"),
    ("sram_stride1", U32, "SRAM byte step between inner runs"),
    ("sram_stride2", U32, "SRAM byte step between outer iterations"),
]
_DMA_DOC = ("for i2 in range(n2): for i1 in range(n1): copy run_bytes bytes between "
            "dram + i2*dram_stride2 + i1*dram_stride1 and sram + i2*sram_stride2 + "
            "i1*sram_stride1. The DRAM region must not change within a transfer.")

DMA_LOAD = _command("DMA_LOAD", 0x1, Queue.LOAD, _DMA_FIELDS,
                    "Copy DRAM -> SRAM with a two-level strided pattern: " + _DMA_DOC)
DMA_STORE = _command("DMA_STORE", 0x2, Queue.STORE, _DMA_FIELDS,
                     "Copy SRAM -> DRAM with a two-level strided pattern: " + _DMA_DOC
                     + " The WEIGHTS region is read-only.")

def _tensor_stride_fields(prefix: str, what: str) -> list[tuple]:
    """The pixel and row stride fields of one strided tile operand (see :data:`_STRIDE_DOC`)."""
    return [(f"{prefix}_px_stride", U16, f"{what}: bytes from one pixel to the next along W; "
             "0 = packed (channels x element bytes)"),
            (f"{prefix}_row_stride", U32, f"{what}: bytes from one row to the next; "
             "0 = packed (width x pixel stride)")]


_STRIDE_DOC = ("Each tile operand is a [rows, cols, channels] box at its SRAM address whose "
               "pixels are px_stride bytes apart along W and whose rows are row_stride bytes "
               "apart (0 = packed), so a tile can read or write a box of a whole NHWC tensor "
               "resident in SRAM. A non-zero stride must be at least the packed one (operands "
               "never overlap themselves).")

CONV_CFG = _command("CONV_CFG", 0x3, Queue.COMPUTE, [
    ("kh", U8, "kernel height"),
    ("kw", U8, "kernel width"),
    ("sh", U8, "stride along H"),
    ("sw", U8, "stride along W"),
    ("dh", U8, "dilation along H"),
    ("dw", U8, "dilation along W"),
    ("out_mode", U8, "bit0: 0 = int8 requantized, 1 = int32 raw accumulator + bias; bit1 = "
                     "accumulate (depthwise mode only, no shortcut, int8 weights): the "
                     "accumulator starts from the int32 partial [out_h, out_w, oc] at the "
                     "tile's sc_sram (sc strides) instead of the bias, acc = wrap32(partial + "
                     "conv_accumulate(...)), and the records' bias is not added (one part of "
                     "a kernel larger than the target's depthwise_max_kernel); bit2 = two-slope "
                     "requantization (bit0 clear, no shortcut, no LUT): where wrap32(acc + "
                     "bias) < 0 the records' sc_mult replaces mult (a LeakyRelu in one "
                     "rounding: numerics/epilogue.py two_slope_epilogue); bit3 = int16 "
                     "table output (needs flags bits 3 and 5, no two-slope: the 257 knots "
                     "are int16 outputs, out = clamp((K[i] * (256 - f) + K[i + 1] * f + "
                     "128) >> 8, -32768, 32767), written int16 LE: numerics/lut.py "
                     "apply_lut_wide with wide_out)"),
    ("flags", U8, "bit0 = has_shortcut (fused residual add); bit1 = image mode (kw taps x "
                  "cin_g channels of a row form one array input vector, needs one group and "
                  "kw * cin_g <= array_in_channels); bit2 = depthwise mode (the depthwise "
                  "datapath, not the MAC array: cin_g = 1, oc = in_c, kernel and stride "
                  "within the target's depthwise limits, dilation 1); bit3 = LUT epilogue "
                  "(the int8 output goes through the 256-entry table at lut_sram: "
                  "out = lut[y + 128]; needs a requantized output, out_mode 0 or 2 (8 or 10 "
                  "with bit5 for an int16 table output); with bit5 the "
                  "requantized value y is int16 and the table is 257 int16 knots K, out = "
                  "clamp((K[i] * (256 - f) + K[i + 1] * f + 2**14) >> 15, -128, 127) with "
                  "i = (y + 32768) >> 8, f = (y + 32768) & 255: the output is int8, or int16 "
                  "with out_mode bit3); "
                  "bits 4-6 = element widths "
                  "(mixed precision): bit4 = input int16, bit5 = output int16 (needs "
                  "out_mode bit0 clear: 0, 2, 4 or 6, with bit3 also 8 or 10; with bit3 the "
                  "table's input), "
                  "bit6 = shortcut int16, clear = int8; bit7 = weights "
                  "int16 (2 bytes LE per weight, 64-bit accumulator, needs out_mode 0, 4 or 8 and "
                  "every accumulator multiplier M < 2**15: specs/quantization.md, 'int16 weights')",
     Display.HEX),
    ("group", U16, "groups of the whole layer (informational; tiles hold whole groups)"),
    ("cin_g", U16, "input channels per group"),
    ("zp_in", I8, "input zero point (also the padding value)"),
    ("zp_out", I8, "output zero point"),
    ("zp_sc", I8, "shortcut zero point"),
    ("act_lo", I16, "output clamp low bound in the output type (activation folded in)"),
    ("act_hi", I16, "output clamp high bound in the output type"),
    ("lut_sram", U32, "int8 [256] activation table of the LUT epilogue (if flags bit3; "
                      "int16 LE [257] knots with bit5)",
     Display.SRAM),
], "Set the conv layer registers used by the following CONV_TILE commands. With flags bit3 "
   "the requantized int8 output of every tile is mapped through one lookup table on its way "
   "out (an activation such as SiLU or Sigmoid fused into the conv: numerics/lut.py "
   "apply_lut), so it needs no second pass over DRAM. An int16 input (flags bit4) takes int8 "
   "weights, accumulates in the same 32-bit accumulator and runs at the target's int16 MAC "
   "rate; an int16 output (bit5) needs a requantized output (out_mode bit0 clear: 0, 2 "
   "accumulating, 4 two-slope, 6 both); with bit3 too (no two-slope), the int16 "
   "requantized value is interpolated between two of 257 int16 knots to "
   "an int8 output (numerics/lut.py apply_lut_wide: specs/quantization.md, 'int16-input "
   "lookup tables'), or with out_mode bit3 to an int16 output (knots in int16 output units). "
   "int16 weights (bit7) accumulate exactly in 64 bits (acc + bias is not "
   "wrapped) and take 15-bit multipliers so "
   "that (acc + bias) * M stays below 2**62; each int16 operand (input, weights) divides the "
   "MAC rate by the target's int16_rate_divisor.")

CONV_TILE = _command("CONV_TILE", 0x4, Queue.COMPUTE, [
    ("in_sram", U32, "input tile int8/int16 (CONV_CFG flags) [in_h, in_w, in_c] (NHWC)",
     Display.SRAM),
    ("w_sram", U32, "weights int8 [oc, kh, kw, cin_g] (OHWI; int16 LE if CONV_CFG flags "
                    "bit7)", Display.SRAM),
    ("p_sram", U32, "oc parameter records of 16 bytes", Display.SRAM),
    ("out_sram", U32, "output [out_h, out_w, oc]: int8 (int16 LE if flags bit5 without a "
                      "LUT epilogue, or with one and out_mode bit3), or int32 LE if out_mode "
                      "bit0", Display.SRAM),
    ("sc_sram", U32, "shortcut int8/int16 [out_h, out_w, oc] (if flags bit0), or the int32 "
                     "partial sums [out_h, out_w, oc] (if out_mode bit1)", Display.SRAM),
    ("in_h", U16, "input tile height (rows, halo included)"),
    ("in_w", U16, "input tile width (columns)"),
    ("in_c", U16, "input tile channels (whole groups)"),
    ("oc", U16, "output channels of the tile"),
    ("out_h", U16, "output tile height"),
    ("out_w", U16, "output tile width"),
    ("pad_t", U8, "zero-point padding rows above the tile"),
    ("pad_l", U8, "padding columns left"),
    ("pad_b", U8, "padding rows below"),
    ("pad_r", U8, "padding columns right"),
    *_tensor_stride_fields("in", "input"),
    *_tensor_stride_fields("out", "output"),
    *_tensor_stride_fields("sc", "shortcut"),
], "Convolve one tile with the current CONV_CFG: acc = conv_accumulate(input padded with "
   "zp_in, weights, groups = in_c / cin_g); out_mode 0 -> conv_epilogue (requantize, optional "
   "shortcut, clamp) to int8; out_mode 1 -> acc + bias as int32. With out_mode bit1 "
   "(accumulate) the int32 partial at sc_sram takes the bias's place: out_mode 2 -> "
   "conv_epilogue of wrap32(partial + acc) with no bias, out_mode 3 -> wrap32(partial + acc) "
   "as int32 (it may be written over the partial it read). A depthwise kernel larger than "
   "the datapath's runs as parts: the first in out_mode 1, the others in mode 3, the last in "
   "mode 2 (specs/target.md, 'Large depthwise kernels'). " + _STRIDE_DOC)

POOL_CFG = _command("POOL_CFG", 0x5, Queue.COMPUTE, [
    ("kind", U8, "0 = max, 1 = average"),
    ("kh", U8, "window height"),
    ("kw", U8, "window width"),
    ("sh", U8, "stride along H"),
    ("sw", U8, "stride along W"),
    ("zp_in", I8, "input zero point (average only)"),
    ("zp_out", I8, "output zero point (average only)"),
    ("shift", U8, "requantization shift (average only)"),
    ("mult", U32, "requantization multiplier, divisor folded in (average only)"),
    ("wide", U8, "element widths: bit0 = input int16, bit1 = output int16 (both or neither); "
                 "0 = int8; other bits reserved 0", Display.HEX),
], "Set the pooling registers used by the following POOL_TILE commands. With int16 "
   "operands (wide 3) max-pool padding holds -32768 and the tile runs at the vector unit's "
   "int16 rate.")

POOL_TILE = _command("POOL_TILE", 0x6, Queue.COMPUTE, [
    ("in_sram", U32, "input tile int8/int16 (POOL_CFG wide) [in_h, in_w, c]", Display.SRAM),
    ("out_sram", U32, "output tile int8/int16 [out_h, out_w, c]", Display.SRAM),
    ("in_h", U16, "input tile height"),
    ("in_w", U16, "input tile width"),
    ("c", U16, "channels"),
    ("out_h", U16, "output tile height"),
    ("out_w", U16, "output tile width"),
    ("pad_t", U8, "padding rows above"),
    ("pad_l", U8, "padding columns left"),
    ("pad_b", U8, "padding rows below"),
    ("pad_r", U8, "padding columns right"),
    *_tensor_stride_fields("in", "input"),
    *_tensor_stride_fields("out", "output"),
], "Pool one tile with the current POOL_CFG: max pooling (pads hold the type's minimum, -128 "
   "or -32768) or average pooling "
   "(pads contribute 0, divisor folded into mult/shift). " + _STRIDE_DOC)

ADD_CFG = _command("ADD_CFG", 0x7, Queue.COMPUTE, [
    ("zp_a", I8, "zero point of input a"),
    ("zp_b", I8, "zero point of input b"),
    ("zp_out", I8, "output zero point"),
    ("act_lo", I8, "output clamp low bound"),
    ("act_hi", I8, "output clamp high bound"),
    ("shift", U8, "shared requantization shift"),
    ("mult_a", U32, "multiplier of a"),
    ("mult_b", U32, "multiplier of b"),
], "Set the element-wise add registers used by the following ADD_TILE commands.")

ADD_TILE = _command("ADD_TILE", 0x8, Queue.COMPUTE, [
    ("a_sram", U32, "input a int8 [n]", Display.SRAM),
    ("b_sram", U32, "input b int8 [n]", Display.SRAM),
    ("out_sram", U32, "output int8 [n]", Display.SRAM),
    ("n", U32, "elements"),
], "Element-wise quantized add of n int8 elements with the current ADD_CFG.")

DMA_LOAD_Z = _command("DMA_LOAD_Z", 0x9, Queue.LOAD, [
    ("dram", U32, "DRAM address of the compressed block (region WEIGHTS)", Display.DRAM),
    ("sram", U32, "SRAM byte address of the expanded block", Display.SRAM),
    ("src_bytes", U32, "bytes of the raw DEFLATE stream read from DRAM"),
    ("dst_bytes", U32, "bytes written to SRAM (the stream's exact expanded size)"),
], "Load and expand one compressed weight, parameter or merged block: read the raw DEFLATE "
   "stream "
   "(RFC 1951, no zlib/gzip wrapper) at WEIGHTS [dram, dram + src_bytes) and write its output "
   "contiguously to SRAM [sram, sram + dst_bytes). The stream must end exactly at its last "
   "byte and expand to exactly dst_bytes bytes (specs/weights.md, Compression).")

LUT_TILE = _command("LUT_TILE", 0xC, Queue.COMPUTE, [
    ("in_sram", U32, "input int8 [n] (NHWC order, channel fastest)", Display.SRAM),
    ("out_sram", U32, "output int8 [n] (may equal in_sram)", Display.SRAM),
    ("lut_sram", U32, "tables int8 [tables, 256]", Display.SRAM),
    ("n", U32, "elements"),
    ("tables", U16, "tables: 1 = one shared table, else one per channel (1..65535)"),
    ("ch0", U16, "channel of the first element (0 <= ch0 < tables)"),
    ("group", U16, "0 = table lookup; g >= 2 = softmax over each run of g consecutive "
                   "elements (tables = 1, ch0 = 0, n a multiple of g, the table 256 u16 "
                   "exp entries)"),
], "Vector-unit table lookup of n int8 elements: out[k] = lut[t][in[k] + 128] with "
   "t = (ch0 + k) % tables (numerics/lut.py apply_lut). Each 256-entry table is the int8 "
   "image of a unary activation, built at compile time (specs/quantization.md). With "
   "group = g >= 2 the tile is a softmax over every run of g consecutive elements (the g "
   "channels of a channel group of one pixel, NHWC): m = max of the run, e = lut[m - in[k]] "
   "from one table of 256 u16 little-endian entries round(2**15 * exp(-s * d)), s the input "
   "scale, out[k] = clamp(((e * (2**31 // sum of e)) + 2**22) >> 23, 0, 255) - 128, i.e. "
   "int8 at scale 1/256, zero point -128 (numerics/softmax.py softmax_int8).")

EW_TILE = _command("EW_TILE", 0xD, Queue.COMPUTE, [
    ("kind", U8, "0 = add, 1 = sub (a - b), 2 = mul"),
    ("zp_a", I8, "zero point of a"),
    ("zp_b", I8, "zero point of b"),
    ("zp_out", I8, "output zero point"),
    ("act_lo", I16, "output clamp low bound in the output type"),
    ("act_hi", I16, "output clamp high bound in the output type"),
    ("shift", U8, "requantization shift (1..62)"),
    ("mult_a", U32, "multiplier of a (mul: of the product)"),
    ("mult_b", U32, "multiplier of b (add/sub; 0 for mul)"),
    ("a_sram", U32, "input a int8/int16 (wide) [n]", Display.SRAM),
    ("b_sram", U32, "input b int8/int16 [n], or [b_period] when broadcast", Display.SRAM),
    ("out_sram", U32, "output int8/int16 [n]", Display.SRAM),
    ("n", U32, "elements"),
    ("b_period", U16, "0 = b has n elements; else b holds b_period values (one per channel) "
                      "repeated along a"),
    ("b0", U16, "index into b of a's first element when broadcast (< b_period)"),
    ("wide", U8, "element widths: bit0 = a int16, bit1 = output int16, bit2 = b int16; 0 = "
                 "all int8 (mul: int8 only); other bits reserved 0", Display.HEX),
], "Element-wise add/sub/mul of two int8 or int16 operands (numerics/eltwise.py): add/sub "
   "y = clamp(zp_out + ((a-zp_a)*mult_a +- (b-zp_b)*mult_b + 2**(shift-1)) >> shift); mul "
   "y = clamp(zp_out + ((a-zp_a)*(b-zp_b)*mult_a + 2**(shift-1)) >> shift). With b_period > 0 "
   "element k of a meets b[(b0 + k) % b_period]: a per-channel vector broadcast over an NHWC "
   "tensor (squeeze-excitation gates). Element counts and offsets are in elements; an "
   "int16 operand takes 2 bytes per element (little-endian) and a tile with any int16 "
   "operand runs at the vector unit's int16 rate.")

#: Cross-core semaphores of a multi-core program (SEM_SIGNAL / SEM_WAIT ``sem`` field).
N_SEMAPHORES = 8

SEM_SIGNAL = _command("SEM_SIGNAL", 0xA, Queue.STORE, [
    ("sem", U8, "semaphore 0..7 (each semaphore is signalled by one core only)"),
], "Cross-core semaphore (multi-core programs, specs/isa.md \"Several cores\"): add 1 to "
   "counter sem, shared by all cores and 0 when the program starts. Dispatched to the STORE "
   "queue, so it runs after every earlier DMA_STORE of its core has finished: the DRAM bytes "
   "they wrote are visible to the other cores once the counter moves. Its wait fields order "
   "it after other queues as for any command.")

SEM_WAIT = _command("SEM_WAIT", 0xB, Queue.LOAD, [
    ("sem", U8, "semaphore 0..7"),
    ("count", U32, "value the counter must reach (1..the number of SEM_SIGNALs on sem)"),
], "Cross-core wait (multi-core programs): the LOAD queue of this core does not start this "
   "command, nor (in order) any later one, until counter sem has reached count. Counters "
   "only grow, so the wait is ordered after the count-th SEM_SIGNAL on sem and after "
   "everything that signal waited for. A decoder refuses a SEM_WAIT whose count exceeds the "
   "program's SEM_SIGNALs on sem (it would never be released).")

RESIZE_TILE = _command("RESIZE_TILE", 0xE, Queue.COMPUTE, [
    ("in_sram", U32, "input band int8 [in_h, in_w, c] (NHWC, whole rows, packed)",
     Display.SRAM),
    ("out_sram", U32, "output int8 [out_h, in_w * fw, c] (packed)", Display.SRAM),
    ("in_h", U16, "input rows in the band"),
    ("in_w", U16, "input width (whole rows)"),
    ("c", U16, "channels"),
    ("out_h", U16, "output rows of the tile"),
    ("full_h", U16, "rows of the whole input (the coordinate map depends on it)"),
    ("in_y0", U16, "input row of the band's first row"),
    ("out_y0", U16, "output row of the tile's first row"),
    ("fh", U8, "upsampling factor along H (1..255)"),
    ("fw", U8, "upsampling factor along W (1..255)"),
    ("mode", U8, "coordinate transformation: 0 = half_pixel, 1 = align_corners, "
                 "2 = asymmetric"),
], "Bilinear upsampling of whole rows on the vector unit (numerics/resize.py bilinear_int8): "
   "output rows out_y0 .. out_y0 + out_h - 1 of the (full_h * fh) x (in_w * fw) map, each "
   "pixel the two-by-two interpolation of input rows and columns i0, i1 = min(i0 + 1, n - 1) "
   "with 11-bit weights derived from the integer source coordinate of the mode (clamped at "
   "the borders); acc = sum of weight_y * weight_x * q over the four taps, out = (acc + "
   "2**21) >> 22. Every tap row must lie in the band (rows in_y0 .. in_y0 + in_h - 1). Input "
   "and output share one quantization (a convex combination needs no requantization); "
   "int8 only.")

END = _command("END", 0xF, Queue.CONTROL, [],
               "End of program: waits until all queues have drained. Must be the last command (of "
               "each core's stream in a multi-core program).")

#: The command set, in opcode order.
COMMANDS: tuple[CommandSpec, ...] = (DMA_LOAD, DMA_STORE, CONV_CFG, CONV_TILE, POOL_CFG,
                                     POOL_TILE, ADD_CFG, ADD_TILE, DMA_LOAD_Z, SEM_SIGNAL,
                                     SEM_WAIT, LUT_TILE, EW_TILE, RESIZE_TILE, END)
#: opcode -> spec.
BY_OPCODE: dict[int, CommandSpec] = {c.opcode: c for c in COMMANDS}
#: mnemonic -> spec.
BY_NAME: dict[str, CommandSpec] = {c.name: c for c in COMMANDS}

# CONV_CFG register values with a fixed meaning.
OUT_MODE_INT8 = 0
OUT_MODE_INT32 = 1
#: CONV_CFG out_mode bit1: the tile adds its int32 partial sums at sc_sram instead of the bias.
OUT_MODE_ACCUMULATE = 2
#: CONV_CFG out_mode bit2: two-slope requantization, the records' sc_mult below zero.
OUT_MODE_TWO_SLOPE = 4
#: CONV_CFG out_mode bit3: the LUT epilogue's interpolated output is int16 (flags bits 3 + 5).
OUT_MODE_LUT16 = 8
CONV_FLAG_SHORTCUT = 0x01
CONV_FLAG_IMAGE = 0x02
CONV_FLAG_DEPTHWISE = 0x04
CONV_FLAG_LUT = 0x08
#: Knots of the LUT epilogue's int16 -> int8 table (flags bit3 with bit5; numerics/lut.py).
LUT_WIDE_KNOTS = 257
POOL_KIND_MAX = 0
POOL_KIND_AVG = 1
# ``wide`` field bits of POOL_CFG and EW_TILE (element widths; clear = int8); CONV_CFG holds
# the same three bits in flags bits 4-6 (CONV_FLAG_WIDE_SHIFT; the field count, and so the
# encoding of every int8 program, stays as it was).
WIDE_IN = 0x01     # the input (EW_TILE: a) is int16
WIDE_OUT = 0x02    # the output is int16
WIDE_B = 0x04      # the shortcut (CONV_CFG) / b (EW_TILE) operand is int16
WIDE_MASK = WIDE_IN | WIDE_OUT | WIDE_B
CONV_FLAG_WIDE_SHIFT = 4
#: CONV_CFG flags bit7: the weights are int16 (little-endian OHWI), accumulated in 64 bits.
CONV_FLAG_WIDE_W = 0x80
#: With int16 weights every accumulator multiplier (M of the parameter records) is below this:
#: ``|acc + bias| < 2**47`` (the largest K is bounded so, specs/quantization.md) times
#: ``M < 2**15`` stays below 2**62 in the 64-bit epilogue.
WIDE_W_MULT_LIMIT = 1 << 15
#: With int16 weights ``|acc| <= K * max|x - zp_x| * 32767`` must stay below this (the 64-bit
#: epilogue's bound above; the planner keeps a layer whose worst case passes it int8).
WIDE_W_ACC_LIMIT = (1 << 47) - (1 << 31)
