"""``ambidex.sim._report.report``: HTML reports of real recorded runs and sweeps."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_toy_models import Herd

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


IMG = re.compile(
    r'<figure( class="[a-z]+")?( hidden)?>'
    r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">'
)


def images(page: str, *, hidden: bool = False) -> list[tuple[bytes, str]]:
    """The embedded images of a report, as first shown: (PNG bytes, alt text).

    ``hidden=True``: also those a toggle shows instead (a sweep's every-replicate plots).
    """
    found = [
        (base64.b64decode(b64, validate=True), alt)
        for _, concealed, b64, alt in IMG.findall(page)
        if hidden or not concealed
    ]
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


CSV_LINK = re.compile(
    r'<a class="csv" download="([^"]+)" href="data:text/csv;charset=utf-8;base64,([^"]+)">'
)


def csv_tables(page: str) -> dict[str, list[list[str]]]:
    """The CSV downloads of a report, by file name, as rows of cells."""
    import csv
    import io

    return {
        name: list(csv.reader(io.StringIO(base64.b64decode(b64).decode("utf-8"))))
        for name, b64 in CSV_LINK.findall(page)
    }


def test_a_models_charts_put_its_metrics_on_one_chart(tmp_path: Path) -> None:
    record = tmp_path / "herd.sqlite"
    ax.sim.run(Herd, steps=4, seed=1, record=record)
    page = report(record).read_text(encoding="utf-8")
    assert [alt for _, alt in images(page)][:2] == ["herd over time: a, b", "c over time"]
    assert ax.sim.open_record(record).meta["charts"] == {"herd": ["a", "b"]}


def test_every_table_downloads_as_csv_with_full_precision(tmp_path: Path) -> None:
    record = tmp_path / "sweep.sqlite"
    result = ax.sim.sweep(Walkers, {"drift": [0.0, 1.0]}, replicates=2, steps=5, seed=3,
                          record=record, workers=1)  # fmt: skip
    tables = csv_tables(report(record).read_text(encoding="utf-8"))
    assert set(tables) == {"metrics.csv", "points.csv", "runs.csv"}
    runs = tables["runs.csv"]
    assert runs[0][:7] == ["run", "point", "replicate", "seed", "spawn_key", "status", "steps"]
    assert len(runs) == 1 + 4
    spread = runs[0].index("spread")
    for row, run in zip(runs[1:], result.runs, strict=True):
        assert float(row[spread]) == run.metrics["spread"][-1]  # every digit kept
        assert row[runs[0].index("digest")] == run.metrics.digest()
    points = tables["points.csv"]
    assert points[0] == [
        "point",
        "drift",
        "runs",
        "mean mean",
        "mean sd",
        "spread mean",
        "spread sd",
    ]
    assert float(points[2][5]) == pytest.approx(result.final("spread")[1].mean(), rel=1e-15)
    metrics = tables["metrics.csv"]
    assert metrics[0] == ["run", "point", "replicate", "step", "mean", "spread"]
    assert len(metrics) == 1 + 4 * 6


def test_traces_draw_every_replicate(tmp_path: Path) -> None:
    record = tmp_path / "sweep.sqlite"
    ax.sim.sweep(Walkers, {"drift": [0.0, 1.0]}, replicates=3, steps=5, record=record, workers=1)
    banded = report(record, tmp_path / "banded.html").read_text(encoding="utf-8")
    traced = report(record, tmp_path / "traced.html", traces=True).read_text(encoding="utf-8")
    assert 'id="traces-toggle"' in banded  # both pictures in the page, a checkbox between
    shown, every = images(banded, hidden=True)[:2]
    assert every[1] == "mean over time, every replicate"
    assert shown[0] != every[0]
    assert "the thin lines are the replicates themselves" in traced
    assert 'id="traces-toggle"' not in traced  # asked for: traces alone
    assert images(traced)[0][0] == every[0]


def test_a_stopped_run_and_a_sweep_without_finished_runs_are_reported(tmp_path: Path) -> None:
    record = tmp_path / "stopped.sqlite"
    with ax.sim.Recorder(record) as recorder:
        recorder.set_meta(kind="sweep", grid={"n": [1, 2]}, steps=9, replicates=1)
        first = recorder.start_run("Walkers", {"n": 1}, 0, (0,), 9, point=0, replicate=0)
        second = recorder.start_run("Walkers", {"n": 2}, 0, (1,), 9, point=1, replicate=0)
        recorder.stop_run(first, KeyboardInterrupt(), steps=4)
        recorder.stop_run(second, KeyboardInterrupt(), steps=0)
    page = report(record).read_text(encoding="utf-8")
    assert "Interrupted: 0 of 2 runs finished" in page
    assert "run 1 (point 0, replicate 0) was interrupted at step 4 of 9" in page
    assert "run 2 (point 1, replicate 0) was interrupted before its first step of 9" in page
    assert "The record holds no metrics." in page


def test_the_agents_are_drawn_on_the_grid_step_by_step(tmp_path: Path) -> None:
    record = tmp_path / "herd.parquet"
    ax.sim.run(Herd, steps=60, seed=2, record=record, snapshot_every=2)
    page = report(record).read_text(encoding="utf-8")
    assert "agents placed on the 8x6 grid by their &#x27;cell&#x27;" in page
    assert "24 of its 31 snapshots" in page
    data = re.search(r'<script type="application/json" id="space-data">(.+?)</script>', page)
    assert data is not None
    frames = __import__("json").loads(data.group(1))
    assert frames["steps"][0] == 0
    assert frames["steps"][-1] == 60
    assert len(set(frames["frames"])) == 24  # a different picture at every step shown


def test_a_numba_runs_time_is_marked_as_including_compilation(tmp_path: Path) -> None:
    record = tmp_path / "jit.sqlite"
    with ax.sim.Recorder(record) as recorder:
        run_id = recorder.start_run("Walkers", {"n": 1}, 0, (), 1)
        result = ax.sim.run(Walkers, {"n": 1}, steps=1)
        result.compile_s = 1.25
        result.elapsed_s = 1.5
        recorder.finish_run(run_id, result)
    page = report(record).read_text(encoding="utf-8")
    assert "1.5 s (incl. 1.25 s numba compilation)" in page
    assert "the first run in each process pays for it" in page
