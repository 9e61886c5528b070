// The upload page: choose or drop a photo, preview it, POST it to /api/v1/predict and
// draw the top classes as bars. The server decides what is an image; its error
// messages are shown as they are.

import { readJson, ApiError, describe } from "./api.js";
import { h, fill, show, fmtMs, fmtPct } from "./dom.js";

const KEY_STORAGE = "imgclass.apiKey";

const app = document.getElementById("app");
const maxBytes = Number(app.dataset.maxBytes);
const topK = Number(app.dataset.topK) || 5;
const input = document.getElementById("file");
const dropzone = document.getElementById("dropzone");
const preview = document.getElementById("preview");
const prompt = document.getElementById("prompt");
const fileName = document.getElementById("file-name");
const keyInput = document.getElementById("api-key");
const statusBadge = document.getElementById("status");
const placeholder = document.getElementById("placeholder");
const errorBox = document.getElementById("error");
const bars = document.getElementById("predictions");
const meta = document.getElementById("meta");

let previewUrl = null;
let current = 0; // the latest upload wins when several overlap

keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
document.getElementById("key-form").addEventListener("submit", (event) => event.preventDefault());
keyInput.addEventListener("change", () => {
  const key = keyInput.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
});

input.addEventListener("change", () => {
  if (input.files.length) classify(input.files[0]);
});

for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    dropzone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"));
}
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) classify(file);
});

function setStatus(text, kind = "") {
  statusBadge.textContent = text;
  statusBadge.className = `badge ${kind}`.trim();
  show(statusBadge, Boolean(text));
}

function showError(message, code, requestId) {
  fill(
    errorBox,
    h("strong", {}, message.charAt(0).toUpperCase() + message.slice(1)),
    code || requestId
      ? h("div", { class: "code" }, [code, requestId ? `request ${requestId}` : null].filter(Boolean).join(" · "))
      : null,
  );
  errorBox.dataset.code = code || "";
  show(errorBox);
}

function showPreview(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.onerror = () => {
    // The browser cannot draw it (a TIFF, or not an image at all): keep the prompt.
    show(preview, false);
    show(prompt);
  };
  preview.onload = () => {
    show(prompt, false);
    show(preview);
  };
  preview.src = previewUrl;
  fill(fileName, `${file.name} · ${(file.size / 1024).toFixed(file.size < 10240 ? 1 : 0)} KB`);
  show(fileName);
}

/** "tabby, tabby cat" -> [primary name, other names]. */
function splitLabel(label) {
  const [first, ...rest] = label.split(", ");
  return [first.charAt(0).toUpperCase() + first.slice(1), rest.join(", ")];
}

function renderPredictions(body) {
  const result = body.results[0];
  fill(
    bars,
    result.predictions.map((p, index) => {
      const [name, synonyms] = splitLabel(p.label);
      const fillBar = h("div", { class: "fill" });
      const item = h(
        "li",
        { dataset: { classId: p.class_id, score: p.score }, title: p.label },
        h("span", { class: "label" }, `${index + 1}. ${name}`, synonyms ? h("span", { class: "synonyms" }, ` · ${synonyms}`) : null),
        h("span", { class: "score" }, fmtPct(p.score)),
        h(
          "div",
          { class: "track", role: "meter", "aria-valuemin": 0, "aria-valuemax": 1, "aria-valuenow": p.score, "aria-label": p.label },
          fillBar,
        ),
      );
      // Set after insertion so the width animates; CSSOM writes are allowed by the CSP.
      requestAnimationFrame(() => {
        fillBar.style.width = `${Math.max(0.5, p.score * 100).toFixed(1)}%`;
      });
      return item;
    }),
  );
  document.getElementById("meta-model").textContent = `${body.model.name} ${body.model.version}`;
  document.getElementById("meta-time").textContent = fmtMs(result.time_ms);
  document.querySelector("#meta-request code").textContent = body.request_id;
  show(meta);
}

async function classify(file) {
  const ticket = ++current;
  showPreview(file);
  show(placeholder, false);
  show(errorBox, false);
  show(meta, false);
  bars.replaceChildren();
  if (file.size > maxBytes) {
    setStatus("Too large", "bad");
    showError(`This file is ${(file.size / 1048576).toFixed(1)} MB; the server accepts at most ${(maxBytes / 1048576).toFixed(0)} MB.`, "payload_too_large");
    return;
  }
  setStatus("Classifying…", "busy");
  const form = new FormData();
  form.append("image", file, file.name);
  const headers = { Accept: "application/json" };
  const key = keyInput.value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    let response;
    try {
      response = await fetch(`/api/v1/predict?top_k=${topK}`, { method: "POST", body: form, headers });
    } catch {
      throw new ApiError(0, "network_error", "The server could not be reached. Is it running?", null);
    }
    const body = await readJson(response);
    if (ticket !== current) return;
    renderPredictions(body);
    setStatus("Done");
  } catch (err) {
    if (ticket !== current) return;
    setStatus(err instanceof ApiError && err.status ? `Error ${err.status}` : "Error", "bad");
    showError(describe(err), err.code, err.requestId);
  }
}
