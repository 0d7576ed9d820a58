// Overview: every edge location with its link, controller and epoch,
// failover settings, next restore window, takeover deadline, unsynced
// events and replica lag. Loaded once, then kept current by the
// WebSocket's control, link and sync notices.

import { api } from './api.js';
import { h, replace, fmtTime, fmtDuration, painted } from './dom.js';

export function render(ctx, root) {
  const status = h('p', { role: 'status', class: 'notice', text: 'Loading sites…' });
  const body = h('tbody');
  const count = h('span', { class: 'count' });
  replace(root,
    h('h1', {}, 'Sites ', count),
    status,
    h('table', { class: 'grid sites', 'aria-label': 'Edge locations' },
      h('thead', {}, h('tr', {},
        ['Site', 'Link', 'Controller', 'Failover', 'Next restore window', 'Unsynced events', 'Replica lag']
          .map((t) => h('th', { scope: 'col', text: t })))),
      body));
  const rows = new Map();
  let sub = null;
  let syncSub = null;
  let gone = false;
  // The change feed's last sequence number: a replica's lag is measured
  // against it.
  let lastSeq = null;

  const load = async () => {
    const sites = await (ctx.prefetched('sites') || api('GET', '/api/v1/sites'));
    if (gone) return;
    sites.sort((a, b) => a.name.localeCompare(b.name));
    const frag = document.createDocumentFragment();
    frag.append(masterRow());
    for (const s of sites) {
      const row = new Row(s);
      rows.set(s.id, row);
      frag.append(row.tr);
    }
    body.replaceChildren(frag);
    count.textContent = `(${sites.length})`;
    status.textContent = '';
    status.className = 'notice';
    painted('overview', sites.length);
    sub = ctx.live.subscribe({ topic: 'control' }, (m) => {
      const row = rows.get(m.edge_id);
      if (m.type === 'subscribed') {
        // After a reconnect, what changed meanwhile is only in a fresh read.
        if (subscribed) refresh().catch(() => {});
        subscribed = true;
        return;
      }
      if (!row) return;
      // The current controllers come first: only news changes a row.
      if (m.type === 'control' && m.current && m.epoch === row.s.epoch) return;
      if (m.type === 'control') { row.control(m); painted('control', m.epoch); }
      if (m.type === 'link') row.link(m);
    });
    syncSub = ctx.live.subscribe({ topic: 'sync' }, (m) => {
      if (m.type === 'dropped') {
        // Notices were lost (a slow page, or the burst of a thousand
        // sites' current facts): one fresh read makes up for them.
        if (refreshTimer === null) {
          refreshTimer = setTimeout(() => { refreshTimer = null; if (!gone) refresh().catch(() => {}); }, 500);
        }
      } else if (m.type === 'feed') {
        if (m.last_seq === lastSeq) return;
        lastSeq = m.last_seq;
        for (const row of rows.values()) row.paintSync(lastSeq);
      } else if (m.type === 'sync') {
        rows.get(m.edge_id)?.sync(m, lastSeq);
      }
    });
  };
  let subscribed = false;
  let refreshTimer = null;
  const refresh = async () => {
    const sites = await api('GET', '/api/v1/sites');
    for (const s of sites) rows.get(s.id)?.update(s);
  };
  load().catch((e) => { status.className = 'notice error'; status.textContent = `Cannot load the sites: ${e.message}`; });
  return () => {
    gone = true;
    if (sub !== null) ctx.live.unsubscribe(sub);
    if (syncSub !== null) ctx.live.unsubscribe(syncSub);
  };
}

function masterRow() {
  return h('tr', { 'data-site': 'master' },
    h('th', { scope: 'row' }, h('a', { href: '#/site/master', text: 'Master' }), h('div', { class: 'sub', text: 'systems with no edge location' })),
    h('td', { text: '—' }), h('td', {}, badge('master')), h('td', { text: '—' }), h('td', { text: '—' }), h('td', { text: '—' }), h('td', { text: '—' }));
}

function badge(side, epoch) {
  return h('span', { class: `badge side-${side}`, 'data-controller': side },
    side, epoch ? h('span', { class: 'epoch', text: ` · epoch ${epoch}` }) : null);
}

