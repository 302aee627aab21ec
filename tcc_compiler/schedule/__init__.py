"""Scheduling: memory planning, tiling, command generation with explicit waits, cost model
(schedule/lower.py lists the modules by concern)."""

from tcc_compiler.schedule.lower import lower  # noqa: F401
from tcc_compiler.schedule.program import IoTensor, LayerInfo, Program  # noqa: F401
from tcc_compiler.schedule.cost import replay, command_cycles  # noqa: F401
