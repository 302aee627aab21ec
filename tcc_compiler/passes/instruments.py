"""Pass-manager instruments: print the IR before/after passes, dump it to numbered files.

An instrument is a callable ``(pass_name, "before"|"after", index, graph) -> None`` that the
:class:`~tcc_compiler.passes.manager.PassManager` calls around every pass (the driver also calls
it for the two stages that are not passes: ``import`` and ``quantize``). Passes never print;
dumps come only from here (the TVM/MLIR habit, see STYLE.md).

Every text written uses exactly the grammar of ``specs/ir.lark`` (via
:func:`tcc_compiler.ir.printer.print_graph`), headed by ``# after pass <name>``. Dumped files
also carry ``meta after_pass : str = "<name>"`` so that ``tccc compile DIR/05-x.tir`` knows
where to resume (see :func:`tcc_compiler.driver.compile_model`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.printer import ConstTable, print_graph

log = logging.getLogger(__name__)

#: Graph meta key recording the last stage applied to a dumped graph.
AFTER_PASS_META = "after_pass"
#: Stage name of the graph straight out of the ONNX importer.
IMPORT_STAGE = "import"
#: Stage name of the graph after INT8 quantization.
QUANTIZE_STAGE = "quantize"


def _selected(which: str | list[str] | tuple[str, ...] | None, name: str) -> bool:
    if which is None:
        return False
    names = [which] if isinstance(which, str) else list(which)
    return "all" in names or name in names


def check_pass_names(which: str | list[str] | tuple[str, ...] | None, known: list[str],
                     option: str) -> None:
    """Refuse pass names that do not exist (a typo would otherwise print nothing).

    Args:
        which: names given by the user ("all" allowed). known: valid stage names.
        option: the CLI option, for the message.

    Raises:
        InputError: naming the unknown pass and listing the valid ones.
    """
    if which is None:
        return
    for n in [which] if isinstance(which, str) else which:
        if n != "all" and n not in known:
            raise InputError(f"{option} {n}: no such pass (passes: {', '.join(known)}, all)")


class PrintIR:
    """Print the IR text before and/or after selected passes (default stream: stderr).

    Args:
        before, after: a pass name, a list of names, ``"all"``, or None for none.
        stream: where to write (stdout for ``tccc ir print``, stderr for ``tccc compile``).
        inline_limit: constants with more elements print as ``@key`` references; the arrays
            are not written anywhere (printing is for reading; use :class:`DumpIR` to get
            files that parse back).
    """

    def __init__(self, before=None, after=None, stream: TextIO | None = None,
                 inline_limit: int = 16):
        self.before, self.after = before, after
        self.stream = stream
        self.inline_limit = inline_limit

    def __call__(self, name: str, when: str, index: int, graph: Graph) -> None:
        """Print ``graph`` when ``name`` is selected for ``when`` ("before"/"after")."""
        if not _selected(self.before if when == "before" else self.after, name):
            return
        out = self.stream or sys.stderr
        out.write(f"# {when} pass {name}\n")
        out.write(print_graph(graph, ConstTable(), inline_limit=self.inline_limit))
        out.flush()


class DumpIR:
    """Write one numbered ``.tir`` (+ ``.npz``) file after every stage into ``folder``.

    Files are named ``NN-<stage>.tir`` where NN is the stage's position in the pipeline:
    ``00-import.tir``, ``01-canonicalize.tir``, ..., and the driver's ``NN-quantize.tir`` last
    (a resumed compilation keeps the numbers of the stages it runs). Each is a valid
    compiler input: its meta ``after_pass`` names the stage, so compiling it resumes there.

    Args:
        folder: destination, created when missing.
        inline_limit: see :func:`tcc_compiler.ir.text.save_ir`.

    Attributes:
        written: the paths written, in order.

    Raises:
        InputError: the folder cannot be created or a file cannot be written.
    """

    def __init__(self, folder: str | os.PathLike, inline_limit: int = 16):
        self.folder = Path(folder)
        self.inline_limit = inline_limit
        self.written: list[Path] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--dump-ir {self.folder}: cannot create folder "
                             f"({exc.strerror or exc})") from None

    def __call__(self, name: str, when: str, index: int, graph: Graph) -> None:
        """After each stage, write ``NN-<name>.tir``: NN is the stage's position in the full
        pipeline (import, the default passes, quantize), so a compilation resumed from
        ``05-fuse-residual-add.tir`` dumps ``06-...`` onwards; other stages take the number of
        files written so far."""
        if when != "after":
            return
        from tcc_compiler.passes import PASS_NAMES  # here: the package imports this module

        stages = [IMPORT_STAGE, *PASS_NAMES, QUANTIZE_STAGE]
        number = stages.index(name) if name in stages else len(self.written)
        path = self.folder / f"{number:02d}-{name}.tir"
        save_dump(graph, path, name, self.inline_limit)
        self.written.append(path)
        log.info("dumped IR after %s to %s", name, path)


def save_dump(graph: Graph, path: str | os.PathLike, stage: str, inline_limit: int = 16) -> None:
    """Write ``graph`` to ``path`` (+ sidecar) headed ``# after pass <stage>``, with meta
    ``after_pass = stage`` added to the file only (``graph`` itself is left unchanged).

    Raises:
        InputError: the file cannot be written.
    """
    import numpy as np

    from tcc_compiler.ir.text import sidecar_path

    path = Path(path)
    saved = dict(graph.meta)
    graph.meta[AFTER_PASS_META] = stage
    table = ConstTable()
    try:
        text = f"# after pass {stage}\n" + print_graph(graph, table, inline_limit=inline_limit)
    finally:
        graph.meta.clear()
        graph.meta.update(saved)
    npz = sidecar_path(path)
    try:
        if len(table):
            with open(npz, "wb") as f:
                np.savez(f, **table.arrays)
        elif npz.exists():
            npz.unlink()  # load_ir would otherwise read a stale sidecar with this text
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write IR dump ({exc.strerror or exc})") from None


def stage_names() -> list[str]:
    """Every stage an instrument can see, in order: import, the float passes, quantize."""
    from tcc_compiler.passes import PASS_NAMES

    return [IMPORT_STAGE] + list(PASS_NAMES) + [QUANTIZE_STAGE]


def make_instruments(dump_dir: str | os.PathLike | None = None, print_before=None,
                     print_after=None, stream: TextIO | None = None) -> list:
    """The instruments the CLI options ask for (``--dump-ir``, ``--print-ir-before/after``).

    Raises:
        InputError: an unknown pass name, or a dump folder that cannot be created.
    """
    names = stage_names()
    check_pass_names(print_before, names, "--print-ir-before")
    check_pass_names(print_after, names, "--print-ir-after")
    out: list = []
    if print_before or print_after:
        out.append(PrintIR(before=print_before, after=print_after, stream=stream))
    if dump_dir is not None:
        out.append(DumpIR(dump_dir))
    return out
