import { csrfToken } from "./prediction.js";

const message = document.getElementById("job-message");

async function start(body) {
  const response = await fetch("/api/jobs/", { method: "POST", body, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() } });
  const data = await response.json().catch(() => ({}));
  if (response.status === 201) location.href = data.page_url;
  else message.textContent = data.detail || JSON.stringify(data);
}

document.getElementById("job-unlabelled").addEventListener("submit", (e) => {
  e.preventDefault();
  const body = new FormData();
  body.append("source", "unlabelled");
  start(body);
});

document.getElementById("job-zip").addEventListener("submit", (e) => {
  e.preventDefault();
  const body = new FormData();
  body.append("source", "zip");
  body.append("file", document.getElementById("job-file").files[0]);
  message.textContent = "Uploading…";
  start(body);
});
