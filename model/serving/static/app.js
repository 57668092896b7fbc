// The web UI's entry point: the two views (#article, #profiles), the model card, and the
// article form that posts to /predict exactly as an API user would.

import { ApiError, callApi, limits, say } from "./api.js";
import { renderCard } from "./card.js";
import { articleFromFile } from "./extract.js";
import { renderPrediction, wireEvidence } from "./prediction.js";
import { startProfiles } from "./profiles.js";

const $ = (id) => document.getElementById(id);
let metadata = null;
let busy = false;

// --- views ---------------------------------------------------------------------------------
function showView(moveFocus) {
  const name = location.hash === "#profiles" ? "profiles" : "article";
  $("view-article").hidden = name !== "article";
  $("view-profiles").hidden = name !== "profiles";
  for (const view of ["article", "profiles"]) {
    const link = $(`nav-${view}`);
    if (view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "profiles") startProfiles(metadata || {});
  // Keyboard and screen-reader users land on the heading of the view they chose.
  if (moveFocus) $(`${name === "article" ? "article" : "profiles"}-h`).focus();
}

// --- the model card ------------------------------------------------------------------------
async function loadMetadata() {
  try {
    metadata = await callApi("metadata");
    Object.assign(limits, metadata.limits || {});
    renderCard($("card-body"), $("model-line"), metadata);
  } catch (err) {
    say($("model-line"), "");
    $("card-body").textContent = `The model card could not be read. ${err.message}`;
  }
}

// --- the article form ----------------------------------------------------------------------
function readOptions() {
  const options = {};
  const threshold = $("threshold").value.trim();
  const topK = $("top-k").value.trim();
  if (threshold !== "") options.threshold = Number(threshold);
  if (topK !== "") options.top_k = Number(topK);
  return options;
}

async function classify(event) {
  event.preventDefault();
  if (busy) return;
  const title = $("title").value;
  const text = $("text").value;
  const options = readOptions();
  // Three passages per given label: enough to read why, few enough to mark clearly.
  const body = { text, evidence: 3, ...options };
  if (title.trim()) body.title = title;
  busy = true;
  $("submit").disabled = true;
  $("article-form").setAttribute("aria-busy", "true");
  say($("error"), "");
  say($("status"), "Classifying…");
  try {
    const prediction = await callApi("predict", { method: "POST", json: body, what: "article" });
    show(prediction, title, text, options);
    say($("status"), `Classified in ${prediction.took_ms} ms.`);
  } catch (err) {
    say($("status"), "");
    say($("error"), err instanceof ApiError ? err.message : `Something went wrong: ${err}`);
    $("results").hidden = true;
    $("text-view").hidden = true;
  } finally {
    busy = false;
    $("submit").disabled = false;
    $("article-form").removeAttribute("aria-busy");
  }
}

// What the model read. `tokens` counts the whole article's tokens and `chunks_total` the
// windows it needs; `chunks` are the windows read: fewer where the article is longer than
// the served --max-chunks (spread over it), or where its first window already decided
// every task (early exit). A window holds at most max_length tokens, two of them special.
export function readingOf(prediction, model = {}) {
  const { chunks, tokens } = prediction;
  const total = prediction.chunks_total ?? chunks;
  const windows = (n) => `${n} token window${n === 1 ? "" : "s"}`;
  if (!(total > chunks)) return `The model read all of it: ${windows(chunks)}, ${tokens} tokens.`;
  const cap = Number.isInteger(model.max_length) ? Math.min(tokens, chunks * (model.max_length - 2))
    : null;
  const read = cap == null ? ` of its ${tokens} tokens` : ` (at most ${cap} of its ${tokens} tokens)`;
  const why = Number.isInteger(model.max_chunks) && chunks >= Math.min(total, model.max_chunks)
    ? `this service reads at most ${windows(model.max_chunks)} an article, spread over it`
    : "its first window already decided every task, so it stopped there";
  return `The model read ${chunks} of the article's ${windows(total)}${read}: ${why}.`;
}

function show(prediction, title, text, options) {
  renderPrediction($("tasks"), prediction, metadata, options);
  $("reading").textContent = readingOf(prediction, (metadata && metadata.model) || {});
  // The title as sent: evidence offsets count in it, leading spaces included (the
  // heading's layout does not show them).
  $("shown-title").hidden = !title.trim();
  wireEvidence($("tasks"), prediction, { title: [$("shown-title"), title],
    text: [$("article-text"), text] }, $("evidence-note"));
  $("results").hidden = false;
  $("text-view").hidden = false;
}

// --- opening or dropping a file ------------------------------------------------------------
async function openFile(file) {
  if (!file) return;
  say($("error"), "");
  try {
    const article = await articleFromFile(file);
    $("title").value = article.title;
    $("text").value = article.text;
    say($("status"), `Read ${file.name}: ${article.title ? `“${article.title}”, ` : ""}` +
      `${article.text.length} characters of text. Press Classify to send it.`);
  } catch (err) {
    say($("error"), `Could not read ${file.name}: ${err.message}`);
  }
}

function wireDrop(form) {
  // A file dropped anywhere else must not replace the web UI with itself.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => e.preventDefault());
  }
  form.addEventListener("dragover", (e) => {
    e.preventDefault();
    form.classList.add("dropping");
  });
  form.addEventListener("dragleave", () => form.classList.remove("dropping"));
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    form.classList.remove("dropping");
    openFile(e.dataTransfer.files[0]);
  });
}

// --- start -----------------------------------------------------------------------------------
$("article-form").addEventListener("submit", classify);
$("file").addEventListener("change", (e) => openFile(e.target.files[0]));
wireDrop($("article-form"));
window.addEventListener("hashchange", () => showView(true));
loadMetadata().then(() => {
  showView(false);
  document.body.dataset.ready = "true"; // for tests and screenshots: the card is drawn
});
