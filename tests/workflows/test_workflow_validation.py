"""Workflow checks before anything runs: each problem a WorkflowDefinitionError, all at once."""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import importlib
import types
from typing import Any

import pydantic
import pytest
import wf_agents
import wf_typed
import wf_typed_lazy
from wf_agents import FuelAgent, GridAgent, ReportAgent

import ambidex as ax
from ambidex.workflows import Condition, Ref

# -- helpers -------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


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


# -- when: conditions are references like inputs (issue 16) ------------------------------------


def test_a_condition_on_an_unknown_node_is_reported_as_the_condition() -> None:
    wf = ax.Workflow("when-unknown")
    wf.node("gate", noop)
    wf.node("x", noop, when=Ref("gaet", ("go",)))
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'x' when: ${gaet.output.go} refers to unknown node 'gaet' (did you mean 'gate'?)"
    )


def test_a_condition_on_a_field_the_output_does_not_have_is_reported() -> None:
    wf = ax.Workflow("when-field", inputs={"litres": float})
    fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
    wf.node("report", noop, when=fuel.output.kg)
    wf.node("summary", noop, when=Condition.parse("${fuel.output.kgco2} > 10"))
    assert problems_of(wf, {"litres": 1.0}) == [
        "node 'report' when: ${fuel.output.kg}: FuelOut has no field 'kg' (fields: kg_co2, label)",
        "node 'summary' when: ${fuel.output.kgco2}: FuelOut has no field 'kgco2' "
        "(fields: kg_co2, label)",
    ]


def test_a_condition_on_an_undeclared_input_is_reported() -> None:
    wf = ax.Workflow("when-input", inputs={"limit": float})
    wf.node("x", noop, when=Condition.parse("${inputs.limt} > 3"))
    (problem,) = problems_of(wf, {"limit": 1.0})
    assert problem == (
        "node 'x' when: ${inputs.limt} refers to an undeclared workflow input 'limt' "
        "(did you mean 'limit'?)"
    )


def test_a_condition_that_makes_a_cycle_is_blamed() -> None:
    wf = ax.Workflow("when-cycle")
    a = wf.node("a", noop, when=Ref("b", ("done",)))
    wf.node("b", noop, input={"x": a.output})
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'a' when: ${b.output.done} makes a cycle: a -> b -> a (a node cannot wait for itself)"
    )


def test_a_condition_ordering_text_against_a_number_is_reported() -> None:
    wf = ax.Workflow("when-compare", inputs={"litres": float})
    fuel = wf.node("fuel", FuelAgent(), input={"litres": wf.inputs.litres})
    wf.node("big", noop, when=Condition.parse("${fuel.output.label} > 3"))
    wf.node("named", noop, when=Condition.parse("${fuel.output.label} == 3"))  # just False
    wf.node("heavy", noop, when=Condition.parse("${fuel.output.kg_co2} >= 2"), after=[fuel])
    (problem,) = problems_of(wf, {"litres": 1.0})
    assert problem == (
        "node 'big' when: ${fuel.output.label} is str, which cannot be compared with > to 3 (int)"
    )


def test_a_run_input_read_only_by_a_condition_is_a_missing_input() -> None:
    wf = ax.Workflow("when-run-input")  # no declared inputs: the references declare them
    wf.node("x", noop, when=Condition.parse("${inputs.limit} > 3"))
    assert problems_of(wf, {}) == [
        "missing input 'limit' (referred to as ${inputs.limit} by node 'x')"
    ]


# -- annotated functions: types between connected nodes (issue 16) ----------------------------


@pytest.fixture(params=["wf_typed", "wf_typed_lazy"])
def typed(request: pytest.FixtureRequest) -> types.ModuleType:
    """The typed functions with real annotations, then with string annotations."""
    return importlib.import_module(request.param)


def test_an_int_output_feeding_a_str_parameter_is_a_mismatch(typed: types.ModuleType) -> None:
    wf = ax.Workflow("fn-types")
    n = wf.node("n", typed.count, input={"text": "abc"})
    wf.node("by_name", typed.count, input={"text": n.output})
    wf.node("by_position", typed.count, input=n.output)
    assert problems_of(wf) == [
        "node 'by_name': parameter 'text' of count() expects str, but ${n.output} is int",
        "node 'by_position' input: parameter 'text' of count() expects str, but ${n.output} is int",
    ]


