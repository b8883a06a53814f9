// The review queue, keyboard first. Items are prefetched (held for us by the server) so the
// next image is already loaded when a decision is made.
import { csrfToken } from "./prediction.js";

const root = document.getElementById("review");
const PREFETCH = Number(root.dataset.prefetch) || 3;
const classes = JSON.parse(document.getElementById("classes").textContent);
const classNames = new Set(classes.map((c) => c.name));
const img = document.getElementById("review-image");
const empty = document.getElementById("review-empty");
const title = document.getElementById("review-suggestion");
const reason = document.getElementById("review-reason");
const unknown = document.getElementById("review-unknown");
const claim = document.getElementById("review-claim");
const left = document.getElementById("review-left");
const candidatesEl = document.getElementById("candidates");
const search = document.getElementById("search");
const message = document.getElementById("review-message");
const help = document.getElementById("help");
const log = document.getElementById("log");

let queue = [];
let current = null;
// Images decided or skipped on this page: a refill that was in flight during the decision
// may still list them as held.
const done = new Set();
let shownAt = 0;
let busy = false;

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  return { status: response.status, data };
}

function candidates(item) {
  const top = (item.prediction && item.prediction.top) || [];
  return top.filter((s) => classNames.has(s.label));
}

// The suggestion Enter accepts: the model's answer when it is one of the project's classes, else
// none ("other": the model does not recognise any of them, so no class is preselected).
function suggestionOf(item) {
  const label = item && item.prediction ? item.prediction.label : null;
  return label && classNames.has(label) ? label : null;
}

function showLeft(count) {
  left.textContent = count === 1 ? "1 image left in your queue (this one)" : `${count} images left in your queue`;
  root.dataset.left = count;
}

async function refill() {
  if (queue.length >= PREFETCH) return;
  const { status, data } = await api("GET", `/api/review/next/?count=${PREFETCH}`);
  if (status !== 200) return say(`Could not load the queue (${status}).`);
  showLeft(data.length ? data[0].left : 0);
  // By image, not token: an undo re-issues a claim with a new token for an image we show.
  const known = new Set(queue.map((i) => i.image).concat(current ? [current.image] : []));
  for (const item of data) {
    if (!known.has(item.image) && !done.has(item.image)) {
      queue.push(item);
      new Image().src = item.preview_url; // warm the browser cache
    }
  }
}

function say(text, isError = false) {
  message.textContent = text;
  message.className = "small" + (isError ? " error" : "");
}

function show(item) {
  current = item;
  search.value = "";
  if (!item) {
    img.hidden = true;
    reason.hidden = true;
    unknown.hidden = true;
    claim.hidden = true;
    empty.hidden = false;
    title.textContent = "All done";
    candidatesEl.replaceChildren();
    root.dataset.state = "empty";
    return;
  }
  img.hidden = false;
  empty.hidden = true;
  img.src = item.preview_url;
  const suspect = item.suspected_label;
  reason.hidden = !suspect;
  reason.textContent = suspect ? `Suspected label error: labelled ${suspect.label}, but a model trained on the other labels says ${suspect.model_label}.` : "";
  img.dataset.image = item.image;
  claim.hidden = !item.uploader_claim;
  claim.textContent = item.uploader_claim ? `uploader says: ${item.uploader_claim}` : "";
  const list = candidates(item);
  const suggestion = suggestionOf(item);
  // Enter accepts exactly what is shown here; with no project class suggested it asks instead.
  title.textContent = suggestion || "Which class is it?";
  unknown.hidden = Boolean(suggestion);
  root.dataset.suggestion = suggestion || "";
  candidatesEl.replaceChildren(
    ...list.map((s, k) => {
      const li = document.createElement("li");
      if (s.label === suggestion) li.className = "suggested";
      li.innerHTML = "<kbd></kbd> <span class='label'></span> <span class='pct muted'></span>";
      li.querySelector("kbd").textContent = String(k + 1);
      li.querySelector(".label").textContent = s.label;
      li.querySelector(".pct").textContent = Math.round(s.p * 100) + "%";
      li.addEventListener("click", () => decide("choose", s.label));
      return li;
    }),
  );
  shownAt = performance.now();
  root.dataset.state = "ready";
  root.dataset.image = item.image;
}

