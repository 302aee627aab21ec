"""One family of errors for the whole compiler.

Every error the user can cause is a :class:`TccError` subclass whose message is one line that says
what failed, where (file, node, tensor, command index) and, where possible, how to fix it. The CLI
prints ``tccc: error: <message>`` and exits with :attr:`TccError.exit_code` (2 for bad input or
usage, 1 for internal errors). ``assert`` is kept for internal invariants only.
"""

from __future__ import annotations

import re


class TccError(Exception):
    """Base class of every error tccc raises on purpose.

    Attributes:
        exit_code: process exit code the CLI uses for this error (2 = bad input, 1 = internal).
    """

    exit_code = 2


class InputError(TccError):
    """Bad user input: a missing or malformed file, option or argument (exit code 2)."""


class ModelError(TccError):
    """The ONNX model is malformed or inconsistent (exit code 2)."""


class UnsupportedError(TccError):
    """The model uses ops or attributes the NPU cannot run (exit code 2).

    Attributes:
        problems: one line per offending node, ``"<op> '<node>': <reason>"``.
    """

    def __init__(self, path: str, problems: list[str]):
        self.problems = list(problems)
        nodes = sum(1 for p in self.problems if not p.startswith("("))  # "(...)" are notes
        super().__init__(f"{path}: {nodes} unsupported node(s): "
                         + "; ".join(_group_problems(self.problems)))


_PROBLEM = re.compile(r"^(\S+) ('[^']*'): (.*)$", re.S)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``str(exc)`` cut to ``limit`` characters, or the exception's type name
    when its message is empty (``MemoryError()`` has none: indexing ``splitlines()`` of it
    was an IndexError, exit 1, in the corpus)."""
    lines = str(exc).splitlines()
    return lines[0][:limit] if lines and lines[0] else type(exc).__name__


def _group_problems(problems: list[str]) -> list[str]:
    """Merge problems of the same op and reason into one entry, in first-seen order:
    ``"Concat 'a': r", "Concat 'b': r"`` -> ``"Concat 'a', 'b': r"`` (so a model with 58
    unsupported Concats gives one readable line, each node still named)."""
    groups: dict[tuple[str, str], list[str]] = {}
    out: list[tuple[str, str] | str] = []
    for p in problems:
        m = _PROBLEM.match(p)
        if m is None:
            out.append(p)
            continue
        key = (m.group(1), m.group(3))
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(m.group(2))
    return [x if isinstance(x, str) else f"{x[0]} {', '.join(groups[x])}: {x[1]}" for x in out]


class FormatError(TccError):
    """A binary, manifest or IR file failed validation while decoding (exit code 2)."""


class ScheduleError(TccError):
    """An op cannot be tiled for the target (e.g. its smallest tile exceeds SRAM) (exit code 2)."""


class ExecutionError(TccError):
    """The reference executor met an illegal command (bad address, hazard, unknown opcode)."""


class InternalError(TccError):
    """A bug in tccc: an invariant did not hold (exit code 1)."""

    exit_code = 1
