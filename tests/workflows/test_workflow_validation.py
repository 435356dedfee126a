"""Workflow checks before anything runs: each problem a WorkflowDefinitionError, all at once."""

from __future__ import annotations

from typing import Any

import pytest
import wf_agents
from wf_agents import FuelAgent, GridAgent, ReportAgent

import ambidex as ax
from ambidex.workflows import Ref

# -- helpers -------------------------------------------------------------------------


def problems_of(wf: ax.Workflow, inputs: dict[str, Any] | None = None) -> list[str]:
    """The problems wf.run reports; asserts that no node ran."""
    ran: list[str] = []
    for node in wf.nodes.values():
        node.target = _spy(node.target, node.name, ran)
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.run(inputs)
    assert ran == []
    assert isinstance(info.value, ValueError)
    assert str(info.value)
    return info.value.problems


def _spy(target: Any, name: str, ran: list[str]) -> Any:
    if isinstance(target, ax.Agent | type):
        return target  # agents keep their types (validation reads them)
    if isinstance(target, ax.TaskFunction):
        return target

    def spy(*args: Any, **kwargs: Any) -> Any:
        ran.append(name)
        return target(*args, **kwargs)

    spy.__wrapped__ = target  # type: ignore[attr-defined]
    return spy


def emissions(**report_input: Any) -> ax.Workflow:
    wf = ax.Workflow("emissions", inputs={"litres": float, "region": str})
    fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
    grid = wf.node("grid", GridAgent(), input={"region": wf.inputs.region})
    template = {"kg": fuel.output.kg_co2, "factor": grid.output.factor}
    template.update(report_input)
    wf.node("report", ReportAgent(), input={k: v for k, v in template.items() if v is not None})
    return wf


async def noop(x: Any = None) -> Any:
    return x


def test_the_reference_workflow_is_valid_and_runs() -> None:
    result = emissions().run({"litres": 2, "region": "EU"})
    assert result["report"].total == 10.0


# -- the graph ------------------------------------------------------------------------


def test_a_cycle_names_its_nodes() -> None:
    wf = ax.Workflow("cyclic")
    wf.node("start", noop)
    wf.node("a", noop, after=["start", "c"])
    wf.node("b", noop, after=["a"])
    wf.node("c", noop, input=Ref("b"))
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.validate()
    message = str(info.value)
    assert "cycle" in message
    assert "start" not in message  # not part of the cycle
    (problem,) = info.value.problems
    # the cycle is written as a path that closes on itself
    path = problem.split("cycle: ")[1].split(" (")[0].split(" -> ")
    assert path[0] == path[-1]
    assert sorted(path[:-1]) == ["a", "b", "c"]


def test_a_self_dependency_is_a_cycle() -> None:
    wf = ax.Workflow("self")
    wf.node("loop", noop, after=["loop"])
    with pytest.raises(ax.WorkflowDefinitionError, match=r"cycle: loop -> loop"):
        wf.validate()


def test_an_unknown_dependency_suggests_the_closest_name() -> None:
    wf = ax.Workflow("typo")
    wf.node("fuel", noop)
    wf.node("report", noop, after=["fule"])
    wf.node("summary", noop, input={"x": Ref("reprot", ("kg",))})
    problems = problems_of(wf)
    assert len(problems) == 2
    assert "node 'report'" in problems[0]
    assert "unknown node 'fule'" in problems[0]
    assert "did you mean 'fuel'?" in problems[0]
    assert "unknown node 'reprot'" in problems[1]
    assert "did you mean 'report'?" in problems[1]


def test_an_undeclared_workflow_input_is_reported() -> None:
    wf = ax.Workflow("inputs", inputs={"litres": float})
    wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.liters})
    (problem,) = problems_of(wf, {"litres": 1.0})
    assert "undeclared workflow input 'liters'" in problem
    assert "did you mean 'litres'?" in problem


def test_duplicate_node_names_are_refused() -> None:
    wf = ax.Workflow("dup")
    wf.node("a", noop)
    with pytest.raises(ax.WorkflowDefinitionError, match="'a' is defined twice"):
        wf.node("a", noop)


def test_bad_node_options_are_refused() -> None:
    wf = ax.Workflow("options")
    with pytest.raises(ax.WorkflowDefinitionError, match="on_failure must be"):
        wf.node("a", noop, on_failure="ignore")
    with pytest.raises(ax.WorkflowDefinitionError, match="timeout_s must be"):
        wf.node("b", noop, timeout_s=0)
    with pytest.raises(ax.WorkflowDefinitionError, match="retries must be"):
        wf.node("c", noop, retries=-1)


# -- fields and types --------------------------------------------------------------------


