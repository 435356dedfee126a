// The workers page: poll /v1/workers (and the queue's state) every second and
// update the table in place, keyed by worker id.
(() => {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const table = document.getElementById("workers");
  const tbody = document.getElementById("worker-rows");
  const template = document.getElementById("worker-template");
  const here = table.dataset.here;

  // How long ago a heartbeat was (the server's _age).
  const age = (s) => (s < 60 ? `${s.toFixed(1)} s ago` : `${AX.duration(s)} ago`);

  function fillRow(tr, w) {
    const state = w.alive ? "alive" : "silent";
    tr.dataset.workerId = w.id;
    tr.dataset.alive = String(w.alive);
    tr.querySelector('[data-field="id"]').textContent = w.id;
    tr.querySelector('[data-field="here"]').hidden = w.id !== here;
    const badge = tr.querySelector('[data-field="state"]');
    badge.className = `badge s-${state}`;
    badge.textContent = state;
    tr.querySelector('[data-field="host"]').textContent = w.host;
    tr.querySelector('[data-field="pid"]').textContent = String(w.pid);
    tr.querySelector('[data-field="held"]').textContent = `${w.running}/${w.concurrency}`;
    tr.querySelector('[data-field="age"]').textContent = age(w.heartbeat_age_s);
    AX.setTime(tr.querySelector('[data-field="started_at"]'), w.started_at);
    tr.querySelector('[data-field="lease"]').textContent = `${w.lease_s} s`;
    const names = w.workloads.join(", ");
    const workloads = tr.querySelector('[data-field="workloads"]');
    workloads.textContent = names;
    workloads.title = names;
    tr.querySelector('[data-field="version"]').textContent = w.version;
  }

  function render(workers) {
    AX.syncRows(tbody, template, workers, "worker-id", (w) => w.id, fillRow);
    document.getElementById("no-workers").hidden = workers.length > 0;
  }

  let timer = null;
  let inFlight = false;
  async function poll() {
    if (inFlight) return;
    inFlight = true;
    clearTimeout(timer);
    try {
      const [list, state] = await Promise.all([
        AX.api("GET", "/v1/workers"),
        AX.api("GET", "/dashboard/state"),
      ]);
      render(list.workers);
      for (const key of ["alive", "queued", "running"]) {
        document.querySelector(`[data-stat="${key}"]`).textContent = String(list[key]);
      }
      AX.setQueueBanner(state, true);
      AX.setLive("live", `live \u00b7 ${AX.formatTime(new Date().toISOString()).slice(11)}`);
    } catch (err) {
      AX.setLive("error", `not updating: ${err.message}`);
    } finally {
      inFlight = false;
      timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  AX.localizeTimes(document);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  poll();
})();
