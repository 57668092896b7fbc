// The profile view's trend lines: for one group (a source), a small chart per label of its
// corrected share over the periods of `over`, with the 95% interval as a band. One chart
// per label, not one chart of all labels: with a dozen labels the lines of one chart
// cross too often to follow, while panels on the same axes still compare at a glance.
// Inline SVG built with DOM calls: no library, nothing fetched, works offline.

import { el } from "./dom.js";

// The SVG namespace, taken from an <svg> the HTML parser makes (no address to write down).
const NS = (() => {
  const holder = document.createElement("div");
  holder.innerHTML = "<svg></svg>";
  return holder.firstChild.namespaceURI;
})();
const W = 260, H = 150;                            // the viewBox; the panel scales it
const PAD = { left: 30, right: 10, top: 10, bottom: 26 };
const PLOT_W = W - PAD.left - PAD.right, PLOT_H = H - PAD.top - PAD.bottom;
const MAX_TICKS = 4;                               // period names that fit under a panel

function svg(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

const fixed = (v) => v.toFixed(1);

// Every period of the answer, in order (month, quarter and year names sort as text), so
// that all panels, and all groups, share one time axis.
export function periodsOf(answer) {
  return [...new Set(answer.rows.map((r) => r.period))].sort();
}

// Per group: its dated articles (a group's articles are the same under each label).
export function trendGroups(answer) {
  const first = answer.labels[0];
  const groups = new Map();
  for (const row of answer.rows) {
    if (row.label !== first) continue;
    const name = row[answer.by];
    groups.set(name, (groups.get(name) || 0) + row.articles);
  }
  return [...groups].map(([name, articles]) => ({ name, articles }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

// Runs of consecutive periods that have a row: a period without articles breaks the line
// rather than being drawn through as if it had been measured.
function runs(periods, got) {
  const out = [];
  let run = [];
  periods.forEach((period, i) => {
    if (got.has(period)) run.push([i, got.get(period)]);
    else if (run.length) { out.push(run); run = []; }
  });
  if (run.length) out.push(run);
  return out;
}

function panel(answer, group, label, periods) {
  const x = (i) => PAD.left + (periods.length === 1 ? PLOT_W / 2 : i * PLOT_W / (periods.length - 1));
  const y = (v) => PAD.top + (1 - v) * PLOT_H;
  const got = new Map(answer.rows.filter((r) => r[answer.by] === group && r.label === label)
    .map((r) => [r.period, r]));
  const axis = [0, 0.5, 1].flatMap((v) => [
    svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
    svg("text", { class: "tick", x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end" },
      [String(v)])]);
  // Evenly spaced period names, the first and the last always among them, anchored so
  // that none runs off the panel's edge.
  const last = periods.length - 1;
  const ticks = last === 0 ? [0] : [...new Set(Array.from({ length: MAX_TICKS },
    (_, k) => Math.round(k * last / (MAX_TICKS - 1))))];
  for (const i of ticks) {
    const anchor = last === 0 ? "middle" : i === 0 ? "start" : i === last ? "end" : "middle";
    axis.push(svg("text", { class: "tick", x: fixed(x(i)), y: H - PAD.bottom + 14,
      "text-anchor": anchor }, [periods[i]]));
  }
  let line = "", band = "";
  for (const run of runs(periods, got)) {
    line += run.map(([i, r], k) => `${k ? "L" : "M"}${fixed(x(i))},${fixed(y(r.share))}`).join("");
    if (run.length === 1) {       // one period alone: a short box shows its interval
      const [[i, r]] = run;
      band += `M${fixed(x(i) - 3)},${fixed(y(r.ci95_high))}H${fixed(x(i) + 3)}` +
        `V${fixed(y(r.ci95_low))}H${fixed(x(i) - 3)}Z`;
    } else {
      band += run.map(([i, r], k) => `${k ? "L" : "M"}${fixed(x(i))},${fixed(y(r.ci95_high))}`)
        .join("") + run.slice().reverse().map(([i, r]) =>
        `L${fixed(x(i))},${fixed(y(r.ci95_low))}`).join("") + "Z";
    }
  }
  const points = [...got.values()].map((r) => svg("circle", {
    class: "point", cx: fixed(x(periods.indexOf(r.period))), cy: fixed(y(r.share)), r: 2.5,
    "data-period": r.period, "data-share": r.share, "data-low": r.ci95_low,
    "data-high": r.ci95_high, "data-count": r.count, "data-articles": r.articles }, [
    svg("title", {}, [`${r.period}: ${r.share.toFixed(2)} (${r.ci95_low.toFixed(2)}–` +
      `${r.ci95_high.toFixed(2)}) · ${r.count} of ${r.articles} counted`])]));
  const shown = periods.filter((p) => got.has(p));
  const said = shown.length ? `from ${got.get(shown[0]).share.toFixed(2)} in ${shown[0]} to ` +
    `${got.get(shown.at(-1)).share.toFixed(2)} in ${shown.at(-1)}` : "no dated articles";
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${label} in ${group}, share by ${answer.over}: ${said}` }, [
    ...axis,
    svg("path", { class: "band", d: band, "data-label": label }),
    svg("path", { class: "line", d: line, "data-label": label }),
    ...points]);
  return el("figure", { class: "trend", "data-label": label }, [
    el("figcaption", {}, label), chart]);
}

// The panels of `group`, one per label of the answer, in the answer's label order.
export function trendPanels(answer, group) {
  const periods = periodsOf(answer);
  return answer.labels.map((label) => panel(answer, group, label, periods));
}
