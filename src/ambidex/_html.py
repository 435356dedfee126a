"""The pieces every HTML report is built from: page style, numbers, tables, embedded plots.

``ambidex sim report`` and ``ambidex evolve show --html`` write self-contained
pages in one style. Plots are drawn with matplotlib's Agg canvas on ``Figure``
objects (pyplot and its global state are never touched) and embedded as base64
PNG. matplotlib is imported only when a figure is made, so text-only callers
need nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "REPORT_CSS",
    "esc",
    "html_table",
    "img_tag",
    "mpl_text",
    "new_figure",
    "number_text",
    "png_base64",
]

REPORT_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
max-width:1280px;margin:2rem auto;padding:0 1.2rem;background:#fff}
h1{font-size:1.6rem;margin:0 0 .8rem}
h2{font-size:1.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.2rem}
h3{font-size:1rem;margin:1.4rem 0 .5rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.2rem;margin:0}
dl.meta dt{font-weight:600;color:#57606a}
dl.meta dd{margin:0;overflow-wrap:anywhere}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1rem}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.4rem;background:#fff}
figure img{width:100%;height:auto;display:block}
p.note,figcaption{color:#57606a;font-size:.88rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:.25rem .65rem;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0}
th.l,td.l{text-align:left}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
footer{margin-top:2.5rem;color:#8c959f;font-size:.8rem}
"""
"""The style sheet of every report page."""


def esc(text: Any) -> str:
    """``text`` escaped for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def number_text(value: float | int | None) -> str:
    """A number as a report shows it: integers whole, others to 4 significant digits."""
    if value is None:
        return "-"
    x = float(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < 1e12:
        return str(int(x))
    return f"{x:.4g}"


def mpl_text(text: str) -> str:
    """Text for matplotlib: a ``$`` must not start mathtext."""
    return text.replace("$", r"\$")


def new_figure(width: float = 6.4, height: float = 3.6) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_base64(fig: Figure) -> str:
    """``fig`` drawn as a PNG, base64-encoded for a ``data:`` URL."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(b64: str, alt: str) -> str:
    """A ``<figure>`` embedding a base64 PNG."""
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(alt)}"></figure>'


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    """An HTML table of already escaped cells; the first ``left`` columns align left."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
