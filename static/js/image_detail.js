import { renderTop, waitForPrediction } from "./prediction.js";

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
