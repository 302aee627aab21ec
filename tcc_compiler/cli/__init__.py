"""``tccc`` command line (see :mod:`tcc_compiler.cli.main`); one module per subcommand in
:mod:`tcc_compiler.cli.commands`."""

from tcc_compiler.cli.main import build_parser, main  # noqa: F401
