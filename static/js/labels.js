import { csrfToken } from "./prediction.js";

const form = document.getElementById("import-form");
const progress = document.getElementById("import-progress");
const report = document.getElementById("import-report");

function draw(job) {
  progress.hidden = false;
  progress.querySelector("span").style.width = job.percent + "%";
  progress.querySelector("em").textContent = `${job.status}: ${job.processed} of ${job.total || "?"} files`;
  const lines = [`${job.created_images} new images, ${job.existing_images} already here, ${job.rejected.length} rejected.`];
  for (const r of job.rejected) lines.push(`${r.path}: ${r.reason}`);
  if (job.error) lines.push(job.error);
  report.replaceChildren(...lines.map((t) => Object.assign(document.createElement("div"), { textContent: t })));
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = new FormData();
  body.append("file", document.getElementById("import-file").files[0]);
  const response = await fetch("/api/imports/", { method: "POST", body, headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" });
  const job = await response.json();
  if (response.status !== 202) {
    report.textContent = job.detail || JSON.stringify(job);
    return;
  }
  let current = job;
  while (current.status === "queued" || current.status === "running") {
    draw(current);
    await new Promise((r) => setTimeout(r, 500));
    current = await (await fetch(`/api/imports/${job.id}/`, { credentials: "same-origin" })).json();
  }
  draw(current);
});
