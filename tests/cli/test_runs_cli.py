"""``ambidex run`` and ``ambidex runs list|show|resume``, run as real subprocesses.

The run id comes first on stderr, a terminal or not; a failed or interrupted
run prints a resume command that runs as printed; lines meant to be copied are
never wrapped at any width; every mistake is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = """
import time
from pathlib import Path


def _log(name):
    with open("calls.log", "a") as f:  # relative: the run's directory
        f.write(name + "\\n")


def quick(n: int) -> int:
    _log("quick")
    return n + 1


def slow(n: int) -> int:
    _log("slow")
    Path("slow.started").touch()
    deadline = time.monotonic() + 60
    while not Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return n * 10


def picky(n: int) -> int:
    _log("picky")
    if not Path("fixed").exists():
        raise ValueError(f"not yet: {n}")
    return n * 100
"""


def _workflow(name: str, second: str) -> str:
    return f"""
name: {name}
inputs:
  n: int
nodes:
  quick:
    function: steps:quick
    input: {{n: "${{inputs.n}}"}}
  {second}:
    function: steps:{second}
    input: {{n: "${{quick.output}}"}}
"""


LONG = "a folder with a rather long name for these checkpoints, to be kept whole"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the workflows slow.yaml and picky.yaml and their module."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "steps.py").write_text(STEPS)
    (folder / "slow.yaml").write_text(_workflow("slow", "slow"))
    (folder / "picky.yaml").write_text(_workflow("picky", "picky"))
    return folder


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBIDEX_")}
    return {**env, "AMBIDEX_HOME": str(home), "COLUMNS": "200", **extra}


def ambidex(
    *args: str, cwd: Path, home: Path, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(home, COLUMNS=str(columns)),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return log.read_text().split() if log.exists() else []


def _line(text: str, start: str) -> str:
    """The one line of ``text`` that starts with ``start``."""
    found = [line for line in text.splitlines() if line.startswith(start)]
    assert len(found) == 1, text
    return found[0]


def _as_argv(command: str) -> list[str]:
    """A printed ``ambidex ...`` command as this interpreter runs it."""
    words = shlex.split(command)
    assert words[0] == "ambidex", command
    return [sys.executable, "-m", "ambidex", *words[1:]]


def _one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert done.stdout == ""
    return lines[0]


def test_the_run_id_is_printed_first_when_stderr_is_not_a_terminal(
    project: Path, tmp_path: Path
) -> None:
    (project / "fixed").touch()
    done = ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "nightly-1", cwd=project,
                   home=tmp_path / "home")  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    db = tmp_path / "home" / "runs.sqlite"
    assert first == f"run nightly-1 of workflow 'picky' started; checkpoints in {db}"
    assert "succeeded" in done.stdout
    assert "(run nightly-1)" in done.stdout


def test_a_run_id_that_exists_is_refused_unless_resumed(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (project / "fixed").touch()
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r1", cwd=project,
                   home=home).returncode == 0  # fmt: skip
    again = ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r1", cwd=project, home=home)
    assert "run r1 already exists in" in _one_error(again)
    assert "--resume r1" in again.stderr
    assert _calls(project) == ["quick", "picky"]  # nothing ran the second time
    both = ambidex("run", "picky.yaml", "--run-id", "r1", "--resume", "r1", cwd=project,
                   home=home)  # fmt: skip
    assert both.returncode == 0, both.stderr
    two = ambidex("run", "picky.yaml", "--run-id", "r2", "--resume", "r1", cwd=project, home=home)
    assert "--run-id r2 and --resume r1 name two runs" in _one_error(two)
    bad = ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "a b", cwd=project, home=home)
    assert "--run-id 'a b': use letters, digits" in _one_error(bad)


def test_a_failure_ends_the_view_with_a_newline_and_prints_a_resume_command_that_runs(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    failed = ambidex("run", "picky.yaml", "-i", "n=4", cwd=project, home=home)
    assert failed.returncode == 1
    assert _line(failed.stderr, "failed: ").endswith("raised ValueError: not yet: 5")
    command = _line(failed.stderr, "resume with: ").removeprefix("resume with: ")
    (project / "fixed").touch()
    resumed = subprocess.run(_as_argv(command), capture_output=True, text=True, cwd=project,
                             env=_env(home), timeout=60, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed (1 of 2 nodes had finished)" in resumed.stderr
    assert _calls(project) == ["quick", "picky", "picky"]  # quick was not run again


def test_ctrl_c_prints_a_runnable_resume_command_and_exits_130(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    db = tmp_path / LONG / "runs of today.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ambidex", "run", "slow.yaml", "-i", "n=2", "--db", str(db)],
        cwd=project,
        env=_env(home, COLUMNS="40"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (project / "slow.started").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert out == ""
    run_id = err.split()[1]  # "run ID of workflow ..."
    assert _line(err, "interrupted: ") == (
        f"interrupted: run {run_id} stopped; the nodes that finished are kept in {db}"
    )
    command = _line(err, "resume with: ").removeprefix("resume with: ")
    assert shlex.split(command) == ["ambidex", "run", "slow.yaml", "--resume", run_id,
                                    "--db", str(db)]  # fmt: skip
    (project / "release").touch()
    resumed = subprocess.run(_as_argv(command), capture_output=True, text=True, cwd=project,
                             env=_env(home), timeout=60, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "slow: 30" in resumed.stdout
    assert _calls(project) == ["quick", "slow", "slow"]  # quick was not run again


def test_copyable_lines_are_whole_at_40_columns(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = tmp_path / LONG / "runs.sqlite"
    failed = ambidex("run", "picky.yaml", "-i", "n=1", "--db", str(db), cwd=project, home=home,
                     columns=40)  # fmt: skip
    assert failed.returncode == 1
    run_id = failed.stderr.split()[1]
    assert _line(failed.stderr, f"run {run_id} of ").endswith(f"; checkpoints in {db}")
    command = _line(failed.stderr, "resume with: ").removeprefix("resume with: ")
    assert shlex.split(command)[-2:] == ["--db", str(db)]
    assert _line(failed.stderr, "failed: ").endswith("raised ValueError: not yet: 2")
    listed = ambidex("runs", "list", "--db", str(db), cwd=tmp_path, home=home, columns=40)
    row = [run_id, "picky", "failed", *_when(listed), "1/2"]
    assert _line(listed.stdout, run_id).split() == row  # one line, however narrow
    shown = ambidex("runs", "show", run_id, "--db", str(db), cwd=tmp_path, home=home, columns=40)
    assert _line(shown.stdout, "file:").split(maxsplit=1)[1] == str(project / "picky.yaml")
    hint = _line(shown.stdout, "resume with: ").removeprefix("resume with: ")
    assert shlex.split(hint) == ["ambidex", "runs", "resume", run_id, "--db", str(db)]


def _when(listed: subprocess.CompletedProcess[str]) -> list[str]:
    """The date and time of the only run listed."""
    (row,) = listed.stdout.splitlines()[1:]
    return row.split()[3:5]


def test_runs_list_newest_first_one_line_each_and_as_json(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "older", cwd=project,
                   home=home).returncode == 1  # fmt: skip
    (project / "fixed").touch()
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "newer", cwd=project,
                   home=home).returncode == 0  # fmt: skip
    listed = ambidex("runs", "list", cwd=tmp_path, home=home)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["run", "workflow", "status", "started", "nodes"]
    assert [row.split()[:3] + row.split()[-1:] for row in rows] == [
        ["newer", "picky", "succeeded", "2/2"],
        ["older", "picky", "failed", "1/2"],
    ]
    payload = json.loads(ambidex("runs", "list", "--json", cwd=tmp_path, home=home).stdout)
    newer, older = payload["runs"]
    assert (newer["run_id"], newer["nodes_finished"], newer["nodes_total"]) == ("newer", 2, 2)
    assert (older["status"], older["source"]) == ("failed", str(project / "picky.yaml"))
    assert newer["started_at"] >= older["started_at"]
    limited = ambidex("runs", "list", "--limit", "1", cwd=tmp_path, home=home)
    assert len(limited.stdout.splitlines()) == 2


def test_runs_list_with_no_runs_yet(tmp_path: Path) -> None:
    done = ambidex("runs", "list", cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 0
    assert done.stdout.strip() == f"no runs in {tmp_path / 'home' / 'runs.sqlite'}"
    assert not (tmp_path / "home" / "runs.sqlite").exists()  # listing makes no file
    empty = ambidex("runs", "list", "--json", cwd=tmp_path, home=tmp_path / "home")
    assert json.loads(empty.stdout) == {"runs": []}


def test_runs_show_lists_each_node_with_status_time_attempts_and_error(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r", cwd=project,
                   home=home).returncode == 1  # fmt: skip
    shown = ambidex("runs", "show", "r", cwd=tmp_path, home=home)
    assert shown.returncode == 0, shown.stderr
    assert _line(shown.stdout, "status:").split() == ["status:", "failed"]
    assert _line(shown.stdout, "nodes:").split() == ["nodes:", "1", "of", "2", "finished"]
    assert _line(shown.stdout, "directory:").split(maxsplit=1)[1] == str(project)
    quick = _line(shown.stdout, "quick ").split()
    assert quick[:3] == ["quick", "succeeded", "1"]
    assert quick[4] == "s"  # "0.00 s"
    assert _line(shown.stdout, "picky ").split()[:3] == ["picky", "failed", "1"]
    assert "ValueError: not yet: 2" in _line(shown.stdout, "picky ")
    payload = json.loads(ambidex("runs", "show", "r", "--json", cwd=tmp_path, home=home).stdout)
    assert payload["run"]["run_id"] == "r"
    nodes = {n["node"]: n for n in payload["nodes"]}
    assert nodes["quick"]["status"] == "succeeded"
    assert nodes["quick"]["duration_s"] >= 0
    assert (nodes["picky"]["status"], nodes["picky"]["attempts"]) == ("failed", 1)
    assert nodes["picky"]["error"] == "ValueError: not yet: 2"


def test_runs_resume_uses_the_recorded_file_inputs_and_directory(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    failed = ambidex("run", "picky.yaml", "-i", "n=7", "--run-id", "r", cwd=project, home=home)
    assert failed.returncode == 1
    (project / "fixed").touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = ambidex("runs", "resume", "r", "--json", cwd=elsewhere, home=home)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["inputs"] == {"n": 7}
    assert result["nodes"]["picky"]["output"] == 800
    assert _line(resumed.stderr, "run r ").startswith("run r of workflow 'picky' resumed")
    assert _calls(project) == ["quick", "picky", "picky"]  # in the run's own directory
    assert not (elsewhere / "calls.log").exists()


def test_runs_resume_of_a_run_that_fails_again_prints_its_own_command(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r", cwd=project,
                   home=home).returncode == 1  # fmt: skip
    again = ambidex("runs", "resume", "r", cwd=tmp_path, home=home)
    assert again.returncode == 1
    assert _line(again.stderr, "resume with: ") == "resume with: ambidex runs resume r"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["runs", "show", "nosuch"], "no run 'nosuch' in {home}/runs.sqlite (latest: r)"),
        (["runs", "resume", "nosuch"], "no run 'nosuch' in {home}/runs.sqlite (latest: r)"),
        (["run", "picky.yaml", "--resume", "nosuch"], "no run 'nosuch' in"),
        (["runs", "list", "--db", "missing.sqlite"], "no checkpoint file at missing.sqlite"),
        (["runs", "show", "r", "--db", "picky.yaml"], "picky.yaml is not a checkpoint file"),
        (
            ["run", "picky.yaml", "-i", "n=x", "-i", "m=1"],
            "picky.yaml: 2 problems: line 4: input 'n': expected int",
        ),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(
    project: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    home = tmp_path / "home"
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r", cwd=project,
                   home=home).returncode == 1  # fmt: skip
    line = _one_error(ambidex(*args, cwd=project, home=home))
    assert says.format(home=home) in line


def test_resuming_a_run_whose_workflow_file_moved_is_one_line(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", "r", cwd=project,
                   home=home).returncode == 1  # fmt: skip
    (project / "picky.yaml").rename(project / "moved.yaml")
    line = _one_error(ambidex("runs", "resume", "r", cwd=tmp_path, home=home))
    assert f"its workflow file {project / 'picky.yaml'} is not there any more" in line
    assert line.endswith("resume it with: ambidex run WORKFLOW.yaml --resume r")
    (project / "fixed").touch()
    by_hand = ambidex("run", "moved.yaml", "--resume", "r", cwd=project, home=home)
    assert by_hand.returncode == 0, by_hand.stderr


# -- review 16 --------------------------------------------------------------------------


def test_a_run_id_of_undecodable_bytes_is_one_line_and_exit_2(
    project: Path, tmp_path: Path
) -> None:
    """Before: `runs show $'\\xff'` (and resume, run --resume) exited 1 with
    "unexpected UnicodeEncodeError": SQLite cannot bind a lone surrogate."""
    home = tmp_path / "home"
    (project / "fixed").touch()
    assert ambidex("run", "picky.yaml", "-i", "n=1", cwd=project, home=home).returncode == 0
    bad = "r\udcff"  # what Python makes of the bytes b"r\xff" on the command line
    for args in (
        ("runs", "show", bad),
        ("runs", "resume", bad),
        ("run", "picky.yaml", "--resume", bad),
    ):
        line = _one_error(ambidex(*args, cwd=project, home=home))
        assert line.startswith("error: no run 'r\\udcff' in "), line


def test_a_workflow_file_named_in_undecodable_bytes_is_recorded_and_its_resume_command_runs(
    project: Path, tmp_path: Path
) -> None:
    """Before: `ambidex run $'w\\xff.yaml'` started the view, then exited 1 with
    "unexpected UnicodeEncodeError" (the file's path could not be stored), and the
    printed resume command named a file 'w\\udcff.yaml' that does not exist."""
    home = tmp_path / "home"
    name = "w\udcff.yaml"
    (project / name).write_text((project / "picky.yaml").read_text())
    failed = ambidex("run", name, "-i", "n=4", "--run-id", "odd", cwd=project, home=home)
    assert failed.returncode == 1, failed.stderr
    command = _line(failed.stderr, "resume with: ").removeprefix("resume with: ")
    assert command == "ambidex run $'w\\xff.yaml' --resume odd"
    shown = ambidex("runs", "show", "odd", "--json", cwd=project, home=home)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["source"] == str(project / name)
    (project / "fixed").touch()
    runner = f"{shlex.quote(sys.executable)} -m ambidex"
    resumed = subprocess.run(["bash", "-c", command.replace("ambidex", runner, 1)],
                             capture_output=True, text=True, cwd=project, env=_env(home),
                             timeout=60, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    again = ambidex("runs", "resume", "odd", cwd=project, home=home)  # from the recorded file
    assert again.returncode == 0, again.stderr


CHANGING = """
class Box:
    def __init__(self, n):
        self.n = n


def boxed(n: int) -> Box:
    return Box(n)


def fails(b: Box) -> int:
    raise ValueError("not yet")
"""


@pytest.mark.parametrize("damage", ["code changed", "file damaged"])
def test_resuming_a_run_whose_stored_output_cannot_be_read_is_one_line(
    project: Path, tmp_path: Path, damage: str
) -> None:
    """Before: exit 1 with "unexpected AttributeError: Can't get attribute 'Box'" (or
    "unexpected UnpicklingError") when the code changed since the run, or the file was
    damaged; it is a mistake the user can act on: one line naming the node, exit 2."""
    import sqlite3

    home = tmp_path / "home"
    (project / "changing.py").write_text(CHANGING)
    (project / "c.yaml").write_text(
        "name: c\nnodes:\n  boxed:\n    function: changing:boxed\n    input: {n: 1}\n"
        '  fails:\n    function: changing:fails\n    input: {b: "${boxed.output}"}\n'
    )
    done = ambidex("run", "c.yaml", "--run-id", "c1", cwd=project, home=home)
    assert done.returncode == 1, done.stderr
    if damage == "code changed":
        (project / "changing.py").write_text(CHANGING.replace("Box", "Crate"))
    else:
        db = sqlite3.connect(home / "runs.sqlite")
        db.execute("update nodes set output = x'00112233' where node = 'boxed'")
        db.commit()
        db.close()
    for args in (("runs", "resume", "c1"), ("run", "c.yaml", "--resume", "c1")):
        line = _one_error(ambidex(*args, cwd=project, home=home))
        assert "run 'c1' in " in line
        assert "cannot be resumed: the stored output of node 'boxed' cannot be read" in line


def test_runs_show_of_a_run_with_no_recorded_file_prints_a_resume_command_that_can_work(
    project: Path, tmp_path: Path
) -> None:
    """Before (review 16): `runs show` of a run made from Python (or by an older ambidex,
    or whose file moved) printed `resume with: ambidex runs resume ID`, a command that
    can only fail ("has no recorded workflow file"). It now prints the form that can
    work: `ambidex run WORKFLOW.yaml --resume ID`."""
    import ambidex as ax

    db = tmp_path / "py runs.sqlite"

    def broken() -> int:
        raise ValueError("broken")

    wf = ax.Workflow("from-python")
    wf.node("n", broken)
    with pytest.raises(ax.WorkflowError):
        wf.run(checkpoint=str(db), run_id="py-1")
    shown = ambidex("runs", "show", "py-1", "--db", str(db), cwd=project, home=tmp_path / "h")
    assert shown.returncode == 0, shown.stderr
    command = _line(shown.stdout, "resume with: ").removeprefix("resume with: ")
    assert shlex.split(command) == [
        "ambidex", "run", "WORKFLOW.yaml", "--resume", "py-1", "--db", str(db)
    ]  # fmt: skip
    refused = ambidex("runs", "resume", "py-1", "--db", str(db), cwd=project, home=tmp_path / "h")
    assert "has no recorded workflow file" in _one_error(refused)


def _schema(db: Path) -> tuple[list[str], str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("select sql from sqlite_master where sql is not null")]
        return tables, conn.execute("pragma journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_a_db_that_is_another_programs_database_is_refused_and_left_as_it_was(
    project: Path, tmp_path: Path
) -> None:
    """Before (review 16): `ambidex runs list --db app.sqlite` naming another program's
    database with a `runs` table of its own added four columns to that table, created a
    `nodes` table, switched the file to WAL, then exited 1 with "unexpected
    OperationalError: no such column: r.run_id". `ambidex run --db` altered it the same
    way. A file with no `runs` table got ambidex's tables from a mere listing."""
    import sqlite3

    home = tmp_path / "home"
    app = tmp_path / "app.sqlite"
    conn = sqlite3.connect(app)
    conn.execute("create table runs (id integer primary key, name text)")
    conn.execute("insert into runs values (1, 'mine')")
    conn.commit()
    conn.close()
    before = _schema(app)
    for args in (
        ("runs", "list", "--db", str(app)),
        ("runs", "show", "x", "--db", str(app)),
        ("runs", "resume", "x", "--db", str(app)),
        ("run", "picky.yaml", "-i", "n=1", "--db", str(app)),
    ):
        line = _one_error(ambidex(*args, cwd=project, home=home))
        assert line == (
            f"error: {app} is not a checkpoint file: its table 'runs' is another "
            "program's (it has no column 'created_at')"
        ), line
    assert _schema(app) == before
    assert _calls(project) == []

    other = tmp_path / "customers.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("create table customers (id integer primary key, name text)")
    conn.commit()
    conn.close()
    before = _schema(other)
    listed = ambidex("runs", "list", "--db", str(other), cwd=project, home=home)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == f"no runs in {other}"
    shown = ambidex("runs", "show", "x", "--db", str(other), cwd=project, home=home)
    assert "(it holds no runs)" in _one_error(shown)
    assert _schema(other) == before  # a listing wrote nothing


def test_runs_list_and_show_never_send_control_characters_to_the_terminal(
    project: Path, tmp_path: Path
) -> None:
    """Before (review 16): a workflow or node name (or an error) holding an escape sequence
    or a newline was printed as it is by `runs list` and `runs show`: the terminal ran
    the sequence (here: clear the screen, turn text red) and a run took two lines."""
    import ambidex as ax

    db = tmp_path / "runs.sqlite"

    def broken() -> int:
        raise ValueError("bad\x1b[2J")

    wf = ax.Workflow("ev\x1b[31mil\nname")
    wf.node("n\x1b[1mx", broken)
    with pytest.raises(ax.WorkflowError):
        wf.run(checkpoint=str(db), run_id="e1")
    listed = ambidex("runs", "list", "--db", str(db), cwd=project, home=tmp_path / "h")
    shown = ambidex("runs", "show", "e1", "--db", str(db), cwd=project, home=tmp_path / "h")
    for done in (listed, shown):
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("e1 ")]
    assert "ev\\x1b[31mil\\nname" in row
    assert "n\\x1b[1mx" in shown.stdout


