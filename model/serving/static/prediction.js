// One /predict answer drawn: how typical the article is of the training articles (a flag
// when it is unlike them), each single-label task as its label and probability, each
// multi-label task as a ranked bar chart with the thresholds that decided it, and the
// article text with the evidence passages of the selected label marked.
//
// Evidence is optional. When an answer carries it, it has the shape
//   prediction.evidence = {frames: {Economic: [{field, start, end, score, text}, ...]}, ...}
// with character offsets into the field that was sent, which `field` names ("title" or
// "text"): a title passage is marked in the title. Without evidence the text is plain.

import { el } from "./dom.js";

// The tasks of an answer, in the model card's order; inferred from the answer itself when
// /metadata could not be read.
function tasksOf(prediction, metadata) {
  if (metadata && Array.isArray(metadata.tasks)) return metadata.tasks;
  return Object.entries(prediction)
    .filter(([, v]) => v && typeof v === "object" && ("label" in v || "labels" in v))
    .map(([name, v]) => ({ name, type: "labels" in v ? "multi_label" : "single_label" }));
}

// The threshold each label was decided by: the request's own, or the model's.
function thresholdsOf(task, options) {
  if (options.top_k != null) return null;
  if (options.threshold != null) return Object.fromEntries((task.labels || []).map((l) => [l, options.threshold]));
  if (!task.thresholds || !task.labels) return null;
  return Object.fromEntries(task.labels.map((label, i) => [label, task.thresholds[i]]));
}

function bar(score, threshold) {
  const track = el("span", { class: "bar-track", "aria-hidden": "true" });
  const fill = el("span", { class: "bar-fill" });
  fill.style.width = `${(100 * score).toFixed(2)}%`;
  track.append(fill);
  if (threshold != null) {
    const mark = el("span", { class: "bar-threshold" });
    mark.style.left = `${(100 * threshold).toFixed(2)}%`;
    track.append(mark);
  }
  return track;
}

function singleLabel(task, answer) {
  const ranked = Object.entries(answer.probabilities || { [answer.label]: answer.score })
    .sort((a, b) => b[1] - a[1]);
  const rows = ranked.map(([label, p]) => el("li", {
    class: label === answer.label ? "given" : "", "data-label": label, "data-score": String(p),
  }, [el("span", { class: "bar-name" }, label), bar(p, null),
    el("span", { class: "bar-value" }, `${(100 * p).toFixed(1)}%`)]));
  return el("section", { class: "task", "data-task": task.name, "data-type": "single_label" }, [
    el("h3", {}, task.name),
    el("p", { class: "answer" }, [
      el("span", { class: "answer-label", "data-label": answer.label }, answer.label),
      " ",
      el("span", { class: "answer-score", "data-score": String(answer.score) },
        `${(100 * answer.score).toFixed(1)}%`),
      el("span", { class: "muted" }, " probability"),
    ]),
    el("details", {}, [el("summary", {}, "Every label's probability"),
      el("ol", { class: "bars" }, rows)]),
  ]);
}

function multiLabel(task, answer, options) {
  const given = new Set(answer.labels);
  const cuts = thresholdsOf(task, options);
  const ranked = Object.entries(answer.scores).sort((a, b) => b[1] - a[1]);
  const rows = ranked.map(([label, score]) => {
    const cut = cuts ? cuts[label] : null;
    const li = el("li", {
      class: given.has(label) ? "given" : "", "data-label": label, "data-score": String(score),
      "data-given": String(given.has(label)),
    }, [
      el("span", { class: "bar-name" }, [
        el("span", { "aria-hidden": "true" }, given.has(label) ? "✓ " : ""), label,
        el("span", { class: "visually-hidden" }, given.has(label) ? " (given)" : " (not given)"),
      ]),
      bar(score, cut),
      el("span", { class: "bar-value" }, [score.toFixed(3),
        cut != null ? el("span", { class: "muted" }, ` / ${Number(cut).toFixed(3)}`) : ""]),
    ]);
    if (cut != null) li.dataset.threshold = String(cut);
    return li;
  });
  const rule = options.top_k != null ? `the ${options.top_k} best labels are given`
    : "a label is given when its score reaches its threshold (the line on its bar; the " +
      "number after the slash)";
  return el("section", { class: "task", "data-task": task.name, "data-type": "multi_label" }, [
    el("h3", {}, task.name),
    el("p", { class: "answer" }, [el("span", { class: "muted" }, "Given: "),
      el("span", { class: "answer-labels" }, answer.labels.join(", ") || "none")]),
    el("p", { class: "muted" }, `Ranked by score; ${rule}.`),
    el("ol", { class: "bars" }, rows),
  ]);
}

// How typical the article is of the training articles (`domain` of the answer; a model
// saved before it was stored gives none, and nothing is drawn). Typicality is the share of
// held-out training articles farther from the training set than this one, so 3% means
// nearly all of them are closer. Out of domain, the labels are still the model's best
// guess among the ones it knows, which may not fit the article: the flag says so first.
function domainNote(domain) {
  if (!domain || typeof domain.typicality !== "number") return null;
  const value = Number(domain.typicality);
  const shown = `typicality ${value.toFixed(value > 0 && value < 1 ? 1 : 0)}%`;
  const inDomain = domain.in_domain !== false;
  const words = inDomain
    ? [el("strong", {}, "In domain: "), `this article is like the training articles (${shown}).`]
    : [el("strong", {}, "Out of domain: "), `this article is unlike the training articles ` +
      `(${shown}); its labels are the nearest of those the model knows and may not fit it.`];
  return el("p", {
    class: inDomain ? "domain" : "domain out-of-domain", role: inDomain ? null : "note",
    "data-in-domain": String(inDomain), "data-typicality": String(value),
    title: "Typicality: the share of held-out training articles that lie farther from " +
      "the training articles than this one.",
  }, words);
}

