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

async function refill() {
  if (queue.length >= PREFETCH) return;
  const { status, data } = await api("GET", `/api/review/next/?count=${PREFETCH}`);
  if (status !== 200) return say(`Could not load the queue (${status}).`);
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
  const list = candidates(item);
  const suggestion = item.prediction ? item.prediction.label : null;
  // When the model's best guess is "other", Enter takes the best project class instead:
  // the highlighted first candidate is always what Enter does.
  title.textContent = suggestion && classNames.has(suggestion)
    ? suggestion
    : list.length ? `${list[0].label}? (model: ${suggestion || "none"})` : "No suggestion";
  candidatesEl.replaceChildren(
    ...list.map((s, k) => {
      const li = document.createElement("li");
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
  const suggestion = current.prediction ? current.prediction.label : null;
  if (suggestion && classNames.has(suggestion)) return decide("accept");
  const list = candidates(current);
  if (list.length) return decide("choose", list[0].label);
  say("No candidate to accept: pick a class with / or press N.", true);
}

async function undo() {
  if (busy) return;
  busy = true;
  const { status, data } = await api("POST", "/api/review/undo/");
  busy = false;
  if (status !== 200) return say(data ? data.detail : `error ${status}`, true);
  if (current) queue.unshift(current);
  done.delete(data.image);
  addLog(`image ${data.image}: undone`);
  say("Undone: decide again.");
  show(data);
}

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
