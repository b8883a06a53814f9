import { csrfToken } from "./prediction.js";

const message = document.getElementById("train-message");
const tbody = document.querySelector("#runs tbody");

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRFToken": csrfToken(), "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, data };
}

function eta(seconds) {
  if (!seconds) return "";
  return seconds < 90 ? `${Math.round(seconds)} s left` : `${Math.round(seconds / 60)} min left`;
}

const ENDED_AT_REQUEST = new Set(["skipped", "refused"]); // never queued: nothing to show in progress

function progressCell(run) {
  if (ENDED_AT_REQUEST.has(run.status)) return document.createElement("td");
  const p = run.progress || {};
  const bar = document.createElement("div");
  bar.className = "progress slim";
  const fill = document.createElement("span");
  const done = run.status === "succeeded" ? 100 : p.percent || 0;
  fill.style.width = `${done}%`;
  const text = document.createElement("em");
  const parts = [run.stage || run.status];
  if (p.epoch) parts.push(`epoch ${p.epoch}/${p.epochs}`);
  if (p.total && run.status === "running") parts.push(`${p.done}/${p.total}`);
  if (run.status === "running") parts.push(eta(p.eta_s));
  const m = p.metrics || {};
  if (m.val_macro_f1 !== undefined) parts.push(`val macro-F1 ${m.val_macro_f1}`);
  if (m.loss !== undefined) parts.push(`loss ${Number(m.loss).toFixed(3)}`);
  text.textContent = parts.filter(Boolean).join(" · ");
  bar.append(fill, text);
  const cell = document.createElement("td");
  cell.append(bar);
  if (run.error) cell.append(Object.assign(document.createElement("div"), { className: "error small", textContent: run.error }));
  return cell;
}

function row(run) {
  const tr = document.createElement("tr");
  tr.dataset.run = run.id;
  tr.dataset.status = run.status;
  const td = (text) => Object.assign(document.createElement("td"), { textContent: text ?? "" });
  const version = document.createElement("td");
  if (run.version) version.append(Object.assign(document.createElement("a"), { href: `/models/${run.version_id}/`, textContent: run.version }));
  const actions = document.createElement("td");
  if (run.status === "queued" || run.status === "running") {
    const cancel = Object.assign(document.createElement("button"), { type: "button", textContent: run.cancel_requested ? "Cancelling…" : "Cancel" });
    cancel.disabled = run.cancel_requested;
    cancel.addEventListener("click", async () => {
      const r = await post(`/api/training/runs/${run.id}/cancel/`);
      message.textContent = r.ok ? `Run ${run.id}: cancel requested.` : r.data.detail;
      refresh();
    });
    actions.append(cancel);
  }
  const outcome = td(run.outcome);
  outcome.className = "outcome" + (run.status === "refused" ? " error" : run.status === "skipped" ? " muted" : "");
  tr.append(td(run.id), td(run.mode), td(run.trigger), td(run.status), progressCell(run), outcome, version, actions);
  return tr;
}

let known = null; // the finished runs at the last refresh
async function refresh() {
  const response = await fetch("/api/training/runs/", { credentials: "same-origin" });
  if (!response.ok) return;
  const runs = await response.json();
  tbody.replaceChildren(...runs.map(row));
  // A run that just finished may have changed the versions table: reload it once.
  const finished = runs.filter((r) => r.status === "succeeded").map((r) => r.id).join(",");
  if (known !== null && finished !== known) location.reload();
  known = finished;
}

const cpuConfirm = document.getElementById("cpu-confirm");

async function requestRun(body) {
  const r = await post("/api/training/runs/", body);
  if (r.status === 409 && r.data.confirm_cpu_required) {
    // No CUDA worker trains: say what a CPU run costs and ask before starting it.
    document.getElementById("cpu-confirm-text").textContent = r.data.detail;
    cpuConfirm.hidden = false;
    message.textContent = "";
    return;
  }
  cpuConfirm.hidden = true;
  message.textContent = r.ok
    ? (r.status === 201 ? `Run ${r.data.id} queued.` : `A ${body.mode} run (${r.data.id}) was already ${r.data.status}: joined it.`)
    : r.status === 400 ? `Refused: ${r.data.detail}` : r.data.detail || `Error ${r.status}`;
  refresh();
}

document.getElementById("train-form").addEventListener("submit", (e) => {
  e.preventDefault();
  requestRun({ mode: e.submitter ? e.submitter.value : "head" });
});
document.getElementById("cpu-confirm-start").addEventListener("click", () => requestRun({ mode: "finetune", confirm_cpu: true }));
document.getElementById("cpu-confirm-cancel").addEventListener("click", () => {
  cpuConfirm.hidden = true;
  message.textContent = "Not started.";
});

// Who serves the queues, refreshed: a worker started after the page loaded shows up.
async function refreshWorkers() {
  const response = await fetch("/api/workers/", { credentials: "same-origin" });
  if (!response.ok) return;
  const data = await response.json();
  const td = (text) => Object.assign(document.createElement("td"), { textContent: text ?? "" });
  const rows = data.workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.hostname = w.hostname;
    tr.append(td(w.hostname), td(w.queues.join(", ")), td(w.device), td(w.training_device), td(w.backend),
      td(w.concurrency), td(new Date(w.last_seen).toLocaleTimeString()));
    return tr;
  });
  if (!rows.length) {
    const tr = Object.assign(document.createElement("tr"), { className: "none" });
    tr.append(Object.assign(td(`No worker heard from in the last ${data.fresh_s} s.`), { colSpan: 7 }));
    rows.push(tr);
  }
  document.querySelector("#workers tbody").replaceChildren(...rows);
  const training = data.workers.filter((w) => w.queues.includes(data.training_queue));
  const served = document.getElementById("training-served");
  served.dataset.cuda = data.training_on_cuda ? "yes" : "no";
  served.textContent = training.length
    ? `The training queue (${data.training_queue}) is served by ${training.map((w) => `${w.hostname} on ${w.device}`).join(", ")}.`
    : `No worker serves the training queue (${data.training_queue}) now: a run waits in the queue until one starts.`;
  document.getElementById("finetune-device").textContent = data.training_on_cuda ? "(GPU)" : "(no GPU: asks first)";
}

document.getElementById("rollback").addEventListener("click", async () => {
  const r = await post("/api/models/rollback/");
  message.textContent = r.ok ? `Rolled back: ${r.data.name} is in production.` : r.data.detail;
  if (r.ok) location.reload();
});

for (const button of document.querySelectorAll("button.promote")) {
  button.addEventListener("click", async () => {
    // A version that serves fewer classes than production says which before it replaces it.
    const loses = button.dataset.loses;
    if (loses && !confirm(`This version does not serve ${loses}, which production serves. Promote it anyway?`)) return;
    const r = await post(`/api/models/${button.dataset.id}/promote/`);
    const lost = r.ok && r.data.coverage_lost.length ? ` It no longer serves: ${r.data.coverage_lost.join(", ")}.` : "";
    message.textContent = r.ok ? `${r.data.name} is in production.${lost}` : r.data.detail;
    if (r.ok) location.reload();
  });
}

refresh();
setInterval(refresh, 1000);
setInterval(refreshWorkers, 5000);
