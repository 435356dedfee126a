"""Proposers: offline mutations, reply appliers, the LLM proposer against mock-llm."""

from __future__ import annotations

import ast
import io
import random
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from ambidex.evolve._database import Program
from ambidex.evolve._proposers import (
    LLMProposer,
    OfflineProposer,
    ProposalContext,
    Proposer,
    apply_reply,
    apply_search_replace,
    apply_unified_diff,
    build_prompt,
    function_problem,
    parse_search_replace,
    parse_unified_diff,
)
from ambidex.llm import LLM, AsyncLLM, MockLLMServer
from ambidex.llm._mockapp import mock_reply

CODE = '''def pack(n: int = 26) -> float:
    """Pack 3 circles; the 2.0 here is text."""
    radius = 0.5  # not 7
    xs = [i * 1.5e-2 for i in range(n)]
    return min(xs) + radius * 0x10
'''

NO_LITERALS = "def pack(xs):\n    return min(xs)\n"


def context(
    code: str = CODE,
    *,
    seed: int = 0,
    alternatives: list[list[str]] | None = None,
    errors: list[str] | None = None,
    inspirations: list[Program] | None = None,
) -> ProposalContext:
    parent = Program(code=code, metrics={"score": 1.5, "length": 120.0}, score=1.5, ok=True, id=7)
    return ProposalContext(
        target_name="pack",
        goal="maximise the sum of radii",
        metric="score",
        maximize=True,
        parent=parent,
        inspirations=inspirations or [],
        errors=errors or [],
        alternatives=alternatives or [],
        rng=random.Random(seed),
    )


def significant(code: str) -> list[tuple[int, str]]:
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [
        (t.type, t.string)
        for t in tokenize.generate_tokens(io.StringIO(code).readline)
        if t.type not in skip
    ]


# -- offline ---------------------------------------------------------------------------


async def test_offline_changes_exactly_one_literal_when_proposing() -> None:
    proposer = OfflineProposer()
    assert isinstance(proposer, Proposer)
    seen = set()
    for seed in range(40):
        proposal = await proposer.propose(context(seed=seed))
        assert proposal.code is not None, proposal.error
        assert function_problem(proposal.code, "pack") is None
        before, after = significant(CODE), significant(proposal.code)
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(changed) == 1
        (kind, old), (_, new) = changed[0]
        assert kind == tokenize.NUMBER
        assert old in ("26", "0.5", "1.5e-2", "0x10")
        if old == "0x10":
            assert new.startswith("0x")
        if old in ("0.5", "1.5e-2"):
            assert any(c in new for c in ".e")  # still a float literal
            assert float(new) > 0
        if old == "26":
            assert 23 <= int(new) <= 29
        # the rest of the text is byte-identical
        start = CODE.index(old) if old != "0.5" else CODE.index("0.5  #")
        assert proposal.code[:start] == CODE[:start]
        assert proposal.code[start + len(new) :] == CODE[start + len(old) :]
        assert old in proposal.note
        seen.add(proposal.code)
    assert len(seen) > 10  # text in the docstring and comment is never touched


def test_offline_is_deterministic_when_seeded() -> None:
    proposer = OfflineProposer()
    first = [proposer.mutate(CODE, "pack", [], random.Random(s)).code for s in range(10)]
    again = [proposer.mutate(CODE, "pack", [], random.Random(s)).code for s in range(10)]
    assert first == again


def test_offline_swaps_an_alternative_when_given() -> None:
    proposer = OfflineProposer()
    groups = [["min(", "max(", "sum("], ["<", "<="]]
    code = "def pack(xs):\n    # min( in a comment stays\n    return min(xs) if xs else None\n"
    results = {proposer.mutate(code, "pack", groups, random.Random(s)).code for s in range(20)}
    assert results == {
        code.replace("return min(", "return max("),
        code.replace("return min(", "return sum("),
    }
    # the longest snippet wins where they overlap: "<=" is swapped whole
    code2 = "def pack(a, b):\n    return a <= b\n"
    out = {proposer.mutate(code2, "pack", groups, random.Random(s)).code for s in range(10)}
    assert out == {code2.replace("<=", "<")}


