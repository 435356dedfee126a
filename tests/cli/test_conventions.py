"""What every ``ambidex`` command shares: --version, -h, metavars, one-line errors, -i JSON.

Real subprocesses where the process matters (exit codes, stderr, the
environment); typer's CliRunner in this process for the help of every command.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import ambidex.cli as cli_module
from ambidex.cli import app
from ambidex.cli._conventions import Command, Group
from ambidex.cli._run import input_value, parse_inputs

BOOM = """
import ambidex.sim


class Boom(ambidex.sim.Model):
    defaults = {"n": 1}

    def setup(self, params):
        self.x = 0

    def step(self):
        self.x += 1
        raise RuntimeError("needs pip install 'ambidex[fast]'")

    def metrics(self):
        return {"x": self.x}
"""

ECHO_MODULE = """
def echo(grid: dict, name: str, n: int) -> dict:
    return {"grid": grid, "name": name, "n": n}
"""

ECHO_WORKFLOW = """
name: echo
inputs:
  grid: dict
  name: str
  n: int
nodes:
  echo:
    function: echo_inputs:echo
    input: {grid: "${inputs.grid}", name: "${inputs.name}", n: "${inputs.n}"}
"""


def ambidex(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ambidex ARGS`` with AMBIDEX_HOME in ``cwd``; never a traceback."""
    full = {**os.environ, "AMBIDEX_HOME": str(cwd / "home"), "COLUMNS": "200"}
    for key in ("AMBIDEX_LOG_LEVEL", "AMBIDEX_LOOP", "AMBIDEX_BACKEND"):
        full.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**full, **(env or {})},
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def invoke(*args: str, **env: str) -> tuple[int, str, str]:
    """``ambidex ARGS`` in this process."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def root_log_level() -> Iterator[None]:
    """Put the root logger's level back after a test that sets it through the CLI."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    done = ambidex("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == f"ambidex {version('ambidex')}\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve", "--log-level", "bogus"], {}, "'bogus' is not one of 'debug', 'info'"),
        (["info"], {"AMBIDEX_LOG_LEVEL": "bogus"}, "(env var: 'AMBIDEX_LOG_LEVEL')"),
        (["demo"], {"AMBIDEX_LOOP": "foo"}, "AMBIDEX_LOOP='foo': expected 'auto', 'uvloop'"),
        (["jobs", "list"], {"AMBIDEX_BACKEND": "foo"}, "AMBIDEX_BACKEND='foo': expected"),
        (["info"], {"AMBIDEX_CPU_WORKERS": "lots"}, "AMBIDEX_CPU_WORKERS='lots'"),
        (["nosuch"], {}, "no such command 'nosuch' (see 'ambidex -h')"),
        (["sim", "run"], {}, "missing argument 'MODEL' (see 'ambidex sim run -h')"),
        (["demo", "--scale", "lots"], {}, "invalid value for '--scale'"),
        (["run", "missing[fast].yaml"], {}, "missing[fast].yaml: cannot read the workflow file"),
        (["run", "wf.yaml", "-i", "novalue"], {}, "--input 'novalue': expected key=value"),
        (["sim", "run", "missing.py"], {}, "model file not found: missing.py"),
        (["run", "wf.yaml", "--resume", "nosuch"], {}, "no run 'nosuch' in "),
        (["sim", "report", "missing.sqlite"], {}, "no record at missing.sqlite"),
    ],
)
def test_a_user_error_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    (tmp_path / "echo_inputs.py").write_text(ECHO_MODULE)
    (tmp_path / "wf.yaml").write_text(ECHO_WORKFLOW)
    done = ambidex(*args, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert says in error_line(done)
    assert done.stdout == ""


def test_an_unusable_home_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    (tmp_path / "wf.yaml").write_text(ECHO_WORKFLOW)
    done = ambidex("run", "wf.yaml", cwd=tmp_path, env={"AMBIDEX_HOME": "a_file/home"})
    assert done.returncode == 2
    assert error_line(done).endswith("AMBIDEX_HOME=a_file/home: a_file is not a directory")


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, busy_port: int) -> None:
    done = ambidex("serve", "--port", str(busy_port), cwd=tmp_path)
    assert done.returncode == 2
    assert error_line(done) == (
        f"error: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    )


def test_a_model_that_raises_is_one_line_then_its_own_traceback(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(BOOM)
    done = ambidex("sim", "run", "boom.py", "--steps", "3", cwd=tmp_path)
    assert done.returncode == 1
    first, *rest = done.stderr.strip().splitlines()
    assert first == (
        "error: model Boom raised RuntimeError: needs pip install 'ambidex[fast]' "
        "(boom.py, line 13, in step)"
    )
    assert rest == [
        f'  File "{tmp_path / "boom.py"}", line 13, in step',
        """    raise RuntimeError("needs pip install 'ambidex[fast]'")""",
        "RuntimeError: needs pip install 'ambidex[fast]'",
    ]


def test_input_values_are_json_where_they_parse_and_text_otherwise(tmp_path: Path) -> None:
    (tmp_path / "echo_inputs.py").write_text(ECHO_MODULE)
    (tmp_path / "wf.yaml").write_text(ECHO_WORKFLOW)
    done = ambidex(
        "run",
        "wf.yaml",
        "-i",
        'grid={"a": [1, 2]}',
        "-i",
        "name=123",  # a str input keeps the text
        "-i",
        "n=7",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["nodes"]["echo"]["output"]
    assert output == {"grid": {"a": [1, 2]}, "name": "123", "n": 7}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ('"42"', "42"),
        ("Ada", "Ada"),
        ("01", "01"),
        ("[1, 2", "[1, 2"),
        ("NaN", "NaN"),
        ("", ""),
    ],
)
def test_input_value_is_json_or_the_text(text: str, value: Any) -> None:
    assert input_value(text) == value


def test_parse_inputs_keeps_text_inputs_and_lets_later_items_win() -> None:
    values = parse_inputs(["n=1", "name=007", "n=2", "flag=false"], text_inputs={"name"})
    assert values == {"n": 2, "name": "007", "flag": False}


def test_info_json_has_what_the_table_shows() -> None:
    code, out, _ = invoke(
        "info",
        "--json",
        AMBIDEX_LOOP="asyncio",
        AMBIDEX_IO_THREADS="5",
        AMBIDEX_IO_THREADS_MAX="40",
    )
    assert code == 0
    facts = json.loads(out)
    assert facts["ambidex"] == version("ambidex")
    assert facts["io_threads"] == 5
    assert facts["io_threads_max"] == 40
    assert facts["event_loop"] == "asyncio"
    assert facts["backend"] == "local"
    assert set(facts) == {
        "ambidex",
        "usable_cpus",
        "cgroup_cpu_quota",
        "io_threads",
        "io_threads_max",
        "cpu_workers",
        "backend",
        "event_loop",
        "tracing",
    }
    assert facts["tracing"]["on"] is False


def _command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return paths


def test_every_command_and_group_follows_the_conventions() -> None:
    def walk(command: Any, path: str) -> None:
        assert isinstance(command, Command | Group), f"{path} is a {type(command).__name__}"
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "ambidex")


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "ambidex")
def test_h_is_help_on_every_command_and_group(path: list[str]) -> None:
    code, out, err = invoke(*path, "-h")
    assert code == 0, err
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert f"Usage: ambidex {' '.join(path)}".rstrip() in usage
    assert "{" not in usage
    for noise in ("<bool>", "<int", "<float", "<str>", "<path>", "<list"):
        assert noise not in out, out


