// Documents: edge locations, systems and modules. Create, edit and delete
// (admins), with the API's 422 field errors shown next to their fields and
// the revision sent as If-Match for the user. A new edge location's
// secret is shown once, with a copy button.

import { api, listAll } from './api.js';
import { h, replace, notice } from './dom.js';

const KINDS = {
  edges: {
    title: 'Edge locations',
    fields: [
      ['name', 'Name', 'text', { required: true }],
      ['description', 'Description', 'text'],
      ['failover', 'Master may take over when the edge is lost', 'checkbox'],
      ['failover_timeout_ms', 'Failover timeout (ms)', 'number'],
      ['window_start', 'Restore window start (cron, e.g. 0 3 * * *)', 'text'],
      ['window_length_ms', 'Restore window length (ms)', 'number'],
      ['timezone', 'Time zone (IANA, e.g. Australia/Sydney)', 'text'],
      ['admins', 'Users who operate it (comma-separated)', 'list'],
    ],
    cols: (d) => [d.name, d.failover ? 'failover on' : 'failover off', d.timezone],
  },
  systems: {
    title: 'Systems',
    fields: [
      ['name', 'Name', 'text', { required: true }],
      ['description', 'Description', 'text'],
      ['edge_id', 'Edge location', 'edge'],
      ['module_ids', 'Modules, in order (ids, comma-separated)', 'list'],
      ['settings', 'Settings (JSON object)', 'json'],
    ],
    cols: (d, names) => [d.name, d.edge_id ? (names.get(d.edge_id) || d.edge_id) : 'master', `${d.module_ids.length} module(s)`],
  },
  modules: {
    title: 'Modules',
    fields: [
      ['name', 'Name', 'text', { required: true }],
      ['driver', 'Driver (a file in modules/, e.g. pjlink.lua)', 'text', { required: true }],
      ['uri', 'Device (e.g. tcp://10.0.0.5:4352)', 'text'],
      ['settings', 'Settings (JSON object)', 'json'],
      ['enabled', 'Enabled', 'checkbox'],
    ],
    cols: (d) => [d.name, d.driver, d.uri || '—'],
  },
};

