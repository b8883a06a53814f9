// Shared by the upload and image pages: poll an image until its prediction lands, draw it.

export function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

export function renderTop(top) {
  const ol = document.createElement("ol");
  ol.className = "top";
  ol.dataset.testid = "top-classes";
  for (const s of top) {
    const li = document.createElement("li");
    const pct = Math.round(s.p * 100);
    li.innerHTML = '<span class="label"></span><span class="bar"><span></span></span><span class="pct"></span>';
    li.querySelector(".label").textContent = s.label;
    li.querySelector(".bar span").style.width = pct + "%";
    li.querySelector(".pct").textContent = pct + "%";
    ol.appendChild(li);
  }
  return ol;
}

// Resolves with the image once it is predicted or failed; backs off from 250 ms to 2 s.
export async function waitForPrediction(apiUrl, { onUpdate = () => {}, timeoutMs = 300000 } = {}) {
  const started = Date.now();
  let delay = 250;
  while (Date.now() - started < timeoutMs) {
    const response = await fetch(apiUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.ok) {
      const image = await response.json();
      onUpdate(image);
      if (image.prediction && image.status === "predicted") return image;
      if (image.status === "failed") return image;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 2000);
  }
  throw new Error("No prediction after " + Math.round(timeoutMs / 1000) + " s; is a worker running?");
}
