import { csrfToken, renderTop, waitForPrediction } from "./prediction.js";

const section = document.getElementById("image-detail");

if (section.dataset.status !== "predicted" && section.dataset.status !== "failed") {
  waitForPrediction(section.dataset.apiUrl)
    .then((image) => {
      const title = document.getElementById("verdict-title");
      const line = document.getElementById("status-line");
      if (image.status === "failed") {
        title.textContent = "Could not classify";
        line.textContent = image.error;
        return;
      }
      const p = image.prediction;
      title.textContent = p.label;
      document.getElementById("prediction").replaceChildren(renderTop(p.top));
      line.textContent =
        "Model " + p.model_version.name + " · " + p.backend + " · " + Math.round(p.model_ms) +
        " ms in the model · " + Math.round(p.latency_ms) + " ms from upload to answer";
    })
    .catch((err) => { document.getElementById("status-line").textContent = err.message; });
}

// History: every decision about this image, with provenance; and the uploader's feedback.

const historyList = document.getElementById("history");

export async function loadHistory() {
  const response = await fetch(historyList.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    historyList.innerHTML = "<li class='muted'>History is not available.</li>";
    return;
  }
  const items = await response.json();
  const undone = new Set(items.filter((a) => a.kind === "undo").map((a) => a.reverts));
  historyList.replaceChildren(
    ...(items.length ? items : [null]).map((a) => {
      const li = document.createElement("li");
      if (!a) {
        li.className = "muted";
        li.textContent = "No decisions yet.";
        return li;
      }
      const when = new Date(a.created).toLocaleString();
      const what = a.kind === "undo" ? `undid decision ${a.reverts}` : `${a.kind} ${a.label || "(not an animal)"}`;
      const from = a.suggested_label ? ` · suggestion ${a.suggested_label}` : "";
      const took = a.time_taken_ms != null ? ` · ${(a.time_taken_ms / 1000).toFixed(1)} s` : "";
      li.textContent = `${what} · ${a.user || a.source || "import"} (${a.role}) · ${when}${from}${a.model_version ? " by " + a.model_version : ""}${took}`;
      li.dataset.kind = a.kind;
      if (undone.has(a.id)) li.className = "undone";
      return li;
    }),
  );
}

const feedback = document.getElementById("feedback");
feedback.addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = document.getElementById("feedback-status");
  const response = await fetch(feedback.dataset.url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ label: document.getElementById("feedback-label").value }),
  });
  status.textContent = response.ok ? "Thanks: a reviewer will look at it." : "Could not send it.";
  loadHistory();
});

loadHistory();
