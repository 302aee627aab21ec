"""Watch the worker pools tccc starts (``--jobs``): the process count each pool asked for."""

from __future__ import annotations

import multiprocessing as mp


def record_pool_sizes(monkeypatch) -> list:
    """Patch the fork context's ``Pool`` so every pool created records its ``processes``
    argument (None = the library default) in the returned list, then starts as usual."""
    sizes: list = []
    ctx = mp.get_context("fork")
    real_pool = type(ctx).Pool

    def pool(self, processes=None, *a, **k):
        sizes.append(processes)
        return real_pool(self, processes, *a, **k)

    monkeypatch.setattr(type(ctx), "Pool", pool)
    return sizes