async def test_offline_gives_an_error_when_nothing_can_change() -> None:
    proposal = await OfflineProposer().propose(context(NO_LITERALS))
    assert proposal.code is None
    assert "no numeric literal" in (proposal.error or "")
    bad = OfflineProposer(max_tries=3).mutate(
        "def pack(x):\n    return x\n", "pack", [["def", "de f"]], random.Random(0)
    )
    assert bad.code is None
    assert "in 3 tries" in (bad.error or "")
    assert "does not parse" in (bad.error or "")


# -- appliers --------------------------------------------------------------------------


def test_search_replace_applies_exactly_then_tolerantly_when_whitespace_differs() -> None:
    reply = (
        "Bigger radius.\n<<<<<<< SEARCH\n    radius = 0.5  # not 7\n=======\n"
        "    radius = 0.6\n>>>>>>> REPLACE\n\n"
        "<<<<<<< SEARCH\nreturn min(xs) + radius * 0x10   \n=======\n"
        "total = min(xs)\nreturn total + radius * 0x10\n>>>>>>> REPLACE\n"
    )
    blocks = parse_search_replace(reply)
    assert len(blocks) == 2
    out = apply_search_replace(CODE, blocks)
    assert "    radius = 0.6\n" in out
    assert "    total = min(xs)\n    return total + radius * 0x10\n" in out  # re-indented
    applied = apply_reply(CODE, reply, "pack")
    assert applied.how == "search/replace"
    assert applied.code == out


def test_search_replace_reports_the_block_when_not_found() -> None:
    reply = (
        "<<<<<<< SEARCH\n    radius = 0.5  # not 7\n=======\n    radius = 1.0\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\n    radius = 99\n=======\n    radius = 2\n>>>>>>> REPLACE\n"
    )
    applied = apply_reply(CODE, reply, "pack")
    assert applied.code is None
    assert applied.error is not None
    assert applied.error.startswith("SEARCH block 2 not found in the code")
    with pytest.raises(ValueError, match="SEARCH block 1 has no ======="):
        parse_search_replace("<<<<<<< SEARCH\nx = 1\n>>>>>>> REPLACE\n")
    with pytest.raises(ValueError, match="not closed by a >>>>>>> REPLACE"):
        parse_search_replace("<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n")
    empty = apply_reply(CODE, "<<<<<<< SEARCH\n=======\nx\n>>>>>>> REPLACE", "pack")
    assert "SEARCH block 1 is empty" in (empty.error or "")


def test_unified_diff_applies_when_context_matches() -> None:
    diff = (
        "```diff\n--- a/pack.py\n+++ b/pack.py\n@@ -3,3 +3,4 @@\n"
        "     radius = 0.5  # not 7\n"
        "-    xs = [i * 1.5e-2 for i in range(n)]\n"
        "+    step = 2e-2\n"
        "+    xs = [i * step for i in range(n)]\n"
        "     return min(xs) + radius * 0x10\n```\n"
    )
    applied = apply_reply(CODE, diff, "pack")
    assert applied.how == "diff"
    assert applied.code == CODE.replace(
        "    xs = [i * 1.5e-2 for i in range(n)]\n",
        "    step = 2e-2\n    xs = [i * step for i in range(n)]\n",
    )
    # wrong line numbers are fine when the lines match elsewhere; no numbers at all too
    moved = diff.replace("@@ -3,3 +3,4 @@", "@@ -1,3 +1,4 @@")
    assert apply_reply(CODE, moved, "pack").code == applied.code
    loose = diff.replace("@@ -3,3 +3,4 @@", "@@ ... @@")
    assert apply_reply(CODE, loose, "pack").code == applied.code


def test_unified_diff_reports_why_when_it_does_not_apply() -> None:
    wrong = "@@ -3,2 +3,2 @@\n-    radius = 0.25\n+    radius = 0.3\n     xs = []\n"
    applied = apply_reply(CODE, wrong, "pack")
    assert applied.code is None
    assert (applied.error or "").startswith("diff hunk 1 does not match the code")
    with pytest.raises(ValueError, match="diff hunk 1 is cut short"):
        parse_unified_diff("@@ -3,5 +3,5 @@\n     radius = 0.5  # not 7\n")
    hunks = parse_unified_diff("@@ -1,1 +1,1 @@\n-a\n+b\n@@ -3 +3 @@\n-c\n+d\n")
    assert apply_unified_diff("a\nx\nc\n", hunks) == "b\nx\nd\n"


