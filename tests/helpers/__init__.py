"""Helpers shared by the tests, imported explicitly (``from helpers.cli import run_cli``).

``tests/`` is on ``sys.path`` because pytest inserts the folder of the root ``conftest.py``
(rootdir-relative "prepend" import mode); the session fixtures of :mod:`helpers.compiled` are
registered by ``tests/conftest.py``.
"""

from pathlib import Path

#: The repository root (the folder holding ``tcc_compiler/`` and ``tests/``).
REPO = Path(__file__).resolve().parents[2]

#: A bundled colour photo (JPEG) for commands that take an image.
PHOTO = str(REPO / "tcc_compiler" / "data" / "photos" / "eval" / "camera_man.jpg")