export function render(ctx, root, kind = 'edges') {
  const spec = KINDS[kind];
  const msg = h('p', { role: 'status', class: 'notice' });
  const list = h('div', {});
  const formBox = h('div', {});
  replace(root,
    h('h1', { text: 'Documents' }),
    h('nav', { class: 'tabs', 'aria-label': 'Document kinds' }, Object.entries(KINDS).map(([k, s]) =>
      h('a', { href: `#/documents/${k}`, 'aria-current': k === kind ? 'page' : false, text: s.title }))),
    msg, formBox, list);
  let edges = [];

  const reload = async () => {
    const [items, allEdges] = await Promise.all([listAll(kind), kind === 'edges' ? null : listAll('edges')]);
    edges = allEdges || items;
    const names = new Map(edges.map((e) => [e.id, e.name]));
    replace(list,
      ctx.isAdmin ? h('button', { type: 'button', id: 'new', class: 'primary', text: `New ${kind.slice(0, -1)}`, onclick: () => edit(null) }) : null,
      h('table', { class: 'grid docs' },
        h('tbody', {}, items.map((d) => h('tr', { 'data-id': d.id },
          spec.cols(d, names).map((c, i) => (i === 0 ? h('th', { scope: 'row', text: c }) : h('td', { text: c }))),
          h('td', { class: 'actions' }, ctx.isAdmin ? [
            h('button', { type: 'button', text: 'Edit', 'aria-label': `Edit ${d.name}`, onclick: () => edit(d) }),
            h('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${d.name}`, onclick: () => remove(d) }),
          ] : null))))));
  };

  const remove = async (d) => {
    const dialog = h('dialog', { 'aria-labelledby': 'del-title' }, h('form', { method: 'dialog' },
      h('h2', { id: 'del-title', text: `Delete ${d.name}?` }),
      h('div', { class: 'buttons' }, h('button', { value: 'cancel', text: 'Cancel' }), h('button', { value: 'ok', class: 'danger', text: 'Delete' }))));
    document.body.append(dialog);
    dialog.addEventListener('close', async () => {
      dialog.remove();
      if (dialog.returnValue !== 'ok') return;
      try {
        await api('DELETE', `/api/v1/${kind}/${d.id}`, undefined, { rev: d.rev });
        notice(msg, `Deleted ${d.name}.`, 'ok');
        await reload();
      } catch (e) {
        notice(msg, e.status === 409 ? `Not deleted: ${e.message}` : `Cannot delete: ${e.message}`, 'error');
      }
    });
    dialog.showModal();
  };

  const edit = (doc) => {
    const inputs = {};
    const errors = {};
    const fieldEls = spec.fields.map(([name, label, type, opts = {}]) => {
      const id = `f-${name}`;
      const err = h('p', { id: `${id}-error`, class: 'field-error', role: 'alert' });
      errors[name] = err;
      let input;
      const v = doc ? doc[name] : undefined;
      if (type === 'checkbox') {
        input = h('input', { id, name, type: 'checkbox', checked: doc ? !!v : name === 'enabled' });
      } else if (type === 'edge') {
        input = h('select', { id, name }, h('option', { value: '', text: 'none (the master)' }),
          edges.map((e) => h('option', { value: e.id, selected: v === e.id, text: e.name })));
      } else if (type === 'json') {
        input = h('textarea', { id, name, rows: 3 });
        input.value = v ? JSON.stringify(v, null, 2) : '{}';
      } else {
        input = h('input', { id, name, type: type === 'number' ? 'number' : 'text', required: opts.required, autocomplete: 'off' });
        input.value = v === undefined || v === null ? '' : (type === 'list' ? v.join(', ') : String(v));
      }
      input.setAttribute('aria-describedby', `${id}-error`);
      inputs[name] = [input, type];
      return h('div', { class: type === 'checkbox' ? 'field check' : 'field' },
        type === 'checkbox' ? [input, h('label', { for: id, text: label })] : [h('label', { for: id, text: label }), input], err);
    });
    const formMsg = h('p', { role: 'status', class: 'notice' });
    const form = h('form', { class: 'card doc-form', id: 'doc-form', novalidate: true, onsubmit: async (e) => {
      e.preventDefault();
      for (const el of Object.values(errors)) el.textContent = '';
      for (const [input] of Object.values(inputs)) input.removeAttribute('aria-invalid');
      const body = {};
      for (const [name, [input, type]] of Object.entries(inputs)) {
        const raw = input.value;
        if (type === 'checkbox') body[name] = input.checked;
        else if (type === 'number') { if (raw !== '') body[name] = Number(raw); }
        else if (type === 'list') body[name] = raw.split(',').map((s) => s.trim()).filter(Boolean);
        else if (type === 'json') {
          try { body[name] = JSON.parse(raw || '{}'); } catch { showError(name, 'is not valid JSON'); return; }
        } else if (type === 'edge') { if (raw) body[name] = raw; }
        else if (raw !== '' || doc) { if (raw !== '') body[name] = raw; }
      }
      try {
        const saved = doc
          ? await api('PUT', `/api/v1/${kind}/${doc.id}`, body, { rev: doc.rev })
          : await api('POST', `/api/v1/${kind}`, body);
        replace(formBox);
        if (saved.secret) showSecret(saved);
        else notice(msg, `Saved ${saved.name} (revision ${saved.rev}).`, 'ok');
        await reload();
      } catch (err) {
        if (err.status === 422 && err.fields.length) {
          for (const f of err.fields) showError(f.field.split(/[.[]/)[0], f.message);
          notice(formMsg, 'Please correct the fields marked below.', 'error');
        } else if (err.status === 409 && doc) {
          notice(formMsg, `Someone changed this ${kind.slice(0, -1)} meanwhile (${err.message}). Your edits are kept: reload it to see theirs.`, 'error');
        } else {
          notice(formMsg, `Not saved: ${err.message}`, 'error');
        }
      }
    } },
    h('h2', { text: doc ? `Edit ${doc.name}` : `New ${kind.slice(0, -1)}` }),
    formMsg, fieldEls,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', text: 'Cancel', onclick: () => replace(formBox) }),
      h('button', { type: 'submit', id: 'save', class: 'primary', text: doc ? 'Save' : 'Create' })));
    const showError = (name, message) => {
      const el = errors[name] || errors.name;
      el.textContent = errors[name] ? message : `${name}: ${message}`;
      inputs[name]?.[0].setAttribute('aria-invalid', 'true');
    };
    replace(formBox, form);
    inputs.name[0].focus();
  };

  const showSecret = (saved) => {
    const code = h('code', { id: 'secret', text: saved.secret });
    const status = h('span', { role: 'status' });
    replace(formBox, h('div', { class: 'card secret' },
      h('h2', { text: `${saved.name}: its secret, shown once` }),
      h('p', { text: 'Set it as OUTPOST_EDGE_SECRET on the edge. It is not stored here and cannot be shown again.' }),
      code, ' ',
      h('button', { type: 'button', text: 'Copy', onclick: async () => {
        try { await navigator.clipboard.writeText(saved.secret); status.textContent = 'Copied.'; } catch {
          getSelection().selectAllChildren(code); status.textContent = 'Selected: press Ctrl+C to copy.';
        }
      } }), ' ', status,
      h('div', { class: 'buttons' }, h('button', { type: 'button', text: 'Done', onclick: () => replace(formBox) }))));
  };

  reload().catch((e) => notice(msg, `Cannot load: ${e.message}`, 'error'));
  return null;
}
