r"""Any JSON, to every endpoint of a real server: a 4xx naming the problem, or stored exactly.

Hypothesis builds JSON *text* (the ``json`` module cannot write all of it):
``NaN``, ``Infinity`` and ``1e400`` as literals, lone surrogates as ``\ud800``
escapes (or as the raw bytes a ``surrogatepass`` encoder writes), NUL
characters, integers of thousands of digits and nesting a few hundred levels
deep. Each text is posted as a whole submit body, as the input of an ``echo``
job, in each option field of a submit, to ``/v1/run/echo``, and as the input of
one job of a batch (``/v1/jobs:batch``: refused naming that job's index, with no
job of the batch stored, or every job stored as sent); arbitrary ids
and query strings go to every other endpoint and to the dashboard pages.

The properties: never a 5xx; every answer is strict JSON (UTF-8, no NaN, no
lone surrogate) or an HTML page, and an error names the problem (422: where,
in ``loc``); a value the store cannot hold exactly (NaN, infinity, a lone
surrogate, nesting past 100 levels) is refused with 422 naming it; and an
accepted job reads back with its input exactly as the server parsed it (as
Python's ``json`` reads the text; numbers compared as JSON numbers, so ``1``
is ``1.0`` and ``-0.0`` is ``0``, but ``true`` is not ``1``), and an echo job's
result is that value. After each storm, every accepted job's pages and the
job list still answer 200.

One server (in a thread, SQLite, the built-in workloads) serves the module;
the examples are derandomized, so every run sends the same requests.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from _server_support import serve_in_thread
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from ambidex.server import create_app

pytestmark = [
    pytest.mark.timeout(60),
    # a failing example may be 300 levels deep: hypothesis warns before it prints one
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

MAX_DEPTH = 100  # levels of nesting a job's input may have (docs/jobs.md)
SUBMIT_OPTIONS = [
    "max_attempts",
    "timeout_s",
    "priority",
    "delay_s",
    "run_at",
    "idempotency_key",
    "retries",
    "retry_on",
    "retry_backoff_s",
    "retry_max_backoff_s",
]
JSON_HEADERS = {"content-type": "application/json"}
TERMINAL = {"succeeded", "failed", "cancelled"}


def settings_for(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- JSON text, built by hand ------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A number written as this literal text (``1e400``, ``NaN``, ``-0``, 5,000 digits...)."""

    text: str


def to_text(value: Any, *, ascii_only: bool) -> str:
    """``value`` as JSON text, lone surrogates and non-finite numbers included."""
    if isinstance(value, Raw):
        return value.text
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(to_text(v, ascii_only=ascii_only) for v in value) + "]"
    assert isinstance(value, dict)
    return (
        "{"
        + ",".join(
            f"{json.dumps(k, ensure_ascii=ascii_only)}:{to_text(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        + "}"
    )


@dataclass(frozen=True)
class Body:
    """A request body: the JSON text as bytes, and what Python's ``json`` reads from it."""

    raw: bytes

    def parsed(self) -> tuple[bool, Any]:
        """(True, the value) if Python's json reads the body, else (False, None)."""
        try:
            return True, json.loads(self.raw)
        except (ValueError, RecursionError):
            return False, None


def body_of(value: Any, ascii_only: bool) -> Body:
    # Non-ASCII text goes as UTF-8; a lone surrogate then as the bytes "surrogatepass"
    # writes (which is not UTF-8, and which Python's json reads as that surrogate).
    return Body(to_text(value, ascii_only=ascii_only).encode("utf-8", "surrogatepass"))


SURROGATES = ["\ud800", "\udbff", "\udc00", "\udc80", "\udfff"]
ODD_CHARACTERS = [
    "\x00",
    *SURROGATES,
    "\ud83d\ude00",  # a valid pair, written as two escapes
    "\ude00\ud83d",  # the same two, the wrong way round: two lone surrogates
    "\ufffe",
    "\uffff",
    "\u2028",
    '"',
    "\\",
    "\U0010ffff",
]
texts = st.lists(st.one_of(st.characters(), st.sampled_from(ODD_CHARACTERS)), max_size=8).map(
    "".join
)
RAW_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E400",
    "1e-400",
    "-0",
    "-0.0",
    "0e0",
    "1.0",
    "5e-324",
    "1.7976931348623157e308",
    "9" * 400,
    "-" + "9" * 4000,
    "1" * 5000,  # past Python's 4,300-digit limit for int(): the body does not parse
]
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.sampled_from(RAW_NUMBERS).map(Raw),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn, inner: st.SearchStrategy[Any] = values) -> Any:
    """A value, often wrapped in lists or objects, up to a few hundred levels deep."""
    value = draw(inner)
    levels = draw(
        st.one_of(
            st.just(0),
            st.integers(0, 5),
            st.sampled_from([97, 98, 99, 100, 101]),
            st.integers(0, 300),
        )
    )
    key = draw(st.sampled_from(["k", "", "\x00", "\ud800"]))
    as_object = draw(st.booleans())
    for _ in range(levels):
        value = {key: value} if as_object else [value]
    return value