def test_an_agent_output_field_feeding_a_function_is_checked(typed: types.ModuleType) -> None:
    wf = ax.Workflow("agent-to-fn")
    fuel = wf.node("fuel", FuelAgent(), input={"litres": 2})
    wf.node("ok", typed.count, input={"text": fuel.output.label})
    wf.node("bad", typed.count, input={"text": fuel.output.kg_co2})
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'bad': parameter 'text' of count() expects str, but ${fuel.output.kg_co2} is float"
    )


def test_models_fit_their_subclasses_only(typed: types.ModuleType) -> None:
    wf = ax.Workflow("models")
    p = wf.node("p", typed.point, input={"x": 1, "y": 2})
    p3 = wf.node("p3", typed.point3, input={"x": 1, "y": 2})
    o = wf.node("o", typed.other, input={"name": "x"})
    wf.node("sub_to_base", typed.norm, input={"p": p3.output})
    wf.node("base_to_sub", typed.norm3, input={"p": p.output})
    wf.node("unrelated", typed.norm, input=o.output)
    assert problems_of(wf) == [
        "node 'base_to_sub': parameter 'p' of norm3() expects Point3, but ${p.output} is Point",
        "node 'unrelated' input: parameter 'p' of norm() expects Point, but ${o.output} is Other",
    ]


def test_a_dict_fits_an_agents_model_but_not_a_functions(typed: types.ModuleType) -> None:
    # An agent validates its input with pydantic: a dict becomes the model. A
    # function gets the dict itself.
    wf = ax.Workflow("dicts")
    d = wf.node("d", typed.as_dict, input={"n": 1})
    f = wf.node("f", typed.fuel_in, input={"litres": 2.0})
    grid = wf.node("grid", GridAgent(), input={"region": "EU"})
    wf.node("agent", FuelAgent(), input=f.output)
    wf.node("function", typed.norm, input={"p": d.output})
    wf.node("wrong_model", FuelAgent(), input=grid.output)
    assert problems_of(wf) == [
        "node 'function': parameter 'p' of norm() expects Point, but ${d.output} is dict[str, int]",
        "node 'wrong_model' input: FuelAgent takes FuelIn, but ${grid.output} is GridOut",
    ]


class Stamp(pydantic.BaseModel):
    at: datetime.datetime
    colour: Colour
    tags: tuple[str, ...] = ()


class StampAgent(ax.Agent[Stamp, str]):
    async def run(self, input: Stamp) -> str:
        return f"{input.at:%Y} {input.colour.value}"


def when(at: datetime.datetime) -> int:
    return at.year


def test_text_fits_what_pydantic_parses_for_an_agent_not_for_a_function(
    typed: types.ModuleType,
) -> None:
    wf = ax.Workflow("parsed")
    text = wf.node("text", typed.label, input={"n": 1})  # str
    xs = wf.node("xs", typed.numbers, input={"n": 2})  # list[int]
    n = wf.node("n", typed.count, input={"text": "x"})  # int
    wf.node(
        "agent", StampAgent(), input={"at": text.output, "colour": text.output, "tags": xs.output}
    )
    wf.node("agent_bad", StampAgent(), input={"at": xs.output, "colour": n.output})
    wf.node("function", when, input={"at": text.output})
    assert problems_of(wf) == [
        "node 'agent_bad': input field 'at' expects datetime, but ${xs.output} is list[int]",
        "node 'function': parameter 'at' of when() expects datetime, but ${text.output} is str",
    ]


def test_unions_are_reported_only_when_no_member_fits(typed: types.ModuleType) -> None:
    wf = ax.Workflow("unions")
    maybe = wf.node("maybe", typed.maybe, input={"n": 1})  # int | None
    either = wf.node("either", typed.either, input={"n": 1})  # int | str
    tob = wf.node("tob", typed.text_or_bytes, input={"n": 1})  # str | bytes
    text = wf.node("text", typed.label, input={"n": 1})  # str
    n = wf.node("n", typed.count, input={"text": "x"})  # int
    wf.node("maybe_to_float", typed.half, input={"n": maybe.output})
    wf.node("either_to_float", typed.half, input={"n": either.output})
    wf.node("str_bytes_to_float", typed.half, input={"n": tob.output})
    wf.node("str_to_optional", typed.opt_text, input={"text": text.output})
    wf.node("int_to_optional", typed.opt_text, input={"text": n.output})
    assert problems_of(wf) == [
        "node 'str_bytes_to_float': parameter 'n' of half() expects float, "
        "but ${tob.output} is str | bytes",
        "node 'int_to_optional': parameter 'text' of opt_text() expects str | None, "
        "but ${n.output} is int",
    ]