class Row {
  constructor(s) {
    this.cells = {
      link: h('td'), controller: h('td'), failover: h('td'), window: h('td'),
      unsynced: h('td', { class: 'num', 'data-cell': 'unsynced', 'data-label': 'Unsynced events' }),
      lag: h('td', { class: 'num', 'data-cell': 'lag', 'data-label': 'Replica lag' }),
    };
    this.tr = h('tr', { 'data-site': s.id },
      h('th', { scope: 'row' }, h('a', { href: `#/site/${s.id}`, text: s.name }),
        s.description ? h('div', { class: 'sub', text: s.description }) : null),
      this.cells.link, this.cells.controller, this.cells.failover, this.cells.window, this.cells.unsynced, this.cells.lag);
    this.update(s);
  }

  update(s) {
    this.s = s;
    this.paintLink();
    this.paintSync(null);
    replace(this.cells.controller, badge(s.controller, s.epoch),
      s.controller_since_ms ? h('div', { class: 'sub', text: `since ${fmtTime(s.controller_since_ms)}` }) : null);
    replace(this.cells.failover, s.failover
      ? h('span', {}, 'on', h('div', { class: 'sub', text: `after ${fmtDuration(s.failover_timeout_ms)}` }))
      : h('span', { class: 'muted', text: 'off' }));
    replace(this.cells.window, s.next_window_ms
      ? h('span', {}, fmtTime(s.next_window_ms, s.timezone), ` (${s.timezone})`,
        h('div', { class: 'sub', text: `${fmtTime(s.next_window_ms)} your time` }))
      : h('span', { class: 'muted', text: s.window_start ? '—' : 'manual restore only' }));
  }

  // Unsynced events as the edge last reported them, and how far its
  // replica is behind the master's change feed ("—": not known yet).
  paintSync(lastSeq) {
    const s = this.s;
    const unsynced = s.events_unsynced ?? null;
    let lag = s.replica_lag ?? null;
    if (lastSeq !== null && lastSeq !== undefined && s.replica_seq !== null && s.replica_seq !== undefined) {
      lag = Math.max(0, lastSeq - s.replica_seq);
    }
    const text = (n) => (n === null ? '—' : String(n));
    if (this.cells.unsynced.textContent !== text(unsynced)) {
      this.cells.unsynced.textContent = text(unsynced);
      this.cells.unsynced.title = unsynced === null ? 'Not reported by this edge since the master started' : 'Events recorded at the edge, not yet stored at the master';
      this.cells.unsynced.classList.toggle('warn', unsynced > 0);
    }
    if (this.cells.lag.textContent !== text(lag)) {
      this.cells.lag.textContent = text(lag);
      this.cells.lag.title = lag === null ? 'This edge has not pulled changes since the master started' : 'Changes of the master’s documents the edge has not received yet';
      this.cells.lag.classList.toggle('warn', lag > 0);
    }
  }

  sync(m, lastSeq) {
    this.s = { ...this.s, replica_seq: m.replica_seq, events_unsynced: m.unsynced };
    this.paintSync(lastSeq);
  }

  paintLink() {
    const s = this.s;
    const cell = this.cells.link;
    this.tr.dataset.link = s.connected ? 'connected' : 'lost';
    if (s.connected) {
      replace(cell, h('span', { class: 'badge ok', text: 'connected' }),
        s.link_since_ms ? h('div', { class: 'sub', text: `since ${fmtTime(s.link_since_ms)}` }) : null);
    } else {
      replace(cell, h('span', { class: 'badge bad', text: s.lost_ms ? 'lost' : 'not connected' }),
        s.lost_ms ? h('div', { class: 'sub', text: `since ${fmtTime(s.lost_ms)}` }) : null,
        s.takeover_due_ms && s.controller === 'edge'
          ? h('div', { class: 'sub', text: `master takes over at ${fmtTime(s.takeover_due_ms)}` }) : null);
    }
  }

  control(m) {
    this.update({ ...this.s, controller: m.to, epoch: m.epoch, controller_since_ms: m.at_ms, takeover_due_ms: null });
  }

  link(m) {
    const s = this.s;
    s.connected = m.connected;
    if (m.connected) { s.link_since_ms = m.at_ms; s.lost_ms = null; } else {
      s.lost_ms = m.at_ms;
      s.takeover_due_ms = s.failover ? m.at_ms + s.failover_timeout_ms : null;
    }
    this.paintLink();
  }
}