def test_help_shows_conventional_metavars_and_literal_brackets() -> None:
    _, out, _ = invoke("sim", "run", "-h")
    assert "Usage: ambidex sim run [OPTIONS] MODEL" in out
    assert "INTEGER" in out
    assert "PATH" in out
    _, out, _ = invoke("serve", "-h")
    assert "[debug|info|warning|error]" in out
    _, out, _ = invoke("evolve", "show", "-h")
    assert "pip install 'ambidex[sim]'" in " ".join(out.replace("│", " ").split())


def test_shell_completion_completes_commands_and_options(tmp_path: Path) -> None:
    env = {"_AMBIDEX_COMPLETE": "complete_bash", "COMP_WORDS": "ambidex sim run --st"}
    done = ambidex(cwd=tmp_path, env={**env, "COMP_CWORD": "3"})
    assert done.returncode == 0
    assert done.stdout.split() == ["--steps"]
    _, out, _ = invoke("-h")
    assert "--install-completion" in out
    assert "--show-completion" in out


@pytest.mark.usefixtures("root_log_level")
def test_log_level_is_set_for_any_command_by_option_or_variable() -> None:
    code, _, _ = invoke("--log-level", "debug", "info", "--json")
    assert code == 0
    assert logging.getLogger().level == logging.DEBUG
    code, _, _ = invoke("info", "--json", AMBIDEX_LOG_LEVEL="ERROR")
    assert code == 0
    assert logging.getLogger().level == logging.ERROR
    code, _, _ = invoke("info", "--json")
    assert code == 0
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.usefixtures("root_log_level")
def test_an_unexpected_exception_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise RuntimeError("broken [on purpose]\nsecond line")

    monkeypatch.setattr(cli_module, "installed_version", broken)
    code, _, err = invoke("info")
    assert code == 1
    assert err == (
        "error: unexpected RuntimeError: broken [on purpose] second line "
        "(--log-level debug shows the traceback)\n"
    )
    code, _, err = invoke("--log-level", "debug", "info")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("error: unexpected RuntimeError: broken [on purpose] second line")