export function renderPrediction(container, prediction, metadata, options) {
  const note = domainNote(prediction.domain);
  container.replaceChildren(...(note ? [note] : []), ...tasksOf(prediction, metadata)
    .filter((task) => prediction[task.name])
    .map((task) => (task.type === "multi_label"
      ? multiLabel(task, prediction[task.name], options)
      : singleLabel(task, prediction[task.name]))));
}

// --- the article text and its evidence ---------------------------------------------------

// Python counts characters in code points, JavaScript strings in UTF-16 units: an emoji
// before a passage would shift every offset after it by one.
function utf16Index(text, codePoints) {
  let i = 0;
  for (let n = 0; n < codePoints && i < text.length; n++) {
    i += text.codePointAt(i) > 0xffff ? 2 : 1;
  }
  return i;
}

// Where a passage lies in `text`: at its offsets when they hold its text, else where its
// text occurs (offsets counted in the title + text the model read, say).
function locate(passage, text) {
  const start = utf16Index(text, passage.start);
  const end = utf16Index(text, passage.end);
  const fits = Number.isInteger(passage.start) && passage.end > passage.start &&
    end <= text.length;
  if (fits && (passage.text == null || text.slice(start, end) === passage.text)) {
    return [start, end];
  }
  const at = passage.text ? text.indexOf(passage.text) : -1;
  return at >= 0 ? [at, at + passage.text.length] : null;
}

// Evidence of one label: {label: [passages]}, or for a single-label task perhaps a bare
// list of passages for its predicted label.
function passagesFor(evidence, task, label, prediction) {
  const forTask = evidence && evidence[task];
  if (!forTask) return [];
  if (Array.isArray(forTask)) return prediction[task] && prediction[task].label === label ? forTask : [];
  return Array.isArray(forTask[label]) ? forTask[label] : [];
}

export function renderText(target, text, passages) {
  const spans = passages.map((p) => [locate(p, text), p]).filter(([at]) => at)
    .sort((a, b) => a[0][0] - b[0][0]);
  const nodes = [];
  let done = 0;
  for (const [[start, end], passage] of spans) {
    if (end <= done) continue; // inside a passage already marked
    const from = Math.max(start, done);
    nodes.push(text.slice(done, from));
    const label = passage.score != null ? `evidence, score ${Number(passage.score).toFixed(2)}` : "evidence";
    nodes.push(el("mark", { title: label }, text.slice(from, end)));
    done = end;
  }
  nodes.push(text.slice(done));
  target.replaceChildren(...nodes);
  return spans.length;
}

// Each field of the article, {title: [element, title], text: [element, text]}, drawn with
// the passages that lie in it. A passage without `field` (from a service that did not
// say) is looked for in the text.
export function renderFields(fields, passages) {
  let marked = 0;
  for (const [name, [target, value]] of Object.entries(fields)) {
    const mine = passages.filter((p) => (p.field === "title") === (name === "title"));
    marked += renderText(target, value, mine);
  }
  return marked;
}

// Radio buttons on each bar that has evidence, to choose whose passages are marked; the
// first given label with passages is chosen at first.
export function wireEvidence(container, prediction, fields, note) {
  const evidence = prediction.evidence;
  if (!evidence || typeof evidence !== "object") {
    note.textContent = "The service's answer has no evidence passages, so the text is " +
      "shown as it was sent.";
    renderFields(fields, []);
    return;
  }
  const show = (task, label, passages) => {
    const marked = renderFields(fields, passages);
    note.textContent = `Marked: ${marked} evidence passage${marked === 1 ? "" : "s"} for ` +
      `${label} (${task}). Choose another label with the buttons beside the bars.`;
  };
  const choices = [];
  for (const li of container.querySelectorAll(".task li[data-label]")) {
    const task = li.closest(".task").dataset.task;
    const passages = passagesFor(evidence, task, li.dataset.label, prediction);
    if (!passages.length) continue;
    const radio = el("input", { type: "radio", name: "evidence", class: "evidence-choice",
      "aria-label": `Mark the evidence for ${li.dataset.label} (${task})` });
    radio.addEventListener("change", () => show(task, li.dataset.label, passages));
    li.querySelector(".bar-name").prepend(radio);
    const folded = li.closest("details");
    if (folded) folded.open = true; // a choice hidden in a closed list is no choice
    choices.push([radio, li.dataset.given === "true" || li.classList.contains("given")]);
  }
  if (!choices.length) {
    note.textContent = "The answer has no evidence passages for these labels.";
    renderFields(fields, []);
    return;
  }
  const [radio] = choices.find(([, given]) => given) || choices[0];
  radio.checked = true;
  radio.dispatchEvent(new Event("change"));
}
