// The per-source profile view: a predictions JSONL (uploaded, or the file the service was
// started with, `serve --profile FILE`) profiled by the service's /profile, which runs
// the same code as `article-classifier profile`, drawn as a sortable source x label
// heatmap table: in each cell the share corrected for the classifier's errors, its 95%
// interval and the raw count. With a period chosen, trend lines of one source follow
// (trends.js), from a second /profile call with `over`.

import { callApi, limits, say } from "./api.js";
import { el } from "./dom.js";
import { periodsOf, trendGroups, trendPanels } from "./trends.js";

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

// How each method estimates a share, in the words of `profile`'s profile.md
// (model/profiles/output.py), for the line above the heatmap.
const METHODS = {
  pcc: "probabilistic classify and count (the mean calibrated score)",
  cc: "classify and count (the raw share, not corrected)",
  acc: "adjusted classify and count (the raw share adjusted by the model's held-out " +
    "error rates)",
  pacc: "probabilistic adjusted classify and count (the mean score adjusted by the " +
    "model's held-out scores)",
  sld: "EM prior adjustment of the calibrated scores (Saerens et al. 2002)",
};

const $ = (id) => document.getElementById(id);
let profile = null;                       // the last answer of /profile
let trend = null;                         // ... and of /profile with `over`, if chosen
let order = { key: "name", descending: false };
// What was last asked for: "server" or the uploaded File. A new method or period asks
// again for it, even when it failed (an upload refused under pcc, redone with cc).
let current = null;
let generation = 0;                       // a newer request makes an older answer stale

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

// A cell reads "0.38 (0.31–0.45) · 12 of 30 counted": the corrected share (also its
// colour), its interval, and how many articles the model's own decisions gave the label.
// The separators are text, so the cell reads as one phrase to a screen reader too.
function cell(row) {
  const td = el("td", { class: "cell", "data-label": row.label, "data-share": String(row.share),
    "data-count": String(row.count) }, [
    el("span", { class: "share" }, row.share.toFixed(2)), " ",
    el("span", { class: "interval" }, ["(", el("span", { class: "ci" },
      `${row.ci95_low.toFixed(2)}–${row.ci95_high.toFixed(2)}`), ")"]),
    el("span", { class: "sep" }, " · "),
    el("span", { class: "count" }, `${row.count} of ${row.articles} counted`),
  ]);
  td.style.backgroundColor = colour(row.share);
  td.style.color = row.share < 0.6 ? "#fff" : "#000";
  td.title = `${row.label}: estimated share ${row.share.toFixed(2)}, 95% interval ` +
    `${row.ci95_low.toFixed(2)} to ${row.ci95_high.toFixed(2)} (${row.method}); the ` +
    `model's decisions gave it to ${row.count} of ${row.articles} articles`;
  return td;
}