def test_a_missing_required_input_field_is_reported() -> None:
    wf = ax.Workflow("missing-field")
    fuel = wf.node("fuel", FuelAgent(), input={"litres": 1.0})
    wf.node("report", ReportAgent(), input={"kg": fuel.output.kg_co2})  # no factor
    (problem,) = problems_of(wf)
    assert "node 'report'" in problem
    assert "missing required field 'factor' of ReportIn" in problem
    assert "'note'" not in problem  # has a default


def test_an_output_field_that_does_not_exist_is_reported() -> None:
    wf = emissions(kg=Ref("fuel", ("kg",)))
    (problem,) = problems_of(wf, {"litres": 1.0, "region": "EU"})
    assert "node 'report'" in problem
    assert "${fuel.output.kg}" in problem
    assert "FuelOut has no field 'kg'" in problem
    assert "kg_co2" in problem  # the fields it does have


def test_a_str_output_feeding_a_float_field_is_a_type_mismatch() -> None:
    wf = emissions(kg=Ref("fuel", ("label",)))
    (problem,) = problems_of(wf, {"litres": 1.0, "region": "EU"})
    assert "input field 'kg' expects float" in problem
    assert "${fuel.output.label} is str" in problem


def test_an_annotated_function_output_is_type_checked_too() -> None:
    wf = ax.Workflow("fn-types")
    label = wf.node("label", wf_agents.label_of, input={"kg": 1.0})
    wf.node("report", ReportAgent(), input={"kg": label.output, "factor": 1.0})
    (problem,) = problems_of(wf)
    assert "input field 'kg' expects float, but ${label.output} is str" in problem


def test_a_workflow_input_of_the_wrong_type_is_a_mismatch() -> None:
    wf = ax.Workflow("input-types", inputs={"litres": str})
    wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
    (problem,) = problems_of(wf, {"litres": "1"})
    assert "input field 'litres' expects float, but ${inputs.litres} is str" in problem


def test_compatible_and_unannotated_connections_pass() -> None:
    wf = ax.Workflow("compatible", inputs={"litres": int})  # int feeds float: fine
    fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
    raw = wf.node("raw", wf_agents.anything, input={"kg": fuel.output.label})
    wf.node(
        "report",
        ReportAgent(),
        # unannotated output: unknown type, not checked; interpolated strings are str anyway
        input={"kg": raw.output, "factor": 1, "note": "fuel ${fuel.output.kg_co2}"},
    )
    wf.validate()


# -- run inputs ------------------------------------------------------------------------------


def test_a_missing_run_input_is_reported() -> None:
    problems = problems_of(emissions(), {"litres": 1.0})
    assert problems == ["missing input 'region' (str)"]


def test_an_unknown_run_input_is_reported() -> None:
    problems = problems_of(emissions(), {"litres": 1.0, "region": "EU", "regoin": "US"})
    assert len(problems) == 1
    assert "unknown input 'regoin'" in problems[0]
    assert "did you mean 'region'?" in problems[0]


def test_an_ill_typed_run_input_is_reported() -> None:
    problems = problems_of(emissions(), {"litres": "abc", "region": "EU"})
    assert len(problems) == 1
    assert "input 'litres': expected float" in problems[0]


def test_run_inputs_are_coerced_and_defaults_filled() -> None:
    from ambidex.workflows import InputSpec

    wf = ax.Workflow("defaults", inputs={"litres": float, "region": InputSpec(str, "EU")})
    wf.node("echo", noop, input={"x": [wf.inputs.litres, wf.inputs.region]})
    result = wf.run({"litres": "2.5"})
    assert result["echo"] == [2.5, "EU"]
    assert result.inputs == {"litres": 2.5, "region": "EU"}


def test_every_run_input_problem_is_reported_together() -> None:
    problems = problems_of(emissions(), {"litres": "abc", "regoin": "US"})
    text = "\n".join(problems)
    assert len(problems) == 3
    assert "input 'litres': expected float" in text
    assert "missing input 'region'" in text
    assert "unknown input 'regoin'" in text


# -- several problems at once ----------------------------------------------------------------


def test_several_definition_problems_are_reported_together() -> None:
    wf = ax.Workflow("broken", inputs={"litres": float})
    fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litre})  # undeclared input
    wf.node("grid", GridAgent(), input={"region": "EU"}, after=["fule"])  # unknown node
    wf.node("report", ReportAgent(), input={"kg": fuel.output.label})  # 2 problems
    wf.node("x", noop, after=["y"])
    wf.node("y", noop, after=["x"])  # cycle
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.validate()
    err = info.value
    assert len(err.problems) == 5, err.problems
    message = str(err)
    assert message.startswith("5 problems:")
    for expected in (
        "undeclared workflow input 'litre'",
        "unknown node 'fule'",
        "missing required field 'factor' of ReportIn",
        "input field 'kg' expects float, but ${fuel.output.label} is str",
        "cycle:",
    ):
        assert expected in message, expected
