// The job list: poll /v1/jobs (and the counts and queue state) every second and
// update the table in place, row by row, keyed by job id; filter by workload;
// page both ways; retry, re-run and cancel jobs; submit jobs from the form.
(() => {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const table = document.getElementById("jobs");
  const tbody = document.getElementById("job-rows");
  const template = document.getElementById("row-template");
  const empty = document.getElementById("empty");
  const actionMessage = document.getElementById("action-message");
  const view = {
    status: table.dataset.statusFilter,
    workload: table.dataset.workloadFilter,
    limit: table.dataset.limit,
    cursor: table.dataset.cursor,
  };

  // The address of this list with some of its query changed (the server's _ListView.href).
  function href(changes) {
    const values = { ...view, ...changes };
    if (values.limit === "50") values.limit = "";
    const query = new URLSearchParams();
    for (const key of ["status", "workload", "limit", "cursor"]) {
      if (values[key]) query.set(key, values[key]);
    }
    const text = query.toString();
    return text ? `/?${text}` : "/";
  }

  function fillRow(tr, job) {
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    const link = tr.querySelector('[data-field="id"]');
    link.textContent = job.id;
    link.href = AX.jobHref(job.id);
    tr.querySelector('[data-field="workload"]').textContent = job.workload;
    AX.setBadge(tr.querySelector('[data-field="status"]'), job.status, job.cancel_requested);
    AX.setProgress(tr.querySelector('[data-field="progress"]'), job);
    tr.querySelector('[data-field="attempts"]').textContent = String(job.attempts);
    tr.querySelector('[data-field="duration"]').textContent = AX.duration(job.duration_s);
    const error = tr.querySelector('[data-field="error"]');
    error.textContent = AX.firstLine(job.error);
    error.title = job.error || "";
    AX.setTime(tr.querySelector('[data-field="created_at"]'), job.created_at);
    AX.setTime(tr.querySelector('[data-field="finished_at"]'), job.finished_at);
    AX.setActions(tr, job);
  }

  function render(jobs) {
    AX.syncRows(tbody, template, jobs, "job-id", (job) => job.id, fillRow);
    empty.hidden = jobs.length > 0;
  }

  // The cursors move as jobs come and go: keep the links to the pages around this one current.
  function renderPager(page) {
    for (const [id, cursor] of [["newer", page.prev_cursor], ["older", page.next_cursor]]) {
      const link = document.getElementById(id);
      link.hidden = !cursor;
      link.href = cursor ? href({ cursor }) : "";
    }
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
      const query = new URLSearchParams({ limit: view.limit });
      if (view.status) query.set("status", view.status);
      if (view.workload) query.set("workload", view.workload);
      if (view.cursor) query.set("cursor", view.cursor);
      const stateQuery = view.workload ? `?${new URLSearchParams({ workload: view.workload })}` : "";
      const [page, state] = await Promise.all([
        AX.api("GET", `/v1/jobs?${query}`),
        AX.api("GET", `/dashboard/state${stateQuery}`),
      ]);
      render(page.jobs);
      renderPager(page);
      renderCounts(state.counts);
      AX.setQueueBanner(state, false);
      AX.setLive("live", `live \u00b7 ${AX.formatTime(new Date().toISOString()).slice(11)}`);
    } catch (err) {
      AX.setLive("error", `not updating: ${err.message}`);
    } finally {
      inFlight = false;
      timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  function setupActions() {
    tbody.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const tr = button.closest("tr[data-job-id]");
      button.disabled = true;
      try {
        await AX.act(button.dataset.action, tr.dataset.jobId, actionMessage);
      } finally {
        button.disabled = false;
        poll();
      }
    });
  }

  function setupWorkloadFilter() {
    const select = document.getElementById("workload-select");
    select.addEventListener("change", () => {
      window.location.assign(href({ workload: select.value, cursor: "" }));
    });
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

    const say = (kind, text) => AX.say(message, kind, text);
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
        AX.say(message, "ok", "Submitted ", { job: job.id });
        message.querySelector("a").id = "submitted-job";
        poll();
      } catch (err) {
        say("error", err.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  AX.localizeTimes(document);
  setupActions();
  setupWorkloadFilter();
  setupForm();
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  poll();
})();
