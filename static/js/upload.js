import { csrfToken, renderTop, waitForPrediction } from "./prediction.js";

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");
const results = document.getElementById("results");
const progress = document.getElementById("batch-progress");
const maxBytes = Number(dropzone.dataset.maxBytes);
const PARALLEL = 3;

let total = 0;
let finished = 0;

function updateProgress() {
  progress.hidden = total === 0;
  progress.querySelector("span").style.width = (total ? (100 * finished) / total : 0) + "%";
  progress.querySelector("em").textContent = finished + " of " + total + " done";
}

function addRow(file) {
  const li = document.createElement("li");
  li.className = "result pending";
  li.innerHTML =
    '<img alt=""><div class="body"><div class="name"></div><div class="state muted small">waiting…</div><div class="pred"></div></div>';
  li.querySelector(".name").textContent = file.name;
  li.querySelector("img").src = URL.createObjectURL(file);
  results.prepend(li);
  return li;
}

function setState(li, text, cls) {
  li.querySelector(".state").textContent = text;
  if (cls) li.className = "result " + cls;
}

function uploadOne(file, li) {
  // XHR rather than fetch: it reports upload progress for big files.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    form.append("files", file);
    xhr.open("POST", "/api/images/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setState(li, "uploading " + Math.round((100 * e.loaded) / e.total) + "%");
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 201) resolve(body[0]);
      else if (body && body.errors) reject(new Error(Object.values(body.errors).join(" ")));
      else reject(new Error((body && body.detail) || "upload failed (" + xhr.status + ")"));
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.send(form);
  });
}

async function handle(file) {
  const li = addRow(file);
  try {
    if (file.size > maxBytes) throw new Error("too large: the limit is " + Math.round(maxBytes / 1048576) + " MB");
    const created = await uploadOne(file, li);
    setState(li, "classifying…");
    const image = await waitForPrediction(created.url);
    const link = document.createElement("a");
    link.href = image.page_url;
    link.textContent = "details";
    if (image.status === "failed") {
      setState(li, "could not classify: " + image.error, "failed");
    } else {
      const p = image.prediction;
      setState(li, p.label + " · " + Math.round(p.confidence * 100) + "% · " + p.model_version.name, "done");
      li.querySelector(".pred").appendChild(renderTop(p.top));
    }
    li.querySelector(".state").append(" · ", link);
  } catch (err) {
    setState(li, err.message, "failed");
  } finally {
    finished += 1;
    updateProgress();
  }
}

async function handleAll(files) {
  const queue = Array.from(files);
  total += queue.length;
  updateProgress();
  const workers = Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    while (queue.length) await handle(queue.shift());
  });
  await Promise.all(workers);
}

input.addEventListener("change", () => { handleAll(input.files); input.value = ""; });
dropzone.addEventListener("dragover", (e) => { e.preventDefault(); dropzone.classList.add("over"); });
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropzone.classList.remove("over");
  handleAll(e.dataTransfer.files);
});
dropzone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
dropzone.dataset.ready = "true";
