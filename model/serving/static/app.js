// The page's entry point: the two views (#article, #profiles), the model card, and the
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

function show(prediction, title, text, options) {
  renderPrediction($("tasks"), prediction, metadata, options);
  const windows = prediction.chunks_total > prediction.chunks
    ? `${prediction.chunks} of its ${prediction.chunks_total} token windows, spread over it`
    : `all of it (${prediction.chunks} token window${prediction.chunks === 1 ? "" : "s"})`;
  $("reading").textContent = `The model read ${windows}: ${prediction.tokens} tokens.` +
    (prediction.truncated ? " The article is longer than the model reads whole." : "");
  $("shown-title").textContent = title.trim();
  $("shown-title").hidden = !title.trim();
  wireEvidence($("tasks"), prediction, $("article-text"), text, $("evidence-note"));
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
  // A file dropped anywhere else must not replace the page with itself.
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
