"""``ambidex jobs``: list, show, submit, cancel and prune, against a real job service."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ambidex as ax
from ambidex.cli import app
from ambidex.cli._jobs import parse_duration
from ambidex.jobs import JobStatus
from ambidex.server import create_app

# the in-thread server of the server tests (there are no packages under tests/)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from _server_support import serve_in_thread

TOKEN = "cli-token"


@dataclass
class Service:
    url: str
    db: Path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A job service with the built-in workloads on a fresh SQLite file."""
    db = tmp_path / "jobs.sqlite"
    with serve_in_thread(create_app(db, concurrency=4, lease_s=5.0)) as url:
        yield Service(url, db)


@pytest.fixture
def client(service: Service) -> Iterator[ax.Client]:
    with ax.Client(service.url) as c:
        yield c


def jobs(*args: str, url: str | None = None, token: str | None = None) -> tuple[int, str, str]:
    """Run ``ambidex jobs ARGS`` in this process; return (exit code, stdout, stderr)."""
    env = {"AMBIDEX_URL": url, "AMBIDEX_TOKEN": token, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["jobs", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_submit_wait_prints_the_result(service: Service) -> None:
    code, out, err = jobs(
        "submit", "sleep", "-i", "seconds=0.3", "-i", "steps=3", "--wait", url=service.url
    )
    assert code == 0, err
    assert json.loads(out) == {"slept_s": 0.3, "steps": 3}
    assert err.startswith("submitted job ")


def test_submit_reads_inputs_from_a_json_file(service: Service, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"value": {"nested": [1, 2]}}))
    code, out, err = jobs("submit", "echo", "-i", f"@{inputs}", "--wait", "--json", url=service.url)
    assert code == 0, err
    job = json.loads(out)
    assert job["status"] == "succeeded"
    assert job["result"] == {"nested": [1, 2]}


def test_submit_without_wait_prints_the_queued_job(service: Service, client: ax.Client) -> None:
    code, out, err = jobs("submit", "echo", "-i", "value=hi", url=service.url)
    assert code == 0, err
    assert out.startswith("submitted job ")
    job_id = out.split()[2]
    assert client.wait(job_id, timeout_s=20).result == "hi"


def test_submit_wait_exits_1_naming_the_error_when_the_job_fails(service: Service) -> None:
    code, _, err = jobs("submit", "sleep", "-i", "seconds=-1", "--wait", url=service.url)
    assert code == 1
    assert "error: job " in err
    assert "failed: ValueError: seconds must be >= 0" in err


def test_submit_bad_input_exits_2_naming_the_field(service: Service) -> None:
    code, out, err = jobs("submit", "sleep", "-i", "seconds=lots", url=service.url)
    assert code == 2
    assert out == ""
    assert err.startswith("error: invalid input for workload 'sleep': seconds: ")
    assert len(err.strip().splitlines()) == 1


def test_submit_unknown_workload_exits_2_listing_the_known_ones(service: Service) -> None:
    code, _, err = jobs("submit", "nope", url=service.url)
    assert code == 2
    assert "error: unknown workload 'nope'; known workloads: echo, primes, sleep" in err


def test_submit_malformed_input_item_exits_2(service: Service) -> None:
    code, _, err = jobs("submit", "echo", "-i", "novalue", url=service.url)
    assert code == 2
    assert "error: --input 'novalue': expected key=value or @file.json" in err


def test_list_shows_jobs_in_a_table_and_as_json(service: Service, client: ax.Client) -> None:
    done = client.run("echo", {"value": 1})
    failed = client.run("sleep", {"seconds": -1})
    code, out, err = jobs("list", url=service.url)
    assert code == 0, err
    for column in ("id", "workload", "status", "progress", "attempts", "took", "created", "error"):
        assert column in out
    assert "ValueError: seconds must be >= 0" in out
    assert done.id in out
    assert failed.id in out
    assert "succeeded" in out
    assert "failed" in out
    code, out, _ = jobs("list", "--json", "--status", "failed", url=service.url)
    assert code == 0
    listed = json.loads(out)
    assert [j["id"] for j in listed["jobs"]] == [failed.id]
    assert listed["next_cursor"] is None


def test_list_pages_with_limit_and_cursor(service: Service, client: ax.Client) -> None:
    ids = [client.submit("echo", {"value": i}).id for i in range(3)]
    code, out, _ = jobs("list", "--json", "--limit", "2", "--workload", "echo", url=service.url)
    assert code == 0
    first = json.loads(out)
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    code, out, _ = jobs("list", "--json", "--cursor", first["next_cursor"], url=service.url)
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids[:1]


