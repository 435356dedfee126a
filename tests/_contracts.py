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
"""

from __future__ import annotations

from typing import Any

import grimp
from importlinter.application import output
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
