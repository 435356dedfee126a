"""Research example: many LLM calls, a cpu-heavy scoring step and a blocking SQLite lookup.

The three executors in one workflow::

    questions ──> answers (io: one LLM call per question, fanned out under the `llm` limit)
        │                 │
        └──> sources (blocking: a SQLite full-text lookup on the I/O threads)
                          │
                 scores (cpu: pure-Python n-gram scoring of each answer in the process pool)
                          │
                      summary

Run it from the repository root::

    python -m examples.research.workflow "battery recycling"

It asks the LLM at ``OPENAI_BASE_URL`` (or OpenAI's, given ``OPENAI_API_KEY``);
with neither set, ambidex's mock LLM, started for the run (``examples/_llm.py``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import ambidex as ax
from examples._llm import example_llm

_CORPUS = Path(__file__).with_name("corpus.jsonl")


def make_questions(topic: str, count: int = 24) -> list[str]:
    """Sub-questions to ask about a topic (plain code: runs on the I/O threads)."""
    angles = [
        "history",
        "economics",
        "chemistry",
        "policy",
        "supply chain",
        "safety",
        "environmental impact",
        "open problems",
        "key companies",
        "costs",
        "regulation",
        "outlook",
    ]
    return [
        f"In two sentences, what matters about the {angles[i % len(angles)]} of {topic} "
        f"(aspect {i + 1})?"
        for i in range(count)
    ]


@ax.io
async def answer_all(questions: list[str]) -> list[str]:
    """One LLM call per question, all at once, bounded by the shared `llm` limit."""
    async with example_llm(temperature=0) as llm:
        replies = await llm.batch(questions)
    return [r.text for r in replies]


@ax.blocking
def find_sources(topic: str, limit: int = 5) -> list[dict[str, str]]:
    """A blocking SQLite full-text search over a small bundled corpus."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("create virtual table docs using fts5(title, body)")
        with _CORPUS.open() as f:
            rows = [(d["title"], d["body"]) for d in map(json.loads, f)]
        db.executemany("insert into docs values (?, ?)", rows)
        terms = " OR ".join(w for w in topic.lower().split() if w.isalnum())
        found = db.execute(
            "select title, body from docs where docs match ? order by rank limit ?",
            (terms or "the", limit),
        ).fetchall()
    finally:
        db.close()
    return [{"title": t, "body": b} for t, b in found]


@ax.cpu
def score_answer(answer: str, sources: list[str], rounds: int = 40) -> float:
    """Pure-Python scoring: n-gram overlap with the sources, repeated to be cpu-heavy."""

    def grams(text: str, n: int) -> set[tuple[str, ...]]:
        words = text.lower().split()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    score = 0.0
    for _ in range(rounds):
        for n in (1, 2, 3):
            mine = grams(answer, n)
            for source in sources:
                theirs = grams(source, n)
                union = len(mine | theirs) or 1
                score += len(mine & theirs) / union
    return round(score / rounds, 6)


async def score_all(answers: list[str], sources: list[dict[str, str]]) -> list[float]:
    """Score every answer in the cpu process pool."""
    bodies = [s["body"] for s in sources]
    return await ax.agather(*(score_answer.aio(a, bodies) for a in answers))


def summarize(questions: list[str], answers: list[str], scores: list[float]) -> dict[str, Any]:
    """The best-supported answers first."""
    ranked = sorted(zip(scores, questions, answers, strict=True), reverse=True)
    return {
        "answers": len(answers),
        "best": [{"question": q, "answer": a, "score": s} for s, q, a in ranked[:3]],
        "mean_score": round(sum(scores) / len(scores), 6) if scores else 0.0,
    }


def build(questions: int = 24) -> ax.Workflow:
    """The research workflow, defined in Python."""
    wf = ax.Workflow("research", inputs={"topic": str})
    asked = wf.node(
        "questions", make_questions, input={"topic": wf.inputs.topic, "count": questions}
    )
    answered = wf.node("answers", answer_all, input={"questions": asked.output})
    found = wf.node("sources", find_sources, input={"topic": wf.inputs.topic})
    scored = wf.node(
        "scores", score_all, input={"answers": answered.output, "sources": found.output}
    )
    wf.node(
        "summary",
        summarize,
        input={"questions": asked.output, "answers": answered.output, "scores": scored.output},
    )
    return wf


def main(argv: list[str]) -> int:
    topic = " ".join(argv) or "battery recycling"
    result = build().run({"topic": topic})
    print(json.dumps(result["summary"], indent=2))
    timing = {n: round(r.duration_s or 0.0, 3) for n, r in result.nodes.items()}
    print("node seconds:", timing, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
