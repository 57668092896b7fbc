// The model card from /metadata: encoder, tasks and labels (with the thresholds of
// multi-label tasks), test metrics per task and per label, and the service's limits.

import { el } from "./dom.js";

const METRIC_NAMES = { accuracy: "accuracy", macro_f1: "macro-F1", micro_f1: "micro-F1" };

const fmt = (x) => (typeof x === "number" ? x.toFixed(3) : "–");

function basename(path) {
  // A model trained from a local folder names the folder: its last part says enough.
  return String(path).split(/[\\/]/).filter(Boolean).pop() || String(path);
}

function definitions(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(([, v]) => v != null && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

function taskCard(task, test) {
  const multi = task.type === "multi_label";
  const perLabel = (test && (test.per_label || test.per_class)) || {};
  const headers = ["label", ...(multi ? ["threshold"] : []), "test F1", "support"];
  const rows = (task.labels || []).map((label, i) => el("tr", { "data-label": label }, [
    el("th", { scope: "row" }, label),
    ...(multi ? [el("td", {}, fmt(task.thresholds ? task.thresholds[i] : null))] : []),
    el("td", {}, fmt(perLabel[label] && perLabel[label].f1)),
    el("td", {}, perLabel[label] ? String(perLabel[label].support) : "–"),
  ]));
  const summary = test ? Object.entries(METRIC_NAMES).filter(([k]) => k in test)
    .map(([k, name]) => `${name} ${fmt(test[k])}`).join(", ") + ` on ${test.n} test articles`
    : "no test metrics in this model";
  return el("section", { class: "card-task", "data-task": task.name }, [
    el("h3", {}, [task.name, el("span", { class: "muted" },
      multi ? " (multi-label)" : " (single-label)")]),
    el("p", { class: "card-metrics" }, `Test: ${summary}.`),
    el("table", { class: "labels" }, [
      el("caption", { class: "visually-hidden" }, `Labels of ${task.name}`),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ]),
  ]);
}

export function renderCard(target, line, metadata) {
  const model = metadata.model || {};
  const metrics = metadata.metrics || {};
  const tasks = metadata.tasks || [];
  const limits = metadata.limits || {};
  line.textContent = `Model: ${basename(model.encoder || "unknown encoder")} · ` +
    tasks.map((t) => `${t.name} (${(t.labels || []).length} labels)`).join(", ");
  target.replaceChildren(
    definitions([
      ["Encoder", model.encoder],
      ["Windows", model.max_length && `${model.max_length} tokens, overlapping by ` +
        `${model.stride ?? 0}; at most ${model.max_chunks} per article` +
        (model.artifact_max_chunks != null && model.artifact_max_chunks !== model.max_chunks
          ? ` as served (the model's own setting: ${model.artifact_max_chunks})` : "")],
      ["Pooling", model.pooling],
      ["Tested in", metrics.test_precision && `${metrics.test_precision} on ` +
        `${metrics.test_device || "?"}`],
      ["Artifact format", metadata.format_version],
    ]),
    ...tasks.map((task) => taskCard(task, (metrics.test || {})[task.name])),
    el("h3", {}, "Limits of this service"),
    definitions([
      ["Request body", limits.max_body_bytes && `${limits.max_body_bytes} bytes`],
      ["Article", limits.max_article_chars && `${limits.max_article_chars} characters`],
      ["Articles per request", limits.max_articles],
    ]),
  );
}