ascii_only = st.booleans()

# Header values as bytes (HTTP headers are Latin-1): visible characters, with spaces and
# tabs inside (the client refuses to send control characters; HTTP strips outer blanks).
header_values = st.lists(
    st.one_of(st.integers(0x21, 0x7E), st.integers(0x80, 0xFF), st.sampled_from([0x20, 0x09])),
    max_size=24,
).map(lambda codes: bytes(codes).strip(b" \t"))


# -- what the answers must be ------------------------------------------------------------


def refuse_constant(name: str) -> Any:
    raise AssertionError(f"the answer holds {name}, which is not JSON")


def lone_surrogate_in(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def strict_json(r: httpx.Response) -> Any:
    """The answer's JSON, if it is strict JSON: UTF-8, no NaN or infinity, no lone surrogate."""
    text = r.content.decode("utf-8")  # strict: raises on anything that is not UTF-8
    data = json.loads(text, parse_constant=refuse_constant)
    assert not lone_surrogate_in(data), f"a lone surrogate in the answer: {text[:300]}"
    return data


def checked(r: httpx.Response) -> Any:
    """Check an answer (no 5xx; strict JSON or a page; errors name the problem); its JSON."""
    where = f"{r.request.method} {r.request.url}"
    if currently_in_test_context():
        event(f"{r.request.method} answered {r.status_code}")
    assert r.status_code < 500, f"{where} -> {r.status_code}: {r.text[:1000]}"
    kind = r.headers.get("content-type", "")
    if r.status_code == 204 or 300 <= r.status_code < 400:
        return None
    if kind.startswith("text/html"):
        page = r.content.decode("utf-8")
        assert "<title>" in page, f"{where}: {page[:300]}"
        return None
    if kind.startswith(("text/plain", "text/event-stream")):
        r.content.decode("utf-8")
        return None
    assert kind.startswith("application/json"), f"{where}: content-type {kind!r}"
    data = strict_json(r)
    if r.status_code >= 400:
        assert isinstance(data, dict), f"{where}: {data!r}"
        detail = data.get("detail")
        if r.status_code == 422:
            assert isinstance(detail, list), f"{where}: {data!r}"
            assert detail, f"{where}: a 422 naming nothing"
            for error in detail:
                assert error["loc"], f"{where}: {error!r}"
                assert error["loc"][0] in ("body", "query", "path", "header"), error
                assert isinstance(error["msg"], str), error
                assert error["msg"], error
        else:
            assert isinstance(detail, str), f"{where}: {data!r}"
            assert detail, f"{where}: {data!r}"
    return data


def storable(value: Any, levels_above: int = 0) -> bool:
    """Whether the store can hold ``value`` exactly, as the docs promise (the test's own check)."""
    stack = [(value, levels_above)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, str) and lone_surrogate_in(item):
            return False
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return False
            if isinstance(item, dict):
                if lone_surrogate_in(list(item)):
                    return False
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return True


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value (``1`` is ``1.0``), ``true`` is not ``1``."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool) or x is None or y is None:
            if not (type(x) is type(y) and x == y):
                return False
        elif (isinstance(x, int | float) and isinstance(y, int | float)) or (
            isinstance(x, str) and isinstance(y, str)
        ):
            if x != y:
                return False
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        else:
            return False
    return True


# -- the server, and what it accepted ----------------------------------------------------


@dataclass
class Accepted:
    """Jobs the server accepted: each one's input as sent, and its echo result when it has one."""

    inputs: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    app = create_app(
        tmp_path_factory.mktemp("property") / "jobs.sqlite", concurrency=4, lease_s=5.0
    )
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def accepted() -> Accepted:
    return Accepted()


def post(client: httpx.Client, path: str, body: Body) -> httpx.Response:
    return client.post(path, content=body.raw, headers=JSON_HEADERS)


def as_echo_input(sent: dict[str, Any]) -> dict[str, Any]:
    """An echo job's input as stored: validated, so with the default of what was left out."""
    return {"value": None, **sent}


def reads_back(client: httpx.Client, job_id: str, expected_input: Any) -> dict[str, Any]:
    """The job, checked to read back with ``expected_input``."""
    job = checked(client.get(f"/v1/jobs/{quote(job_id, safe='')}"))
    assert job is not None
    assert same_json(job["input"], expected_input), (job["input"], expected_input)
    return dict(job)


def assert_refused_naming(r: httpx.Response, data: Any, prefix: list[Any]) -> None:
    """A 422 whose first error's ``loc`` starts with ``prefix``."""
    assert r.status_code == 422, f"accepted an unstorable value: {r.status_code} {r.text[:300]}"
    loc = data["detail"][0]["loc"]
    assert loc[: len(prefix)] == prefix, loc


# -- the storms --------------------------------------------------------------------------


# Values an option may well take (or nearly): most arbitrary JSON is refused at once.
plausible_options = st.one_of(
    st.integers(-5, 1_000_001),
    st.floats(-1.0, 1e7),
    st.sampled_from(["2030-01-01T00:00:00Z", "2000-01-01T00:00:00+01:00", "2030-01-01T00:00"]),
    st.lists(st.sampled_from(["ValueError", "httpx.ConnectError", "not a name", ""]), max_size=3),
    texts,
)
submit_bodies = st.one_of(
    nested(),  # anything at all
    st.fixed_dictionaries(  # a submit, or nearly
        {"workload": st.one_of(st.just("echo"), texts, leaves)},
        optional={
            "input": st.one_of(st.fixed_dictionaries({"value": nested()}), nested()),
            **{name: st.one_of(plausible_options, leaves) for name in SUBMIT_OPTIONS},
            "extra": leaves,
        },
    ),
)


@settings_for(120)
@given(value=submit_bodies, ascii_only=ascii_only, key=st.one_of(st.none(), header_values))
def test_any_json_as_a_whole_submit_body_is_refused_naming_it_or_stored_as_sent(
    client: httpx.Client, accepted: Accepted, value: Any, ascii_only: bool, key: bytes | None
) -> None:
    body = body_of(value, ascii_only)
    key_header = {} if key is None else {"Idempotency-Key": key}
    r = client.post("/v1/jobs", content=body.raw, headers={**JSON_HEADERS, **key_header})
    data = checked(r)
    if r.status_code in (200, 202):
        parsed = body.parsed()[1]
        job = reads_back(client, data["id"], as_echo_input(parsed.get("input", {})))
        assert job["workload"] == parsed["workload"]
        accepted.inputs[job["id"]] = job["input"]


@settings_for(200)
@given(value=nested(), ascii_only=ascii_only)
def test_any_json_as_the_input_of_an_echo_job_is_refused_naming_where_or_stored_exactly(
    client: httpx.Client, accepted: Accepted, value: Any, ascii_only: bool
) -> None:
    body = body_of({"workload": "echo", "input": {"value": value}}, ascii_only)
    r = post(client, "/v1/jobs", body)
    data = checked(r)
    ok, parsed = body.parsed()
    if not ok:  # Python's json cannot read it (5,000 digits): refused, saying so
        assert 400 <= r.status_code < 500
        return
    sent = parsed["input"]
    if not storable(sent):
        assert_refused_naming(r, data, ["body", "input"])
        return
    assert r.status_code == 202, r.text[:500]
    reads_back(client, data["id"], sent)
    accepted.inputs[data["id"]] = sent
    accepted.results[data["id"]] = sent["value"]


# What an option reads back as, in the job (delay_s and run_at become its run_at).
OPTION_FIELDS = {name: name for name in SUBMIT_OPTIONS if name not in ("delay_s", "run_at")}


@settings_for(150)
@given(
    option=st.sampled_from(SUBMIT_OPTIONS),
    value=st.one_of(plausible_options, nested()),
    ascii_only=ascii_only,
)
def test_any_json_in_an_option_of_a_submit_is_refused_naming_the_option_or_kept(
    client: httpx.Client, accepted: Accepted, option: str, value: Any, ascii_only: bool
) -> None:
    body = body_of({"workload": "echo", "input": {}, option: value}, ascii_only)
    r = post(client, "/v1/jobs", body)
    data = checked(r)
    ok, parsed = body.parsed()
    if r.status_code == 422 and ok:
        loc = data["detail"][0]["loc"]
        assert loc[:2] == ["body", option], loc
    if r.status_code in (200, 202):
        job = reads_back(client, data["id"], as_echo_input({}))
        accepted.inputs[job["id"]] = job["input"]
        # (null leaves the option out; a 200 answers with the job an idempotency key names)
        if r.status_code == 202 and option in OPTION_FIELDS and parsed[option] is not None:
            kept = job[OPTION_FIELDS[option]]
            assert same_json(kept, parsed[option]), (option, kept, parsed[option])


@settings_for(100)
@given(value=st.one_of(st.fixed_dictionaries({"value": nested()}), nested()), ascii=ascii_only)
def test_any_json_run_through_echo_comes_back_as_its_result_or_is_refused_naming_it(
    client: httpx.Client, accepted: Accepted, value: Any, ascii: bool
) -> None:
    body = body_of(value, ascii)
    r = client.post("/v1/run/echo", content=body.raw, headers=JSON_HEADERS, params={"wait_s": 10})
    data = checked(r)
    ok, parsed = body.parsed()
    if not ok:
        assert 400 <= r.status_code < 500
        return
    if parsed is None:  # a body of null is no input, as an empty one is
        parsed = {}
    if not isinstance(parsed, dict) or parsed.keys() - {"value"}:
        assert r.status_code == 422, r.text[:300]  # not an object, or an unknown field
        return
    if not storable(parsed):
        assert_refused_naming(r, data, ["body"])
        return
    assert r.status_code in (200, 202), r.text[:500]
    reads_back(client, data["id"], as_echo_input(parsed))
    accepted.inputs[data["id"]] = as_echo_input(parsed)
    accepted.results[data["id"]] = parsed.get("value")


ENDPOINTS = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/result"),
    ("GET", "/v1/jobs/{id}/events?follow=false"),
    ("GET", "/v1/jobs/{id}/attempts"),
    ("POST", "/v1/jobs/{id}/retry"),
    ("POST", "/v1/jobs/{id}/rerun"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/workers"),
    ("GET", "/v1/workloads"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/jobs/{id}"),
    ("GET", "/workers"),
    ("POST", "/v1/run/{id}"),
]
QUERY_KEYS = [
    "status",
    "workload",
    "limit",
    "cursor",
    "id_prefix",
    "after",
    "wait_s",
    "token",
]
query_values = st.one_of(
    texts,
    st.sampled_from(
        [*RAW_NUMBERS[:12], "queued,running", "succeeded", "", "0", "-1", "500", "501", "true"]
    ),
    st.integers().map(str),
)
queries = st.lists(
    st.tuples(st.one_of(st.sampled_from(QUERY_KEYS), texts), query_values), max_size=4
)


headers = st.dictionaries(
    st.sampled_from(["Idempotency-Key", "Last-Event-ID", "Authorization"]), header_values
)


def encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@settings_for(200)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    job_id=st.one_of(st.none(), texts.filter(bool)),
    query=queries,
    body=st.one_of(st.none(), nested()),
    ascii=ascii_only,
    extra_headers=headers,
    pick=st.integers(min_value=0),
)
def test_no_id_query_or_body_makes_any_endpoint_answer_a_server_error(
    client: httpx.Client,
    accepted: Accepted,
    endpoint: tuple[str, str],
    job_id: str | None,
    query: list[tuple[str, str]],
    body: Any,
    ascii: bool,
    extra_headers: dict[str, bytes],
    pick: int,
) -> None:
    method, template = endpoint
    # (Echo jobs whose result is checked later are not cancelled.)
    known = sorted(accepted.inputs.keys() - (accepted.results.keys() if method == "DELETE" else ()))
    if job_id is None:  # a job that exists (or the echo workload, for /v1/run)
        job_id = "echo" if template.startswith("/v1/run") or not known else known[pick % len(known)]
    path, _, fixed = template.replace("{id}", encoded(job_id)).partition("?")
    pairs = [fixed] if fixed else []
    pairs += [f"{encoded(k)}={encoded(v)}" for k, v in query]
    if template.startswith("/v1/run"):
        pairs.append("wait_s=0.2")
    url = path + ("?" + "&".join(pairs) if pairs else "")
    content = None if body is None else body_of(body, ascii).raw
    sent_headers: dict[str, Any] = {**extra_headers, **(JSON_HEADERS if content else {})}
    r = client.request(method, url, content=content, headers=sent_headers)
    data = checked(r)
    if r.status_code in (200, 202) and method == "POST" and "input" in (data or {}):
        accepted.inputs[data["id"]] = data["input"]  # a re-run, or a run: a job of its own


# -- after the storms --------------------------------------------------------------------


SEEDS = [
    {"value": "nul \x00 inside"},
    {"value": -0.0},
    {"value": 10**300},
    {"value": [[[[[[[[[["deep"]]]]]]]]]]},
    {"value": {"\x00": "\U0010ffff\u2028"}},
]


def all_jobs(client: httpx.Client, status: str | None = None) -> dict[str, dict[str, Any]]:
    """Every job the list answers (all its pages), by id."""
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 500, **({"status": status} if status else {})}
    while True:
        r = client.get("/v1/jobs", params=params)
        page = checked(r)
        assert r.status_code == 200, r.text[:300]
        found.update({job["id"]: job for job in page["jobs"]})
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]


