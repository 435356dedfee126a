// Readable summaries of the results of workflows (WorkflowResult.as_dict), simulations
// (runs and sweeps: ambidex.jobs._sim) and evolutions (EvolveResult.summary). Built with
// DOM calls: every value is a text node or an attribute, never parsed as HTML.
"use strict";
const AXSummary = (() => {
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // A number in at most 6 significant digits; anything else as short JSON.
  function num(x) {
    if (typeof x === "number") return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(6)));
    if (x === null || x === undefined) return AX.DASH;
    return typeof x === "string" ? x : JSON.stringify(x);
  }

  // A value cut to `max` characters, the whole of it in the cell's title.
  function short(value, max = 80) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    if (text === undefined) return { text: "", title: "" };
    return { text: text.length > max ? `${text.slice(0, max - 1)}\u2026` : text, title: text.slice(0, 4000) };
  }

  const badge = (status) => el("span", { className: `badge s-${status}`, textContent: status });

  function line(id, ...parts) {
    const p = el("p", { className: "summary-line", id });
    parts.forEach((part, i) => {
      if (i) p.append(" \u00b7 ");
      p.append(part);
    });
    return p;
  }

  function table(id, headers, rows) {
    const head = el("tr", null, ...headers.map((h) => el("th", { textContent: h })));
    return el("div", { className: "scroll" },
      el("table", { className: "events summary-table", id }, el("thead", null, head), el("tbody", null, ...rows)));
  }

  const cell = (text, className = "") => el("td", { className, textContent: text });
  const strong = (text) => el("strong", { textContent: text });

  function workflow(result) {
    const names = Object.keys(result.nodes);
    const rows = names.map((name) => {
      const node = isObject(result.nodes[name]) ? result.nodes[name] : {};
      const status = String(node.status || "unknown");
      let detail;
      if (node.error) detail = el("td", { className: "detail error-text", textContent: String(node.error) });
      else if (node.reason) detail = cell(String(node.reason), "detail muted");
      else {
        const out = short(node.output);
        detail = el("td", { className: "detail mono", textContent: out.text, title: out.title });
      }
      return el("tr", { dataset: { node: name, status } },
        cell(name, "mono"), el("td", null, badge(status)),
        cell(num(node.attempts), "num"), cell(AX.duration(node.duration_s), "num"), detail);
    });
    const ok = result.succeeded ? "succeeded" : "failed";
    return [
      line("summary-head", badge(ok), el("span", null, "workflow ", strong(String(result.workflow ?? ""))),
        `${names.length} node${names.length === 1 ? "" : "s"}`, `took ${AX.duration(result.elapsed_s)}`),
      table("summary-nodes", ["Node", "Status", "Attempts", "Duration", "Output or error"], rows),
    ];
  }

  function meanSd(stat, replicates) {
    if (!isObject(stat)) return num(stat);
    return replicates > 1 ? `${num(stat.mean)} \u00b1 ${num(stat.sd)}` : num(stat.mean);
  }

  function sweep(result) {
    const points = result.points.filter(isObject);
    const params = Object.keys(isObject(result.grid) ? result.grid : {});
    const metrics = Object.keys(isObject(points[0] && points[0].final) ? points[0].final : {});
    const replicates = Number(result.replicates) || 1;
    const rows = points.map((p, i) => el("tr", { dataset: { point: String(i) } },
      ...params.map((k) => cell(num(isObject(p.point) ? p.point[k] : undefined), "num")),
      ...metrics.map((m) => cell(meanSd(isObject(p.final) ? p.final[m] : undefined, replicates), "num"))));
    const suffix = replicates > 1 ? " (mean \u00b1 sd)" : "";
    return [
      line("summary-head", el("span", null, "sweep of ", strong(String(result.model ?? ""))),
        `${points.length} point${points.length === 1 ? "" : "s"} \u00d7 ${replicates} replicate${replicates === 1 ? "" : "s"}`,
        `${num(result.steps)} steps`, `seed ${num(result.seed)}`, `took ${AX.duration(result.elapsed_s)}`),
      el("p", { className: "hint" }, `Final metric values per grid point${suffix}.`),
      table("summary-points", [...params, ...metrics.map((m) => `${m}${suffix ? " (final)" : ""}`)], rows),
    ];
  }

  function run(result) {
    let final = isObject(result.final) ? result.final : null;
    if (!final && isObject(result.points[0]) && isObject(result.points[0].final)) {
      final = Object.fromEntries(Object.entries(result.points[0].final).map(([k, v]) => [k, isObject(v) ? v.mean : v]));
    }
    const rows = Object.entries(final || {}).filter(([k]) => k !== "step")
      .map(([k, v]) => el("tr", { dataset: { metric: k } }, cell(k, "mono"), cell(num(v), "num")));
    return [
      line("summary-head", el("span", null, "run of ", strong(String(result.model ?? ""))),
        `${num(result.steps)} steps`, `seed ${num(result.seed)}`, `took ${AX.duration(result.elapsed_s)}`),
      table("summary-metrics", ["Metric", "Final value"], rows),
    ];
  }

  function evolution(result) {
    const best = isObject(result.best) ? result.best : null;
    const parts = [
      line("summary-head",
        el("span", null, "best score ", strong(best ? num(best.score) : AX.DASH)),
        `initial ${num(result.initial_score)}`, result.improved ? "improved" : "not improved",
        `${num(result.done)}/${num(result.iterations)} iterations`,
        `${num(result.succeeded)} ok, ${num(result.failed)} failed`, `took ${AX.duration(result.elapsed_s)}`),
    ];
    if (isObject(result.failures) && Object.keys(result.failures).length) {
      const text = Object.entries(result.failures).map(([k, n]) => `${k}: ${num(n)}`).join(", ");
      parts.push(el("p", { className: "hint", id: "summary-failures" }, `Failures: ${text}`));
    }
    if (best && isObject(best.metrics) && Object.keys(best.metrics).length) {
      const rows = Object.entries(best.metrics).map(([k, v]) => el("tr", { dataset: { metric: k } }, cell(k, "mono"), cell(num(v), "num")));
      parts.push(table("summary-metrics", ["Metric of the best program", "Value"], rows));
    }
    if (best && typeof best.code === "string") {
      parts.push(el("details", { className: "program", open: true },
        el("summary", null, `Best program (#${num(best.id)}, iteration ${num(best.iteration)})`),
        el("pre", { className: "json", id: "summary-code", textContent: best.code })));
    }
    return parts;
  }

  // Which summary fits: by the workload (its kind, its name) and the result's shape.
  function kindOf(info, result) {
    if (!isObject(result)) return null;
    const name = info.workload || "";
    if (isObject(result.nodes) && (info.workloadKind === "workflow" || "workflow" in result)) return workflow;
    if (Array.isArray(result.points) && (name.startsWith("sim.") || ["run", "sweep"].includes(result.kind))) {
      return result.kind === "run" ? run : sweep;
    }
    if ("best" in result && "iterations" in result && (name.startsWith("evolve.") || "improved" in result)) {
      return evolution;
    }
    return null;
  }

  // Draw the summary of `result` into `box`; false when there is none to draw.
  // info: {workload, workloadKind} (the job page's data attributes).
  function render(box, info, result) {
    const draw = kindOf(info, result);
    if (!draw) return false;
    try {
      box.replaceChildren(...draw(result));
      box.dataset.kind = draw.name;
      return true;
    } catch (_) {
      return false;  // a result of an unexpected shape: its JSON is shown instead
    }
  }

  return { render };
})();