def test_numbers_widen_as_for_agents(typed: types.ModuleType) -> None:
    wf = ax.Workflow("numbers")
    n = wf.node("n", typed.count, input={"text": "x"})  # int
    b = wf.node("b", typed.flag, input={"n": 1})  # bool
    h = wf.node("h", typed.half, input={"n": n.output})  # int feeds float
    wf.node("bool_to_int", typed.pair, input={"a": b.output, "b": n.output})
    wf.node("float_to_int", typed.pair, input={"a": h.output, "b": 1})
    (problem,) = problems_of(wf)
    assert (
        problem
        == "node 'float_to_int': parameter 'a' of pair() expects int, but ${h.output} is float"
    )


def test_generic_containers_are_compared_by_their_class(typed: types.ModuleType) -> None:
    wf = ax.Workflow("containers")
    xs = wf.node("xs", typed.numbers, input={"n": 3})  # list[int]
    wf.node("total", typed.total, input={"xs": xs.output})
    wf.node("count", typed.count, input={"text": xs.output})
    (problem,) = problems_of(wf)
    assert (
        problem
        == "node 'count': parameter 'text' of count() expects str, but ${xs.output} is list[int]"
    )


def test_any_unannotated_and_unresolvable_annotations_are_not_checked(
    typed: types.ModuleType,
) -> None:
    wf = ax.Workflow("unchecked")
    n = wf.node("n", typed.count, input={"text": "x"})  # int
    raw = wf.node("raw", typed.unannotated, input=n.output)
    wf.node("any", typed.any_in, input={"x": n.output})
    wf.node("from_raw", typed.count, input={"text": raw.output})
    u = wf.node("u", typed.unresolved, input={"n": n.output, "text": "t"})  # n: Missing
    wf.node("from_u", typed.count, input={"text": u.output})  # -> AlsoMissing
    # the resolvable annotation of the same function is still checked
    wf.node("u_text", typed.unresolved, input={"n": 1, "text": n.output})
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'u_text': parameter 'text' of unresolved() expects str, but ${n.output} is int"
    )


def test_a_class_local_to_a_function_is_skipped_under_string_annotations() -> None:
    # This module has `from __future__ import annotations`: `Local` is a string
    # naming nothing in the module's globals, so it cannot be resolved.
    class Local(pydantic.BaseModel):
        x: int

    def make(x: int) -> Local:
        return Local(x=x)

    def use(p: Local, n: int) -> int:
        return p.x + n

    wf = ax.Workflow("local")
    m = wf.node("m", make, input={"x": 1})
    label = wf.node("label", wf_typed.label, input={"n": 1})
    wf.node("ok", use, input={"p": label.output, "n": 1})  # Local: unresolvable, skipped
    wf.node("bad", use, input={"p": m.output, "n": label.output})
    (problem,) = problems_of(wf)
    assert problem == "node 'bad': parameter 'n' of use() expects int, but ${label.output} is str"


# -- dict inputs map onto parameters as the scheduler maps them (issue 16) ----------------------


def size(data: dict[str, int]) -> int:
    return len(data)


def area(width: float, height: float) -> float:
    return width * height


def spread(**values: Any) -> int:
    return len(values)


def first_and_rest(x: Any, **rest: Any) -> Any:
    return x, rest


def test_a_dict_input_whose_keys_match_no_parameter_is_refused() -> None:
    wf = ax.Workflow("keys")
    wf.node("size", size, input={"a": 1, "b": 2})
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'size' input: keys 'a', 'b' match none of the parameters of size() (data); "
        "the dict would be passed whole as 'data': name the parameters, "
        "or write {'data': {...}} to pass it as one argument"
    )


def test_a_dict_input_key_that_names_no_parameter_is_refused() -> None:
    wf = ax.Workflow("keys")
    wf.node("area", area, input={"width": 2, "hieght": 3})
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'area': input key 'hieght' names no parameter of area() "
        "(parameters: width, height) (did you mean 'height'?)"
    )


def test_required_parameters_must_be_given() -> None:
    wf = ax.Workflow("required")
    n = wf.node("n", wf_typed.count, input={"text": "x"})
    wf.node("half_dict", area, input={"width": 2})
    wf.node("no_input", area)
    wf.node("one_value", area, input=n.output)
    wf.node("rest_only", first_and_rest, input={"y": 1})
    assert problems_of(wf) == [
        "node 'half_dict': input gives no value for 'height', required by area()",
        "node 'no_input': has no input, but area() requires 'width', 'height'",
        "node 'one_value' input: the input is passed as one argument, but area() also "
        "requires 'height': give a dict of its parameters",
        "node 'rest_only': input gives no value for 'x', required by first_and_rest()",
    ]


