"""One way to load a user's file or module and find the classes it defines."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from ambidex._imports import MissingFileError, classes_in, load_module


class Base:
    pass


def _write(folder: Path, source: str) -> Path:
    # a fresh name per test: a module, once imported, stays in sys.modules
    path = folder / f"user_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source)
    return path


SOURCE = f"""
from {__name__} import Base

class Second(Base):
    pass

class First(Base):
    pass

class Other:
    pass
"""


def test_load_module_imports_a_file_by_path_under_its_own_name(tmp_path: Path) -> None:
    path = _write(tmp_path, SOURCE)
    module = load_module(str(path))
    assert module.__name__ == path.stem
    assert sys.modules[path.stem] is module


def test_load_module_imports_a_dotted_module_name() -> None:
    assert load_module("json.decoder") is sys.modules["json.decoder"]


def test_classes_in_lists_subclasses_the_module_defines_in_order(tmp_path: Path) -> None:
    module = load_module(str(_write(tmp_path, SOURCE)))
    found = classes_in(module, Base)
    assert list(found) == ["Second", "First"]  # not Base (imported), not Other
    assert all(issubclass(cls, Base) for cls in found.values())


def test_classes_in_leaves_out_classes_imported_from_elsewhere(tmp_path: Path) -> None:
    shared = _write(tmp_path, SOURCE)
    user = _write(tmp_path, f"from {shared.stem} import First\n")
    assert classes_in(load_module(str(user)), Base) == {}


def test_missing_file_is_its_own_error_not_one_the_module_raised(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no such file"):
        load_module(str(tmp_path / "absent.py"))
    opener = _write(tmp_path, "open('/nonexistent/ambidex-test')\n")
    with pytest.raises(ValueError, match=r"importing .* failed: FileNotFoundError") as caught:
        load_module(str(opener))
    assert not isinstance(caught.value, MissingFileError)


def test_a_file_that_does_not_parse_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "x = 1\ndef broken(:\n")
    with pytest.raises(ValueError, match=r"line 2"):
        load_module(str(path))


def test_an_unknown_module_name_raises_import_error() -> None:
    with pytest.raises(ImportError):
        load_module("ambidex_no_such_module_here")


def test_worker_load_keeps_its_own_messages(tmp_path: Path) -> None:
    from ambidex.jobs import WorkloadRegistry, load_workloads

    reg = WorkloadRegistry()
    with pytest.raises(ValueError, match=r"workload file not found: .*absent\.py"):
        load_workloads(str(tmp_path / "absent.py"), reg)
    broken = _write(tmp_path, "x = 1\ndef broken(:\n")
    with pytest.raises(ValueError, match=rf"importing {broken}.*line 2"):
        load_workloads(str(broken), reg)
    with pytest.raises(ValueError, match="importing workload module 'ambidex_nowhere' failed"):
        load_workloads("ambidex_nowhere", reg)


def test_sim_load_model_keeps_its_own_messages(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from ambidex.sim import ModelError, load_model

    with pytest.raises(ModelError, match=r"model file not found: .*absent\.py"):
        load_model(str(tmp_path / "absent.py"))
    empty = _write(tmp_path, "x = 1\n")
    with pytest.raises(ModelError, match="defines 0 Model classes"):
        load_model(str(empty))
    with pytest.raises(ModelError, match="cannot load model 'ambidex_nowhere'"):
        load_model("ambidex_nowhere")
