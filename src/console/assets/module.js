// Module: live status, an exec form for the driver's public functions, and
// the live debug stream with pause and filter (operators of its location).

import { api, follow } from './api.js';
import { h, replace, show, notice } from './dom.js';

const MAX_LINES = 500;

export function render(ctx, root, id) {
  const title = h('h1', { text: 'Module' });
  const msg = h('p', { role: 'status', class: 'notice' });
  const facts = h('dl', { class: 'facts' });
  const statusEl = h('dl', { class: 'kv', id: 'status' });
  const execEl = h('section', {});
  const debugEl = h('section', {});
  replace(root, h('p', { class: 'crumbs' }, h('a', { href: '#/', text: 'Overview' })), title, msg, facts,
    h('h2', { text: 'Status' }), statusEl, execEl, debugEl);
  const subs = [];
  let values = {};
  let statusSub = null;
  let debug = null;
  let gone = false;
  let module = null;
  let location = null;
  let st = null;

  const paintStatus = () => {
    const keys = Object.keys(values).sort();
    replace(statusEl, keys.length ? keys.map((k) => [h('dt', { text: k }), h('dd', { 'data-key': k, text: show(values[k]) })]) : h('dd', { class: 'muted', text: 'No status yet.' }));
  };

  const paintFacts = () => {
    replace(facts,
      h('dt', { text: 'Driver' }), h('dd', { text: module.driver }),
      h('dt', { text: 'Device' }), h('dd', { text: module.uri || 'none (logic module)' }),
      h('dt', { text: 'Runs at' }), h('dd', { id: 'runs-at', 'data-controller': st.controller },
        location ? h('a', { href: `#/site/${location.id}`, text: location.name }) : 'the master', ` (controller: ${st.controller})`),
      h('dt', { text: 'State' }), h('dd', { id: 'state', 'data-state': st.state || 'unknown' }, stateText(st)));
  };

  const refreshState = async () => {
    const next = await api('GET', `/api/v1/modules/${id}/state`);
    if (gone) return;
    st = next;
    paintFacts();
  };

  // The status subscription follows the controller: a module that moved
  // between the master and its edge is answered by the other side.
  const subscribeStatus = () => {
    if (statusSub !== null) { statusSub.restart(); return; }
    statusSub = follow(ctx.live, { topic: 'status', module: id }, (s) => {
      if (s.type === 'subscribed') { values = {}; return; }
      if (s.type !== 'status') return;
      if (s.values) Object.assign(values, s.values); else values[s.key] = s.value;
      paintStatus();
      // A device connecting or dropping is a change of the module's state
      // (and the first values arrive once the module runs where asked).
      if (s.key === 'connected' || s.values) refreshState().catch(() => {});
    });
  };

  const load = async () => {
    [module, st] = await Promise.all([api('GET', `/api/v1/modules/${id}`), api('GET', `/api/v1/modules/${id}/state`)]);
    location = st.edge_id ? await api('GET', `/api/v1/edges/${st.edge_id}`) : null;
    if (gone) return;
    title.textContent = module.name;
    paintFacts();
    subscribeStatus();
    if (ctx.canOperate(location)) {
      const fns = await api('GET', `/api/v1/drivers/${encodeURIComponent(module.driver)}/functions`).catch(() => []);
      if (gone) return;
      execForm(execEl, id, fns);
      debug = debugStream(ctx, debugEl, id);
    }
    if (!location) return;
    let epoch = null;
    subs.push(ctx.live.subscribe({ topic: 'control' }, (m) => {
      if (m.edge_id !== location.id || gone) return;
      if (m.type === 'control') {
        // The first message per site is its current controller.
        if (m.current && (epoch === null || m.epoch === epoch)) { epoch = m.epoch; return; }
        epoch = m.epoch;
        notice(msg, `Control of ${location.name} moved to the ${m.to} (epoch ${m.epoch}).`);
        refreshState().catch((e) => notice(msg, e.message, 'error'));
        subscribeStatus();
        if (debug) debug.resubscribe();
      } else if (m.type === 'link') {
        refreshState().catch(() => {});
      }
    }));
  };
  load().catch((e) => notice(msg, `Cannot load this module: ${e.message}`, 'error'));
  return () => {
    gone = true;
    for (const s of subs) ctx.live.unsubscribe(s);
    if (statusSub !== null) statusSub.close();
    if (debug) debug.close();
  };
}

// running / stopped / failed (with why), and the device connection.
export function stateText(st) {
  if (!st.state) return `not known here (runs at the ${st.controller}${st.unknown ? `: ${st.unknown}` : ''})`;
  const where = st.answered_by ? ` at the ${st.answered_by}` : '';
  return `${st.state}${where}${st.failure ? `: ${st.failure}` : ''}${st.has_device ? (st.connected ? ', connected' : ', not connected') : ''}`;
}

