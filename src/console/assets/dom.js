// Small DOM helpers: elements are built with h(), never from HTML strings,
// so no text from the API is ever parsed as markup.

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  add(el, kids);
  return el;
}

function add(el, kids) {
  for (const k of kids) {
    if (k === undefined || k === null || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...kids) {
  clear(el);
  add(el, kids);
  return el;
}

// A date and time in the viewer's zone, or in `tz` (an IANA name). One
// formatter per zone: building an Intl.DateTimeFormat costs far more than
// using one, and the overview formats two times per site.
const formatters = new Map();
export function fmtTime(ms, tz) {
  if (ms === null || ms === undefined) return '—';
  try {
    let f = formatters.get(tz || '');
    if (!f) {
      f = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short', timeZone: tz || undefined });
      formatters.set(tz || '', f);
    }
    return f.format(new Date(ms));
  } catch {
    return new Date(ms).toISOString();
  }
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} min`;
  return `${Math.round(m / 60)} h`;
}

// A short status line read by screen readers (aria-live) and shown inline.
export function notice(el, text, kind = 'info') {
  el.className = `notice ${kind}`;
  el.textContent = text;
}

// JSON for display: strings plain, the rest as compact JSON.
export function show(v) {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

// Records when something was painted, for the tests and the benchmark:
// after the next frame, so the time includes layout and paint.
export function painted(what, detail) {
  const log = (window.outpostPaints ||= []);
  requestAnimationFrame(() => {
    setTimeout(() => log.push({ what, detail, at: performance.timeOrigin + performance.now() }), 0);
  });
}
