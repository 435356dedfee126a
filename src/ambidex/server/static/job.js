// One job: follow its server-sent events (from the last one the page was
// rendered with), keep fields, progress and result current, and cancel it.
(() => {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const jobUrl = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const KINDS = ["submitted", "started", "progress", "requeued", "cancel_requested", "succeeded", "failed", "cancelled"];
  const log = document.getElementById("event-rows");
  const template = document.getElementById("event-template");
  const cancel = document.getElementById("cancel");
  const message = document.getElementById("job-message");
  let lastSeq = Number(root.dataset.lastSeq || 0);
  let source = null;

  const field = (name) => document.querySelector(`#fields [data-field="${name}"]`);

  function setStatus(status, cancelRequested) {
    root.dataset.status = status;
    AX.setBadge(document.getElementById("status-badge"), status, cancelRequested);
    cancel.hidden = AX.TERMINAL.has(status);
  }

  function applyJob(job) {
    setStatus(job.status, job.cancel_requested);
    AX.setProgress(document.querySelector('.progress[data-field="progress"]'), job);
    document.getElementById("progress-message").textContent = job.message || "";
    field("workload").textContent = job.workload;
    field("attempts").textContent = `${job.attempts}/${job.max_attempts}`;
    field("worker").textContent = job.worker || "\u2013";
    for (const name of ["created_at", "started_at", "finished_at"]) {
      AX.setTime(field(name).querySelector("time"), job[name]);
    }
    field("cancel_requested").textContent = job.cancel_requested ? "yes" : "no";
    const done = AX.TERMINAL.has(job.status);
    document.getElementById("result-pending").hidden = done;
    const result = document.getElementById("result");
    result.hidden = !(done && job.status === "succeeded");
    result.textContent = result.hidden ? "" : JSON.stringify(job.result, null, 2);
    const error = document.getElementById("error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
  }

  async function refresh() {
    try {
      const job = await AX.api("GET", jobUrl);
      applyJob(job);
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
    const tr = template.content.firstElementChild.cloneNode(true);
    tr.dataset.seq = String(ev.seq);
    tr.dataset.kind = ev.kind;
    tr.querySelector(".seq").textContent = String(ev.seq);
    AX.setTime(tr.querySelector("time"), ev.at);
    const kind = tr.querySelector(".kind");
    kind.className = `kind k-${ev.kind}`;
    kind.textContent = ev.kind;
    tr.querySelector(".detail").textContent = AX.eventDetail(ev);
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
    if (ev.kind === "progress") {
      AX.setProgress(document.querySelector('.progress[data-field="progress"]'), { progress: ev.progress, status: root.dataset.status });
      document.getElementById("progress-message").textContent = ev.message || "";
    } else {
      if (typeof ev.status === "string") setStatus(ev.status, ev.kind === "cancel_requested");
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

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    message.dataset.kind = "";
    message.textContent = "Cancelling\u2026";
    try {
      const job = await AX.api("DELETE", jobUrl);
      applyJob(job);
      message.dataset.kind = "ok";
      message.textContent = AX.TERMINAL.has(job.status) ? `Job ${job.status}.` : "Cancel requested; waiting for the worker.";
    } catch (err) {
      message.dataset.kind = "error";
      message.textContent = err.message;
    } finally {
      cancel.disabled = false;
    }
  });

  AX.localizeTimes(document);
  listen();
})();
