// The API key, the fetch wrapper and the live connection (/api/v1/ws).
// The key lives in sessionStorage (gone with the tab), travels as a bearer
// header, and only the WebSocket gets it in its URL (browsers cannot set
// headers there).

const KEY = 'outpost.key';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
  get fields() { return this.body.fields || []; }
}

let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

// Calls the API; answers the parsed body (and the response), throws ApiError.
export async function api(method, path, body, opts = {}) {
  const headers = { Authorization: `Bearer ${session.key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.rev !== undefined) headers['If-Match'] = `"${opts.rev}"`;
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { error: text }; }
  if (res.status === 401) onUnauthorized();
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

// Every page of a document list.
export async function listAll(kind) {
  const items = [];
  let after = '';
  for (;;) {
    const page = await api('GET', `/api/v1/${kind}?limit=1000${after ? `&after=${after}` : ''}`);
    items.push(...page.items);
    if (!page.next) return items;
    after = page.next;
  }
}

// One WebSocket for the whole page: subscriptions by id, resubscribed
// after a reconnect (with backoff), so views never poll.
export class Live {
  constructor() {
    this.subs = new Map();
    this.next = 1;
    this.listeners = new Set();
    this.state = 'connecting';
    this.backoff = 500;
    this.closed = false;
    this.open();
  }

  open() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?key=${encodeURIComponent(session.key)}`);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.setState('live');
      for (const [id, s] of this.subs) this.send({ op: 'subscribe', id, ...s.spec });
    };
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (msg.type === 'dropped') {
        for (const s of this.subs.values()) s.handler(msg);
        return;
      }
      const s = this.subs.get(msg.id);
      if (s) s.handler(msg);
    };
    ws.onclose = () => {
      if (this.closed) return;
      this.setState('reconnecting');
      setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 8000);
    };
  }

  setState(s) {
    this.state = s;
    for (const f of this.listeners) f(s);
  }

  onState(f) { this.listeners.add(f); f(this.state); }

  send(msg) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  // spec: {topic, module?, key?}; handler gets every message of it.
  subscribe(spec, handler) {
    const id = this.next++;
    this.subs.set(id, { spec, handler });
    this.send({ op: 'subscribe', id, ...spec });
    return id;
  }

  unsubscribe(id) {
    if (this.subs.delete(id)) this.send({ op: 'unsubscribe', id });
  }

  close() {
    this.closed = true;
    this.ws.close();
  }
}

// A subscription made again when the server ends it with an error: the
// side that just took control has not loaded the module yet, or the edge
// that runs it is not connected. Tried again after 250 ms, doubling up to
// 5 s, until closed; `restart()` makes it afresh at once (after a change
// of controller the answer comes from the other side).
export function follow(live, spec, handler) {
  let id = null;
  let timer = null;
  let delay = 250;
  let closed = false;
  const open = () => {
    timer = null;
    if (closed) return;
    const mine = live.subscribe(spec, (m) => {
      if (m.type === 'error' && mine === id) {
        live.unsubscribe(mine);
        id = null;
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, 5000);
      } else if (m.type === 'subscribed') {
        delay = 250;
      }
      handler(m);
    });
    id = mine;
  };
  const stop = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    if (id !== null) live.unsubscribe(id);
    id = null;
  };
  open();
  return {
    restart() { stop(); delay = 250; open(); },
    close() { closed = true; stop(); },
  };
}