def test_full_replacement_is_checked_when_given() -> None:
    good = (
        "Here:\n```python\n@ax.evolve.target(goal='g', metric='m')\n"
        "def pack(n=3):\n    return 1.0\n```"
    )
    applied = apply_reply(CODE, good, "pack")
    assert applied.how == "full"
    assert applied.code == "def pack(n=3):\n    return 1.0\n"  # the decorator is dropped
    two = (
        "```python\ndef helper():\n    pass\n```\nand\n"
        "```py\n    def pack():\n        return 2\n```"
    )
    assert apply_reply(CODE, two, "pack").code == "def pack():\n    return 2\n"
    cases = {
        "```python\nimport math\ndef pack():\n    return math.pi\n```": (
            "the code must be only the function pack, but it also has an import at line 1"
        ),
        "```python\ndef pack(:\n    pass\n```": "the code does not parse: line 1",
        "```python\ndef other():\n    pass\n```": "no function named pack (found: other)",
        f"```python\n{CODE}```": "the reply does not change the code of pack",
        "```python\n" + CODE.replace("# not 7", "# changed") + "```": "only touches comments",
        "I would make it faster.": "the reply has no SEARCH/REPLACE block, no unified diff",
    }
    for reply, reason in cases.items():
        result = apply_reply(CODE, reply, "pack")
        assert result.code is None
        assert reason in (result.error or ""), (reply, result.error)


def test_prompt_has_the_current_code_last_when_built() -> None:
    inspiration = Program(
        code="def pack():\n    return 0.1\n", metrics={"score": 0.1}, score=0.1, ok=True, id=3
    )
    ctx = context(
        errors=["ZeroDivisionError: division by zero\nstderr:\n```boom```", "x" * 5000],
        inspirations=[inspiration],
    )
    prompt = build_prompt(ctx)
    assert "maximise the sum of radii" in prompt
    assert "`score`: higher is better" in prompt
    assert "Program #3 (score=0.1)" in prompt
    assert "ZeroDivisionError" in prompt
    assert "x" * 5000 not in prompt  # trimmed
    assert "```boom" not in prompt
    assert prompt.index("def pack():\n    return 0.1") < prompt.index(CODE.strip())
    assert "score=1.5, length=120" in prompt
    # the mock's code mode reads the last python block: the current program
    reply = mock_reply("mock-code", [{"role": "user", "content": prompt}])
    assert "xs = [i * 1.5e-2" in reply or "radius = 0.5" in reply


# -- the LLM proposer against the mock server ------------------------------------------


@pytest.fixture(scope="module")
def module_server() -> Iterator[MockLLMServer]:
    with MockLLMServer(seed=3) as server:
        yield server


@pytest.fixture
def server(module_server: MockLLMServer, monkeypatch: pytest.MonkeyPatch) -> MockLLMServer:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    module_server.reset()
    return module_server


@pytest.mark.parametrize(("model", "how"), [("mock-code", "full"), ("mock-code-diff", "search")])
async def test_llm_proposer_changes_the_function_when_the_mock_answers(
    server: MockLLMServer, model: str, how: str
) -> None:
    proposer = LLMProposer(model, base_url=server.url)
    try:
        codes = set()
        for seed in range(3):
            proposal = await proposer.propose(context(seed=seed, errors=[f"error {seed}"]))
            assert proposal.code is not None, proposal.error
            assert proposal.code != CODE
            assert function_problem(proposal.code, "pack") is None
            assert proposal.note.startswith(how)
            assert f"from {model}: mock-code" in proposal.note
            changed = [
                (a, b)
                for a, b in zip(significant(CODE), significant(proposal.code), strict=True)
                if a != b
            ]
            assert len(changed) == 1
            codes.add(proposal.code)
        assert len(codes) >= 2
        assert server.stats().requests == 3
        assert proposer.name == f"llm:{model}"
    finally:
        await proposer.aclose()


