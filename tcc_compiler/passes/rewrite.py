"""Pattern / check / rewrite helper for local rewrites.

A rewrite declares ``match(graph, node) -> dict | None`` (the pattern), ``check(graph, m) ->
str | None`` (a reason when it may not fire) and ``rewrite(graph, m)`` (the edit). The
:class:`RewritePass` tries every node once per sweep; a declined match logs its reason at DEBUG.
"""

from __future__ import annotations

import logging

from tcc_compiler.ir.graph import Graph, Node, Value

log = logging.getLogger(__name__)


class RewritePass:
    """Base class: subclasses set ``name`` and implement match / check / rewrite."""

    name = "rewrite"

    def __init__(self) -> None:
        self.last_fired = 0

    def match(self, graph: Graph, node: Node) -> dict | None:  # pragma: no cover - abstract
        """Return the matched pieces when ``node`` roots the pattern, else None."""
        raise NotImplementedError

    def check(self, graph: Graph, m: dict) -> str | None:
        """Return a reason not to fire, or None to fire."""
        return None

    def rewrite(self, graph: Graph, m: dict) -> None:  # pragma: no cover - abstract
        """Apply the edit for match ``m``."""
        raise NotImplementedError

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        """One sweep over the nodes; returns (graph, fired at least once)."""
        self.last_fired = 0
        for node in list(graph.nodes):
            if node not in graph.nodes:
                continue
            m = self.match(graph, node)
            if m is None:
                continue
            reason = self.check(graph, m)
            if reason:
                log.debug("%s: not fired at %s: %s", self.name, node.name, reason)
                continue
            self.rewrite(graph, m)
            self.last_fired += 1
        if self.last_fired:
            graph.dead_code_elimination()
        return graph, self.last_fired > 0


def single_use(graph: Graph, v: Value) -> bool:
    """True when ``v`` has exactly one reader node and is not a graph output."""
    return len(v.uses) == 1 and not graph.is_output(v)