def test_nothing_accepted_makes_a_later_read_fail(client: httpx.Client, accepted: Accepted) -> None:
    for seed in SEEDS:  # so that the test means something when it runs alone
        r = client.post("/v1/jobs", json={"workload": "echo", "input": seed})
        assert r.status_code == 202, r.text
        accepted.inputs[r.json()["id"]] = seed
        accepted.results[r.json()["id"]] = seed["value"]
    deadline = time.monotonic() + 20
    while accepted.results.keys() & all_jobs(client, "queued,running").keys():
        assert time.monotonic() < deadline, "the echo jobs did not finish within 20 s"
        time.sleep(0.05)

    listed = all_jobs(client)
    assert accepted.inputs.keys() <= listed.keys()
    for job_id, sent in accepted.inputs.items():
        job = listed[job_id]
        assert same_json(job["input"], sent), (job["input"], sent)
        if job_id in accepted.results:  # an echo job: its result is its value
            assert (job["status"], job["error"]) == ("succeeded", None), job
            assert same_json(job["result"], accepted.results[job_id]), job
        for path in (
            f"/v1/jobs/{job_id}",
            f"/v1/jobs/{job_id}/events?follow=false",
            f"/jobs/{job_id}",
        ):
            r = client.get(path)
            checked(r)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        r = client.get(f"/v1/jobs/{job_id}/result")
        result = checked(r)
        assert r.status_code in (200, 409), r.text[:300]  # 409: delayed, not started yet
        if job_id in accepted.results:
            assert same_json(result["result"], accepted.results[job_id]), result
    for path in ("/", "/workers", "/v1/workers", "/healthz", "/metrics", "/v1/workloads"):
        r = client.get(path)
        checked(r)
        assert r.status_code == 200, (path, r.text[:300])