async function next() {
  if (!queue.length) await refill();
  show(queue.shift() || null);
  refill();
}

function addLog(text, annotation) {
  const li = document.createElement("li");
  li.textContent = text;
  if (annotation) li.dataset.annotation = annotation.id;
  log.prepend(li);
}

async function decide(action, label) {
  if (!current || busy) return;
  busy = true;
  const item = current;
  const body = { token: item.token, action, based_on: item.based_on, time_taken_ms: Math.round(performance.now() - shownAt) };
  if (item.prediction) body.prediction = item.prediction.id;
  if (label) body.label = label;
  const { status, data } = await api("POST", "/api/review/decisions/", body);
  busy = false;
  if (status === 201) {
    done.add(item.image);
    queue = queue.filter((i) => i.image !== item.image);
    addLog(`image ${item.image}: ${data.kind} ${data.label || "(not an animal)"}`, data);
    say("");
    await next();
  } else if (status === 409) {
    done.add(item.image);
    say(data.detail, true);
    await next();
  } else {
    say((data && (data.detail || JSON.stringify(data))) || `error ${status}`, true);
  }
}

function acceptTop() {
  if (!current) return;
  if (suggestionOf(current)) return decide("accept");
  // Nothing was recorded: a wrong default would teach the next model a wrong label.
  root.dataset.asked = current.image;
  say("Nothing recorded: the model does not recognise one of the project's classes. Choose one: a digit, / to search, or N for none of these.", true);
}

async function undo() {
  if (busy) return;
  busy = true;
  const { status, data } = await api("POST", "/api/review/undo/");
  busy = false;
  if (status !== 200) return say(data ? data.detail : `error ${status}`, true);
  takeBack(data);
  addLog(`image ${data.image}: undone`);
  say("Undone: decide again.");
}

// An image held for us again (undo, reopen) goes in front; what was shown waits behind it.
function takeBack(item) {
  if (current && current.image !== item.image) queue.unshift(current);
  queue = queue.filter((i) => i.image !== item.image);
  done.delete(item.image);
  showLeft(item.left);
  show(item);
}

async function reopen(annotationId) {
  if (busy) return;
  busy = true;
  const { status, data } = await api("POST", `/api/review/decisions/${annotationId}/reopen/`);
  busy = false;
  if (status !== 200) return say(data ? data.detail : `error ${status}`, true);
  takeBack(data);
  addLog(`image ${data.image}: reopened`);
  say("Reopened: decide again. Your earlier decision stays in the history.");
}

log.addEventListener("click", (e) => {
  const li = e.target.closest("li[data-annotation]");
  if (li) reopen(li.dataset.annotation);
});

async function skip() {
  if (!current || busy) return;
  busy = true;
  const { status, data } = await api("POST", "/api/review/skip/", { token: current.token });
  busy = false;
  if (status !== 204) say(data ? data.detail : `error ${status}`, true);
  else addLog(`image ${current.image}: skipped`);
  done.add(current.image);
  await next();
}

search.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const value = search.value.trim().toLowerCase();
  const match = classes.find((c) => c.name === value) || classes.find((c) => c.name.startsWith(value) || c.label.toLowerCase().startsWith(value));
  if (!match) return say(`No class matches "${search.value}".`, true);
  search.blur();
  decide("choose", match.name);
});

document.addEventListener("keydown", (e) => {
  if (e.target === search) {
    if (e.key === "Escape") search.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (key === "enter" || key === "a") acceptTop();
  else if (/^[1-9]$/.test(key)) {
    const pick = current && candidates(current)[Number(key) - 1];
    if (pick) decide("choose", pick.label);
  } else if (key === "/") search.focus();
  else if (key === "n") decide("reject");
  else if (key === "s") skip();
  else if (key === "u" || key === "backspace") undo();
  else if (key === "?") help.hidden = !help.hidden;
  else return;
  e.preventDefault();
});

for (const button of root.querySelectorAll("button[data-key]")) {
  const key = button.dataset.key;
  button.addEventListener("click", () => {
    if (key === "a") acceptTop();
    else if (key === "n") decide("reject");
    else if (key === "s") skip();
    else if (key === "u") undo();
    else help.hidden = !help.hidden;
  });
}

next();
