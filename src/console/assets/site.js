// Site: one edge location (or the master's own systems): who controls it,
// its systems and modules with state and live status, the Restore and Hand
// over buttons for operators, and the control log as a timeline.

import { api, listAll, follow } from './api.js';
import { h, replace, fmtTime, show, notice } from './dom.js';

// When the edge last stopped on purpose, and whether that is why it is away.
function plannedStop(state) {
  if (state.last_planned_stop_ms == null) return 'none recorded';
  const away = state.last_stop === 'planned' ? ' (the edge is away: a restart)' : '';
  return `${fmtTime(state.last_planned_stop_ms)}${away}`;
}

export function render(ctx, root, id) {
  const isMaster = id === 'master';
  const title = h('h1', { text: isMaster ? 'Master' : 'Site' });
  const head = h('div', { class: 'site-head' });
  const msg = h('p', { role: 'status', class: 'notice' });
  const systemsEl = h('div', { class: 'systems' }, h('p', { class: 'muted', text: 'Loading…' }));
  const logEl = h('ol', { class: 'timeline', 'aria-label': 'Control log' });
  replace(root, h('p', { class: 'crumbs' }, h('a', { href: '#/', text: 'Overview' })), title, head, msg,
    h('h2', { text: 'Systems and modules' }), systemsEl,
    isMaster ? null : h('section', {}, h('h2', { text: 'Control log' }), logEl));
  const subs = [];
  let gone = false;
  let location = null;
  let state = null;
  const modRows = new Map();

  const paintHead = () => {
    if (isMaster) {
      replace(head, h('p', {}, 'Systems that belong to no edge location run here.'));
      return;
    }
    const can = ctx.canOperate(location) && state.controller === 'master' && state.connected;
    const canHand = ctx.canOperate(location) && state.controller === 'edge' && state.connected;
    replace(head,
      h('dl', { class: 'facts' },
        h('dt', { text: 'Controller' }), h('dd', {}, h('span', { class: `badge side-${state.controller}`, id: 'controller', 'data-controller': state.controller, text: state.controller }), ` · epoch `, h('span', { id: 'epoch', text: state.epoch })),
        h('dt', { text: 'Link' }), h('dd', { id: 'link', text: state.connected ? `connected since ${fmtTime(state.since_ms)}` : 'not connected' }),
        h('dt', { text: 'Failover' }), h('dd', { text: location.failover ? `on, after ${location.failover_timeout_ms} ms` : 'off' }),
        h('dt', { text: 'Restore window' }), h('dd', { text: location.window_start ? `${location.window_start} (${location.timezone}), ${location.window_length_ms} ms` : 'manual restore only' }),
        h('dt', { text: 'Maintenance' }), h('dd', { id: 'maintenance', text: state.maintenance_since_ms != null ? `on since ${fmtTime(state.maintenance_since_ms)} (no takeover)` : 'off' }),
        h('dt', { text: 'Last planned stop' }), h('dd', { id: 'planned-stop', text: plannedStop(state) })),
      ctx.canOperate(location) ? h('button', {
        id: 'restore', class: 'primary', type: 'button', disabled: !can,
        title: can ? 'Hand this site back to its edge now' : 'Possible when the master controls the site and the edge is connected',
        onclick: () => confirmChange(RESTORE),
      }, 'Restore to edge') : null,
      ctx.canOperate(location) ? h('button', {
        id: 'handover', type: 'button', disabled: !canHand,
        title: canHand ? 'Hand this site to the master now, for planned work on the edge' : 'Possible when the edge controls the site and is connected',
        onclick: () => confirmChange(HANDOVER),
      }, 'Hand over to master') : null);
  };

  const RESTORE = {
    path: 'restore', verb: 'Restore', doing: 'Restoring…', done: 'Restored: the edge',
    question: () => `Hand ${location.name} back to its edge now?`,
    how: 'The master stops its copies of the site’s modules first; then the edge connects to the devices.',
  };
  const HANDOVER = {
    path: 'handover', verb: 'Hand over', doing: 'Handing over…', done: 'Handed over: the master',
    question: () => `Hand ${location.name} to the master now?`,
    how: 'The edge stops its modules first; then the master connects to the devices. Restore the site when the work on the edge is done.',
  };

  const confirmChange = (kind) => {
    const dialog = h('dialog', { id: `confirm-${kind.path}`, 'aria-labelledby': 'confirm-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'confirm-title', text: kind.question() }),
        h('p', { text: kind.how }),
        h('div', { class: 'buttons' },
          h('button', { value: 'cancel', text: 'Cancel' }),
          h('button', { id: 'confirm', value: 'ok', class: 'primary', text: kind.verb }))));
    document.body.append(dialog);
    dialog.addEventListener('close', async () => {
      dialog.remove();
      if (dialog.returnValue !== 'ok') return;
      notice(msg, kind.doing);
      try {
        const r = await api('POST', `/api/v1/edges/${id}/${kind.path}`);
        notice(msg, `${kind.done} controls the site at epoch ${r.epoch}.`, 'ok');
      } catch (e) {
        notice(msg, `${kind.verb} refused: ${e.message}`, 'error');
      }
    });
    dialog.showModal();
  };

  const paintLog = (records) => {
    replace(logEl, records.map((r) => h('li', {},
      h('time', { text: fmtTime(r.at_ms) }), ' ',
      h('strong', { text: `epoch ${r.epoch}` }), `: ${r.from || '—'} → ${r.to} (${r.reason})`)));
  };

  const loadModuleState = async (m, row) => {
    try {
      const st = await api('GET', `/api/v1/modules/${m.id}/state`);
      row.state(st);
    } catch (e) {
      row.state({ error: e.message });
    }
  };

  // Live status; a device connecting or dropping changes the state too.
  const subscribeRow = (mid, row) => follow(ctx.live, { topic: 'status', module: mid }, (msg) => {
    row.status(msg);
    if (msg.type === 'status' && (msg.key === 'connected' || msg.values) && !gone) loadModuleState({ id: mid }, row);
  });

  const load = async () => {
    if (!isMaster) {
      const [loc, st, log] = await Promise.all([
        api('GET', `/api/v1/edges/${id}`),
        api('GET', `/api/v1/edges/${id}/status`),
        api('GET', `/api/v1/edges/${id}/control-log?limit=50`),
      ]);
      location = loc;
      state = st;
      title.textContent = loc.name;
      paintLog(log);
    }
    paintHead();
    const [systems, modules] = await Promise.all([listAll('systems'), listAll('modules')]);
    if (gone) return;
    const byId = new Map(modules.map((m) => [m.id, m]));
    const mine = systems.filter((s) => (isMaster ? !s.edge_id : s.edge_id === id));
    replace(systemsEl, mine.length ? mine.map((s) => h('section', { class: 'card system' },
      h('h3', { text: s.name }),
      s.description ? h('p', { class: 'sub', text: s.description }) : null,
      h('table', { class: 'grid modules' },
        h('thead', {}, h('tr', {}, ['Module', 'State', 'Device', 'Status'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, s.module_ids.map((mid) => {
          const m = byId.get(mid);
          if (!m) return h('tr', {}, h('td', { colspan: 4, text: `missing module ${mid}` }));
          const row = new ModuleRow(m);
          modRows.set(m.id, row);
          loadModuleState(m, row);
          row.sub = subscribeRow(m.id, row);
          return row.tr;
        }))))) : h('p', { class: 'muted', text: 'No systems.' }));
    if (!isMaster) {
      subs.push(ctx.live.subscribe({ topic: 'control' }, async (m) => {
        if (m.edge_id !== id || gone) return;
        if (m.type === 'control') {
          if (m.current && m.epoch === state.epoch) return;
          state = { ...state, controller: m.to, epoch: m.epoch };
          paintHead();
          api('GET', `/api/v1/edges/${id}/control-log?limit=50`).then(paintLog).catch(() => {});
          // The module now runs on the other side: its status comes from there.
          for (const [mid, row] of modRows) {
            loadModuleState({ id: mid }, row);
            row.sub.restart();
          }
        } else if (m.type === 'link') {
          state = { ...state, connected: m.connected, since_ms: m.at_ms };
          paintHead();
          // An edge that comes or goes can (or can no longer) say how its
          // modules are.
          for (const [mid, row] of modRows) loadModuleState({ id: mid }, row);
        }
      }));
    }
  };
  load().catch((e) => notice(msg, `Cannot load this site: ${e.message}`, 'error'));
  return () => {
    gone = true;
    for (const s of subs) ctx.live.unsubscribe(s);
    for (const row of modRows.values()) row.sub.close();
  };
}

class ModuleRow {
  constructor(m) {
    this.values = {};
    this.stateCell = h('td', { class: 'muted', text: '…' });
    this.conn = h('div', { class: 'sub' });
    this.deviceCell = h('td', {}, m.uri || 'none (logic)', this.conn);
    this.statusCell = h('td', { class: 'status' });
    this.tr = h('tr', { 'data-module': m.id },
      h('th', { scope: 'row' }, h('a', { href: `#/module/${m.id}`, text: m.name }), h('div', { class: 'sub', text: m.driver })),
      this.stateCell, this.deviceCell, this.statusCell);
  }

  state(st) {
    if (st.error) { replace(this.stateCell, h('span', { class: 'badge bad', text: st.error })); return; }
    this.tr.dataset.state = st.state || 'unknown';
    if (!st.state) {
      replace(this.stateCell, h('span', { class: `badge side-${st.controller}`, text: `at ${st.controller}` }),
        h('div', { class: 'sub', text: st.unknown ? `state not known: ${st.unknown}` : 'state not known here' }));
      delete this.deviceCell.dataset.connected;
      this.conn.textContent = '';
      return;
    }
    const cls = st.state === 'running' ? 'ok' : st.state === 'failed' ? 'bad' : 'warn';
    replace(this.stateCell, h('span', { class: `badge ${cls}`, text: st.state }),
      h('div', { class: 'sub', text: `at the ${st.answered_by || st.controller}` }),
      st.failure ? h('div', { class: 'sub error', text: st.failure }) : null);
    if (st.has_device) {
      this.deviceCell.dataset.connected = st.connected;
      this.deviceCell.classList.toggle('ok', st.connected);
      this.conn.textContent = st.connected ? 'connected' : 'not connected';
    }
  }

  status(msg) {
    if (msg.type === 'status') {
      if (msg.values) this.values = { ...msg.values };
      else this.values[msg.key] = msg.value;
      const keys = Object.keys(this.values).sort();
      replace(this.statusCell, keys.length ? h('dl', { class: 'kv' }, keys.map((k) => [h('dt', { text: k }), h('dd', { text: show(this.values[k]) })])) : h('span', { class: 'muted', text: '—' }));
    } else if (msg.type === 'error') {
      replace(this.statusCell, h('span', { class: 'muted', text: msg.error }));
    }
  }
}