def newest_job_id(client: httpx.Client) -> str | None:
    jobs = checked(client.get("/v1/jobs", params={"limit": 1}))["jobs"]
    return str(jobs[0]["id"]) if jobs else None


@settings_for(120)
@given(value=nested(), at=st.integers(0, 2), ascii_only=ascii_only)
def test_any_json_in_one_job_of_a_batch_is_refused_naming_its_index_or_all_are_stored(
    client: httpx.Client, accepted: Accepted, value: Any, at: int, ascii_only: bool
) -> None:
    jobs: list[Any] = [{"workload": "echo", "input": {"value": i}} for i in range(3)]
    jobs[at] = {"workload": "echo", "input": {"value": value}}
    body = body_of({"jobs": jobs}, ascii_only)
    before = newest_job_id(client)
    r = post(client, "/v1/jobs:batch", body)
    data = checked(r)
    ok, parsed = body.parsed()
    if not ok:  # Python's json cannot read it (5,000 digits): refused, saying so
        assert 400 <= r.status_code < 500
        assert newest_job_id(client) == before
        return
    sent = parsed["jobs"][at]["input"]
    if not storable(sent):
        assert_refused_naming(r, data, ["body", "jobs", at, "input"])
        assert newest_job_id(client) == before, "a refused batch stored a job"
        return
    assert r.status_code == 202, r.text[:500]
    assert data["created"] == [True, True, True]
    for i, job in enumerate(data["jobs"]):
        expected = sent if i == at else {"value": i}
        reads_back(client, job["id"], expected)
        accepted.inputs[job["id"]] = expected
        accepted.results[job["id"]] = expected["value"]
