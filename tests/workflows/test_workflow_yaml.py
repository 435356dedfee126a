"""Workflows from YAML: a valid file loads and runs; each problem names its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import wf_agents

import ambidex as ax

S = ax.NodeStatus

VALID = """\
name: emissions
description: fuel and grid factors into a report
inputs:
  litres: float
  region: {type: str, default: EU}
max_parallel: 4
nodes:
  fuel:
    agent: wf_agents:FuelAgent
    input: {litres: "${inputs.litres}"}
  grid:
    agent: wf_agents:GridAgent
    input: {region: "${inputs.region}"}
  report:
    agent: wf_agents:ReportAgent
    input:
      kg: "${fuel.output.kg_co2}"
      factor: "${grid.output.factor}"
      note: "Fuel ${fuel.output.label} in ${inputs.region}"
    when: "${fuel.output.kg_co2} > 0"
    timeout_s: 5
    retries: 1
  shout:
    function: wf_agents:shout
    input: {text: "${report.output.text}"}
    on_failure: continue
"""


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> ax.WorkflowDefinitionError:
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        ax.Workflow.from_yaml(str(path))
    err = info.value
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: ")  # every message names the file
    return err


def line_of(text: str, needle: str) -> int:
    """1-based line number of the only line containing ``needle``."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


# -- a valid file --------------------------------------------------------------------------


def test_a_valid_file_loads_and_runs(tmp_path: Path) -> None:
    wf = ax.Workflow.from_yaml(str(write(tmp_path, VALID)))
    assert wf.name == "emissions"
    assert wf.max_parallel == 4
    assert set(wf.nodes) == {"fuel", "grid", "report", "shout"}
    assert wf.nodes["report"].deps == {"fuel", "grid"}
    assert wf.nodes["report"].timeout_s == 5
    assert wf.nodes["report"].retries == 1
    assert wf.nodes["fuel"].line == line_of(VALID, "fuel:")

    result = wf.run({"litres": 4})
    assert result["fuel"] == wf_agents.FuelOut(kg_co2=10.0, label="4 l")
    assert result["grid"].factor == 2.0  # the default region
    assert result["report"].total == 20.0
    # an interpolated string: references replaced by their values
    assert result["report"].text == "Fuel 4 l in EU: 20 kg"
    assert result["shout"] == "FUEL 4 L IN EU: 20 KG"


def test_the_when_condition_of_a_yaml_node_skips_it(tmp_path: Path) -> None:
    wf = ax.Workflow.from_yaml(str(write(tmp_path, VALID)))
    result = wf.run({"litres": 0, "region": "US"})
    assert result["grid"].factor == 3.0
    assert result.nodes["report"].status is S.SKIPPED
    assert result.nodes["report"].reason == "condition is false"
    assert result.nodes["shout"].status is S.SKIPPED


def test_yaml_run_inputs_are_checked(tmp_path: Path) -> None:
    wf = ax.Workflow.from_yaml(str(write(tmp_path, VALID)))
    with pytest.raises(ax.WorkflowDefinitionError, match="input 'litres': expected float"):
        wf.run({"litres": "abc"})


# -- problems with their lines ---------------------------------------------------------------


def test_invalid_yaml_syntax_reports_line_and_column(tmp_path: Path) -> None:
    text = """\
    name: bad
    nodes:
      a:
        function: wf_agents:shout
         input: 3
    """
    err = load_error(write(tmp_path, text))
    assert "line 5, column 11" in str(err)
    assert "not valid YAML" in str(err)


def test_a_duplicate_key_is_reported_with_its_line(tmp_path: Path) -> None:
    text = """\
    name: dup
    nodes:
      a:
        function: wf_agents:shout
        input: {text: x}
        input: {text: y}
    """
    err = load_error(write(tmp_path, text))
    assert "line 6" in str(err)
    assert "duplicate key 'input'" in str(err)


def test_unknown_keys_report_their_lines(tmp_path: Path) -> None:
    text = """\
    name: typos
    nodez: {}
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_agents:shout
        input: {text: "${a.output}"}
        retires: 2
    """
    err = load_error(write(tmp_path, text))
    assert len(err.problems) == 2, err.problems
    top, node = err.problems
    assert top.startswith("line 2: ")
    assert "unknown key 'nodez'" in top
    assert node.startswith("line 10: ")
    assert "node 'b': unknown key 'retires'" in node
    assert "retries" in node  # the keys it accepts


