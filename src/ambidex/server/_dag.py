"""A workflow's DAG as an inline SVG picture, laid out on the server (no script, no CDN).

A layered layout, left to right: a node's column is the length of the longest
path that reaches it (roots in the first), and within a column the nodes are
ordered by the mean row of what they wait for (one sweep; crossings are rare
in workflows and harmless here). Edges are curves from a node's right side to
its dependent's left side. Each node is a ``<g class="dag-node">`` with
``data-node`` and ``data-status``: the job page's script changes the status
in place, and the stylesheet colours it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ambidex.jobs import WorkflowNode

__all__ = ["MAX_DRAWN", "dag_svg"]

MAX_DRAWN = 400
"""Workflows with more nodes are not drawn (the table lists them)."""

_W, _H = 150, 34  # a node's box
_GAP_X, _GAP_Y = 56, 14
_PAD = 8
_LABEL_CHARS = 19


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "\u2026"


def _columns(nodes: Sequence[WorkflowNode]) -> list[list[str]]:
    """The nodes by column (longest path from a root), each column in drawing order."""
    names = [n.node for n in nodes]
    known = set(names)
    deps = {n.node: [d for d in n.after if d in known] for n in nodes}
    column: dict[str, int] = {}
    for name in names:  # iteratively (no recursion: a chain may be long)
        if name in column:
            continue
        stack = [name]
        visiting: set[str] = set()
        while stack:
            top = stack[-1]
            if top in column:
                stack.pop()
                continue
            waiting = [d for d in deps[top] if d not in column and d not in visiting]
            if waiting:
                visiting.add(top)
                stack.extend(waiting)
                continue
            column[top] = 1 + max((column.get(d, -1) for d in deps[top]), default=-1)
            visiting.discard(top)
            stack.pop()
    columns: list[list[str]] = [[] for _ in range(max(column.values(), default=-1) + 1)]
    for name in names:
        columns[column[name]].append(name)
    row: dict[str, float] = {}
    for index, members in enumerate(columns):
        if index:

            def mean_row(name: str) -> float:
                found = [row[d] for d in deps[name] if d in row]
                return sum(found) / len(found) if found else 0.0

            members.sort(key=mean_row)  # stable: ties keep the workflow's order
        for position, name in enumerate(members):
            row[name] = float(position)
    return columns


def dag_svg(nodes: Sequence[WorkflowNode]) -> str:
    """The picture of the workflow's nodes and edges (empty for no nodes, or too many)."""
    if not nodes or len(nodes) > MAX_DRAWN:
        return ""
    columns = _columns(nodes)
    at: dict[str, tuple[int, int]] = {}
    for c, members in enumerate(columns):
        for r, name in enumerate(members):
            at[name] = (_PAD + c * (_W + _GAP_X), _PAD + r * (_H + _GAP_Y))
    width = _PAD * 2 + len(columns) * _W + (len(columns) - 1) * _GAP_X
    height = _PAD * 2 + max(len(m) for m in columns) * (_H + _GAP_Y) - _GAP_Y
    edges = []
    for node in nodes:
        x2, y2 = at[node.node]
        for dep in node.after:
            if dep not in at:
                continue
            x1, y1 = at[dep]
            sx, sy, ex, ey = x1 + _W, y1 + _H / 2, x2, y2 + _H / 2
            bend = (ex - sx) / 2
            edges.append(
                f'<path class="dag-edge" data-from="{_e(dep)}" data-to="{_e(node.node)}" '
                f'd="M{sx:g},{sy:g} C{sx + bend:g},{sy:g} {ex - bend:g},{ey:g} {ex - 4:g},{ey:g}" '
                'marker-end="url(#dag-arrow)"/>'
            )
    boxes = []
    for node in nodes:
        x, y = at[node.node]
        boxes.append(
            f'<g class="dag-node" data-node="{_e(node.node)}" data-status="{_e(node.status)}" '
            f'transform="translate({x},{y})"><title>{_e(node.node)}: {_e(node.status)}</title>'
            f'<rect width="{_W}" height="{_H}" rx="6"/>'
            f'<circle class="dot" cx="14" cy="{_H / 2:g}" r="5"/>'
            f'<text x="26" y="{_H / 2 + 4:g}">{_e(_label(node.node))}</text></g>'
        )
    return (
        f'<svg id="workflow-graph" class="dag" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="the workflow\'s nodes and what each waits for">'
        '<defs><marker id="dag-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>'
        f"{''.join(edges)}{''.join(boxes)}</svg>"
    )
