// Helpers shared by the dashboard's pages. Data from the server is only ever
// set with textContent (or as attribute values), never parsed as HTML.
"use strict";
const AX = (() => {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const HIDDEN_EVENT_KEYS = new Set(["seq", "job_id", "kind", "at"]);
  const pad = (n) => String(n).padStart(2, "0");

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

  function setTime(el, iso) {
    el.dateTime = iso || "";
    el.title = iso || "";
    el.textContent = formatTime(iso);
  }

  function localizeTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) setTime(el, el.getAttribute("datetime"));
  }

  function fraction(job) {
    if (typeof job.progress === "number") return Math.min(Math.max(job.progress, 0), 1);
    return job.status === "succeeded" ? 1 : null;
  }

  const percent = (f) => (f === null ? "\u2013" : `${Math.round(f * 100)}%`);

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

  return { TERMINAL, ApiError, api, eventDetail, formatTime, localizeTimes, setBadge, setLive, setProgress, setTime };
})();
