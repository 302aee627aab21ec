"""The compile's memory check: refuse up front, in one line, a compile that would not fit in
the memory this process may allocate (read from /proc and ``RLIMIT_AS`` on Linux).
"""

from __future__ import annotations

import logging
import os

from tcc_compiler.errors import InputError
from tcc_compiler.interp.memory import constant_bytes, estimate_compile_memory
from tcc_compiler.ir.graph import Graph

log = logging.getLogger(__name__)


def available_memory_bytes() -> int | None:
    """Bytes this process may still allocate: MemAvailable from /proc/meminfo, lowered to the
    address space left under the process's ``RLIMIT_AS`` soft limit (a container or ``ulimit
    -v``: its limit minus the VmSize already mapped) when one is set (Linux); None when
    neither can be read."""
    avail = _proc_value("/proc/meminfo", "MemAvailable:")
    soft = address_space_limit_bytes()
    if soft is not None:
        mapped = _proc_value("/proc/self/status", "VmSize:") or 0
        left = max(0, soft - mapped)
        avail = left if avail is None else min(avail, left)
    return avail


def address_space_limit_bytes() -> int | None:
    """The process's ``RLIMIT_AS`` soft limit in bytes (``ulimit -v``, a container); None when
    there is none or it cannot be read."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _proc_value(path: str, key: str) -> int | None:
    """A ``key: N kB`` line of a /proc file in bytes; None when it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(graph: Graph, model) -> None:
    """Refuse up front a compile that would run out of memory (the kernel used to kill it
    without a message, exit 137, after minutes of swapping).

    Raises:
        InputError: :func:`tcc_compiler.interp.memory.estimate_compile_memory` (an upper bound
            of the compile's peak memory) exceeds MemAvailable; the message names the input
            size, the estimate and the memory available.
    """
    need, act = estimate_compile_memory(graph)
    avail = available_memory_bytes()
    log.debug("memory estimate: %.2f GB (%.2f GB of live float activations), available %s",
              need / 1e9, act / 1e9, "unknown" if avail is None else f"{avail / 1e9:.2f} GB")
    if avail is None or need <= avail:
        return
    _, c, h, w = graph.inputs[0].shape
    src = model if isinstance(model, (str, os.PathLike)) else graph.name
    weights = constant_bytes(graph)
    # the remedy depends on what dominates: a smaller input only helps when activations do
    fix = ("use a smaller input_whc/--input" if act >= weights else
           "the weights dominate, so a smaller input will not help: use a machine (or limit) "
           "with more memory")
    raise InputError(f"{src}: input {w}x{h}x{c} needs up to {need / 1e9:.1f} GB of memory to "
                     f"compile ({weights / 1e9:.2f} GB of float weights, kept in several copies;"
                     f" {act / 1e9:.2f} GB of float activations and working memory at its "
                     f"largest layer), more than the {avail / 1e9:.1f} GB available; {fix}")
