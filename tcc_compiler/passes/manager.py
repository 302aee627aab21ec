"""Pass manager: named passes run in a declared pipeline, each to a fixed point.

A pass is any object with a ``name`` and ``run(graph) -> (graph, modified)``. The manager can
verify the IR after every pass, time each pass, count how often each rewrite fired, and call
instruments (IR dumps) before/after passes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.verify import verify

log = logging.getLogger(__name__)


class Pass(Protocol):
    """A graph-to-graph transformation."""

    name: str

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        """Transform ``graph``; return it and whether anything changed."""


@dataclass
class PassStats:
    """Per-pass bookkeeping: seconds spent and number of rewrites fired."""

    seconds: dict[str, float] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)


#: Instrument signature: (pass name, "before"|"after", index in pipeline, graph).
Instrument = Callable[[str, str, int, Graph], None]


class PassManager:
    """Run passes in order; each pass is repeated until it reports no change (max 100 times).

    Args:
        passes: the pipeline.
        verify_each: run the IR verifier after every pass (tests, ``--verify``).
        instruments: callables invoked before and after each pass (IR printing, dumps).
    """

    def __init__(self, passes: list[Pass], verify_each: bool = False,
                 instruments: list[Instrument] | None = None):
        self.passes = passes
        self.verify_each = verify_each
        self.instruments = list(instruments or [])
        self.stats = PassStats()

    def run(self, graph: Graph) -> Graph:
        """Run the pipeline on ``graph`` and return the result.

        Raises:
            InternalError: a pass did not reach a fixed point, or verification failed.
        """
        for idx, p in enumerate(self.passes):
            for inst in self.instruments:
                inst(p.name, "before", idx, graph)
            t0 = time.perf_counter()
            fired = 0
            for _ in range(100):
                graph, modified = p.run(graph)
                if not modified:
                    break
                fired += getattr(p, "last_fired", 1)
            else:
                raise InternalError(f"pass {p.name} did not reach a fixed point")
            self.stats.seconds[p.name] = self.stats.seconds.get(p.name, 0.0) + (
                time.perf_counter() - t0)
            self.stats.fired[p.name] = self.stats.fired.get(p.name, 0) + fired
            if self.verify_each:
                verify(graph, quantized=getattr(p, "quantized_output", False))
            log.debug("pass %s: fired %d", p.name, fired)
            for inst in self.instruments:
                inst(p.name, "after", idx, graph)
        return graph
