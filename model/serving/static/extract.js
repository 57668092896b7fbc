// The title and text of a saved web page, read in the browser.
// The service reads plain text, so a dropped .html page is turned into a title and a
// text here, and the web UI sends them as an ordinary /predict request. DOMParser builds an inert document: its
// scripts never run and nothing it names is fetched.

const DROP_ALWAYS = "script, style, noscript, template, iframe, object, embed, svg, canvas, " +
  "form, button, select, nav";
// Page furniture, dropped only when there is no <article> or <main> to read.
const DROP_AROUND = "header, footer, aside";
const BLOCKS = new Set(["ADDRESS", "ARTICLE", "ASIDE", "BLOCKQUOTE", "DD", "DIV", "DL", "DT",
  "FIGCAPTION", "FIGURE", "FOOTER", "H1", "H2", "H3", "H4", "H5", "H6", "HEADER", "HR", "LI",
  "MAIN", "OL", "P", "PRE", "SECTION", "TABLE", "TD", "TH", "TR", "UL"]);

export async function articleFromFile(file) {
  const raw = await file.text();
  if (/\.txt$/i.test(file.name) || file.type === "text/plain") {
    return { title: "", text: raw.trim() };
  }
  return articleFromHtml(raw);
}

export function articleFromHtml(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  doc.querySelectorAll(DROP_ALWAYS).forEach((node) => node.remove());
  let root = doc.querySelector("article") || doc.querySelector("main");
  if (!root) {
    root = doc.body;
    root.querySelectorAll(DROP_AROUND).forEach((node) => node.remove());
  }
  const meta = doc.querySelector('meta[property="og:title"]');
  const heading = root.querySelector("h1");
  const title = ((meta && meta.getAttribute("content")) || doc.title ||
    (heading && heading.textContent) || "").replace(/\s+/g, " ").trim();
  return { title, text: blockText(root) };
}

// innerText would keep paragraph breaks, but a parsed document is not rendered, and
// there innerText is just textContent, which runs paragraphs together. So: walk it.
function blockText(root) {
  const parts = [];
  const walk = (node) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        parts.push(child.data.replace(/\s+/g, " "));
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        if (child.tagName === "BR") {
          parts.push("\n");
          continue;
        }
        const block = BLOCKS.has(child.tagName);
        if (block) parts.push("\n\n");
        walk(child);
        if (block) parts.push("\n\n");
      }
    }
  };
  walk(root);
  return parts.join("").split("\n").map((line) => line.trim()).join("\n")
    .replace(/\n{3,}/g, "\n\n").trim();
}
