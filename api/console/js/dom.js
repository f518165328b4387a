// A small element builder, so pages read as the markup they make. Text always goes in as text,
// never as HTML: nothing an API returns can inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/// A form field: its label, then its control. The control is not nested in the label, so the
/// label alone names it (a select nested in its label would be named by its options too).
export function field(label, control) {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

/// Replaces what `el` holds.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function when(instant) {
  if (!instant) return "—";
  return new Date(instant).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function usd(amount) {
  return `$${Number(amount || 0).toFixed(amount >= 1 ? 2 : 4)}`;
}

export function count(n) {
  return Number(n || 0).toLocaleString();
}

/// A labelled table: `columns` as [heading, className?], `rows` as arrays of cells.
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("caption", { class: "cap" }, caption),
    h("thead", {}, h("tr", {}, columns.map(([name, cls]) => h("th", { scope: "col", class: cls }, name)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, i) => h("td", { class: columns[i][1] }, cell))))));
}
