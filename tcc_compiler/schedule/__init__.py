"""Scheduling: DRAM planning, SRAM tiling, command generation with explicit waits, cost model."""

from tcc_compiler.schedule.lower import IoTensor, LayerInfo, Program, lower  # noqa: F401
from tcc_compiler.schedule.cost import replay, command_cycles  # noqa: F401