async def test_llm_proposer_follows_up_then_fails_when_the_reply_never_applies(
    server: MockLLMServer,
) -> None:
    proposer = LLMProposer("mock-code", base_url=server.url, max_attempts=3)
    sent: list[list[dict[str, Any]]] = []
    chat = proposer.llm.chat

    async def recording_chat(messages: Any, **params: Any) -> Any:
        sent.append([dict(m) for m in messages])
        return await chat(messages, **params)

    proposer.llm.chat = recording_chat  # type: ignore[method-assign]
    try:
        proposal = await proposer.propose(context(NO_LITERALS))
    finally:
        await proposer.aclose()
    assert proposal.code is None
    assert proposal.error == "the reply does not change the code of pack"
    assert "3 attempts" in proposal.note
    assert server.stats().requests == 3
    assert [len(m) for m in sent] == [2, 4, 6]
    last = sent[-1]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last[3]["content"].startswith(
        "Your reply could not be applied: the reply does not change the code of pack."
    )
    assert "no numeric literal" in last[2]["content"]


@dataclass
class _Reply:
    text: str


class _ScriptedLLM:
    """Stands in for AsyncLLM: answers from a script, records the conversations."""

    base_url = "http://scripted.invalid/v1"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> _Reply:
        self.calls.append(([dict(m) for m in messages], params))
        return _Reply(self.replies.pop(0))


async def test_llm_proposer_succeeds_after_a_follow_up_when_the_second_reply_applies() -> None:
    bad = "<<<<<<< SEARCH\n    radius = 9\n=======\n    radius = 1\n>>>>>>> REPLACE\n"
    good = "Use a bigger radius.\n```python\n" + CODE.replace("0.5", "0.75") + "```\n"
    llm = _ScriptedLLM([bad, good])
    proposer = LLMProposer("scripted", llm=cast(AsyncLLM, llm), temperature=0.2)
    proposal = await proposer.propose(context())
    assert proposal.code == CODE.replace("0.5", "0.75")
    assert proposal.note == "full from scripted after 2 attempts: Use a bigger radius."
    assert len(llm.calls) == 2
    follow_up = llm.calls[1][0][-1]["content"]
    assert follow_up.startswith("Your reply could not be applied: SEARCH block 1 not found")
    assert llm.calls[1][0][-2] == {"role": "assistant", "content": bad}
    assert llm.calls[0][1] == {"model": "scripted", "temperature": 0.2}

    failing = _ScriptedLLM(["no code here", "still none"])
    result = await LLMProposer("scripted", llm=cast(AsyncLLM, failing)).propose(context())
    assert result.code is None
    assert (result.error or "").startswith("the reply has no SEARCH/REPLACE block")
    assert len(failing.calls) == 2  # max_attempts=2: one follow-up


async def test_llm_proposer_reports_a_failed_request_when_the_server_refuses(
    server: MockLLMServer,
) -> None:
    server.fail_next(1, status=400)
    proposer = LLMProposer("mock-code", base_url=server.url, api_key="sk-secret-123")
    try:
        proposal = await proposer.propose(context())
    finally:
        await proposer.aclose()
    assert proposal.code is None
    assert (proposal.error or "").startswith("the LLM request failed")
    assert "400" in (proposal.error or "")
    assert "sk-secret-123" not in repr(proposer) + (proposal.error or "") + proposal.note
    with pytest.raises(ValueError, match="max_attempts"):
        LLMProposer("m", base_url=server.url, max_attempts=0)


def test_mock_code_reply_keeps_the_text_when_streamed(server: MockLLMServer) -> None:
    prompt = f"Change it.\n```python\n{CODE}```\n"
    with LLM("mock-code", base_url=server.url) as llm:
        whole = llm.complete(prompt)
        streamed = "".join(llm.stream(prompt))
        other = llm.complete("hello there", model="mock-llm")
    assert streamed == whole
    block = whole.split("```python\n", 1)[1].split("```", 1)[0]
    ast.parse(block)
    assert block != CODE
    assert other.startswith("mock reply ")
    assert "you said 'hello there'" in other
