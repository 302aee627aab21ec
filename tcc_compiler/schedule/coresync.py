"""The semaphores between the cores of a multi-core lowering (schedule/cores.py; specs/isa.md
"Several cores").

After each op a core that stored anything since its last signal emits SEM_SIGNAL on its
semaphore (its core index); a load reading DRAM bytes the other core stored is preceded by a
SEM_WAIT for the first signal after that store (once per count: a later load needing no
newer signal waits for nothing). So a barrier exists only where an op reads what the other
core wrote. Every wait names an earlier-emitted signal, so the cores cannot deadlock.
"""

from __future__ import annotations

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.emitter import Emitter


class CrossCore:
    """The semaphores between the cores' emitters (see the module docstring).

    Attributes:
        ems: one emitter per core. signals: per core, the STORE-queue length (commands) at
            each of its SEM_SIGNALs (signal ``m`` covers that core's stores below it).
        waited: ``waited[k][j]``: the count core ``k`` has already waited for on ``j``'s
            semaphore.
    """

    def __init__(self, ems: list[Emitter]):
        self.ems = ems
        self.signals: list[list[int]] = [[] for _ in ems]
        self.waited = [[0] * len(ems) for _ in ems]
        self.share_stores: list[int | None] = [None] * len(ems)
        for k, em in enumerate(ems):
            em.on_dram_read = (lambda region, lo, hi, k=k: self.before_load(k, region, lo, hi))
            em.on_store = (lambda k=k: self.after_store(k))

    def begin_share(self, k: int) -> None:
        """Core ``k`` starts its share of a split op: signal after its 1st, 2nd, 4th and 8th
        store (its rows next to the other core's share, emitted first), so the other core's
        next op waits for those rows' halo only, not for the whole share."""
        self.share_stores[k] = 0

    def end_share(self, k: int) -> None:
        """Core ``k``'s share is emitted: no more early signals."""
        self.share_stores[k] = None

    def after_store(self, k: int) -> None:
        """After each store of core ``k``: an early signal within a share (see
        :meth:`begin_share`)."""
        n = self.share_stores[k]
        if n is None:
            return
        self.share_stores[k] = n = n + 1
        if n in (1, 2, 4, 8):
            self.signal(k)

    def signal(self, k: int) -> None:
        """SEM_SIGNAL on core ``k`` if it stored anything since its last signal."""
        em = self.ems[k]
        n_store = em.w.count[Queue.STORE]
        sig = self.signals[k]
        if n_store == 0 or (sig and sig[-1] == n_store - 1):   # nothing new (last: a signal)
            return
        em.emit(C.SemSignal, [], f"signal core {k}: its stores so far are done", sem=k)
        sig.append(n_store)

    def before_load(self, k: int, region: int, lo: int, hi: int) -> None:
        """Before core ``k`` loads DRAM ``[lo, hi)`` of ``region``: a SEM_WAIT for every other
        core's first signal after its latest store overlapping those bytes."""
        for j, other in enumerate(self.ems):
            if j == k:
                continue
            st = other.latest_store(region, lo, hi)
            if st is None:
                continue
            m = next((i + 1 for i, n in enumerate(self.signals[j]) if n > st[1]), None)
            if m is None:   # not signalled yet (cannot happen op by op): signal now
                self.signal(j)
                m = len(self.signals[j])
            if self.waited[k][j] >= m:
                continue
            self.ems[k].emit(C.SemWait, [], f"wait for core {j} (signal {m})", sem=j, count=m)
            self.waited[k][j] = m