def test_a_bad_import_path_reports_its_line(tmp_path: Path) -> None:
    text = """\
    name: imports
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        input: {litres: 1}
        agent: wf_agents:NoSuchAgent
      c:
        function: no_such_module_for_ambidex_tests:run
      d:
        function: wf_agents.shout
    """
    err = load_error(write(tmp_path, text))
    assert len(err.problems) == 3, err.problems
    b, c, d = err.problems
    assert b.startswith("line 8: ")
    assert "wf_agents:NoSuchAgent" in b
    assert "NoSuchAgent" in b
    assert c.startswith("line 10: ")
    assert "cannot import function 'no_such_module_for_ambidex_tests:run'" in c
    assert d.startswith("line 12: ")
    assert "'package.module:Name'" in d


def test_a_bad_reference_in_an_input_reports_its_line(tmp_path: Path) -> None:
    text = """\
    name: refs
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_agents:shout
        input: {text: "${a.outptu}"}
    """
    err = load_error(write(tmp_path, text))
    (problem,) = err.problems
    assert problem.startswith("line 8: ")
    assert "node 'b'" in problem
    assert "${a.outptu}" in problem
    assert "${a.output}" in problem  # how to write it


def test_a_bad_reference_in_a_block_input_reports_its_own_line(tmp_path: Path) -> None:
    text = """\
    name: refs
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_typed:total
        input:
          xs:
            - "${a.output}"
            - "${a.outptu}"
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 11: node 'b': ${a.outptu}: refer to a node's output as ${a.output} or "
        "${a.output.field}, or to a workflow input as ${inputs.name}"
    ]


def test_a_bad_reference_in_a_condition_reports_the_when_line(tmp_path: Path) -> None:
    text = """\
    name: refs
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_agents:shout
        input: {text: "${a.output}"}
        when: "${a.outptu} == 'HI'"
    """
    err = load_error(write(tmp_path, text))
    (problem,) = err.problems
    assert "${a.outptu}" in problem
    assert problem.startswith("line 9: "), problem


def test_an_unreadable_condition_reports_the_when_line(tmp_path: Path) -> None:
    text = """\
    name: refs
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_agents:shout
        input: {text: "${a.output}"}
        when: "${a.output} >"
    """
    err = load_error(write(tmp_path, text))
    (problem,) = err.problems
    assert problem.startswith("line 9: ")
    assert "cannot read condition" in problem


def test_a_bad_on_failure_reports_its_line(tmp_path: Path) -> None:
    text = """\
    name: policies
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_agents:shout
        input: {text: "${a.output}"}
        on_failure: sometimes
    """
    err = load_error(write(tmp_path, text))
    (problem,) = err.problems
    assert "on_failure must be 'fail', 'skip' or 'continue', got 'sometimes'" in problem
    assert problem.startswith("line 9: "), problem


def test_graph_problems_in_yaml_name_the_line_of_the_reference(tmp_path: Path) -> None:
    text = """\
    name: graph
    inputs:
      litres: float
    nodes:
      fuel:
        agent: wf_agents:FuelAgent
        input: {litres: "${inputs.litres}"}
      report:
        agent: wf_agents:ReportAgent
        input: {kg: "${fuel.output.label}", factor: 1}
        after: [fule]
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 11: node 'report' after: depends on unknown node 'fule' (did you mean 'fuel'?)",
        "line 10: node 'report': input field 'kg' expects float, but ${fuel.output.label} is str",
    ]


def test_a_missing_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    err = load_error(path)
    assert "cannot read the workflow file" in str(err)
    assert "No such file" in str(err)


# -- every problem at the line of its reference (issue 16) ---------------------------------------


def test_a_condition_on_a_missing_field_reports_the_when_line(tmp_path: Path) -> None:
    text = """\
    name: cond
    nodes:
      fuel:
        agent: wf_agents:FuelAgent
        input: {litres: 2}
      report:
        function: wf_agents:shout
        input: {text: "${fuel.output.label}"}
        when: "${fuel.output.kg} > 0"
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 9: node 'report' when: ${fuel.output.kg}: FuelOut has no field 'kg' "
        "(fields: kg_co2, label)"
    ]


def test_a_condition_on_an_unknown_node_or_input_reports_the_when_line(tmp_path: Path) -> None:
    text = """\
    name: cond
    inputs:
      limit: float
    nodes:
      fuel:
        agent: wf_agents:FuelAgent
        input: {litres: "${inputs.limit}"}
      a:
        function: wf_agents:shout
        input: {text: hi}
        when: "${fule.output.kg_co2} > 0"
      b:
        function: wf_agents:shout
        input: {text: hi}
        when: "${inputs.limt} > 0"
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 11: node 'a' when: ${fule.output.kg_co2} refers to unknown node 'fule' "
        "(did you mean 'fuel'?)",
        "line 15: node 'b' when: ${inputs.limt} refers to an undeclared workflow input 'limt' "
        "(did you mean 'limit'?)",
    ]


