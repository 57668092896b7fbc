// Elements are built with DOM calls and text nodes, never from HTML strings: article
// text, labels and file contents are shown as text and can never run as markup.
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== "") node.setAttribute(name, value);
  }
  node.append(...(Array.isArray(children) ? children : [children]));
  return node;
}
