"""Import layering of ``tcc_compiler``: a stage imports only its own layer or lower ones, and no
module imports another module's ``_private`` names.

Every module under ``tcc_compiler/`` is parsed with :mod:`ast` (nothing is imported). Every
import counts wherever it is written: at module level, inside a function (a lazy import for an
optional feature is still a dependency), under ``if TYPE_CHECKING:`` (a later stage's type in a
signature is still a dependency), and ``importlib.import_module("literal")``.

The layers (issue #19; a module may import its own layer or lower ones):

====  ===========================================================================
 0    version, errors, sigint, fsutil, target, ir, isa, numerics, datasets, data
 1    frontend
 2    passes, interp
 3    quant
 4    schedule
 5    binfmt, emit
 6    sim
 7    runtime
 8    export, report, zoo
 9    driver, options, placement, segmenting, onnx_backend, api, cli,
      ``tcc_compiler/__init__``
====  ===========================================================================

Private names: ``from X import _y``, ``X._y`` on an imported module ``X``, and importing a
private module ``pkg._m`` from outside ``pkg`` are violations; a module's own private names
and a package's own private modules are not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: component (first name under ``tcc_compiler``; ``__init__`` for the package itself) -> layer
LAYERS: dict[str, int] = {
    **dict.fromkeys(("version", "errors", "sigint", "fsutil", "target", "ir", "isa", "numerics",
                     "datasets", "data"), 0),
    "frontend": 1,
    "passes": 2, "interp": 2,
    "quant": 3,
    "schedule": 4,
    "binfmt": 5, "emit": 5,
    "sim": 6,
    "runtime": 7,
    "export": 8, "report": 8, "zoo": 8,
    **dict.fromkeys(("driver", "options", "placement", "segmenting", "onnx_backend", "api",
                     "cli", "__init__"), 9),
}

LAYER_RULE = "a module may import only its own layer or lower ones"
PRIVATE_NAME_RULE = "a module's _private names are for that module only"
PRIVATE_MODULE_RULE = "a package's _private modules are for that package only"
UNKNOWN_RULE = "every component of the package has a layer (add it to LAYERS)"


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``importer`` (dotted module, line) imports ``imported``."""

    importer: str
    line: int
    imported: str
    rule: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.importer}:{self.line} imports {self.imported}{extra}: {self.rule}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def find_modules(pkg_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` under
    ``pkg_dir`` (whose name is the top-level package name)."""
    mods = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        parts = list(path.relative_to(pkg_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def component(module: str) -> str:
    """``tcc_compiler.schedule.lower`` -> ``schedule``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


class _Imports(ast.NodeVisitor):
    """Collects (line, imported module, imported name or None) and module aliases of a file."""

    def __init__(self, module: str, is_pkg: bool, modules: set[str]):
        self.module, self.modules = module, modules
        self.package = module if is_pkg else module.rpartition(".")[0]
        self.top = module.split(".")[0]
        self.found: list[tuple[int, str, str | None]] = []
        self.aliases: dict[str, str] = {}   # local name -> dotted module it is bound to
        self.attributes: list[tuple[int, list[str]]] = []

    def _ours(self, name: str) -> bool:
        return name == self.top or name.startswith(self.top + ".")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if self._ours(a.name):
                self.found.append((node.lineno, a.name, None))
                if a.asname:
                    self.aliases[a.asname] = a.name
                else:
                    self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            pkg = self.package.split(".")
            pkg = pkg[:len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        if not self._ours(base):
            return
        for a in node.names:
            sub = f"{base}.{a.name}"
            if sub in self.modules:
                self.found.append((node.lineno, sub, None))
                self.aliases[a.asname or a.name] = sub
            else:
                self.found.append((node.lineno, base, a.name))

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if name in ("import_module", "__import__") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            if self._ours(node.args[0].value):
                self.found.append((node.lineno, node.args[0].value, None))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, cur = [node.attr], node.value
        while isinstance(cur, ast.Attribute):
            chain.insert(0, cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            self.attributes.append((node.lineno, [cur.id] + chain))
        self.generic_visit(node)


def _private_module_owner(module: str) -> str | None:
    """The package a private module belongs to (``a.b._m.c`` -> ``a.b``), else None."""
    parts = module.split(".")
    for i, p in enumerate(parts):
        if _is_private(p):
            return ".".join(parts[:i])
    return None


def _check_target(importer: str, line: int, module: str, name: str | None) -> list[Violation]:
    out = []
    frm, to = component(importer), component(module)
    if to not in LAYERS:
        out.append(Violation(importer, line, module, UNKNOWN_RULE, f"component {to!r}"))
    if frm in LAYERS and to in LAYERS and LAYERS[to] > LAYERS[frm]:
        out.append(Violation(importer, line, module, LAYER_RULE,
                             f"{frm} is layer {LAYERS[frm]}, {to} is layer {LAYERS[to]}"))
    owner = _private_module_owner(module)
    if owner is not None and importer != owner and not importer.startswith(owner + "."):
        out.append(Violation(importer, line, module, PRIVATE_MODULE_RULE))
    if name is not None and _is_private(name) and module != importer:
        out.append(Violation(importer, line, f"{module}.{name}", PRIVATE_NAME_RULE))
    return out


def check_package(pkg_dir: Path) -> list[Violation]:
    """Every layering and private-name violation of the package at ``pkg_dir``, sorted."""
    modules = find_modules(pkg_dir)
    names = set(modules)
    out: list[Violation] = []
    for module, (path, is_pkg) in modules.items():
        v = _Imports(module, is_pkg, names)
        v.visit(ast.parse(path.read_text(), filename=str(path)))
        if component(module) not in LAYERS:
            out.append(Violation(module, 1, module, UNKNOWN_RULE,
                                 f"component {component(module)!r}"))
        for line, target, name in v.found:
            out += _check_target(module, line, target, name)
        out += _attribute_violations(module, v, names)
    return sorted(set(out), key=lambda x: (x.importer, x.line, x.imported, x.rule))


def _attribute_violations(module: str, v: _Imports, names: set[str]) -> list[Violation]:
    """``X._y`` (also ``a.b._y`` through ``import a.b``) where ``X`` is a module bound by an
    import of ``module`` and ``_y`` is a private name (not a submodule) of it."""
    out = []
    for line, chain in v.attributes:
        if chain[0] not in v.aliases:
            continue
        dotted = [v.aliases[chain[0]]] + chain[1:]
        for i in range(len(dotted) - 1, 0, -1):   # the longest prefix that is a module
            mod = ".".join(dotted[:i])
            if mod in names:
                if _is_private(dotted[i]) and f"{mod}.{dotted[i]}" not in names:
                    out += [x for x in _check_target(module, line, mod, dotted[i])
                            if x.rule == PRIVATE_NAME_RULE]
                break
    return out


def test_tcc_compiler_layering():
    """The real package: lists every violation (importer:line imports X (why): rule)."""
    violations = check_package(ROOT / "tcc_compiler")
    assert not violations, "\n".join(map(str, violations))


# --- the checker itself, on a synthetic package ---------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "tcc_compiler"
    for rel, text in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [pkg, *[p for p in pkg.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return pkg


def test_checker_accepts_a_well_layered_package(tmp_path):
    pkg = _package(tmp_path, {
        "ir/graph.py": "X = 1\n_own = 2\nY = _own\n",
        "quant/params.py": "from tcc_compiler.ir.graph import X\nfrom ..ir import graph\n"
                           "import tcc_compiler.ir.graph as g\nZ = g.X + graph.X\n",
        "zoo/__init__.py": "from ._reference import build\n"
                           "from tcc_compiler.zoo import _reference\n",
        "zoo/_reference.py": "def build():\n    pass\n",
        "driver.py": "from tcc_compiler.sim import executor\nfrom tcc_compiler import api\n",
        "api.py": "import tcc_compiler.driver\n",
    })
    assert check_package(pkg) == []


def test_checker_names_importer_imported_and_rule(tmp_path):
    pkg = _package(tmp_path, {
        "ir/graph.py": "def f():\n    from tcc_compiler.sim import executor  # lazy: counts\n",
        "sim/executor.py": "import importlib\n_secret = 1\n"
                           "m = importlib.import_module('tcc_compiler.runtime.loaded')\n",
        "runtime/loaded.py": "from tcc_compiler.sim.executor import _secret\n"
                             "import tcc_compiler.sim.executor as ex\nA = ex._secret\n"
                             "from ..zoo import _reference\n",
        "zoo/_reference.py": "",
        "quant/calibrate.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from tcc_compiler.schedule import lower\n",
        "schedule/lower.py": "",
        "newstage/x.py": "from tcc_compiler.ir import graph\n",
    })
    got = {(v.importer, v.line, v.imported, v.rule) for v in check_package(pkg)}
    assert got == {
        ("tcc_compiler.ir.graph", 2, "tcc_compiler.sim.executor", LAYER_RULE),
        ("tcc_compiler.sim.executor", 3, "tcc_compiler.runtime.loaded", LAYER_RULE),
        ("tcc_compiler.runtime.loaded", 1, "tcc_compiler.sim.executor._secret",
         PRIVATE_NAME_RULE),
        ("tcc_compiler.runtime.loaded", 3, "tcc_compiler.sim.executor._secret",
         PRIVATE_NAME_RULE),
        ("tcc_compiler.runtime.loaded", 4, "tcc_compiler.zoo._reference", LAYER_RULE),
        ("tcc_compiler.runtime.loaded", 4, "tcc_compiler.zoo._reference", PRIVATE_MODULE_RULE),
        ("tcc_compiler.quant.calibrate", 3, "tcc_compiler.schedule.lower", LAYER_RULE),
        ("tcc_compiler.newstage.x", 1, "tcc_compiler.newstage.x", UNKNOWN_RULE),
        ("tcc_compiler.newstage", 1, "tcc_compiler.newstage", UNKNOWN_RULE),
    }
    msg = str(next(v for v in check_package(pkg) if v.importer == "tcc_compiler.ir.graph"))
    assert msg == ("tcc_compiler.ir.graph:2 imports tcc_compiler.sim.executor (ir is layer 0, "
                   f"sim is layer 6): {LAYER_RULE}")


@pytest.mark.parametrize("module,expected", [
    ("tcc_compiler", "__init__"), ("tcc_compiler.driver", "driver"),
    ("tcc_compiler.cli.commands.run", "cli")])
def test_component_of_a_module(module, expected):
    assert component(module) == expected
