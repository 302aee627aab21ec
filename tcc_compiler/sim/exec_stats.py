"""The counters of one reference-executor run (:class:`ExecStats`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ExecStats:
    """Counters of one run.

    Attributes:
        commands: mnemonic -> number of commands executed.
        bytes_per_queue: queue name -> bytes moved: LOAD/STORE = bytes transferred by DMA,
            COMPUTE = SRAM bytes read + written by tile commands.
        macs: multiply-accumulates done by CONV_TILE commands (padding taps included).
    """

    commands: Counter = field(default_factory=Counter)
    bytes_per_queue: Counter = field(default_factory=Counter)
    macs: int = 0
