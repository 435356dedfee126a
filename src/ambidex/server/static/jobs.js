// The job list: poll /v1/jobs (and the counts) every second and update the
// table in place, row by row, keyed by job id; submit jobs from the form.
(() => {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const table = document.getElementById("jobs");
  const tbody = document.getElementById("job-rows");
  const template = document.getElementById("row-template");
  const empty = document.getElementById("empty");
  const filter = table.dataset.statusFilter;
  const cursor = table.dataset.cursor;
  const limit = table.dataset.limit;

  function fillRow(tr, job) {
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    const link = tr.querySelector('[data-field="id"]');
    link.textContent = job.id;
    link.href = `/jobs/${encodeURIComponent(job.id)}`;
    tr.querySelector('[data-field="workload"]').textContent = job.workload;
    AX.setBadge(tr.querySelector('[data-field="status"]'), job.status, job.cancel_requested);
    AX.setProgress(tr.querySelector('[data-field="progress"]'), job);
    tr.querySelector('[data-field="attempts"]').textContent = `${job.attempts}/${job.max_attempts}`;
    AX.setTime(tr.querySelector('[data-field="created_at"]'), job.created_at);
    AX.setTime(tr.querySelector('[data-field="finished_at"]'), job.finished_at);
  }

  function render(jobs) {
    const rows = new Map();
    for (const tr of tbody.querySelectorAll("tr[data-job-id]")) rows.set(tr.dataset.jobId, tr);
    let previous = null;
    for (const job of jobs) {
      let tr = rows.get(job.id);
      if (tr) rows.delete(job.id);
      else tr = template.content.firstElementChild.cloneNode(true);
      fillRow(tr, job);
      const expected = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (tr !== expected) tbody.insertBefore(tr, expected);
      previous = tr;
    }
    for (const tr of rows.values()) tr.remove();
    empty.hidden = jobs.length > 0;
  }

  function renderCounts(counts) {
    for (const el of document.querySelectorAll("[data-count]")) {
      const n = counts[el.dataset.count];
      if (typeof n === "number") el.textContent = String(n);
    }
  }

  let timer = null;
  let inFlight = false;
  async function poll() {
    if (inFlight) return;
    inFlight = true;
    clearTimeout(timer);
    try {
      const query = new URLSearchParams({ limit });
      if (filter) query.set("status", filter);
      if (cursor) query.set("cursor", cursor);
      const [page, counts] = await Promise.all([
        AX.api("GET", `/v1/jobs?${query}`),
        AX.api("GET", "/dashboard/counts"),
      ]);
      render(page.jobs);
      renderCounts(counts);
      AX.setLive("live", `live \u00b7 ${AX.formatTime(new Date().toISOString()).slice(11)}`);
    } catch (err) {
      AX.setLive("error", `not updating: ${err.message}`);
    } finally {
      inFlight = false;
      timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  function setupForm() {
    const form = document.getElementById("submit-form");
    if (!form) return;
    const select = document.getElementById("submit-workload");
    const input = document.getElementById("submit-input");
    const hint = document.getElementById("submit-hint");
    const button = document.getElementById("submit-button");
    const message = document.getElementById("submit-message");
    let example = input.value;

    const say = (kind, text) => {
      message.dataset.kind = kind;
      message.textContent = text;
    };
    // Show the chosen workload's example input, unless the user has edited the input.
    const chooseWorkload = () => {
      const option = select.selectedOptions[0];
      if (!option) return;
      const untouched = ["", "{}", example.trim()].includes(input.value.trim());
      example = option.dataset.example || "{}";
      if (untouched) input.value = example;
      hint.textContent = option.dataset.description || "";
    };
    select.addEventListener("change", chooseWorkload);
    chooseWorkload();

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let value;
      try {
        value = input.value.trim() ? JSON.parse(input.value) : {};
      } catch (err) {
        say("error", `The input is not JSON: ${err.message}`);
        return;
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        say("error", "The input must be a JSON object.");
        return;
      }
      button.disabled = true;
      try {
        const job = await AX.api("POST", "/v1/jobs", { workload: select.value, input: value });
        message.dataset.kind = "ok";
        message.textContent = "Submitted ";
        const link = document.createElement("a");
        link.href = `/jobs/${encodeURIComponent(job.id)}`;
        link.id = "submitted-job";
        link.dataset.jobId = job.id;
        link.textContent = job.id;
        message.append(link);
        poll();
      } catch (err) {
        say("error", err.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  AX.localizeTimes(document);
  setupForm();
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  poll();
})();
