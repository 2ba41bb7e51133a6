// HTML from templates whose every interpolated value is escaped, unless it
// is already markup made by `html` itself: html`<td>${name}</td>`.

class Markup {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escape(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function part(value) {
  if (value instanceof Markup) return value.text;
  if (Array.isArray(value)) return value.map(part).join("");
  if (value === null || value === undefined || value === false) return "";
  return escape(value);
}

export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => { out += part(value) + strings[i + 1]; });
  return new Markup(out);
}

// Puts markup into an element at once (one parse, however many rows).
export function show(element, markup) {
  element.innerHTML = part(markup);
  return element;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// One line in the aria-live status region.
export function announce(message, { error = false } = {}) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", error);
}

export function fail(err) {
  announce(err && err.message ? err.message : String(err), { error: true });
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let value = n;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return i === 0 ? `${n} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function stateBadge(state) {
  return html`<span class="state-${state || "none"}">${state || "idle"}</span>`;
}

// A form's named fields as an object of trimmed strings (empty ones left out).
export function fields(form) {
  const out = {};
  for (const [name, value] of new FormData(form)) {
    if (typeof value === "string" && value.trim() !== "") out[name] = value.trim();
  }
  return out;
}

// Runs an async action for a form's submit, showing its error if it fails;
// the submit button is disabled meanwhile.
export function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action(form);
    } catch (err) {
      fail(err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

// Clicks on buttons with a data-action inside root go to handlers[action](button).
export function onAction(root, handlers) {
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !root.contains(button)) return;
    const handler = handlers[button.dataset.action];
    if (!handler) return;
    button.disabled = true;
    try {
      await handler(button);
    } catch (err) {
      fail(err);
    } finally {
      button.disabled = false;
    }
  });
}

// A destructive button asks once more: the first click relabels it.
export function confirmed(button) {
  if (button.dataset.armed === "yes") return true;
  button.dataset.armed = "yes";
  const label = button.textContent;
  button.textContent = `Confirm: ${label}`;
  setTimeout(() => { button.dataset.armed = ""; button.textContent = label; }, 5000);
  return false;
}