def test_the_validator_predicts_how_the_scheduler_maps_a_dict_input() -> None:
    # Every dict input the validator accepts is passed as keyword arguments; every
    # one it refuses the scheduler would have passed whole as the first argument.
    calls: dict[str, Any] = {}

    def record(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] = (args, kwargs)
            return fn(*args, **kwargs)

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    cases: list[tuple[str, Any, Any, bool]] = [
        # (name, function, input, accepted)
        ("area", area, {"width": 2, "height": 3}, True),
        ("spread", spread, {"a": 1, "b": 2}, True),
        ("first_and_rest", first_and_rest, {"x": 1, "y": 2}, True),
        ("size", size, {"data": {"a": 1}}, True),
        ("size_whole", size, {"a": 1}, False),
        ("area_typo", area, {"width": 2, "hieght": 3}, False),
    ]
    for name, fn, template, accepted in cases:
        wf = ax.Workflow(name)
        wf.node(name, record(name, fn), input=template)
        if accepted:
            wf.validate()
        else:
            with pytest.raises(ax.WorkflowDefinitionError):
                wf.validate()
            wf._validated = True  # run it anyway: what the scheduler does without the check
        with contextlib.suppress(ax.WorkflowError):  # area() without height raises
            wf.run()
        args, kwargs = calls[name]
        if accepted:
            assert (args, kwargs) == ((), template), name
        else:
            assert (args, kwargs) == ((template,), {}), name


# -- cycles: blamed on one reference, one problem per cycle (issue 16) --------------------------


def test_each_cycle_is_blamed_on_its_reference_to_a_later_node() -> None:
    wf = ax.Workflow("cycles")
    wf.node("a", noop, input={"x": Ref("c")})
    wf.node("b", noop, input={"x": Ref("a")})
    wf.node("c", noop, input={"x": Ref("b")})
    wf.node("d", noop, after=["e"])
    wf.node("e", noop, input=Ref("d", ("x",)))
    assert problems_of(wf) == [
        "node 'a' input 'x': ${c.output} makes a cycle: a -> b -> c -> a "
        "(a node cannot wait for itself)",
        "node 'd' after: 'e' makes a cycle: d -> e -> d (a node cannot wait for itself)",
    ]


def test_a_long_cycle_is_shown_by_its_ends() -> None:
    wf = ax.Workflow("long-cycle")
    for i in range(20):
        wf.node(f"n{i}", noop, input=Ref(f"n{(i + 1) % 20}"))
    (problem,) = problems_of(wf)
    assert problem == (
        "node 'n0' input: ${n1.output} makes a cycle: n0 -> n19 -> n18 -> n17 -> n16 -> "
        "... (11 more) -> n4 -> n3 -> n2 -> n1 -> n0 (a node cannot wait for itself)"
    )


def test_decorated_functions_and_callable_objects_are_checked_too() -> None:
    @ax.io
    async def shout(text: str) -> str:
        return text.upper()

    class Counter:
        def __call__(self, text: str) -> int:
            return len(text)

    wf = ax.Workflow("targets")
    n = wf.node("n", Counter(), input={"text": "abc"})
    s = wf.node("s", shout, input={"text": n.output})
    wf.node("c", Counter(), input=s.output)  # str into str: fine
    (problem,) = problems_of(wf)
    assert problem == "node 's': parameter 'text' of shout() expects str, but ${n.output} is int"


# -- cost: a function's signature and annotations are read once (issue 16) ----------------------


def test_a_functions_signature_and_annotations_are_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect
    import typing

    seen = {"hints": 0, "signature": 0}
    real_hints, real_signature = typing.get_type_hints, inspect.signature

    def get_type_hints(obj: Any, *args: Any, **kwargs: Any) -> Any:
        seen["hints"] += obj is step
        return real_hints(obj, *args, **kwargs)

    def signature(obj: Any, *args: Any, **kwargs: Any) -> Any:
        seen["signature"] += obj is step
        return real_signature(obj, *args, **kwargs)

    def step(
        x: int,
    ) -> int:  # string annotations: this module is `from __future__ import annotations`
        return x + 1

    monkeypatch.setattr(typing, "get_type_hints", get_type_hints)
    monkeypatch.setattr(inspect, "signature", signature)
    wf = ax.Workflow("chain")
    prev = wf.node("n0", step, input=0)
    for i in range(1, 500):
        prev = wf.node(f"n{i}", step, input={"x": prev.output})
    wf.validate()
    wf.validate()
    assert seen == {"hints": 1, "signature": 1}


