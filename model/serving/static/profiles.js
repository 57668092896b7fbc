// The per-source profile view: a predictions JSONL (uploaded, or the file the service was
// started with, `serve --profile FILE`) profiled by the service's /profile, which runs
// the same code as `article-classifier profile`, drawn as a sortable source x label
// heatmap table with counts and 95% intervals in each cell.

import { callApi, limits, say } from "./api.js";
import { el } from "./dom.js";

// viridis, as profile.png draws it, so the web UI and the command's picture agree.
const STOPS = [[0, [68, 1, 84]], [0.25, [59, 82, 139]], [0.5, [33, 145, 140]],
  [0.75, [94, 201, 98]], [1, [253, 231, 37]]];

function colour(share) {
  const i = Math.max(1, STOPS.findIndex(([at]) => at >= share));
  const [a, ca] = STOPS[i - 1];
  const [b, cb] = STOPS[i];
  const t = b === a ? 0 : (share - a) / (b - a);
  return `rgb(${ca.map((c, k) => Math.round(c + t * (cb[k] - c))).join(",")})`;
}

const $ = (id) => document.getElementById(id);
let profile = null;                       // the last answer of /profile
let order = { key: "name", descending: false };

function groupsOf(answer) {
  const groups = new Map();
  for (const row of answer.rows) {
    const name = row[answer.by];
    if (!groups.has(name)) groups.set(name, { name, articles: row.articles, cells: {} });
    groups.get(name).cells[row.label] = row;
  }
  return [...groups.values()];
}

function sortValue(group, key) {
  if (key === "name") return group.name.toLowerCase();
  if (key === "articles") return group.articles;
  return group.cells[key] ? group.cells[key].share : 0;
}

function sorted(groups) {
  const sign = order.descending ? -1 : 1;
  return groups.slice().sort((a, b) => {
    const x = sortValue(a, order.key);
    const y = sortValue(b, order.key);
    // Ties keep a stable, readable order: by name.
    return (x < y ? -sign : x > y ? sign : 0) || a.name.localeCompare(b.name);
  });
}

function header(key, text) {
  const active = order.key === key;
  const button = el("button", { type: "button", class: "sort", "data-key": key }, [text,
    el("span", { "aria-hidden": "true" }, active ? (order.descending ? " ▼" : " ▲") : "")]);
  button.addEventListener("click", () => sortBy(key));
  return el("th", { scope: "col", "data-key": key,
    "aria-sort": active ? (order.descending ? "descending" : "ascending") : "none" }, button);
}

function cell(row) {
  const td = el("td", { class: "cell", "data-label": row.label, "data-share": String(row.share),
    "data-count": String(row.count) }, [
    el("span", { class: "share" }, row.share.toFixed(2)),
    el("span", { class: "count" }, `${row.count}/${row.articles}`),
    el("span", { class: "ci" }, `${row.ci95_low.toFixed(2)}–${row.ci95_high.toFixed(2)}`),
  ]);
  td.style.backgroundColor = colour(row.share);
  td.style.color = row.share < 0.6 ? "#fff" : "#000";
  td.title = `${row.label}: ${row.count} of ${row.articles} articles ` +
    `(${(100 * row.share).toFixed(0)}%; 95% interval ${row.ci95_low.toFixed(2)} to ` +
    `${row.ci95_high.toFixed(2)})`;
  return td;
}

function draw() {
  const table = $("heatmap");
  table.tHead.replaceChildren(el("tr", {}, [header("name", profile.by),
    header("articles", "articles"), ...profile.labels.map((label) => header(label, label))]));
  table.tBodies[0].replaceChildren(...sorted(groupsOf(profile)).map((group) => el("tr",
    { "data-group": group.name }, [
      el("th", { scope: "row" }, group.name),
      el("td", { class: "articles" }, String(group.articles)),
      ...profile.labels.map((label) => cell(group.cells[label])),
    ])));
  $("heatmap-caption").textContent = `${profile.task} by ${profile.by}, from ` +
    `${profile.source}`;
  const skipped = profile.skipped === 1 ? "1 line" : `${profile.skipped} lines`;
  $("heatmap-summary").textContent = `${profile.articles} articles in ${profile.groups} ` +
    `groups${profile.skipped ? `; ${skipped} without a prediction left out` : ""}. Each ` +
    "cell: the share of the group's articles given the label, the count, and the 95% " +
    "Wilson interval. Sort by any column: click its heading, or Tab to it and press Enter.";
  $("heatmap-wrap").hidden = false;
}

function sortBy(key) {
  order = order.key === key ? { key, descending: !order.descending }
    : { key, descending: key !== "name" };   // numbers: the highest first
  draw();
  const name = key === "name" ? profile.by : key;
  say($("profile-status"), `Sorted by ${name}, ${order.descending ? "highest" : "lowest"} first.`);
  // The header was redrawn: keep the keyboard where it was.
  $("heatmap").querySelector(`th[data-key="${CSS.escape(key)}"] button`).focus();
}

function query() {
  const params = new URLSearchParams({ by: $("profile-by").value.trim(),
    task: $("profile-task").value.trim() });
  return params.toString();
}

async function load(request, doing) {
  say($("profile-error"), "");
  say($("profile-status"), doing);
  try {
    profile = await request();
    order = { key: "name", descending: false };
    draw();
    const unknown = profile.groups === 1 && profile.rows[0][profile.by] === "(unknown)";
    say($("profile-status"), `Profile of ${profile.source}: ${profile.groups} groups, ` +
      `${profile.labels.length} labels.` + (unknown ? ` No line has a '${profile.by}' ` +
      "field: was it kept with predict --keep?" : ""));
    return true;
  } catch (err) {
    say($("profile-status"), "");
    say($("profile-error"), err.message);
    return false;
  }
}

async function upload(event) {
  event.preventDefault();
  const file = $("profile-file").files[0];
  if (!file) {
    say($("profile-error"), "Choose a predictions file first (JSONL, one prediction a line).");
    $("profile-file").focus();
    return;
  }
  await load(() => callApi(`profile?${query()}`, { method: "POST", body: file,
    type: "application/x-ndjson", what: "file" }), `Profiling ${file.name}…`);
}

let started = false;

// Called when the view is first shown: draw the server's file if it has one.
export async function startProfiles(metadata) {
  const names = $("task-names");
  names.replaceChildren(...(metadata.tasks || []).map((t) => el("option", { value: t.name })));
  const multi = (metadata.tasks || []).find((t) => t.type === "multi_label");
  if (multi && !$("profile-task").dataset.touched) $("profile-task").value = multi.name;
  if (started) return;
  started = true;
  $("profile-form").addEventListener("submit", upload);
  $("profile-task").addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
  $("profile-file").addEventListener("change", () => {
    const file = $("profile-file").files[0];
    if (file && limits.max_body_bytes && file.size > limits.max_body_bytes) {
      say($("profile-error"), `${file.name} is larger than the service accepts ` +
        `(${file.size} bytes; at most ${limits.max_body_bytes}). Start the service with ` +
        "--profile FILE to profile a file of any size on the server.");
    } else {
      say($("profile-error"), "");
    }
  });
  const fromServer = () => load(() => callApi(`profile?${query()}`),
    "Profiling the server's predictions file…");
  $("profile-server").addEventListener("click", fromServer);
  // A 404 only means the service was started without --profile: say nothing then.
  try {
    await callApi(`profile?${query()}`).then((answer) => {
      $("profile-server").hidden = false;
      return load(async () => answer, "");
    });
  } catch (err) {
    if (err.status !== 404) say($("profile-error"), err.message);
  }
}
