"""An import-linter contract: no package imports another package's private module.

import-linter's own ``private_modules`` contract is stricter than ambidex's rule:
it also refuses ``runtime._core`` importing ``runtime._backends._local``, a
private module of a subpackage, from inside the same package. ambidex's rule is
only about the seams between packages: ``ambidex.cli`` may import
``ambidex.evolve`` (the package's public face), never ``ambidex.evolve._report``.
The root's own private modules (``ambidex._text``, ``ambidex._paths``, ...) are
the shared bottom layer every package may use; the layers contract keeps them
from importing upwards.

Registered in ``.importlinter`` as ``contract_types = foreign_private:
tests._contracts.ForeignPrivateImportsContract`` (``lint-imports`` puts the
working directory on ``sys.path``).

Imports the graph does not show. ambidex's own idiom is ``import ambidex as ax``
and then ``ax.jobs.submit(...)``: the root package imports ``ambidex.jobs`` on
first use, so a module of a lower layer could reach up (or into another
package's private module, ``ax.evolve._report``) with only ``import ambidex``
in its imports, which every contract allows. So does
``importlib.import_module("ambidex.evolve._report")``. ``dynamic_imports``
finds both in the source (attribute chains on a name bound to the container,
the container's lazily exported names resolved to their modules, and
``import_module`` of a literal name), and every contract here checks them as
imports: ``LayersContract`` and ``ForbiddenContract`` are import-linter's own
with those imports added to the graph first. Annotations and ``if
TYPE_CHECKING:`` blocks are left out, as they are for static imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import grimp
from importlinter.application import output
from importlinter.contracts.forbidden import ForbiddenContract as _Forbidden
from importlinter.contracts.layers import LayersContract as _Layers
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package_of(module: str, container: str) -> str | None:
    """The top-level child of ``container`` that ``module`` is in (None: the container)."""
    rest = module.removeprefix(container + ".")
    return None if module == container else rest.split(".")[0]


def _is_foreign_private(importer: str, imported: str, container: str) -> bool:
    """True when ``imported`` is private inside a package other than ``importer``'s."""
    package = _package_of(imported, container)
    if package is None or _is_private(package):
        return False  # the container itself, or a root module of the shared bottom layer
    inner = imported.split(".")[len(container.split(".")) + 1 :]
    if not any(_is_private(part) for part in inner):
        return False
    return _package_of(importer, container) != package


class ForeignPrivateImportsContract(Contract):
    """No module imports a private module of another top-level package of a container.

    Options:
        containers: the packages whose children are the packages (``ambidex``).
    """

    type_name = "foreign_private"

    containers = fields.SetField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        """Every import across a package seam into a private module, with its lines."""
        broken: list[dict[str, Any]] = []
        for container in sorted(self.containers):  # type: ignore[attr-defined]
            add_dynamic_imports(graph, container)
            for importer in sorted(graph.find_descendants(container) | {container}):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    if not imported.startswith(container + "."):
                        continue
                    if _is_foreign_private(importer, imported, container):
                        details = graph.get_import_details(importer=importer, imported=imported)
                        lines = tuple(d["line_number"] for d in details)
                        broken.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        """One line per import: which module imports which private module, and where."""
        output.print_error(
            "Private modules of a package may only be imported from inside that package:",
            bold=False,
        )
        output.new_line()
        for link in check.metadata["broken"]:
            lines = ", ".join(map(str, link["lines"]))
            output.print_error(
                f"- {link['importer']} -> {link['imported']} (l.{lines})", bold=False
            )
        output.new_line()
        output.print(
            "Import the name from the package instead (add it to the package's __init__ "
            "and __all__), or move a helper every package shares to a root module "
            "(ambidex._name)."
        )


# -- imports the graph does not show -------------------------------------------------


