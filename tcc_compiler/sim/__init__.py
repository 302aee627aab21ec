"""Reference executor of the modelled NPU (bit-exact with the numerics kernels)."""

from tcc_compiler.sim.executor import ExecStats, Executor  # noqa: F401
