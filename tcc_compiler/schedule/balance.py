"""Which core runs an unsplit op of a two-core program: list scheduling by the cost model.

:class:`Balancer` keeps, for each core, the estimated cycle it becomes free and, for each
tensor, the estimated cycle it is stored and by which core. An op runs on the core where it
would finish first (its inputs' readiness, plus the semaphore latency when the other core
stored them), so independent branches (a ResNet block's downsample shortcut beside its main
path, a YOLO neck's parallel convs) run on both cores at once; a split conv
(schedule/cores.py) occupies both. The estimates only order the choices: the program's
latency is the replay's (schedule/coretime.py), and ``lower_multi`` keeps a balanced program
only when its replay beats the others.
"""

from __future__ import annotations

import math

from tcc_compiler.ir.graph import Node, Value
from tcc_compiler.schedule import cost
from tcc_compiler.target import Target


def rough_cycles(n: Node, t: Target) -> float:
    """Estimated cycles of a non-conv op run whole on one core: its non-constant inputs and its
    output through the DRAM link (one byte per element) and one vector pass over its output."""
    elems = [math.prod(v.shape) for v in [*n.inputs, n.output]
             if v is not None and v.const is None]
    return cost.transfer_cycles(sum(elems), t) + cost.vector_cycles(elems[-1], t)


class Balancer:
    """Estimated core and tensor readiness (cycles) while a two-core program is emitted.

    Attributes:
        free: per core, the cycle it finishes its last op. stored: id(value) -> (cycle,
            core; None when both cores stored parts of it).
    """

    def __init__(self, t: Target):
        self.t = t
        self.free = [0.0, 0.0]
        self.stored: dict[int, tuple[float, int | None]] = {}

    def ready(self, v: Value, core: int) -> float:
        """When core ``core`` may read ``v``: when it was stored, plus the semaphore latency
        if another core stored (part of) it; values of skipped ops (views, fused tables)
        are ready when their inputs are."""
        got = self.stored.get(id(v))
        if got is None:
            p = v.producer
            if p is None:
                return 0.0
            return max((self.ready(u, core) for u in p.inputs if u is not None
                        and u.const is None), default=0.0)
        at, by = got
        return at + (self.t.sem_latency_cycles if by != core else 0)

    def start(self, n: Node, core: int) -> float:
        """Earliest estimated start of ``n`` on ``core``."""
        return max([self.free[core]] + [self.ready(v, core) for v in n.inputs
                                         if v is not None and v.const is None])

    def best_core(self, n: Node, cycles: float, cores=(0, 1)) -> tuple[int, float]:
        """(core, finish) of the core among ``cores`` where ``n`` would finish first."""
        return min(((c, self.start(n, c) + cycles) for c in cores), key=lambda x: (x[1], x[0]))

    def split_finish(self, n: Node, cycles: float) -> float:
        """Estimated finish of ``n`` split over both cores (both start together)."""
        return max(self.start(n, 0), self.start(n, 1)) + cycles

    def record(self, n: Node, out: Value, core: int | None, finish: float) -> None:
        """``n`` runs on ``core`` (None: both) until ``finish`` and stores ``out``."""
        for c in ((0, 1) if core is None else (core,)):
            self.free[c] = finish
        self.stored[id(out)] = (finish, core)
