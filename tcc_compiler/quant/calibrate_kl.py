"""TensorRT's entropy (KL divergence) threshold search on a magnitude histogram, used by
:class:`tcc_compiler.quant.calibrate.EntropyObserver` (re-exported there)."""

from __future__ import annotations

import numpy as np


def kl_threshold_bin(counts: np.ndarray, levels: int, coarse: int = 0) -> int:
    """TensorRT's entropy calibration on a magnitude histogram (Migacz, GTC 2017).

    For each candidate ``i`` (number of bins kept, ``levels <= i <= len(counts)``): P = the
    first ``i`` bins with every count beyond them added to bin ``i - 1``; Q = the first ``i``
    bins merged into ``levels`` groups, each group's sum spread evenly over its non-empty bins;
    both normalised; the result minimises KL(P || Q) = sum P log(P / Q) (0 log 0 = 0; a
    non-empty P bin with empty Q gets Q = 1e-12 instead of infinity).

    Args:
        counts: float64 [bins], bin 0 starting at |x| = 0.
        levels: quantization levels on this side (255 one-signed, 128 two-signed).
        coarse: number of geometrically spaced first-pass candidates (0 = try every ``i``);
            the best one is then refined with step 1 between its two neighbours.

    Returns:
        The best ``i``; the threshold is ``i * bin_width``.
    """
    n = len(counts)
    if n <= levels:
        return n
    nz = counts > 0
    suffix = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])

    def kl(i: int) -> float:
        p = counts[:i].copy()
        p[i - 1] += suffix[i]
        group = (np.arange(i) * levels) // i          # bin -> level
        sums = np.bincount(group, weights=counts[:i], minlength=levels)
        nnz = np.bincount(group, weights=nz[:i].astype(np.float64), minlength=levels)
        q = np.where(nz[:i], sums[group] / np.maximum(nnz[group], 1.0), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            return np.inf
        p, q = p / ps, q / qs
        m = p > 0
        return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))

    if coarse <= 0 or coarse >= n - levels:
        return min(range(levels, n + 1), key=kl)
    cands = sorted(set(np.round(np.geomspace(levels, n, coarse)).astype(int).tolist()))
    k = min(range(len(cands)), key=lambda j: kl(cands[j]))
    lo, hi = cands[max(k - 1, 0)], cands[min(k + 1, len(cands) - 1)]
    return min(range(lo, hi + 1), key=kl)