def test_a_second_ctrl_c_while_the_exit_waits_for_a_blocking_node_prints_no_traceback(
    project: Path, tmp_path: Path
) -> None:
    """Before (review 16): after a Ctrl-C, the exit waits up to 2 s for the I/O thread of
    a plain def node that cannot be interrupted; a second Ctrl-C then printed "Exception
    ignored in atexit callback" and a KeyboardInterrupt traceback under the one-line
    message. The second Ctrl-C now just stops the wait."""
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ambidex", "run", "slow.yaml", "-i", "n=2", "--run-id", "twice"],
        cwd=project,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (project / "slow.started").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.4)  # the run stops at once; the exit then waits up to 2 s for the thread
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        (project / "release").touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err
    assert _line(err, "resume with: ") == "resume with: ambidex run slow.yaml --resume twice"
    listed = ambidex("runs", "list", "--json", cwd=project, home=home)
    assert [r["status"] for r in json.loads(listed.stdout)["runs"]] == ["cancelled"]


def test_a_checkpoint_file_named_in_undecodable_bytes_and_uri_characters_is_read_again(
    project: Path, tmp_path: Path
) -> None:
    """The probe of an existing file (read-only, before anything is written) opens it by
    a file: URI; a name of undecodable bytes, '?', '#' or '%' must still name that file."""
    home = tmp_path / "home"
    (project / "fixed").touch()
    db = tmp_path / "x\udcff y?#%.sqlite"
    for run_id in ("q1", "q2"):  # the second opens the file the first made
        done = ambidex("run", "picky.yaml", "-i", "n=1", "--run-id", run_id, "--db", str(db),
                       cwd=project, home=home)  # fmt: skip
        assert done.returncode == 0, done.stderr
    listed = ambidex("runs", "list", "--json", "--db", str(db), cwd=project, home=home)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == ["q2", "q1"]


def test_a_succeeded_run_whose_output_cannot_be_shown_still_exits_0(
    project: Path, tmp_path: Path
) -> None:
    """Before (review 16): a sink node's output whose __repr__ raised made a succeeded run
    exit 1 with "unexpected RuntimeError: repr broke", after "succeeded" was printed."""
    (project / "shy.py").write_text(
        "class Shy:\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('repr broke')\n\n\n"
        "def make() -> object:\n"
        "    return Shy()\n"
    )
    (project / "shy.yaml").write_text("name: shy\nnodes:\n  a:\n    function: shy:make\n")
    done = ambidex("run", "shy.yaml", cwd=project, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr
    assert _line(done.stdout, "a: ") == (
        "a: <Shy object; showing it raised RuntimeError: repr broke>"
    )