function methodLine(method) {
  const how = METHODS[method] || method;
  return (method === "cc" ? `Shares by ${how}` : `Shares corrected for the classifier's ` +
    `errors by ${how}`) + `, method ${method}. In brackets: the 95% interval, a bootstrap ` +
    "that carries the classifier's errors. Then the raw count: how many of the group's " +
    "articles the model's decisions gave the label.";
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
  $("heatmap-method").textContent = methodLine(profile.method);
  const skipped = profile.skipped === 1 ? "1 line" : `${profile.skipped} lines`;
  $("heatmap-summary").textContent = `${profile.articles} articles in ${profile.groups} ` +
    `groups${profile.skipped ? `; ${skipped} without a prediction left out` : ""}. ` +
    "Sort by any column: click its heading, or Tab to it and press Enter.";
  $("heatmap-wrap").hidden = false;
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// The trend panels of the source chosen in #trend-source (kept when it is still there).
function drawTrends() {
  if (!trend) {
    $("trends-wrap").hidden = true;
    return;
  }
  const groups = trendGroups(trend);
  const select = $("trend-source");
  const chosen = groups.some((g) => g.name === select.value) ? select.value : groups[0].name;
  select.replaceChildren(...groups.map((g) => el("option", { value: g.name },
    `${g.name} (${plural(g.articles, "dated article", "dated articles")})`)));
  select.value = chosen;
  const periods = periodsOf(trend);
  $("trends-summary").textContent = `${chosen}: the share of its articles given each label` +
    ` by ${trend.over} (the line, corrected by ${trend.method} as above) and its 95% ` +
    `interval (the band), over ${plural(periods.length, trend.over, `${trend.over}s`)} ` +
    `from ${periods[0]} to ${periods.at(-1)}. Hover a point for its numbers.`;
  $("trends-undated").textContent = trend.undated
    ? `${plural(trend.undated, "article", "articles")} without a usable date ` +
      `${trend.undated === 1 ? "was" : "were"} left out of the trends (give predict ` +
      "--keep date, or a date field in the input)."
    : "Every article has a date.";
  $("trends").replaceChildren(...trendPanels(trend, chosen));
  $("trends-wrap").hidden = false;
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

function query(over) {
  const params = new URLSearchParams({ by: $("profile-by").value.trim(),
    task: $("profile-task").value.trim(), method: $("profile-method").value });
  if (over) params.set("over", over);
  return params.toString();
}

// One /profile call for `source` ("server", or an uploaded File).
function ask(source, over) {
  if (source === "server") return callApi(`profile?${query(over)}`);
  return callApi(`profile?${query(over)}`, { method: "POST", body: source,
    type: "application/x-ndjson", what: "file" });
}

// Profile `source` (and its trends when a period is chosen) and draw it; `first` is an
// answer already in hand (the server's file, fetched at start).
async function load(source, doing, first = null) {
  const mine = ++generation;
  const over = $("profile-over").value;
  current = source;
  say($("profile-error"), "");
  say($("profile-status"), doing);
  try {
    const answer = first || await ask(source, null);
    if (mine !== generation) return false;
    profile = answer;
    order = { key: "name", descending: false };
    draw();
  } catch (err) {
    if (mine !== generation) return false;
    say($("profile-status"), "");
    say($("profile-error"), err.message);
    return false;
  }
  // The heatmap stands on its own: trends that cannot be drawn (no dated line) only
  // say why, below it.
  let trendError = "";
  try {
    trend = over ? await ask(source, over) : null;
  } catch (err) {
    trend = null;
    trendError = `No trends by ${over}: ${err.message} Do the lines carry a date ` +
      "(predict --keep date)?";
  }
  if (mine !== generation) return false;
  drawTrends();
  const unknown = profile.groups === 1 && profile.rows[0][profile.by] === "(unknown)";
  say($("profile-status"), `Profile of ${profile.source}: ${profile.groups} groups, ` +
    `${profile.labels.length} labels, shares by ${profile.method}` + (trend ? `, trends ` +
    `over ${plural(periodsOf(trend).length, over, `${over}s`)}` : "") + "." +
    (unknown ? ` No line has a '${profile.by}' field: was it kept with predict --keep?` : ""));
  say($("profile-error"), trendError);
  return true;
}

async function upload(event) {
  event.preventDefault();
  const file = $("profile-file").files[0];
  if (!file) {
    say($("profile-error"), "Choose a predictions file first (JSONL, one prediction a line).");
    $("profile-file").focus();
    return;
  }
  await load(file, `Profiling ${file.name}…`);
}

// A new method or period redraws what is shown, from the same file.
function reload() {
  if (current === null) return;
  const name = current === "server" ? "the server's predictions file" : current.name;
  load(current, `Profiling ${name} again…`);
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
  $("profile-server").addEventListener("click",
    () => load("server", "Profiling the server's predictions file…"));
  $("profile-method").addEventListener("change", reload);
  $("profile-over").addEventListener("change", reload);
  $("trend-source").addEventListener("change", drawTrends);
  // A 404 only means the service was started without --profile: say nothing then.
  try {
    const answer = await ask("server", null);
    $("profile-server").hidden = false;
    await load("server", "", answer);
  } catch (err) {
    if (err.status !== 404) say($("profile-error"), err.message);
  }
}