def test_list_rejects_an_unknown_status(service: Service) -> None:
    code, _, err = jobs("list", "--status", "done", url=service.url)
    assert code == 2
    assert "error: unknown job status 'done'" in err


def test_show_prints_fields_result_and_events(service: Service, client: ax.Client) -> None:
    job = client.run("sleep", {"seconds": 0.1, "steps": 2})
    code, out, err = jobs("show", job.id, url=service.url)
    assert code == 0, err
    for text in (job.id, "succeeded", "result", '"slept_s": 0.1', "submitted", "started"):
        assert text in out
    code, out, _ = jobs("show", job.id, "--json", url=service.url)
    shown = json.loads(out)
    assert shown["job"]["status"] == "succeeded"
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[0] == "submitted"
    assert kinds[-1] == "succeeded"


def test_show_returns_promptly_for_a_running_job(service: Service, client: ax.Client) -> None:
    job = client.run("sleep", {"seconds": 30}, wait_s=0.2)
    code, out, _ = jobs("show", job.id, "--json", url=service.url)
    assert code == 0
    shown = json.loads(out)
    assert shown["job"]["status"] in ("queued", "running")
    assert shown["events"][0]["kind"] == "submitted"
    client.cancel(job.id)


def test_show_unknown_job_exits_1_with_one_line(service: Service) -> None:
    code, _, err = jobs("show", "no-such-job", url=service.url)
    assert code == 1
    assert err == "error: no job with id 'no-such-job'\n"


def test_cancel_stops_a_running_job(service: Service, client: ax.Client) -> None:
    job = client.submit("sleep", {"seconds": 30})
    code, out, err = jobs("cancel", job.id, url=service.url)
    assert code == 0, err
    assert job.id in out
    assert "cancel" in out
    assert client.wait(job.id, timeout_s=20).status is JobStatus.CANCELLED
    code, out, _ = jobs("cancel", job.id, url=service.url)
    assert code == 0
    assert "cancelled" in out


def test_prune_deletes_old_finished_jobs_from_the_store(
    service: Service, client: ax.Client
) -> None:
    for i in range(2):
        assert client.run("echo", {"value": i}).status is JobStatus.SUCCEEDED
    running = client.run("sleep", {"seconds": 30}, wait_s=0)
    code, out, err = jobs("prune", "--older-than", "7d", "--db", str(service.db))
    assert code == 0, err
    assert out.startswith("pruned 0 finished job(s) older than 7d")
    code, out, err = jobs("prune", "--older-than", "0s", "--db", str(service.db))
    assert code == 0, err
    assert out.startswith("pruned 2 finished job(s) older than 0s")
    assert [j.id for j in client.iter_jobs()] == [running.id]
    client.cancel(running.id)


def test_prune_rejects_a_malformed_duration(tmp_path: Path) -> None:
    code, _, err = jobs("prune", "--older-than", "a week", "--db", str(tmp_path / "x.sqlite"))
    assert code == 2
    assert "error: --older-than 'a week': expected a duration such as 7d" in err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0), ("3600s", 3600.0), ("90", 90.0)],
)
def test_parse_duration_understands_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_unreachable_service_exits_1_with_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, _, err = jobs("list", url=url)
    assert code == 1
    assert err.startswith(f"error: cannot reach the job service at {url}: ")
    assert len(err.strip().splitlines()) == 1


def test_token_comes_from_the_option_or_the_environment(tmp_path: Path) -> None:
    app_ = create_app(tmp_path / "auth.sqlite", token=TOKEN)
    with serve_in_thread(app_) as url:
        code, _, err = jobs("list", url=url)
        assert code == 1
        assert "HTTP 401" in err
        assert "bearer token" in err
        assert jobs("list", url=url, token=TOKEN)[0] == 0
        assert jobs("list", "--url", url, "--token", TOKEN)[0] == 0


