// One job: follow its server-sent events (from the last one the page was
// rendered with), keep fields, progress, attempts and result current, and
// retry, re-run or cancel it. A workflow job's nodes (the table and the DAG's
// picture) are read again on each of its events and every second while it runs.
(() => {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const jobUrl = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const KINDS = [
    "submitted", "started", "progress", "retrying", "requeued", "retried", "cancel_requested",
    "succeeded", "failed", "cancelled",
  ];
  const log = document.getElementById("event-rows");
  const template = document.getElementById("event-template");
  const attemptRows = document.getElementById("attempt-rows");
  const attemptTemplate = document.getElementById("attempt-template");
  const actions = document.getElementById("job-actions");
  const message = document.getElementById("job-message");
  let lastSeq = Number(root.dataset.lastSeq || 0);
  let source = null;
  const nodeRows = document.getElementById("node-rows");
  const nodeTemplate = document.getElementById("node-template");
  const graph = document.getElementById("workflow-graph");
  const NODE_POLL_MS = 1000;
  let nodesTimer = null;
  let nodesBusy = false;

  const field = (name) => document.querySelector(`#fields [data-field="${name}"]`);
  const row = (name) => document.querySelector(`#fields [data-row="${name}"]`);

  function setStatus(job) {
    root.dataset.status = job.status;
    AX.setBadge(document.getElementById("status-badge"), job.status, job.cancel_requested);
    AX.setActions(actions, job);
  }

  function setLink(dd, id) {
    if (id) dd.replaceChildren(AX.jobLink(id));
    else dd.textContent = AX.DASH;
  }

  function applyFields(job) {
    field("workload").textContent = job.workload;
    field("attempts").textContent = String(job.attempts);
    field("max_attempts").textContent = String(job.max_attempts);
    field("retries").textContent = `${job.retried}/${job.retries}`;
    field("priority").textContent = String(job.priority);
    field("worker").textContent = job.worker || AX.DASH;
    for (const name of ["created_at", "run_at", "started_at", "finished_at"]) {
      AX.setTime(field(name).querySelector("time"), job[name]);
    }
    // The time a queued job waits for (a delay, or a retry's backoff).
    row("run_at").hidden = !(job.status === "queued" && job.run_at && new Date(job.run_at).getTime() > Date.now());
    field("duration_s").textContent = AX.duration(job.duration_s);
    field("timeout_s").textContent = job.timeout_s === null ? AX.DASH : `${job.timeout_s} s`;
    setLink(field("rerun_of"), job.rerun_of);
    field("idempotency_key").textContent = job.idempotency_key || AX.DASH;
    field("cancel_requested").textContent = job.cancel_requested ? "yes" : "no";
  }

  function applyOutcome(job) {
    const done = AX.TERMINAL.has(job.status);
    document.getElementById("result-pending").hidden = done;
    const error = document.getElementById("error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    document.getElementById("traceback-box").hidden = !job.traceback;
    const trace = document.getElementById("traceback");
    if (trace.textContent !== (job.traceback || "")) {
      trace.textContent = job.traceback || "";
      toEnd(trace);
    }
    const succeeded = job.status === "succeeded";
    const result = document.getElementById("result");
    result.textContent = succeeded ? JSON.stringify(job.result, null, 2) : "";
    document.getElementById("result-box").hidden = !succeeded;
    showSummary(succeeded, job.result);
  }

  // A readable summary of a workflow's, simulation's or evolution's result; the JSON stays below.
  function showSummary(succeeded, result) {
    const summary = document.getElementById("summary");
    const drawn = succeeded && AXSummary.render(summary, root.dataset, result);
    summary.hidden = !drawn;
    if (!drawn) summary.replaceChildren();
    document.getElementById("result-label").textContent = drawn ? "Raw JSON" : "JSON";
    document.getElementById("result-box").open = !drawn;
  }

  // A traceback says what went wrong at its end: show that part first.
  function toEnd(pre) {
    pre.scrollTop = pre.scrollHeight;
  }

  function applyJob(job) {
    setStatus(job);
    AX.setProgress(document.querySelector('.progress[data-field="progress"]'), job);
    document.getElementById("progress-message").textContent = job.message || "";
    applyFields(job);
    applyOutcome(job);
  }

  function fillAttempt(tr, attempt) {
    const outcome = attempt.outcome || "running";
    tr.dataset.number = String(attempt.number);
    tr.dataset.outcome = outcome;
    tr.querySelector('[data-field="number"]').textContent = String(attempt.number);
    tr.querySelector('[data-field="worker"]').textContent = attempt.worker || AX.DASH;
    AX.setTime(tr.querySelector('[data-field="started_at"]'), attempt.started_at);
    tr.querySelector('[data-field="duration"]').textContent = AX.duration(attempt.duration_s);
    AX.setBadge(tr.querySelector('[data-field="outcome"]'), outcome, false);
    tr.querySelector('[data-field="error"]').textContent = attempt.error || "";
    tr.querySelector('[data-field="traceback-box"]').hidden = !attempt.traceback;
    const trace = tr.querySelector('[data-field="traceback"]');
    if (trace.textContent !== (attempt.traceback || "")) trace.textContent = attempt.traceback || "";
  }

  // Rows are kept (and updated) by number, so an opened traceback stays open.
  function renderAttempts(attempts) {
    const rows = new Map();
    for (const tr of attemptRows.querySelectorAll("tr[data-number]")) rows.set(tr.dataset.number, tr);
    for (const attempt of attempts) {
      let tr = rows.get(String(attempt.number));
      if (tr) rows.delete(String(attempt.number));
      else tr = attemptTemplate.content.firstElementChild.cloneNode(true);
      fillAttempt(tr, attempt);
      attemptRows.append(tr);
    }
    for (const tr of rows.values()) tr.remove();
    document.getElementById("no-attempts").hidden = attempts.length > 0;
  }

  // A running node's duration is the time since it started (the server's _node_row too).
  function fillNode(tr, node) {
    tr.dataset.node = node.node;
    tr.dataset.status = node.status;
    tr.querySelector('[data-field="node"]').textContent = node.node;
    AX.setBadge(tr.querySelector('[data-field="status"]'), node.status, false);
    tr.querySelector('[data-field="attempts"]').textContent = node.attempts ? String(node.attempts) : AX.DASH;
    let seconds = node.duration_s;
    if (seconds === null && node.status === "running" && node.started_at) {
      seconds = Math.max((Date.now() - new Date(node.started_at).getTime()) / 1000, 0);
    }
    tr.querySelector('[data-field="duration"]').textContent = AX.duration(seconds);
    tr.querySelector('[data-field="job_attempt"]').textContent = node.job_attempt ? String(node.job_attempt) : AX.DASH;
    tr.querySelector('[data-field="error"]').textContent = node.error || "";
  }

  function renderNodes(nodes) {
    AX.syncRows(nodeRows, nodeTemplate, nodes, "node", (n) => n.node, fillNode);
    if (!graph) return;
    const boxes = new Map();
    for (const g of graph.querySelectorAll("g[data-node]")) boxes.set(g.getAttribute("data-node"), g);
    for (const node of nodes) {
      const g = boxes.get(node.node);
      if (!g) continue;
      g.setAttribute("data-status", node.status);
      g.querySelector("title").textContent = `${node.node}: ${node.status}`;
    }
  }

  async function refreshNodes() {
    if (!nodeRows || nodesBusy) return;
    nodesBusy = true;
    try {
      const answer = await AX.api("GET", `${jobUrl}/nodes`);
      renderNodes(answer.nodes);
      if (AX.TERMINAL.has(answer.status)) stopNodes();
    } catch (_) {
      // the table stays as it is; the next event or tick reads it again
    } finally {
      nodesBusy = false;
    }
  }

  function followNodes() {
    if (!nodeRows || nodesTimer !== null || AX.TERMINAL.has(root.dataset.status)) return;
    nodesTimer = setInterval(refreshNodes, NODE_POLL_MS);
  }

  function stopNodes() {
    if (nodesTimer !== null) clearInterval(nodesTimer);
    nodesTimer = null;
  }

  async function refresh() {
    refreshNodes();
    try {
      const [job, attempts] = await Promise.all([
        AX.api("GET", jobUrl),
        AX.api("GET", `${jobUrl}/attempts`),
      ]);
      applyJob(job);
      renderAttempts(attempts);
      if (AX.TERMINAL.has(job.status)) await finish();
    } catch (err) {
      AX.setLive("error", err.message);
    }
  }

  // The job has finished: take the events the stream has not delivered yet
  // (the record can be read before its last event arrives), then stop.
  async function finish() {
    try {
      const history = await AX.api("GET", `${jobUrl}/events?follow=false&after=${lastSeq}`);
      for (const ev of history.events) addEvent(ev);
    } catch (_) {
      // the log stays as it is; the record shown is already final
    }
    stop("finished");
  }

  function addEvent(ev) {
    if (typeof ev.seq !== "number" || ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    const detail = AX.eventDetail(ev);
    const last = log.lastElementChild;
    // A progress report that says what the row above says adds nothing.
    if (ev.kind === "progress" && last && last.dataset.kind === "progress" &&
        last.querySelector(".detail").textContent === detail) return;
    const tr = template.content.firstElementChild.cloneNode(true);
    tr.dataset.seq = String(ev.seq);
    tr.dataset.kind = ev.kind;
    tr.querySelector(".seq").textContent = String(ev.seq);
    AX.setTime(tr.querySelector("time"), ev.at);
    const kind = tr.querySelector(".kind");
    kind.className = `kind k-${ev.kind}`;
    kind.textContent = ev.kind;
    tr.querySelector(".detail").textContent = detail;
    log.append(tr);
    document.getElementById("no-events").hidden = true;
  }

  function onEvent(msg) {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    addEvent(ev);
    refreshNodes();  // a node finished (each one reports progress), or the job changed
    if (ev.kind === "progress") {
      AX.setProgress(document.querySelector('.progress[data-field="progress"]'), { progress: ev.progress, status: root.dataset.status });
      document.getElementById("progress-message").textContent = ev.message || "";
    } else {
      if (typeof ev.status === "string") {
        setStatus({ status: ev.status, cancel_requested: ev.kind === "cancel_requested" });
      }
      refresh();  // attempts, worker, times, result: the job's record has them all
    }
    if (AX.TERMINAL.has(ev.kind)) stop("finished");
  }

  function stop(text) {
    if (source) source.close();
    source = null;
    AX.setLive("idle", text);
  }

  function listen() {
    followNodes();
    if (source && source.readyState !== EventSource.CLOSED) return;
    if (source) source.close();
    source = null;
    if (AX.TERMINAL.has(root.dataset.status)) {
      AX.setLive("idle", "finished");
      return;
    }
    source = new EventSource(`${jobUrl}/events?after=${lastSeq}`);
    for (const kind of KINDS) source.addEventListener(kind, onEvent);
    source.onmessage = onEvent;
    source.onopen = () => AX.setLive("live", "live");
    source.onerror = () => {
      if (!source) return;
      // The browser reconnects by itself (sending Last-Event-ID); make sure the
      // job has not finished meanwhile, or a closed stream would be retried forever.
      AX.setLive("error", source.readyState === EventSource.CLOSED ? "live updates stopped" : "reconnecting\u2026");
      refresh();
    };
  }

  actions.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const job = await AX.act(button.dataset.action, jobId, message);
    button.disabled = false;
    if (job && job.id === jobId) {
      applyJob(job);
      listen();  // a retried job runs again: follow it
    }
  });

  // An attempt's traceback opens at its end too.
  attemptRows.addEventListener("toggle", (event) => {
    const pre = event.target.querySelector("pre");
    if (event.target.open && pre) toEnd(pre);
  }, true);

  AX.localizeTimes(document);
  toEnd(document.getElementById("traceback"));
  showSummary(root.dataset.status === "succeeded", parseResult());
  listen();

  function parseResult() {
    try {
      return JSON.parse(document.getElementById("result").textContent);
    } catch (_) {
      return undefined;
    }
  }
})();
