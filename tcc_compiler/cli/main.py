"""``tccc`` command line: a thin layer over :mod:`tcc_compiler.api`.

Results go to stdout, diagnostics to stderr. Exit codes: 0 success, 2 bad input or usage (one
line on stderr, no traceback), 1 internal error. ``-vv`` adds the traceback on stderr before
that line; it never changes the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import re
import sys
import traceback

from tcc_compiler.version import __version__
from tcc_compiler.errors import TccError

log = logging.getLogger("tccc")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"tccc: error: {message} (see 'tccc {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"tccc: error: {message} (see 'tccc --help')\n")


def progress(quiet: bool, desc: str):
    """A tqdm wrapper for long loops, or None when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit="img", file=sys.stderr, leave=False)


def int_at_least(low: int):
    """argparse type factory: an integer >= ``low`` (``--top 0``, ``--seed -5`` and friends are
    usage errors, exit 2, not internal errors)."""
    what = "a positive integer" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    parse.__name__ = "positive_int" if low == 1 else f"int_at_least_{low}"
    return parse


#: argparse type: an integer >= 1.
positive_int = int_at_least(1)
#: argparse type: an integer >= 0 (seeds: numpy's generators reject negative ones).
non_negative_int = int_at_least(0)


def plain_text(doc: str | None) -> str | None:
    """A module docstring as plain text for ``--help``: Sphinx/RST markup removed
    (``:func:`a.b``` and ``:mod:`~a.b``` -> ``a.b``, double back-quotes dropped)."""
    if doc is None:
        return None
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: global options plus every subcommand module found in
    :mod:`tcc_compiler.cli.commands` (each defines ``NAME``, ``HELP``, ``add_arguments(p)``
    and ``run(args) -> int``; ``ORDER`` sorts them in ``--help``)."""
    p = _Parser(prog="tccc", description="ONNX -> Telechips TCC750x NPU compiler")
    p.add_argument("--version", action="version", version=f"tccc {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v info, -vv debug logging on stderr (and tracebacks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for mod in _command_modules():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=plain_text(mod.__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        # -v/-q are accepted after the subcommand too (`tccc compile m.onnx -q`); main()
        # merges them with the global ones
        g = sp.add_argument_group("logging (also accepted before the subcommand)")
        g.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                       help="-v info, -vv debug logging on stderr (and tracebacks)")
        g.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                       help="no progress bars")
        sp.set_defaults(func=mod.run)
    return p


def _command_modules() -> list:
    from tcc_compiler.cli import commands

    mods = [importlib.import_module(f"{commands.__name__}.{info.name}")
            for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


#: ``api_name/--flag`` in a library message (it names both spellings); the CLI shows only the
#: flag. Only known compile-option names (and ``scale``) are rewritten, never paths.
_API_AND_FLAG = re.compile(r"\b(input_whc|calibration|calib_table|bias_correction|method|"
                           r"percentile|target|dump_ir|compress_weights|scale|precision|"
                           r"precision_goal_db|precision_target_db)/(--[a-z][a-z-]*)")


def cli_wording(message: str) -> str:
    """A library error message as the command line shows it: ``input_whc/--input`` (the API
    parameter and the flag) becomes ``--input``."""
    return _API_AND_FLAG.sub(r"\2", message)


def empty_argument(argv: list[str]) -> str | None:
    """The option given an empty value (``-o ""``, ``--dump-ir=``; ``"a positional argument"``
    for an empty positional), None when there is none. Every tccc argument is a path, a size or a
    name, none of which can be empty, and ``Path("")`` is the current folder: an empty ``-o``
    or ``--dump-ir`` used to write into it silently."""
    for i, tok in enumerate(argv):
        if tok.startswith("--") and tok.endswith("=") and len(tok) > 3:
            return tok[:-1]
        if tok == "":
            prev = argv[i - 1] if i else ""
            return prev if prev.startswith("-") and "=" not in prev else "a positional argument"
    return None


def bare_bias_correction(argv: list[str]) -> list[str]:
    """``argv`` with a bare ``--bias-correction`` (meaning ``on``) written ``--bias-correction=on``
    when the token after it is a model (an existing path or a name ending in .onnx/.tir), not a
    mode: argparse gave an optional value the next token, so ``tccc compile --bias-correction
    m.onnx -o out`` failed with "invalid choice: 'm.onnx'" although the flag alone is ``on``.
    Any other token after it (a mode, an option, a bad mode) is left to argparse."""
    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        nxt = out[i + 1]
        if tok == "--bias-correction" and nxt not in ("auto", "on", "off") and (
                nxt.endswith((".onnx", ".tir")) or os.path.exists(nxt)):
            out[i] = "--bias-correction=on"
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, map errors to exit codes."""
    try:  # building the parser imports every command (seconds on a loaded machine)
        parser = build_parser()
    except KeyboardInterrupt:  # Ctrl-C this early printed a traceback and died by SIGINT
        print("tccc: interrupted (while starting; nothing was done)", file=sys.stderr)
        return 130
    in_process = argv is not None   # tests and tools; None = the tccc process itself
    argv = sys.argv[1:] if argv is None else list(argv)
    empty = empty_argument(argv)
    if empty:  # before parsing: a usage error, exit 2 in one line
        print(f"tccc: error: {empty}: empty value (give a path or value; '.' is the current "
              "folder)", file=sys.stderr)
        return 2
    args = parser.parse_args(bare_bias_correction(argv))
    args.verbose += getattr(args, "sub_verbose", 0)
    args.quiet = args.quiet or getattr(args, "sub_quiet", False)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    fmt = "tccc: %(levelname)s: %(message)s" if args.verbose == 0 else \
        "tccc: %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    # numpy's floating-point RuntimeWarnings ("overflow encountered in cast", two lines each,
    # naming a tccc source line) would break the one-line error rule; the stages check
    # non-finite values themselves and say so (calibration, constants, requant scales).
    # -vv keeps them.
    import numpy as np

    fp_quiet = np.errstate(all="ignore") if args.verbose < 2 else contextlib.nullcontext()
    import signal

    from tcc_compiler import sigint

    prev_sigint = signal.getsignal(signal.SIGINT)
    sigint.hold_sigint_after_write(True)
    try:
        with fp_quiet:
            code = args.func(args)
        late = sigint.late_interrupt()
        _say_late(late)  # Ctrl-C after the output was in place: it is complete, say so
        return code
    except TccError as exc:
        msg = cli_wording(str(exc).replace("\n", " "))
        if args.verbose > 1:  # -vv adds the traceback; the exit code stays the same
            traceback.print_exc(file=sys.stderr)
        print(f"tccc: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `tccc ops ... | head`: the reader left, nothing to report
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt as exc:
        from tcc_compiler.sigint import InterruptedAfterWrite

        if isinstance(exc, InterruptedAfterWrite):  # the output is complete: say so, exit 0
            print(f"tccc: {exc}", file=sys.stderr)
            return 0
        late = sigint.late_interrupt()
        if late:
            _say_late(late)
            return 0
        print("tccc: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # the machine's or the process's limit, not a bug: say which file
        print(_out_of_memory(args), file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: say so in one line, traceback only with -vv
        if args.verbose > 1:
            traceback.print_exc(file=sys.stderr)
        print(f"tccc: internal error: {type(exc).__name__}: {exc} (run with -vv for the "
              "traceback and please report it)", file=sys.stderr)
        return 1
    finally:
        if in_process:  # tests, tools: give Ctrl-C back
            _release_sigint(sigint, prev_sigint)
        else:  # the tccc process: its work is done; a Ctrl-C now must not cut the interpreter's
            # shutdown (which restores the default handler: death by SIGINT, a traceback)
            _ignore_late_sigint(sigint)


def _ignore_late_sigint(sigint) -> None:
    """Ignore SIGINT from here to the process's end (the work is done and reported); a Ctrl-C
    that arrived after the output was written and is still unreported is said now."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _say_late(sigint.late_interrupt())


def _out_of_memory(args) -> str:
    """The one-line error for a MemoryError: the model (or folder) and the memory limit."""
    from tcc_compiler.driver import address_space_limit_bytes, available_memory_bytes

    avail, limit = available_memory_bytes(), address_space_limit_bytes()
    where = getattr(args, "model", None) or getattr(args, "folder", None) or "tccc"
    said = ("" if avail is None and limit is None else
            f" (at most {avail / 1e9:.1f} GB was still free)" if limit is None else
            f" (this process is limited to {limit / 1e9:.1f} GB of address space, ulimit -v)")
    return (f"tccc: error: {where}: out of memory{said}; use a smaller input or a machine (or "
            "limit) with more memory")


def _say_late(late: str | None) -> None:
    """Say, on stderr, that a Ctrl-C arrived after output ``late`` was written (when it did):
    the new output is complete."""
    if late:
        print(f"tccc: interrupt received after {late} was written; the new output is "
              "complete", file=sys.stderr)


def _release_sigint(sigint, prev) -> None:
    """Undo :func:`tcc_compiler.sigint.hold_sigint_after_write` for an in-process caller and
    put back its SIGINT handler ``prev``: the ``tccc`` process itself keeps recording Ctrl-C
    after its output is written, so its shutdown is never cut short."""
    import signal
    import threading

    sigint.hold_sigint_after_write(False)
    if threading.current_thread() is threading.main_thread() and prev is not None:
        signal.signal(signal.SIGINT, prev)


if __name__ == "__main__":
    sys.exit(main())