def _jobs_at_width(columns: int, *args: str, url: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["jobs", *args], env={"AMBIDEX_URL": url, "COLUMNS": str(columns)}
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_list_shows_ids_that_can_be_copied_at_any_width(
    service: Service, client: ax.Client, columns: int
) -> None:
    job = client.run("echo", {"value": 1})
    code, out, _ = _jobs_at_width(columns, "list", url=service.url)
    assert code == 0
    shown = job.id if columns >= 110 else job.id[:10]
    assert shown in out  # on one line, never wrapped or cut with an ellipsis
    code, out, err = _jobs_at_width(columns, "show", shown, url=service.url)
    assert code == 0, err
    assert job.id in out


def test_a_prefix_of_several_ids_exits_2_naming_them(service: Service, client: ax.Client) -> None:
    ids = {client.submit("echo", {"value": i}).id for i in range(40)}
    firsts = [i[0] for i in ids]
    common = max(set(firsts), key=firsts.count)  # 40 ids over 32 letters: one repeats
    code, _, err = jobs("show", common, url=service.url)
    assert code == 2
    assert f"{common!r} is the start of several job ids" in err


def test_retry_and_rerun_from_the_command_line(service: Service, client: ax.Client) -> None:
    failed = client.run("sleep", {"seconds": -1})
    assert failed.status is JobStatus.FAILED
    code, out, err = jobs("retry", failed.id[:12], url=service.url)
    assert code == 0, err
    assert f"job {failed.id} (sleep): back in the queue" in out
    done = client.run("echo", {"value": 7})
    code, out, err = jobs("rerun", done.id, "--json", url=service.url)
    assert code == 0, err
    again = json.loads(out)
    assert again["rerun_of"] == done.id
    assert client.wait(again["id"]).result == 7
    code, _, err = jobs("retry", done.id, url=service.url)
    assert code == 1
    assert "only a failed or cancelled job can be retried" in err


def test_submit_options_reach_the_job(service: Service, client: ax.Client) -> None:
    code, out, err = jobs(
        "submit",
        "echo",
        "-i",
        "value=1",
        "--priority",
        "7",
        "--delay",
        "1h",
        "--idempotency-key",
        "cli-key",
        "--retries",
        "2",
        "--retry-on",
        "ConnectionError",
        "--json",
        url=service.url,
    )
    assert code == 0, err
    job = json.loads(out)
    assert (job["priority"], job["idempotency_key"], job["retries"]) == (7, "cli-key", 2)
    assert job["retry_on"] == ["ConnectionError"]
    assert job["status"] == "queued"
    code, _, err = jobs("submit", "echo", "--delay", "soon", url=service.url)
    assert code == 2
    assert "--delay 'soon': expected a duration" in err
    soon = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    code, out, err = jobs("submit", "echo", "--run-at", soon.isoformat(), "--json", url=service.url)
    assert code == 0, err
    assert json.loads(out)["run_at"] == soon.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    naive = soon.replace(tzinfo=None).isoformat()
    code, _, err = jobs("submit", "echo", "--run-at", naive, url=service.url)
    assert code == 2
    assert "give a time zone" in err


def test_workers_lists_the_live_worker(service: Service) -> None:
    code, out, err = jobs("workers", "--json", url=service.url)
    assert code == 0, err
    listed = json.loads(out)
    assert listed["alive"] == 1
    assert listed["workers"][0]["concurrency"] == 4


def test_workers_says_when_nothing_consumes_the_queue(tmp_path: Path) -> None:
    app_ = create_app(tmp_path / "jobs.sqlite", concurrency=0)
    with serve_in_thread(app_) as url, ax.Client(url) as c:
        c.submit("echo", {"value": 1})
        code, out, _ = jobs("workers", url=url)
    assert code == 0
    assert "no live worker" in out
    assert "1 job(s) queued" in out


def test_workers_names_queued_workloads_no_live_worker_takes(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    from ambidex.jobs import JobStore

    with JobStore(db) as store:
        store.submit("retired", {})  # a workload nobody offers any more
    with serve_in_thread(create_app(db, concurrency=2)) as url:
        code, out, _ = jobs("workers", url=url)
        listed = json.loads(jobs("workers", "--json", url=url)[1])
    assert code == 0
    assert "no live worker takes retired (1 queued)" in out
    assert listed["unserved"] == {"retired": 1}


def test_mistakes_on_the_command_line_get_one_line_and_exit_2(
    service: Service, tmp_path: Path
) -> None:
    code, _, err = jobs("show", "", url=service.url)
    assert (code, err) == (2, "error: give a job id, or the start of one\n")
    code, _, err = jobs("list", "--cursor", "junk", url=service.url)
    assert code == 2
    assert "invalid cursor 'junk'" in err
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    code, _, err = jobs("submit", "echo", "-i", f"@{binary}", url=service.url)
    assert code == 2
    assert f"@{binary}: {binary} is not UTF-8 text" in err


def test_prune_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "jobs.sqlite"
    code, _, err = jobs("prune", "--db", str(missing))
    assert code == 2
    assert f"no job store at {missing}" in err
    assert not missing.parent.exists()


def test_serve_refuses_a_schedule_that_never_fires_in_one_line() -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--schedule", "echo=* * 31 2 *"])
    assert result.exit_code == 2
    assert "never fires" in result.stderr
    assert "Traceback" not in result.stderr
