"""``python3 -m tcc_compiler.cli.main`` runs without runpy's RuntimeWarning (the package used
to import the module before runpy executed it), and the package still hands the old entry
point ``tcc_compiler.cli:main`` the function."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_run_as_module_prints_no_warning():
    r = _python("-W", "error::RuntimeWarning", "-m", "tcc_compiler.cli.main", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("tccc ")


def test_package_entry_point_is_the_function():
    r = _python("-c", "import tcc_compiler.cli as c; from tcc_compiler.cli import main, "
                "build_parser; print(callable(main), callable(build_parser), c.main is main)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]