// Each argument is read as JSON when it parses (true, 3, "x", [1]), else
// as a plain string, so `on` and `"on"` both work.
function parseArg(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function execForm(el, id, fns) {
  const method = h('input', { id: 'exec-method', name: 'method', list: 'exec-methods', required: true, autocomplete: 'off' });
  const argsBox = h('div', { class: 'args' });
  const result = h('pre', { id: 'exec-result', class: 'result', role: 'status', 'aria-live': 'polite' });
  const paintArgs = () => {
    const fn = fns.find((f) => f.name === method.value);
    const params = fn ? fn.params : ['args'];
    replace(argsBox, params.map((p, i) => h('div', { class: 'field' },
      h('label', { for: `exec-arg-${i}`, text: fn ? p : 'arguments (JSON array, optional)' }),
      h('input', { id: `exec-arg-${i}`, name: p, 'data-param': fn ? 'positional' : 'raw', autocomplete: 'off' }))));
  };
  method.addEventListener('input', paintArgs);
  paintArgs();
  const form = h('form', { class: 'card exec', onsubmit: async (e) => {
    e.preventDefault();
    const inputs = [...argsBox.querySelectorAll('input')];
    let args;
    if (inputs.length === 1 && inputs[0].dataset.param === 'raw') {
      args = inputs[0].value.trim() ? parseArg(inputs[0].value) : [];
    } else {
      args = inputs.map((i) => i.value).filter((v, i, all) => all.slice(i).some((x) => x !== '')).map(parseArg);
    }
    result.className = 'result';
    result.textContent = 'Running…';
    try {
      const r = await api('POST', `/api/v1/modules/${id}/exec`, { method: method.value, args });
      result.className = 'result ok';
      result.textContent = JSON.stringify(r.result, null, 2);
    } catch (err) {
      result.className = 'result error';
      result.textContent = `${err.status || ''} ${err.message}`;
    }
  } },
  h('h2', { text: 'Exec' }),
  h('div', { class: 'field' }, h('label', { for: 'exec-method', text: 'Function' }), method,
    h('datalist', { id: 'exec-methods' }, fns.map((f) => h('option', { value: f.name, text: `${f.name}(${f.params.join(', ')})` })))),
  fns.length ? h('p', { class: 'hint', text: `Functions: ${fns.map((f) => `${f.name}(${f.params.join(', ')})`).join(', ')}` }) : null,
  argsBox,
  h('button', { type: 'submit', id: 'exec-run', class: 'primary', text: 'Run' }),
  result);
  replace(el, form);
}

function debugStream(ctx, el, id) {
  const lines = h('ol', { class: 'debug', id: 'debug', 'aria-label': 'Debug lines' });
  const filter = h('input', { id: 'debug-filter', type: 'search', placeholder: 'filter', 'aria-label': 'Filter debug lines' });
  const pause = h('button', { type: 'button', id: 'debug-pause', 'aria-pressed': 'false', text: 'Pause' });
  const info = h('span', { class: 'muted', role: 'status' });
  let paused = false;
  let held = [];
  const visible = (li) => !filter.value || li.textContent.toLowerCase().includes(filter.value.toLowerCase());
  const append = (items) => {
    for (const li of items) { li.hidden = !visible(li); lines.append(li); }
    while (lines.childElementCount > MAX_LINES) lines.firstElementChild.remove();
  };
  filter.addEventListener('input', () => { for (const li of lines.children) li.hidden = !visible(li); });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) { append(held); held = []; info.textContent = ''; }
  });
  replace(el, h('h2', { text: 'Debug stream' }), h('div', { class: 'toolbar' }, filter, pause, info), lines);
  let lastError = null;
  const onMessage = (m) => {
    if (m.type === 'subscribed') {
      lines.dataset.subscribed = 'true';
      lastError = null;
    } else if (m.type === 'debug') {
      const li = h('li', { class: `lvl-${m.level}` }, h('span', { class: 'lvl', text: m.level }), ' ', m.message);
      if (paused) {
        held.push(li);
        if (held.length > MAX_LINES) held.shift();
        info.textContent = `${held.length} new line(s) held`;
      } else append([li]);
    } else if (m.type === 'dropped') {
      append([h('li', { class: 'lvl-warn', text: `${m.count} message(s) dropped: the connection was too slow` })]);
    } else if (m.type === 'error') {
      lines.dataset.subscribed = 'false';
      // Tried again until it works: say so once, not at every try.
      if (m.error !== lastError) append([h('li', { class: 'lvl-error', text: m.error })]);
      lastError = m.error;
    }
  };
  const sub = follow(ctx.live, { topic: 'debug', module: id }, onMessage);
  return {
    // After a change of controller the stream comes from the other side.
    resubscribe() {
      append([h('li', { class: 'lvl-info', text: 'control moved: following the new controller' })]);
      lines.dataset.subscribed = 'false';
      sub.restart();
    },
    close() { sub.close(); },
  };
}
