// Cluster: the master nodes, their states and terms. Until masters form a
// cluster (a shared PostgreSQL store), this shows the one node serving.

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
    if (Array.isArray(nodes) || (nodes && Array.isArray(nodes.nodes))) {
      const list = Array.isArray(nodes) ? nodes : nodes.nodes;
      replace(body, h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['Node', 'State', 'Term'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, list.map((n) => h('tr', {}, h('th', { scope: 'row', text: n.node_id || n.id || '?' }), h('td', { text: n.state }), h('td', { text: n.term ?? '—' }))))));
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
