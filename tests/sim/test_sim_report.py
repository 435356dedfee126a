"""``ambidex.sim._report.report``: HTML reports of real recorded runs and sweeps."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ambidex as ax
import ambidex.sim
from ambidex.sim._report import report


class Walkers(ambidex.sim.Model):
    """Random walkers with a drift; ``mean`` and ``spread`` of their positions."""

    defaults = {"n": 20, "drift": 0.0, "kind": "gauss"}

    def setup(self, params: Any) -> None:
        self.pos = np.zeros(params.n)

    def step(self) -> None:
        if self.params.kind == "gauss":
            self.pos += self.rng.normal(self.params.drift, 1.0, self.params.n)
        else:
            self.pos += self.rng.uniform(-1.0, 1.0, self.params.n) + self.params.drift

    def metrics(self) -> dict[str, float]:
        return {"mean": float(self.pos.mean()), "spread": float(self.pos.std())}


class Odd(ambidex.sim.Model):
    """Metric names that need escaping in HTML and in matplotlib ($ starts mathtext)."""

    defaults = {"n": 5}

    def setup(self, params: Any) -> None:
        self.x = np.zeros(params.n)

    def step(self) -> None:
        self.x += self.rng.random(self.params.n)

    def metrics(self) -> dict[str, float]:
        return {"<b>sum</b>": float(self.x.sum()), "cost $": float(self.x.max())}


IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def images(page: str) -> list[tuple[bytes, str]]:
    """The embedded images of a report: (PNG bytes, alt text)."""
    found = [(base64.b64decode(b64, validate=True), alt) for b64, alt in IMG.findall(page)]
    for png, _ in found:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return found


def test_report_of_a_single_run(tmp_path: Path) -> None:
    record = tmp_path / "walk.sqlite"
    result = ax.sim.run(Walkers, {"n": 30}, steps=15, seed=4, record=record)
    out = report(record)
    assert out == tmp_path / "walk.html"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Walkers: run report</title>" in page
    assert [alt for _, alt in images(page)] == ["mean over time", "spread over time"]
    assert "<dt>kind</dt><dd>run</dd>" in page
    assert "<dt>seed</dt><dd>4</dd>" in page
    assert "n=30" in page
    assert str(record.resolve()) in page
    assert result.metrics.digest() in page  # the run's digest, in full (a title attribute)
    assert "Across the sweep" not in page


def test_report_of_a_parquet_run_with_cli_meta_and_escaped_title(tmp_path: Path) -> None:
    record = tmp_path / "odd.parquet"
    with ax.sim.Recorder(record) as recorder:
        recorder.set_meta(kind="run", model="Odd", steps=5, seed=1, params={})
        ax.sim.run(Odd, steps=5, seed=1, record=recorder)
    out = report(record, tmp_path / "out" / "odd-report.html", title="<script>x</script> & co")
    assert out == tmp_path / "out" / "odd-report.html"
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "<title>&lt;script&gt;x&lt;/script&gt; &amp; co</title>" in page
    assert "<h1>&lt;script&gt;x&lt;/script&gt; &amp; co</h1>" in page
    assert "&lt;b&gt;sum&lt;/b&gt;" in page  # a metric name, escaped
    assert "<b>sum</b>" not in page
    assert "cost $" in page
    assert len(images(page)) == 2


def test_report_of_a_sweep_over_two_parameters(tmp_path: Path) -> None:
    record = tmp_path / "sweep.sqlite"
    result = ax.sim.sweep(
        Walkers,
        {"n": [10, 40], "drift": [0.0, 0.5, 1.0]},
        replicates=3,
        steps=12,
        seed=7,
        params={"kind": "uniform"},
        record=record,
        workers=2,
    )
    out = report(record)
    assert out == tmp_path / "sweep.html"
    page = out.read_text(encoding="utf-8")
    alts = [alt for _, alt in images(page)]
    assert alts == [
        "mean over time",
        "spread over time",
        "final mean vs n",
        "final mean vs drift",
        "final mean over n and drift",
        "final spread vs n",
        "final spread vs drift",
        "final spread over n and drift",
    ]
    assert "<dt>kind</dt><dd>sweep</dd>" in page
    assert "<dt>grid</dt><dd>n: 10, 40; drift: 0.0, 0.5, 1.0</dd>" in page
    assert "<dt>replicates</dt><dd>3</dd>" in page
    assert "kind=uniform" in page
    assert "Final metrics per grid point" in page
    # every run's digest; the per-point means (± sd) match the sweep's own numbers
    for run in result.runs:
        assert run.metrics.digest() in page
    finals = result.final("spread")
    for p in range(len(result.points)):
        mean, sd = finals[p].mean(), finals[p].std()
        assert f"{mean:.4g} ± {sd:.4g}" in page


def test_report_of_a_sweep_over_one_categorical_parameter(tmp_path: Path) -> None:
    record = tmp_path / "cat.parquet"
    ax.sim.sweep(
        Walkers, {"kind": ["gauss", "uniform"]}, replicates=2, steps=6, record=record, workers=1
    )
    page = report(record, tmp_path).read_text(encoding="utf-8")  # out: a directory
    assert [alt for _, alt in images(page)] == [
        "mean over time",
        "spread over time",
        "final mean vs kind",
        "final spread vs kind",
    ]
    assert "<dt>grid</dt><dd>kind: gauss, uniform</dd>" in page
    assert '<td class="l">gauss</td>' in page
    assert '<td class="l">uniform</td>' in page
    assert f"<dt>record</dt><dd>{record.resolve()} (parquet)</dd>" in page


def test_missing_and_empty_records_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite"
    with pytest.raises(ax.sim.RecordError, match=re.escape(str(missing))):
        report(missing)
    empty = tmp_path / "empty.sqlite"
    ax.sim.Recorder(empty).close()
    with pytest.raises(ax.sim.RecordError, match=re.escape(f"{empty}: the record holds no runs")):
        report(empty)
    empty_dir = tmp_path / "empty.parquet"
    empty_dir.mkdir()
    with pytest.raises(ValueError, match="holds no runs"):
        report(empty_dir)
    not_a_record = tmp_path / "notes.sqlite"
    not_a_record.write_text("hello")
    with pytest.raises(ax.sim.RecordError, match="not an ambidex SQLite record"):
        report(not_a_record)
    assert not (tmp_path / "nothing.html").exists()
    assert not (tmp_path / "empty.html").exists()