def test_closures_of_one_def_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import typing

    def make(i: int) -> Any:
        def step(x: int) -> int:
            return x + i

        return step

    steps = [make(i) for i in range(300)]
    seen = {"hints": 0}
    real_hints = typing.get_type_hints

    def get_type_hints(obj: Any, *args: Any, **kwargs: Any) -> Any:
        seen["hints"] += any(obj is s for s in steps)
        return real_hints(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", get_type_hints)
    wf = ax.Workflow("closures")
    prev = wf.node("n0", steps[0], input=0)
    for i, step in enumerate(steps[1:], 1):
        prev = wf.node(f"n{i}", step, input={"x": prev.output})
    wf.validate()
    assert seen["hints"] == 1


def test_closures_with_their_own_annotations_are_checked_each() -> None:
    wf = ax.Workflow("closures")
    n = wf.node("n", wf_typed.count, input={"text": "abc"})  # int
    wf.node("as_int", wf_typed.identity_for(int), input={"x": n.output})
    wf.node("as_str", wf_typed.identity_for(str), input={"x": n.output})
    (problem,) = problems_of(wf)
    assert (
        problem == "node 'as_str': parameter 'x' of identity() expects str, but ${n.output} is int"
    )
    # under string annotations, `t` names nothing in the module: not checked
    wf = ax.Workflow("closures-lazy")
    n = wf.node("n", wf_typed_lazy.count, input={"text": "abc"})
    wf.node("as_str", wf_typed_lazy.identity_for(str), input={"x": n.output})
    wf.validate()


# -- review 16 --------------------------------------------------------------------------


def _pair() -> tuple[int, str]:
    return (7, "seven")


def _repeat() -> tuple[int, ...]:
    return (1, 2, 3)


def _text(s: str) -> str:
    return s


def _number(n: int) -> int:
    return n


def test_a_fixed_tuples_items_have_each_their_own_type() -> None:
    """Before: ${a.output[1]} of a tuple[int, str] was taken to be int (the first item's
    type, as for tuple[int, ...]): a correct workflow was refused with "parameter 's' of
    _text() expects str, but ${a.output[1]} is int"."""
    wf = ax.Workflow("pairs")
    a = wf.node("a", _pair)
    wf.node("second", _text, input={"s": a.output[1]})
    wf.node("first", _number, input={"n": a.output[0]})
    wf.node("last", _text, input={"s": a.output[-1]})
    r = wf.node("r", _repeat)
    wf.node("any", _number, input={"n": r.output[2]})
    result = wf.run()
    assert (result["second"], result["first"], result["last"], result["any"]) == (
        "seven", 7, "seven", 3,
    )  # fmt: skip

    wrong = ax.Workflow("pairs-wrong")  # and a real mismatch is still found
    a = wrong.node("a", _pair)
    wrong.node("n", _number, input={"n": a.output[1]})
    (problem,) = problems_of(wrong)
    assert "expects int, but ${a.output[1]} is str" in problem


class _Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int = 1


def _loose() -> _Loose:
    return _Loose(a=1, score=5)


def test_an_extra_field_of_a_model_that_allows_extras_is_not_refused() -> None:
    """Before: ${a.output.score} of a model with extra="allow" was refused ("_Loose has
    no field 'score' (fields: a)"), though the run reads it (getattr) and succeeds."""
    wf = ax.Workflow("loose")
    a = wf.node("a", _loose)
    wf.node(
        "b", _number, input={"n": a.output.score}, when=Condition.parse("${a.output.score} > 1")
    )
    assert wf.run()["b"] == 5


def test_generator_functions_are_refused_before_anything_runs() -> None:
    """A generator's body would run later, outside the node (its timeout, retries, record)."""

    async def items(x: int) -> Any:
        yield x

    def lines(x: int) -> Any:
        yield x

    class Stream:
        def __call__(self, x: int) -> Any:
            yield x

    for target, kind in (
        (items, "an async generator"),
        (lines, "a generator"),
        (functools.partial(lines), "a generator"),
        (Stream(), "a generator"),
    ):
        wf = ax.Workflow("gen")
        wf.node("a", target, input=1)
        (problem,) = problems_of(wf)
        assert problem.startswith("node 'a': target ")
        assert f"is {kind} function: a node's output is what it returns" in problem
