"""Lowering of one NPU op family each (conv/FC, pooling, add, cascaded chains) over the
:class:`~tcc_compiler.schedule.emitter.Emitter`; every op gets an explicit
:class:`~tcc_compiler.schedule.ops.context.OpContext`."""
