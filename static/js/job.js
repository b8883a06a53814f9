import { csrfToken } from "./prediction.js";

const id = document.getElementById("job").dataset.job;
const bar = document.querySelector("#job-progress span");
const label = document.querySelector("#job-progress em");
const cancel = document.getElementById("job-cancel");

function rows(table, header, data) {
  const tr = (cells, tag = "td") => {
    const row = document.createElement("tr");
    for (const c of cells) {
      const cell = document.createElement(tag);
      if (c instanceof Node) cell.append(c); else cell.textContent = c;
      row.append(cell);
    }
    return row;
  };
  table.replaceChildren(tr(header, "th"), ...data.map((cells) => tr(cells)));
}

function draw(job) {
  const p = job.progress;
  bar.style.width = `${p.percent}%`;
  label.textContent = `${job.status}: ${job.processed} of ${job.total || "?"} images` + (job.failed_images ? `, ${job.failed_images} failed` : "");
  const eta = p.eta_s == null ? "" : ` · about ${p.eta_s < 90 ? Math.round(p.eta_s) + " s" : Math.round(p.eta_s / 60) + " min"} left`;
  document.getElementById("job-rate").textContent = `${p.images_per_s} images/s over ${p.elapsed_s} s${eta}`;
  cancel.hidden = ["done", "cancelled", "failed"].includes(job.status);
  document.getElementById("job-error").textContent = job.error || "";
  if (job.summary && job.summary.per_class) {
    document.getElementById("job-summary").hidden = false;
    rows(document.getElementById("per-class"), ["class", "images"], Object.entries(job.summary.per_class));
    rows(document.getElementById("lowest"), ["image", "label", "confidence"], job.summary.lowest_confidence.map((r) =>
      [Object.assign(document.createElement("a"), { href: `/images/${r.image_id}/`, textContent: r.image_id }), r.label, r.confidence.toFixed(3)]));
  }
  if (job.rejected.length) {
    document.getElementById("job-rejected").hidden = false;
    rows(document.getElementById("rejected"), ["file", "why"], job.rejected.map((r) => [r.path, r.reason]));
  }
}

cancel.addEventListener("click", async () => {
  await fetch(`/api/jobs/${id}/cancel/`, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() } });
  poll();
});

async function poll() {
  const job = await (await fetch(`/api/jobs/${id}/`, { credentials: "same-origin" })).json();
  draw(job);
  return job;
}

(async () => {
  let job = await poll();
  while (!["done", "cancelled", "failed"].includes(job.status)) {
    await new Promise((r) => setTimeout(r, 700));
    job = await poll();
  }
})();
