"""Loading the compiled kernels does not import SciPy's linear algebra, which numba's first
dispatch would import for a BLAS check no tccc kernel needs (numerics/jit_startup.py), and
numba code compiled later in the process still finds BLAS as it would have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _fresh(code: str) -> list[str]:
    """stdout words of ``code`` run in a fresh interpreter (nothing imported yet)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()


def _fresh_with(first: Path, code: str) -> list[str]:
    """The stdout words of ``code`` run in a fresh Python with ``first`` first on its path
    (a stand-in SciPy or numba extension there); fails the test on a non-zero exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(first)] + [p for p in sys.path if p])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_warm_leaves_scipy_linalg_unimported_and_blas_usable_later():
    pytest.importorskip("numba")
    pytest.importorskip("scipy")
    code = ("import sys\n"
            "import numpy as np\n"
            "from tcc_compiler.numerics import jit\n"
            "assert jit.warm()\n"
            "import numba\n"
            "from numba.np import arraymath\n"
            "print('scipy.linalg' in sys.modules, arraymath._HAVE_BLAS)\n"
            "dot = numba.njit(lambda a, b: np.dot(a, b))\n"
            "corr = numba.njit(lambda a, b: np.correlate(a, b))\n"
            "a = np.arange(16.0).reshape(4, 4)\n"
            "x = np.linspace(0.0, 1.0, 50)\n"
            "print(bool(np.array_equal(dot(a, a), a @ a)),\n"
            "      bool(np.allclose(corr(x, x[:5]), np.correlate(x, x[:5]))),\n"
            "      'scipy.linalg' in sys.modules)\n")
    # not imported by the warm-up; numba's flag as with SciPy; its BLAS route imports SciPy
    # when a function that needs it is compiled
    assert _fresh(code) == ["False", "True", "True", "True", "True"]


def test_the_import_is_refused_to_the_calling_thread_only():
    pytest.importorskip("scipy")
    code = ("import sys, threading\n"
            "from tcc_compiler.numerics.jit_startup import without_scipy_linalg\n"
            "got = []\n"
            "ns = {'__name__': 'numba.np.arraymath'}\n"   # numba's check, as it is named
            "exec('def _check_blas():\\n    import scipy.linalg', ns)\n"
            "with without_scipy_linalg():\n"
            "    try:\n"
            "        ns['_check_blas']()\n"
            "        got.append('imported')\n"
            "    except ModuleNotFoundError:\n"
            "        got.append('refused')\n"
            "    t = threading.Thread(target=lambda: __import__('scipy.linalg'))\n"
            "    t.start(); t.join()\n"
            "    got.append('scipy.linalg' in sys.modules)\n"
            "print(*got, any(type(f).__name__ == '_RefuseInThread' for f in sys.meta_path))\n")
    assert _fresh(code) == ["refused", "True", "False"]


def test_nothing_is_refused_once_scipy_linalg_is_imported():
    pytest.importorskip("scipy")
    import scipy.linalg  # noqa: F401

    from tcc_compiler.numerics.jit_startup import without_scipy_linalg

    before = list(sys.meta_path)
    with without_scipy_linalg():
        assert sys.meta_path == before
        import scipy.linalg as again   # noqa: F401


def test_a_scipy_whose_linalg_fails_to_import_leaves_numba_convolve_working(tmp_path):
    """A SciPy installed but its linear algebra broken (e.g. its OpenBLAS missing): numba
    alone says no BLAS and compiles np.convolve as a loop; after the warm-up it must too
    (guessing the flag from scipy.linalg being findable made np.convolve raise ImportError)."""
    pytest.importorskip("numba")
    pkg = tmp_path / "scipy"
    (pkg / "linalg").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "1.11.0"\n')
    (pkg / "linalg" / "__init__.py").write_text(
        'raise ImportError("libopenblas.so: cannot open shared object file")\n')
    code = ("import numpy as np, numba\n"
            "from tcc_compiler.numerics import jit\n"
            "assert jit.warm()\n"
            "conv = numba.njit(lambda a, b: np.convolve(a, b))\n"
            "x = np.linspace(0.0, 1.0, 20)\n"
            "print(bool(np.allclose(conv(x, x[:3]), np.convolve(x, x[:3]))))\n")
    assert _fresh_with(tmp_path, code) == ["True"]


def test_a_numba_extension_importing_scipy_linalg_still_loads(tmp_path):
    """numba loads its extensions (``numba_extensions`` entry points) on the warm-up's first
    dispatch: one importing scipy.linalg loads as with numba alone (the refusal is numba's
    BLAS check's only; it was the whole thread's, numba warning the extension failed)."""
    pytest.importorskip("numba")
    pytest.importorskip("scipy")
    (tmp_path / "tcc_ext_probe").mkdir()
    (tmp_path / "tcc_ext_probe" / "__init__.py").write_text(
        "import scipy.linalg\n"
        "def _init_extension():\n"
        "    global INIT\n"
        "    INIT = True\n")
    info = tmp_path / "tcc_ext_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tcc-ext-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[numba_extensions]\n"
                                           "init = tcc_ext_probe:_init_extension\n")
    code = ("import sys, warnings\n"
            "warnings.simplefilter('error')\n"
            "from tcc_compiler.numerics import jit\n"
            "assert jit.warm()\n"
            "m = sys.modules.get('tcc_ext_probe')\n"
            "print(getattr(m, 'INIT', False))\n")
    assert _fresh_with(tmp_path, code) == ["True"]
