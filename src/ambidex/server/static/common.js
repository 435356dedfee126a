// Helpers shared by the dashboard's pages. Data from the server is only ever
// set with textContent (or as attribute values), never parsed as HTML.
"use strict";
const AX = (() => {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  // The traceback of a failed attempt is in the attempts table; run_at repeats delay_s.
  const HIDDEN_EVENT_KEYS = new Set(["seq", "job_id", "kind", "at", "traceback", "run_at"]);
  const DASH = "\u2013";
  const pad = (n) => String(n).padStart(2, "0");
  const enc = encodeURIComponent;
  const jobHref = (id) => `/jobs/${enc(id)}`;

  // What a page can do to a job, and in which states (the server's _ACTIONS).
  const ACTIONS = {
    retry: { method: "POST", path: (id) => `/v1/jobs/${enc(id)}/retry`, when: new Set(["failed", "cancelled"]) },
    rerun: { method: "POST", path: (id) => `/v1/jobs/${enc(id)}/rerun`, when: TERMINAL },
    cancel: { method: "DELETE", path: (id) => `/v1/jobs/${enc(id)}`, when: new Set(["queued", "running"]) },
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // "2024-05-01 13:04:05" in the browser's time zone; "" for null.
  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // A <time class="compact"> (in a table) leaves out today's date.
  function setTime(el, iso) {
    el.dateTime = iso || "";
    el.title = iso || "";
    const text = formatTime(iso);
    const today = formatTime(new Date().toISOString()).slice(0, 11);
    el.textContent = el.classList.contains("compact") && text.startsWith(today) ? text.slice(11) : text;
  }

  function localizeTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) setTime(el, el.getAttribute("datetime"));
  }

  function fraction(job) {
    if (typeof job.progress === "number") return Math.min(Math.max(job.progress, 0), 1);
    return job.status === "succeeded" ? 1 : null;
  }

  const percent = (f) => (f === null ? DASH : `${Math.round(f * 100)}%`);

  // "1.23 s", "4 min 5 s", "2 h 3 min" (the server's _duration); a dash when unknown.
  function duration(s) {
    if (typeof s !== "number" || !Number.isFinite(s)) return DASH;
    if (s < 60) return `${s.toFixed(2)} s`;
    const whole = Math.floor(s);
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
    return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  }

  const firstLine = (text) => (text ? String(text).split("\n", 1)[0] : "");

  // Fill a ".progress" box (bar and percentage) from a job or {progress, status}.
  function setProgress(box, job) {
    const f = fraction(job);
    box.dataset.progress = f === null ? "" : String(f);
    const bar = box.querySelector(".bar");
    bar.dataset.status = job.status;
    bar.querySelector(".fill").style.width = `${f === null ? 0 : f * 100}%`;
    box.querySelector(".pct").textContent = percent(f);
  }

  function setBadge(el, status, cancelRequested) {
    el.className = `badge s-${status}`;
    el.dataset.status = status;
    el.textContent = status;
    el.title = cancelRequested && !TERMINAL.has(status) ? "cancel requested" : "";
  }

  function setLive(state, text) {
    const el = document.getElementById("live");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  function eventDetail(ev) {
    if (ev.kind === "progress") {
      const parts = [percent(typeof ev.progress === "number" ? Math.min(Math.max(ev.progress, 0), 1) : null)];
      if (ev.message) parts.push(String(ev.message));
      return parts.join(" \u00b7 ");
    }
    const parts = [];
    for (const [key, value] of Object.entries(ev)) {
      if (HIDDEN_EVENT_KEYS.has(key) || value === null || value === undefined) continue;
      parts.push(`${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
    }
    return parts.join(" \u00b7 ");
  }

  // Show or hide each button[data-action] under root as the job's status allows.
  function setActions(root, job) {
    for (const button of root.querySelectorAll("button[data-action]")) {
      const action = ACTIONS[button.dataset.action];
      button.hidden = !action || !action.when.has(job.status);
      if (button.dataset.action === "cancel") {
        button.disabled = Boolean(job.cancel_requested) && !TERMINAL.has(job.status);
        button.title = button.disabled ? "cancel requested; waiting for the worker" : "";
      }
    }
  }

  function jobLink(id) {
    const a = document.createElement("a");
    a.href = jobHref(id);
    a.className = "mono";
    a.dataset.jobId = id;
    a.textContent = id;
    return a;
  }

  // Say something in a message element: parts are strings or {job: id} (a link).
  function say(el, kind, ...parts) {
    el.dataset.kind = kind;
    delete el.dataset.newJobId;
    el.replaceChildren(...parts.map((p) => (typeof p === "string" ? p : jobLink(p.job))));
  }

  // Do an action to a job; say how it went in el. Returns the job (the new one for rerun), or null.
  async function act(action, jobId, el) {
    const spec = ACTIONS[action];
    say(el, "", `${{ retry: "Retrying", rerun: "Re-running", cancel: "Cancelling" }[action]} job `, { job: jobId }, "\u2026");
    try {
      const job = await api(spec.method, spec.path(jobId));
      if (action === "rerun") {
        say(el, "ok", "Job ", { job: jobId }, " re-run as ", { job: job.id }, ".");
        el.dataset.newJobId = job.id;
      } else if (action === "retry") {
        say(el, "ok", "Job ", { job: jobId }, " is back in the queue.");
      } else if (TERMINAL.has(job.status)) {
        say(el, "ok", "Job ", { job: jobId }, ` ${job.status}.`);
      } else {
        say(el, "ok", "Cancel requested for job ", { job: jobId }, "; waiting for its worker.");
      }
      return job;
    } catch (err) {
      say(el, "error", `Could not ${action === "rerun" ? "re-run" : action} job `, { job: jobId }, `: ${err.message}`);
      return null;
    }
  }

  // Why the queue is not being worked (the server's _queue_problem), or "".
  // state: {workers_alive, queued, orphaned: {workload: queued jobs}}; always: say so even
  // when nothing is queued.
  function queueProblem(state, always) {
    const n = state.queued;
    const jobs = `${n} job${n === 1 ? "" : "s"}`;
    if (state.workers_alive === 0) {
      if (n > 0) return `no worker is alive, and ${jobs} ${n === 1 ? "is" : "are"} queued.`;
      return always ? "no worker is alive; jobs submitted now will wait." : "";
    }
    const names = Object.keys(state.orphaned || {});
    if (!names.length) return "";
    const waiting = names.reduce((sum, name) => sum + state.orphaned[name], 0);
    return `no live worker takes ${names.join(", ")} (${waiting} queued).`;
  }

  function setQueueBanner(state, always) {
    const banner = document.getElementById("queue-banner");
    if (!banner) return;
    const text = queueProblem(state, always);
    banner.hidden = !text;
    document.getElementById("queue-problem").textContent = text;
  }

  function errorText(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n");
    }
    if (typeof detail === "string") return detail;
    return `HTTP ${status}`;
  }

  // A call to the job service's API (the token cookie goes along, same origin).
  async function api(method, path, body) {
    // The custom header marks the call as the page's own (a form on another site cannot send it).
    const headers = { Accept: "application/json", "X-Requested-With": "ambidex-dashboard" };
    const init = { method, credentials: "same-origin", cache: "no-store", headers };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const hint = response.status === 401 ? " (reopen the dashboard with ?token=...)" : "";
      throw new ApiError(response.status, errorText(response.status, data) + hint);
    }
    return data;
  }

  // Make tbody's rows (each keyed by its data-<key> attribute) match items, in order:
  // rows are kept and moved, not rebuilt, so a button being clicked stays in place.
  function syncRows(tbody, template, items, key, idOf, fill) {
    const rows = new Map();
    for (const tr of tbody.querySelectorAll(`tr[data-${key}]`)) rows.set(tr.getAttribute(`data-${key}`), tr);
    let previous = null;
    for (const item of items) {
      let tr = rows.get(idOf(item));
      if (tr) rows.delete(idOf(item));
      else tr = template.content.firstElementChild.cloneNode(true);
      fill(tr, item);
      const expected = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (tr !== expected) tbody.insertBefore(tr, expected);
      previous = tr;
    }
    for (const tr of rows.values()) tr.remove();
  }

  return {
    TERMINAL, DASH, ApiError, act, api, duration, eventDetail, firstLine, formatTime, jobHref, jobLink,
    localizeTimes, say, setActions, setBadge, setLive, setProgress, setQueueBanner, setTime, syncRows,
  };
})();
