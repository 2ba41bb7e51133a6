// Accessibility checks run in the page by the dashboard tests (selenium's
// execute_script: the last line's `return` gives the result back).
// Each check returns a list of problems, empty when the page passes.

// Rendered text: option and progress text is drawn by the control itself.
function visible(el) {
  if (el.closest("progress, option, noscript")) return false;
  return el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
}

function describe(el) {
  const id = el.id ? `#${el.id}` : "";
  const name = el.getAttribute("name") ? `[name=${el.getAttribute("name")}]` : "";
  return `${el.tagName.toLowerCase()}${id}${name} "${(el.textContent || "").trim().slice(0, 40)}"`;
}

// Every input, select and textarea has a label (or an aria-label).
function unlabelled() {
  const problems = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const named = (el.labels && el.labels.length > 0 && [...el.labels].some((l) => l.textContent.trim()))
      || (el.getAttribute("aria-label") || "").trim()
      || (el.getAttribute("aria-labelledby") || "").trim();
    if (!named) problems.push(`no label: ${describe(el)}`);
  }
  return problems;
}

function rgba(text) {
  const m = text.match(/rgba?\(([^)]+)\)/);
  if (!m) return [0, 0, 0, 0];
  const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
  return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
}

function over(top, bottom) {
  const a = top[3];
  return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1);
}

function luminance([r, g, b]) {
  const channel = (v) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
}

// The colour behind an element: its own background and its ancestors',
// composed, over white.
function background(el) {
  const layers = [];
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const colour = rgba(getComputedStyle(node).backgroundColor);
    if (colour[3] > 0) layers.push(colour);
    if (colour[3] >= 1) break;
  }
  let result = [255, 255, 255, 1];
  for (const layer of layers.reverse()) result = over(layer, result);
  return result;
}

// Text contrast at least 4.5:1 (3:1 for large text), from computed styles.
function lowContrast() {
  const problems = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const checked = new Set();
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || checked.has(el) || !visible(el)) continue;
    checked.add(el);
    const style = getComputedStyle(el);
    const bg = background(el);
    const fg = over(rgba(style.color), bg);
    const [l1, l2] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)}: ${describe(el)}`);
  }
  return problems;
}

// What Tab should reach: visible links, buttons, fields and tabindex >= 0.
function focusables() {
  const selector = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), "
    + "select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";
  return [...document.querySelectorAll(selector)].filter((el) => el.checkVisibility());
}

const pxedA11y = {
  unlabelled,
  lowContrast,
  // Marks each focusable with a number; their count.
  markFocusables() {
    const found = focusables();
    found.forEach((el, i) => { el.dataset.a11y = String(i); });
    document.body.tabIndex = -1;
    document.body.focus();
    document.body.removeAttribute("tabindex");
    return found.length;
  },
  // The focused element's mark, and whether its outline is visible.
  focused() {
    const el = document.activeElement;
    const style = getComputedStyle(el);
    const outlined = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
    return { mark: el.dataset.a11y ?? null, what: describe(el), outlined };
  },
};
