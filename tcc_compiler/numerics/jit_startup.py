"""numba's first dispatch without SciPy's linear algebra: the one step of loading the compiled
kernels (:func:`tcc_compiler.numerics.jit.warm`) that none of them needs.

numba's first dispatch loads its NumPy registries, and the first of them,
``numba.np.arraymath``, asks at import whether a BLAS is there for ``np.correlate`` and
``np.convolve`` (``_HAVE_BLAS = _check_blas()``) by importing ``scipy.linalg.cython_blas``:
all of ``scipy.linalg`` (its array-API layer clones NumPy's namespace, importing
``numpy.f2py`` on the way) and SciPy's own OpenBLAS, whose threads start. No kernel of
tccc calls BLAS or LAPACK (numba imports SciPy again, lazily, when a function that does is
compiled: ``numba.np.linalg.ensure_blas``). The warm-up's process CPU went from 0.45-0.52 to
0.31-0.33 s (fresh processes, loaded). ResNet-50 224 with 8 calibration inputs, 5 alternating
compiles each under ``chrt -f`` (near idle on the loaded machine): 2.16 -> 2.03 s median,
process CPU 3.47 -> 3.28 s, calibration stage 0.60 -> 0.50 s: the warm-up is on the compile's
critical path (calibration's observers wait for the kernels).

:func:`without_scipy_linalg` refuses that import to numba's check in the calling thread only
(other threads, and other code in that thread such as numba's extensions, import as usual)
while numba's registries load, then sets the flag to numba's own check deferred
(:class:`_Deferred`: run when the flag is first tested, as numba types ``np.correlate`` or
``np.convolve``, in whatever thread does that), so numba code compiled later in the process
takes the same BLAS route as without this module, whatever state SciPy is in (missing, its
linear algebra failing to import, a LAPACK integer width numba refuses: then no BLAS, the
loop route).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import threading
from typing import Iterator

#: The module numba's BLAS check imports first (``scipy.linalg.cython_blas``'s package).
DEFERRED = "scipy.linalg"


#: (module, function) whose import of :data:`DEFERRED` is refused: numba's BLAS check.
CHECK = ("numba.np.arraymath", "_check_blas")


class _RefuseInThread(importlib.abc.MetaPathFinder):
    """A meta-path finder that refuses module ``name`` to numba's BLAS check (:data:`CHECK`
    on the stack) in the thread ``ident`` (that import raises ModuleNotFoundError) and passes
    every other import on (returns None). Only there: the first dispatch also loads numba's
    extensions (``numba_extensions`` entry points), and one importing ``scipy.linalg`` was
    refused too, numba then warning that it failed to load and leaving it unloaded for the
    whole process."""

    def __init__(self, name: str, ident: int) -> None:
        self.name, self.ident = name, ident

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 - finder protocol
        """ModuleNotFoundError for ``name`` asked by :data:`CHECK` in the refused thread,
        else None (not ours)."""
        if fullname == self.name and threading.get_ident() == self.ident and _in_check():
            raise ModuleNotFoundError(f"{fullname}: not imported while tccc loads its "
                                      "compiled kernels (none uses BLAS)", name=fullname)
        return None


def _in_check() -> bool:
    """Whether :data:`CHECK` is on the calling thread's stack."""
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name == CHECK[1] and f.f_globals.get("__name__") == CHECK[0]:
            return True
        f = f.f_back
    return False


@contextlib.contextmanager
def without_scipy_linalg() -> Iterator[None]:
    """While inside, numba's BLAS check's ``import scipy.linalg`` fails in the calling thread
    only (:class:`_RefuseInThread`); on leaving, ``numba.np.arraymath._HAVE_BLAS`` is
    set back, when it was loaded inside, to numba's check deferred to its first use
    (:class:`_Deferred`; a numba without ``_check_blas``: whether ``scipy.linalg`` can
    be found). Does nothing when ``scipy.linalg`` is already imported (the check then
    costs nothing). Never raises on its own: a numba without that flag is left as it is."""
    if DEFERRED in sys.modules:
        yield
        return
    finder = _RefuseInThread(DEFERRED, threading.get_ident())
    had_arraymath = "numba.np.arraymath" in sys.modules
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        arraymath = sys.modules.get("numba.np.arraymath")
        if not had_arraymath and arraymath is not None \
                and getattr(arraymath, "_HAVE_BLAS", True) is False \
                and DEFERRED not in sys.modules:
            check = getattr(arraymath, "_check_blas", None)
            arraymath._HAVE_BLAS = _findable(DEFERRED) if check is None else _Deferred(check)


class _Deferred:
    """numba's BLAS flag checked when first tested (``if not _HAVE_BLAS``, as numba types
    ``np.correlate`` / ``np.convolve``): ``check()`` (numba's own ``_check_blas``, which
    imports ``scipy.linalg.cython_blas``) run once then, outside the warm-up, so the flag is
    the one numba would have set at import. (Guessing it from ``scipy.linalg`` being
    findable said True for an installed SciPy whose linear algebra fails to import, e.g.
    its OpenBLAS missing: numba's ``np.convolve`` then raised ImportError where numba
    alone takes its loop.)"""

    def __init__(self, check) -> None:
        self._check, self._value = check, None

    def __bool__(self) -> bool:
        if self._value is None:
            self._value = bool(self._check())
        return self._value

    def __repr__(self) -> str:
        return repr(bool(self))


def _findable(name: str) -> bool:
    """Whether module ``name`` can be imported (found, not imported: its package's
    ``__init__`` runs, a subpackage's does not)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
