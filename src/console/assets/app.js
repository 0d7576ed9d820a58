// The console's shell: sign-in, navigation by URL hash, the live
// connection, and what the key's role allows. Each view is a module
// exporting render(ctx, root, ...params) that returns its cleanup.

import { api, session, Live, whenUnauthorized } from './api.js';
import { h, replace } from './dom.js';
import * as overview from './overview.js';
import * as site from './site.js';
import * as modulePage from './module.js';
import * as documents from './documents.js';
import * as cluster from './cluster.js';

const routes = [
  [/^#?\/?$/, overview, 'overview'],
  [/^#\/overview$/, overview, 'overview'],
  [/^#\/site\/([\w-]+)$/, site, 'overview'],
  [/^#\/module\/([\w-]+)$/, modulePage, 'overview'],
  [/^#\/documents(?:\/(edges|systems|modules))?$/, documents, 'documents'],
  [/^#\/cluster$/, cluster, 'cluster'],
];

const root = document.getElementById('view');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const liveBadge = document.getElementById('live');
let ctx = null;
let cleanup = null;

window.addEventListener('error', (e) => (window.outpostErrors ||= []).push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => (window.outpostErrors ||= []).push(String(e.reason)));

whenUnauthorized(() => signOut('The key was refused. Sign in again.'));

function signInView(message) {
  nav.hidden = true;
  who.textContent = '';
  const input = h('input', {
    id: 'key', name: 'key', type: 'password', autocomplete: 'off', required: true,
    'aria-describedby': 'key-help',
  });
  const status = h('p', { id: 'signin-status', role: 'status', class: message ? 'notice error' : 'notice' }, message || '');
  const form = h('form', { class: 'card signin', onsubmit: async (e) => {
    e.preventDefault();
    session.set(input.value.trim());
    try {
      await start();
    } catch (err) {
      session.clear();
      status.className = 'notice error';
      status.textContent = err.status === 401 ? 'This key was not accepted.' : `Cannot sign in: ${err.message}`;
    }
  } },
  h('h1', { text: 'Sign in to Outpost' }),
  h('label', { for: 'key', text: 'API key' }),
  input,
  h('p', { id: 'key-help', class: 'hint', text: 'Paste an API key (the master wrote the first one to data/admin-key). It stays in this tab only.' }),
  h('button', { type: 'submit', id: 'signin', class: 'primary', text: 'Sign in' }),
  status);
  replace(root, form);
  input.focus();
}

function signOut(message) {
  session.clear();
  if (ctx) ctx.live.close();
  ctx = null;
  if (cleanup) cleanup();
  cleanup = null;
  signInView(message);
}

async function start() {
  // Everything the first paint needs is asked at once: who the key is, the
  // version, the live connection, and the data of the view being opened.
  const prefetch = new Map();
  if (/^#?\/?(overview)?$/.test(location.hash)) prefetch.set('sites', api('GET', '/api/v1/sites'));
  for (const p of prefetch.values()) p.catch(() => {});
  const [me, version] = await Promise.all([api('GET', '/api/v1/whoami'), api('GET', '/api/v1/version')]);
  const live = new Live();
  ctx = {
    me,
    live,
    isAdmin: me.role === 'admin',
    // Operators act on the master's systems and on locations whose admins
    // list their user: the API answers 403 otherwise, so no button shows.
    canOperate: (location) => me.role === 'admin'
      || (me.role === 'operator' && (!location || (location.admins || []).includes(me.user))),
    // A request started before the view was loaded, taken once.
    prefetched: (name) => { const p = prefetch.get(name); prefetch.delete(name); return p; },
  };
  nav.hidden = false;
  who.textContent = `${me.user} · ${me.role}`;
  document.getElementById('version').textContent = `Outpost ${version.version} (${version.commit.slice(0, 12)})`;
  live.onState((s) => {
    liveBadge.textContent = s === 'live' ? 'live' : s;
    liveBadge.className = `badge ${s === 'live' ? 'ok' : 'warn'}`;
  });
  route();
}

function route() {
  if (!ctx) return;
  const hash = location.hash || '#/';
  for (const [re, view, section] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    if (cleanup) cleanup();
    for (const a of nav.querySelectorAll('a')) {
      a.toggleAttribute('aria-current', a.dataset.section === section);
    }
    root.replaceChildren();
    cleanup = view.render(ctx, root, ...m.slice(1)) || null;
    root.focus({ preventScroll: true });
    return;
  }
  replace(root, h('p', { class: 'notice error', text: 'No such page.' }));
}

window.addEventListener('hashchange', route);
document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));

if (session.key) {
  start().catch(() => signOut('The stored key was not accepted. Sign in again.'));
} else {
  signInView();
}
