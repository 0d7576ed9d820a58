// Cluster: the master nodes, their states, the MASTER and its term
// (`/api/v1/ha/states`). A master alone shows itself as the one node.

import { api } from './api.js';
import { h, replace, notice } from './dom.js';

export function render(ctx, root) {
  const msg = h('p', { role: 'status', class: 'notice' });
  const body = h('div', {});
  replace(root, h('h1', { text: 'Cluster' }), msg, body);
  (async () => {
    const [health, version] = await Promise.all([api('GET', '/api/v1/health'), api('GET', '/api/v1/version')]);
    let nodes = null;
    try { nodes = await api('GET', '/api/v1/ha/states'); } catch { nodes = null; }
    // A master alone answers an empty node list: show it as the one node.
    if (nodes && Array.isArray(nodes.nodes) && nodes.nodes.length > 0) {
      const seen = (ms) => (ms == null ? '—' : `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`);
      replace(body,
        h('p', { text: `MASTER: ${nodes.master_id ?? 'none right now'} · term ${nodes.term} · this node: ${nodes.own_id}` }),
        h('table', { class: 'grid' },
          h('thead', {}, h('tr', {}, ['Node', 'State', 'Priority', 'API', 'Last seen'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, nodes.nodes.map((n) => h('tr', {},
            h('th', { scope: 'row', text: n.node_id }), h('td', { text: n.state }), h('td', { text: String(n.priority) }),
            h('td', { text: n.api ?? '—' }), h('td', { text: seen(n.last_seen_ms) }))))));
      return;
    }
    replace(body, h('div', { class: 'card' },
      h('p', {}, 'This master runs as a single node: there is no cluster to show.'),
      h('dl', { class: 'facts' },
        h('dt', { text: 'Node' }), h('dd', { text: location.host }),
        h('dt', { text: 'State' }), h('dd', {}, h('span', { class: 'badge ok', text: 'MASTER' }), ' (single node)'),
        h('dt', { text: 'Store' }), h('dd', { text: health.status }),
        h('dt', { text: 'Version' }), h('dd', { text: `${version.version} (${version.commit})` }))));
  })().catch((e) => notice(msg, `Cannot load: ${e.message}`, 'error'));
  return null;
}