def _small_app() -> Any:
    import typer

    from ambidex.cli._conventions import AmbidexTyper

    small = AmbidexTyper(name="small")

    @small.command("go")
    def go(
        target: str,
        count: int = 1,
        loud: bool = False,
        note: str = typer.Option("", help="Kept as written: pip install 'ambidex[sim]'."),
    ) -> None:
        """Go somewhere."""
        typer.echo(f"{target} {count} {loud} {note}")

    @small.command("stay")
    def stay() -> None:
        """Stay."""

    return small


def test_installed_typer_has_the_hooks_the_metavars_use() -> None:
    from ambidex.cli import _conventions

    assert _conventions.METAVAR_HOOKS, "this typer lost the metavar hooks: see metavar_hooks()"
    out = CliRunner().invoke(_small_app(), ["go", "-h"]).output
    assert "Usage: small go [OPTIONS] TARGET" in out
    assert "INTEGER" in out
    assert "<int>" not in out
    assert "--loud " in out  # a flag shows no metavar at all


@pytest.mark.parametrize(
    ("cls_name", "attribute"),
    [("_TyperParameter", "display_name_raw"), ("TyperArgument", "_usage_display_name")],
)
def test_a_typer_without_a_hook_is_noticed(
    monkeypatch: pytest.MonkeyPatch, cls_name: str, attribute: str
) -> None:
    import typer.core

    from ambidex.cli._conventions import metavar_hooks

    monkeypatch.delattr(getattr(typer.core, cls_name), attribute)
    assert metavar_hooks() is False


def test_a_typer_that_builds_parameters_otherwise_is_noticed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import typer.core

    from ambidex.cli._conventions import metavar_hooks

    def older_init(self: Any, param_decls: Any = None, **attrs: Any) -> None:
        """An option built without a type descriptor, as older typers do."""

    monkeypatch.setattr(typer.core.TyperOption, "__init__", older_init)
    assert metavar_hooks() is False


def test_a_typer_without_the_hooks_shows_its_own_metavars_and_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ambidex.cli import _conventions

    monkeypatch.setattr(_conventions, "METAVAR_HOOKS", False)
    small = _small_app()
    runner = CliRunner()
    shown = runner.invoke(small, ["go", "-h"])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "Usage: small go" in out
    assert "pip install 'ambidex[sim]'" in " ".join(out.replace("│", " ").split())
    command = get_command(small).commands["go"]  # type: ignore[attr-defined]
    assert not any(
        isinstance(p, _conventions._Option | _conventions._Argument) for p in command.params
    )
    ran = runner.invoke(small, ["go", "there", "--count", "3", "--loud"])
    assert ran.exit_code == 0, ran.output
    assert ran.output.strip() == "there 3 True"
