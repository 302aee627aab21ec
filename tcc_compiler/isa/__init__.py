"""The modelled TCC750x NPU command set (specs/isa.md).

:mod:`~tcc_compiler.isa.spec` is the single table of opcodes and fields;
:mod:`~tcc_compiler.isa.commands` the command dataclasses the scheduler builds;
:mod:`~tcc_compiler.isa.codec` the encoder/decoder; :mod:`~tcc_compiler.isa.disasm` the listing.
"""

from tcc_compiler.isa.spec import (  # noqa: F401
    COMMANDS,
    Queue,
    Region,
    WAIT_NONE,
    dram_address,
    pack_conv_params,
    split_dram_address,
)
from tcc_compiler.isa.commands import (  # noqa: F401
    Access,
    AddCfg,
    AddTile,
    Command,
    ConvCfg,
    ConvTile,
    DmaLoad,
    DmaStore,
    End,
    EwTile,
    LutTile,
    PoolCfg,
    PoolTile,
    Registers,
    Space,
)
from tcc_compiler.isa.codec import (  # noqa: F401
    decode_commands,
    decode_stream,
    encode_command,
    encode_commands,
)
from tcc_compiler.isa.disasm import disassemble  # noqa: F401
