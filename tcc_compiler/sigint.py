"""Ctrl-C around output publication: hold SIGINT while an output is swapped into place, and
report it afterwards instead of cutting the step in two.

Used by :mod:`tcc_compiler.fsutil` (publishing a folder or file) and the ``tccc`` command
(which asks, with :func:`hold_sigint_after_write`, that a Ctrl-C arriving after "wrote ..." be
reported rather than kill the interpreter's shutdown). Tested by
tests/cli/test_interrupt_reports_disk.py and tests/cli/test_exit_codes.py.
"""

from __future__ import annotations

import os
from pathlib import Path


class InterruptedAfterWrite(KeyboardInterrupt):
    """Ctrl-C arrived while an output was being published and is reported once it is in place:
    ``dest`` holds the complete new output (the CLI says so and exits 0). An interrupt before
    publication is a plain KeyboardInterrupt and leaves ``dest`` as it was.

    Attributes:
        dest: the path that now holds the new output.
    """

    def __init__(self, dest: str | os.PathLike) -> None:
        super().__init__(f"interrupted after {dest} was written (the new output is complete)")
        self.dest = Path(dest)


class _DeferredSigint:
    """Context manager: SIGINT is recorded instead of raised while inside (main thread only;
    elsewhere it does nothing). ``hit`` is True when one arrived."""

    def __init__(self) -> None:
        self.hit = False
        self._old = None

    def __enter__(self) -> "_DeferredSigint":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            def record(signum, frame):  # noqa: ARG001 - signal handler signature
                self.hit = True
            self._old = signal.signal(signal.SIGINT, record)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def published(self, dest: str | os.PathLike) -> None:
        """The output ``dest`` is in place. When the CLI asked for it
        (:func:`hold_sigint_after_write`), a Ctrl-C from now to the process's end is recorded
        for :func:`late_interrupt` instead of raised: the command then says the new output is
        complete, and the interpreter's shutdown is not cut short (it used to die by SIGINT or
        print a threading traceback after "wrote ...")."""
        import signal

        if self._old is None or not _LATE["hold"]:
            return
        _LATE["dest"] = str(dest)

        def record(signum, frame):  # noqa: ARG001 - signal handler signature
            _LATE["hit"] = True
        self._old = record   # __exit__ installs it in place of the handler it saved
        if self.hit:
            _LATE["hit"] = True
        signal.signal(signal.SIGINT, record)


#: Ctrl-C after an output was published (:meth:`_DeferredSigint.published`): ``hold`` (the
#: CLI's choice), the output's path and whether an interrupt arrived since.
_LATE: dict = {"hold": False, "dest": None, "hit": False}


def hold_sigint_after_write(on: bool) -> None:
    """Turn on (the ``tccc`` command) or off (and forget) recording, instead of raising, a
    Ctrl-C that arrives after an output is published. Library callers keep Python's default."""
    _LATE.update(hold=on, dest=None, hit=False)


def late_interrupt() -> str | None:
    """The published output's path when a Ctrl-C arrived after it was written and has not
    been reported yet (this call reports it), else None."""
    if _LATE["hit"] and _LATE["dest"]:
        _LATE["hit"] = False
        return _LATE["dest"]
    return None


def deferred_sigint() -> _DeferredSigint:
    """Hold Ctrl-C during a step that must not be cut in two (publishing an output and saying
    so): ``with deferred_sigint() as d: ...``; then ``d.hit`` says whether one arrived."""
    return _DeferredSigint()
