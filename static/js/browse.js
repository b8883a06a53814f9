import { csrfToken } from "./prediction.js";

const grid = document.getElementById("grid");
const tiles = () => [...grid.querySelectorAll(".tile")];
const matching = document.getElementById("select-matching");
const count = document.getElementById("selected-count");
const message = document.getElementById("bulk-message");
const query = document.getElementById("browser").dataset.query;
let anchor = null;

// Only the filters in use go into the URL, so a bookmarked view reads as what it shows.
document.getElementById("browse-filters").addEventListener("submit", (e) => {
  for (const field of e.target.elements) {
    if (field.name && !field.value) field.disabled = true;
  }
});

function selectedIds() {
  return tiles().filter((t) => t.classList.contains("selected")).map((t) => Number(t.dataset.id));
}

function redraw() {
  count.textContent = matching.checked ? "all matching the filter selected" : `${selectedIds().length} selected`;
}

grid.addEventListener("click", (e) => {
  const tile = e.target.closest(".tile");
  if (!tile || e.target.closest("a")) return;
  const all = tiles();
  if (e.shiftKey && anchor !== null) {
    const [a, b] = [all.indexOf(anchor), all.indexOf(tile)].sort((x, y) => x - y);
    all.slice(a, b + 1).forEach((t) => t.classList.add("selected"));
  } else {
    tile.classList.toggle("selected");
    anchor = tile;
  }
  matching.checked = false;
  redraw();
});

matching.addEventListener("change", () => {
  tiles().forEach((t) => t.classList.toggle("selected", matching.checked));
  redraw();
});

document.getElementById("clear-selection").addEventListener("click", () => {
  tiles().forEach((t) => t.classList.remove("selected"));
  matching.checked = false;
  redraw();
});

async function run(action) {
  const body = { action };
  if (matching.checked) body.filter = query;
  else body.ids = selectedIds();
  if (action === "label") body.label = document.getElementById("bulk-label").value;
  if (!body.filter && !(body.ids || []).length) {
    message.textContent = "Select some images first.";
    return;
  }
  const response = await fetch("/api/images/bulk/", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
  });
  if (action === "export" && response.ok) {
    const url = URL.createObjectURL(await response.blob());
    Object.assign(document.createElement("a"), { href: url, download: "selection.csv" }).click();
    message.textContent = "Exported.";
    return;
  }
  const result = await response.json();
  if (!response.ok) {
    message.textContent = result.detail || JSON.stringify(result);
    return;
  }
  message.textContent = result.message;
  if (action === "label") {
    const done = new Set(result.done);
    tiles().filter((t) => done.has(Number(t.dataset.id))).forEach((t) => {
      t.dataset.label = body.label;
      t.querySelector(".tile-label").textContent = body.label;
    });
  }
}

document.querySelectorAll("#bulkbar button[data-action]").forEach((b) =>
  b.addEventListener("click", () => run(b.dataset.action)));
