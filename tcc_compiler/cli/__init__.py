"""``tccc`` command line: :func:`tcc_compiler.cli.main.main` (the ``tccc`` script and
``python3 -m tcc_compiler.cli.main``); one module per subcommand in
:mod:`tcc_compiler.cli.commands`.

The package does not import :mod:`tcc_compiler.cli.main` itself: a module already in
``sys.modules`` when ``python3 -m`` runs it makes runpy warn ("found in sys.modules after
import of package ... prior to execution") and exist twice. Import ``main`` and
``build_parser`` from :mod:`tcc_compiler.cli.main`; the package attribute ``main`` is that
module once it is imported.
"""

import importlib


def __getattr__(name: str):
    """``build_parser``, and ``main`` while the submodule is not yet imported (scripts
    installed before the entry point named :mod:`tcc_compiler.cli.main` call
    ``from tcc_compiler.cli import main`` in a fresh process): the functions of
    :mod:`tcc_compiler.cli.main`.

    Raises:
        AttributeError: any other name.
    """
    if name in ("build_parser", "main"):
        mod = importlib.import_module("tcc_compiler.cli.main")
        # the import bound the package's ``main`` to the submodule: rebind both functions
        globals().update(build_parser=mod.build_parser, main=mod.main)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