def test_a_condition_that_makes_a_cycle_reports_the_when_line(tmp_path: Path) -> None:
    text = """\
    name: cond-cycle
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
        when: "${b.output} == 'HI'"
      b:
        function: wf_agents:shout
        input: {text: "${a.output}"}
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 6: node 'a' when: ${b.output} makes a cycle: a -> b -> a "
        "(a node cannot wait for itself)"
    ]


@pytest.mark.parametrize("module", ["wf_typed", "wf_typed_lazy"])
def test_a_function_type_mismatch_reports_the_line_of_the_reference(
    tmp_path: Path, module: str
) -> None:
    text = f"""\
    name: types
    nodes:
      n:
        function: {module}:count
        input: {{text: abc}}
      text:
        function: {module}:count
        input:
          text: "${{n.output}}"
      whole:
        function: {module}:count
        input: "${{n.output}}"
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 9: node 'text': parameter 'text' of count() expects str, but ${n.output} is int",
        "line 12: node 'whole' input: parameter 'text' of count() expects str, "
        "but ${n.output} is int",
    ]


def test_dict_input_keys_that_are_not_parameters_report_their_lines(tmp_path: Path) -> None:
    text = """\
    name: keys
    nodes:
      p:
        function: wf_typed:pair
        input:
          a: 1
          bb: 2
      q:
        function: wf_typed:total
        input:
          values: [1, 2]
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 7: node 'p': input key 'bb' names no parameter of pair() "
        "(parameters: a, b) (did you mean 'b'?)",
        "line 10: node 'q' input: key 'values' matches none of the parameters of total() (xs); "
        "the dict would be passed whole as 'xs': name the parameters, "
        "or write {'xs': {...}} to pass it as one argument",
    ]


def test_a_cycle_reports_the_line_of_the_reference_that_closes_it(tmp_path: Path) -> None:
    text = """\
    name: cycle
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
      b:
        function: wf_typed:total
        input:
          xs:
            - "${a.output}"
            - "${c.output}"
      c:
        function: wf_typed:total
        input: {xs: ["${b.output}"]}
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 11: node 'b' input 'xs[1]': ${c.output} makes a cycle: b -> c -> b "
        "(a node cannot wait for itself)"
    ]


def test_each_reference_in_a_list_reports_its_own_line(tmp_path: Path) -> None:
    text = """\
    name: lists
    nodes:
      fuel:
        agent: wf_agents:FuelAgent
        input: {litres: 2}
      all:
        function: wf_typed:total
        input:
          xs:
            - "${fuel.output.kg_co2}"
            - "${fuel.output.kg}"
            - "${fule.output}"
        after:
          - fuel
          - grid
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == [
        "line 15: node 'all' after: depends on unknown node 'grid' (known: all, fuel)",
        "line 11: node 'all' input 'xs[1]': ${fuel.output.kg}: FuelOut has no field 'kg' "
        "(fields: kg_co2, label)",
        "line 12: node 'all' input 'xs[2]': ${fule.output} refers to unknown node 'fule' "
        "(did you mean 'fuel'?)",
    ]


def test_a_target_that_is_not_callable_reports_its_line(tmp_path: Path) -> None:
    text = """\
    name: target
    nodes:
      a:
        input: {text: hi}
        function: wf_typed:__name__
    """
    err = load_error(write(tmp_path, text))
    assert err.problems == ["line 5: node 'a': target 'wf_typed' is not an agent or a function"]


def test_a_missing_run_input_reports_the_line_that_declares_it(tmp_path: Path) -> None:
    text = """\
    name: inputs
    inputs:
      litres: float
      region: {type: str, default: EU}
    nodes:
      fuel:
        agent: wf_agents:FuelAgent
        input: {litres: "${inputs.litres}"}
    """
    wf = ax.Workflow.from_yaml(str(write(tmp_path, text)))
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.run({"region": "UK"})
    assert info.value.problems == ["line 3: missing input 'litres' (float)"]
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.run({"litres": "lots"})
    assert info.value.problems == [
        "line 3: input 'litres': expected float: "
        "Input should be a valid number, unable to parse string as a number"
    ]


def test_an_undeclared_run_input_reports_the_line_that_reads_it(tmp_path: Path) -> None:
    text = """\
    name: inputs
    nodes:
      a:
        function: wf_agents:shout
        input: {text: hi}
        when: "${inputs.loud}"
    """
    wf = ax.Workflow.from_yaml(str(write(tmp_path, text)))
    with pytest.raises(ax.WorkflowDefinitionError) as info:
        wf.run({})
    assert info.value.problems == [
        "line 6: missing input 'loud' (referred to as ${inputs.loud} by node 'a')"
    ]
