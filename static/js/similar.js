// "More like this" on the image page: the nearest images by embedding, with their labels.

const section = document.getElementById("more-like-this");
const list = document.getElementById("similar-images");

async function load() {
  const response = await fetch(section.dataset.url, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "muted small", textContent: body.detail }));
    return;
  }
  if (!body.length) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "muted small", textContent: "No other images yet." }));
    return;
  }
  list.replaceChildren(...body.map((hit) => {
    const li = document.createElement("li");
    li.dataset.id = hit.id;
    const link = Object.assign(document.createElement("a"), { href: hit.page_url });
    link.append(Object.assign(document.createElement("img"), { src: hit.thumbnail_url, alt: `image ${hit.id}`, loading: "lazy" }));
    const caption = Object.assign(document.createElement("span"), { className: "small" });
    caption.textContent = `${hit.label || "unlabelled"} · ${(hit.similarity * 100).toFixed(0)}% similar`;
    li.append(link, caption);
    return li;
  }));
}

load();