def _source_of(module: str, container: str, root: Path) -> Path | None:
    """The file of ``module`` (a module of ``container``, whose directory is ``root``)."""
    parts = module.split(".")[len(container.split(".")) :]
    base = root.joinpath(*parts)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Finder(ast.NodeVisitor):
    """Names of the container's modules that a module's code reaches without importing them."""

    def __init__(self, container: str, modules: set[str], lazy: dict[str, Any]) -> None:
        self.container = container
        self.modules = modules
        self.lazy = lazy
        self.bound: set[str] = set()  # names bound to the container (import ambidex as ax)
        self.found: list[tuple[str, int, str]] = []  # (module, line, what the code says)

    def resolve(self, dotted: str) -> str | None:
        """The longest module of the container that ``dotted`` starts with (None: none)."""
        parts = dotted.split(".")
        for end in range(len(parts), len(self.container.split(".")), -1):
            name = ".".join(parts[:end])
            if name in self.modules and name != self.container:
                return name
        first = parts[len(self.container.split("."))] if dotted != self.container else ""
        target = self.lazy.get(first)
        return target if isinstance(target, str) and target in self.modules else None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname == self.container or (
                alias.asname is None and alias.name.split(".")[0] == self.container
            ):
                self.bound.add(self.container)
            elif alias.name == self.container and alias.asname:
                self.bound.add(alias.asname)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        pass  # its annotation is never evaluated (from __future__ import annotations)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in (*node.decorator_list, node.args, *node.body):
            self.visit(child)  # not node.returns: an annotation

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        base: ast.expr = node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in self.bound:
            dotted = ".".join([self.container, *reversed(chain)])
            target = self.resolve(dotted)
            if target is not None:
                self.found.append((target, node.lineno, dotted))
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args:
            arg = node.args[0]
            literal = arg.value if isinstance(arg, ast.Constant) else None
            if isinstance(literal, str) and literal.startswith(self.container + "."):
                target = self.resolve(literal)
                if target is not None:
                    self.found.append((target, node.lineno, f"import_module({literal!r})"))
        self.generic_visit(node)


def dynamic_imports(graph: grimp.ImportGraph, container: str) -> list[tuple[str, str, int, str]]:
    """``(importer, imported, line, code)`` of each import the module docstring describes."""
    spec = importlib.util.find_spec(container)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    lazy = getattr(importlib.import_module(container), "_LAZY", {})
    modules = graph.find_descendants(container) | {container}
    found: list[tuple[str, str, int, str]] = []
    for importer in sorted(modules):
        path = _source_of(importer, container, root)
        if path is None or importer == container:  # the container's own lazy exports
            continue
        finder = _Finder(container, modules, lazy if isinstance(lazy, dict) else {})
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found += [(importer, target, line, code) for target, line, code in finder.found]
    return found


def add_dynamic_imports(graph: grimp.ImportGraph, container: str) -> None:
    """Add ``dynamic_imports`` to the graph, so a contract checks them as imports."""
    for importer, imported, line, code in dynamic_imports(graph, container):
        if imported != importer and not imported.startswith(importer + "."):
            graph.add_import(
                importer=importer, imported=imported, line_number=line, line_contents=code
            )


class LayersContract(_Layers):
    """import-linter's layers contract, checking ``dynamic_imports`` too."""

    type_name = "layers_dynamic"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        """The layers contract, on the graph with the dynamic imports added."""
        for container in sorted(str(c) for c in self.containers):  # type: ignore[attr-defined]
            add_dynamic_imports(graph, container)
        return super().check(graph, verbose)


class ForbiddenContract(_Forbidden):
    """import-linter's forbidden contract, checking ``dynamic_imports`` too."""

    type_name = "forbidden_dynamic"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        """The forbidden contract, on the graph with the dynamic imports added."""
        roots = {str(m).split(".")[0] for m in self.source_modules}  # type: ignore[attr-defined]
        for container in sorted(roots):
            add_dynamic_imports(graph, container)
        return super().check(graph, verbose)
