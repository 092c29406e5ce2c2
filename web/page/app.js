// Navigator tracking page. No framework, no build step. Every value from the server reaches the
// DOM through textContent or setAttribute (never innerHTML), so names and reasons cannot inject
// markup. Live updates come over server-sent events from api/events.

const SVG_NS = 'http://www.w3.org/2000/svg';
const PAGE_SIZE = 50;

const state = {
  services: [],
  depots: [],
  serverSkewMs: 0, // server time minus browser time, so ages are right on a skewed laptop
  page: { records: [], nextBefore: null, total: 0 },
  cursors: [], // stack of `before` cursors of the pages shown before this one
  before: null,
  failovers: [],
  knownIds: new Set(),
  filterServices: new Set(),
  filterHosts: new Set(),
  connected: false,
};

// ---------- small helpers ----------

/** Create an element; string children become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + state.serverSkewMs;
const pad = (n) => String(n).padStart(2, '0');

function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return 'never';
  const age = Math.max(0, now() - ms);
  return age < 1000 ? 'just now' : `${fmtDuration(age)} ago`;
}

function fmtBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function badge(value, extraClass) {
  const cls = `badge b-${String(value).replace(/[^a-z0-9-]/gi, '')}${extraClass ? ` ${extraClass}` : ''}`;
  return h('span', { class: cls }, value);
}

async function getJson(path) {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function touch() {
  $('last-update').textContent = fmtClock(Date.now());
  $('last-update').setAttribute('datetime', new Date().toISOString());
}

// ---------- services ----------

function renderServices() {
  const root = $('services');
  const cards = state.services.map((s) => {
    // Right after a failover the lost primary's last heartbeat may still list it (its depot is
    // only suspect yet): the primary of the highest term is the one serving.
    const rank = (c) => (c.role === 'primary' ? 0 : c.role === 'standby' ? 1 : 2);
    const copies = [...s.copies].sort((a, b) => rank(a) - rank(b) || b.term - a.term || a.host.localeCompare(b.host));
    const primary = copies[0] && copies[0].role === 'primary' ? copies[0] : undefined;
    const rows = copies.map((c) => {
      // replicate/semisync: the age of the newest primary heartbeat the standby holds, the
      // transactions it is behind, and its replication state; dump: the age of its last sync.
      const lagAge = (at) => {
        const age = Math.max(0, now() - at);
        return age < 1000 ? `${Math.round(age)} ms` : fmtDuration(age);
      };
      const replicaBits = (c) => [
        typeof c.lagTx === 'number' ? h('span', { class: 'dim', 'data-lag-tx': String(c.lagTx) }, ` · ${c.lagTx} tx behind`) : '',
        c.replState === 'broken' ? ' ' : '',
        c.replState === 'broken' ? h('span', { class: 'badge b-failed', title: c.replReason || '' }, 'replication broken: reseeding') : '',
        c.replState === 'seeding' || c.replState === 'connecting' || c.replState === 'stopped' ? ' ' : '',
        c.replState === 'seeding' || c.replState === 'connecting' || c.replState === 'stopped' ? h('span', { class: 'badge b-stale', title: c.replReason || '' }, c.replState) : '',
      ];
      const rpo =
        c.role === 'standby'
          ? [
              c.lastSyncAt === null
                ? badge('never', 'b-stale')
                : h('span', { title: fmtTime(c.lastSyncAt) }, c.replState !== undefined ? lagAge(c.lastSyncAt) : fmtAgo(c.lastSyncAt)),
              ...(c.replState !== undefined ? replicaBits(c) : []),
              c.syncFailing && c.replState === undefined ? ' ' : '',
              c.syncFailing && c.replState === undefined ? badge('sync failing', 'b-failed') : '',
              c.notSeeded ? ' ' : '',
              c.notSeeded ? h('span', { class: 'badge b-failed', 'data-not-seeded': '1', title: 'its database has not received a complete copy from the primary yet: it cannot take over' }, 'not seeded: cannot take over') : '',
            ]
          : [
              h('span', { class: 'dim' }, 'source'),
              c.semisyncFallback ? ' ' : '',
              c.semisyncFallback ? h('span', { class: 'badge b-stale', title: 'semi-synchronous replication fell back to async: no standby acknowledged a commit in time, so a crash now may lose acknowledged writes' }, 'semisync fell back to async') : '',
            ];
      return h(
        'tr',
        { 'data-host': c.host, 'data-role': c.role },
        h('td', {}, badge(c.role)),
        h('td', {}, h('strong', {}, c.host)),
        h('td', {}, badge(c.state)),
        h('td', { class: 'num' }, c.term),
        h('td', { title: fmtTime(c.since) }, c.since === null ? '—' : fmtAgo(c.since)),
        h('td', {}, rpo),
      );
    });
    return h(
      'article',
      { class: 'card', 'data-service': s.service },
      h('div', { class: 'card-head' }, h('h3', {}, s.service), h('span', { class: 'meta' }, `address ${s.address || '—'} · term ${s.term}`)),
      primary
        ? h('p', { class: 'primary-line' }, 'Primary on ', h('strong', { class: 'primary-host' }, primary.host), primary.since ? h('span', { class: 'dim' }, ` since ${fmtTime(primary.since)}`) : '')
        : h('p', { class: 'primary-line' }, badge('no primary', 'b-dead'), ' the service is not being served'),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          { class: 'grid' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Role'), h('th', {}, 'Host'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Term'), h('th', {}, 'Since'), h('th', {}, 'Last DB sync (RPO)'))),
          h('tbody', {}, rows),
        ),
      ),
      s.voters
        ? h(
            'p',
            { class: 'voters-line dim' },
            `Voters (${s.voters.hosts.length}): ${s.voters.hosts.join(', ')}`,
            s.voters.prev ? ` · changing from ${s.voters.prev.join(', ')}` : '',
          )
        : '',
    );
  });
  root.replaceChildren(...(cards.length ? cards : [h('p', { class: 'empty' }, 'No service is registered yet.')]));
}

// ---------- depots ----------

function renderDepots() {
  const body = $('depots').tBodies[0];
  const depots = [...state.depots].sort((a, b) => a.name.localeCompare(b.name));
  const alive = depots.filter((d) => d.state === 'alive').length;
  $('depot-count').textContent = depots.length ? `${alive} of ${depots.length} alive` : '';
  const rows = depots.map((d) => {
    const load = Array.isArray(d.load) ? d.load.map((x) => Number(x).toFixed(2)).join(' / ') : '—';
    const mem = d.memTotalBytes ? `${fmtBytes(d.memFreeBytes)} of ${fmtBytes(d.memTotalBytes)}` : fmtBytes(d.memFreeBytes ?? NaN);
    const images = Array.isArray(d.images) ? d.images : [];
    const transfers = Array.isArray(d.transfers) ? d.transfers : [];
    const tcell = transfers.length
      ? transfers.map((t) => {
          const pct = t.total > 0 ? Math.min(100, Math.round((100 * t.bytes) / t.total)) : 0;
          const fill = h('span', {});
          fill.style.width = `${pct}%`; // through the CSSOM: the page's CSP forbids style attributes
          const bar = h('span', { class: 'bar' }, fill);
          return h('div', { title: `${t.image}: ${fmtBytes(t.bytes)} of ${fmtBytes(t.total)}` }, bar, `${pct}% `, h('span', { class: 'mono dim' }, String(t.image).slice(0, 12)));
        })
      : h('span', { class: 'dim' }, '—');
    return h(
      'tr',
      { 'data-depot': d.name, 'data-state': d.state },
      h('td', { title: d.peerId || '' }, h('strong', {}, d.name), hostKeyBadge(d.hostKeyTrust)),
      h('td', {}, badge(d.state)),
      h('td', { class: 'num' }, typeof d.uptimeS === 'number' ? fmtDuration(d.uptimeS * 1000) : '—'),
      h('td', { class: 'num' }, load),
      h('td', { class: 'num' }, mem),
      h('td', { class: 'num' }, fmtBytes(d.diskFreeBytes)),
      h('td', { class: 'num', title: images.join('\n') }, images.length),
      h('td', {}, tcell),
    );
  });
  body.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No depot seen yet.'))]));
}

/** A depot whose sshd host key changed since it was pinned: images are not shipped to it. */
function hostKeyBadge(t) {
  if (!t || t.state !== 'changed') return null;
  const b = badge('host key changed', 'b-keychanged');
  b.title = `pinned ${t.pinned}\nannounced ${t.announced}\nimages are not shipped to this depot; \`navigator trust forget\` accepts the new key`;
  return h('span', {}, ' ', b);
}

// ---------- history ----------

function timingsText(t) {
  const parts = [];
  for (const k of ['detect', 'elect', 'takeover', 'ship', 'boot']) if (t && typeof t[k] === 'number') parts.push(`${k} ${fmtDuration(t[k])}`);
  return parts.length ? parts.join(' · ') : '—';
}

function filters() {
  return { service: $('f-service').value, host: $('f-host').value, event: $('f-event').value };
}

async function loadMovements({ markFresh = false } = {}) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [k, v] of Object.entries(filters())) if (v) q.set(k, v);
  if (state.before) q.set('before', state.before);
  const page = await getJson(`api/movements?${q}`);
  const previous = state.knownIds;
  state.page = page;
  state.knownIds = new Set(page.records.map((r) => r.id));
  for (const r of page.records) noteNames(r.service, [r.host, r.fromHost]);
  renderMovements(markFresh ? previous : null);
  touch();
}

function renderMovements(previousIds) {
  const body = $('movements').tBodies[0];
  const rows = state.page.records.map((r) => {
    const fresh = previousIds && !previousIds.has(r.id);
    return h(
      'tr',
      { 'data-id': r.id, 'data-event': r.event, class: fresh ? 'fresh' : null },
      h('td', { class: 'mono', title: new Date(r.time).toISOString() }, fmtTime(r.time)),
      h('td', {}, r.service),
      h('td', {}, badge(r.event)),
      h('td', {}, badge(r.role)),
      h('td', {}, h('strong', {}, r.host), r.fromHost ? h('span', { class: 'dim' }, ` ← ${r.fromHost}`) : ''),
      h('td', { class: 'mono' }, r.address || '—'),
      h('td', {}, badge(r.failover ? 'yes' : 'no')),
      h('td', { class: 'num' }, r.term),
      h('td', { class: 'reason' }, r.reason || '—'),
      h('td', { class: 'dim timings' }, timingsText(r.timings)),
    );
  });
  body.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 10, class: 'empty' }, 'No movement matches.'))]));
  const first = state.cursors.length * PAGE_SIZE;
  $('page-info').textContent = state.page.total ? `${first + 1}–${first + state.page.records.length} of ${state.page.total}` : '';
  $('older').disabled = !state.page.nextBefore;
  $('newest').disabled = state.cursors.length === 0;
}

function noteNames(service, hosts) {
  let changed = false;
  if (service && !state.filterServices.has(service)) {
    state.filterServices.add(service);
    changed = true;
  }
  for (const host of hosts) {
    if (host && !state.filterHosts.has(host)) {
      state.filterHosts.add(host);
      changed = true;
    }
  }
  if (changed) renderFilterOptions();
}

function renderFilterOptions() {
  const fill = (select, values) => {
    const current = select.value;
    const opts = [h('option', { value: '' }, 'all'), ...[...values].sort().map((v) => h('option', { value: v }, v))];
    select.replaceChildren(...opts);
    select.value = values.has(current) ? current : '';
  };
  fill($('f-service'), state.filterServices);
  fill($('f-host'), state.filterHosts);
}

// ---------- failover chart ----------

async function loadFailovers() {
  const data = await getJson('api/failovers?limit=40');
  state.failovers = data.failovers;
  renderChart();
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function renderChart() {
  const root = $('chart');
  const list = state.failovers;
  if (!list.length) {
    root.replaceChildren(h('p', { class: 'empty' }, 'No failovers yet.'));
    return;
  }
  // Drawn at the box's real width so labels keep their size on a phone.
  const W = Math.max(300, Math.min(1400, Math.round(root.clientWidth || 900)));
  const panelH = W < 600 ? 100 : 110;
  const left = 52;
  const right = 12;
  const top = 22;
  const gap = 44;
  const H = top + panelH + gap + panelH + 30;
  const root_svg = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Failover outage and re-protection time per event' });
  const slot = (W - left - right) / list.length;
  const barW = Math.max(3, Math.min(36, slot * 0.6));

  const panel = (y0, title, cls, values) => {
    const finite = values.filter((v) => v !== null);
    const max = niceMax(Math.max(0, ...finite) / 1000);
    root_svg.append(svg('text', { x: left, y: y0 - 8, class: 'title' }, title));
    for (let i = 0; i <= 4; i++) {
      const y = y0 + panelH - (panelH * i) / 4;
      root_svg.append(svg('line', { x1: left, x2: W - right, y1: y, y2: y, class: i === 0 ? 'axis' : 'gridline' }));
      const v = (max * i) / 4;
      root_svg.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, `${Number(v.toFixed(2))} s`)); // 0.25, not 0.3
    }
    values.forEach((v, i) => {
      const f = list[i];
      const x = left + slot * i + (slot - barW) / 2;
      const label = `${fmtTime(f.time)} ${f.service}: ${f.fromHost || '?'} → ${f.host}`;
      if (v === null) {
        const rect = svg('rect', { x, y: y0 + panelH - 4, width: barW, height: 4, class: 'pending' });
        rect.append(svg('title', {}, `${label}\nnot re-protected yet`));
        root_svg.append(rect);
        if (slot >= 40) root_svg.append(svg('text', { x: x + barW / 2, y: y0 + panelH - 8, 'text-anchor': 'middle' }, 'pending'));
        return;
      }
      const hgt = Math.max(1, (panelH * (v / 1000)) / max);
      const rect = svg('rect', { x, y: y0 + panelH - hgt, width: barW, height: hgt, rx: 2, class: cls });
      rect.append(svg('title', {}, `${label}\n${title.toLowerCase()}: ${fmtDuration(v)}`));
      root_svg.append(rect);
      if (slot >= 40) root_svg.append(svg('text', { x: x + barW / 2, y: y0 + panelH - hgt - 4, 'text-anchor': 'middle' }, fmtDuration(v)));
    });
  };
  panel(top, 'Outage', 'outage', list.map((f) => f.outageMs));
  panel(top + panelH + gap, 'Re-protection', 'reprotect', list.map((f) => f.reprotectMs));

  // Time labels under the second panel: about six, evenly spread.
  const every = Math.max(1, Math.ceil(list.length / Math.max(2, Math.floor(W / 150))));
  list.forEach((f, i) => {
    if (i % every !== 0 && i !== list.length - 1) return;
    const x = left + slot * i + slot / 2;
    const d = new Date(f.time);
    root_svg.append(svg('text', { x, y: H - 10, 'text-anchor': 'middle' }, `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`));
  });
  root.replaceChildren(root_svg);
}

// ---------- alerts and policy ----------

async function loadAlerts() {
  const data = await getJson('api/alerts');
  const open = data.alerts.filter((a) => a.resolvedAt === undefined && !a.superseded);
  $('alert-count').textContent = open.length ? `${open.length} open` : 'none open';
  const channels = data.channels.map((c) => {
    const failing = c.failures > 0;
    return h(
      'li',
      { class: failing ? 'failing' : undefined },
      badge(c.channel),
      ` ${c.target}: `,
      failing ? `failing (${c.failures} in a row: ${c.lastError || ''}; next try ${fmtClock(c.nextAttemptAt)})` : `ok, ${c.sent} sent`,
      c.pending ? `, ${c.pending} pending` : '',
    );
  });
  const sender = data.sender.name ? `sent by ${data.sender.name}${data.sender.self ? ' (this depot)' : ''}` : 'no sender';
  if (!data.enabled) channels.unshift(h('li', {}, 'alert messages are off on this depot (alerts.enabled)'));
  else if (!data.channels.length) channels.unshift(h('li', {}, `no channel configured (alerts.webhookUrl, alerts.mailTo); ${sender}`));
  else channels.unshift(h('li', { class: 'dim' }, sender));
  $('alert-channels').replaceChildren(...channels);
  const rows = data.alerts.slice(0, 50).map((a) => {
    const resolved = a.resolvedAt !== undefined;
    return h(
      'tr',
      { class: resolved ? 'dim' : undefined },
      h('td', {}, fmtTime(a.openedAt)),
      h('td', {}, resolved ? `resolved ${fmtClock(a.resolvedAt)}` : badge('open', a.severity === 'critical' ? 'b-failed' : 'b-suspect')),
      h('td', {}, a.severity),
      h('td', {}, a.type),
      h('td', {}, a.service || '—'),
      h('td', {}, a.host || '—'),
      h('td', { class: 'reason' }, resolved && a.resolveSummary ? a.resolveSummary : a.summary, a.count > 1 ? ` (${a.count} times)` : ''),
      h('td', {}, [...a.sentOpen, ...a.sentResolve.map((c) => `${c} (resolve)`)].join(', ') || '—'),
    );
  });
  $('alerts').tBodies[0].replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No alerts.'))]));
}

async function loadPolicy() {
  const data = await getJson('api/policy');
  $('policy-depot').textContent = `of ${data.depot}${data.quietNow ? `, quiet hours now (${data.quietNow})` : ''}`;
  const items = [...data.explained.map((l) => h('li', {}, l)), ...data.warnings.map((w) => h('li', { class: 'failing' }, `warning: ${w}`))];
  $('policy').replaceChildren(...items);
}

// ---------- live updates ----------

let source = null;
let reloadTimer = null;

function setConnected(ok) {
  state.connected = ok;
  $('banner').hidden = ok;
  const pill = $('conn');
  pill.textContent = ok ? 'live' : 'offline';
  pill.className = `pill ${ok ? 'pill-live' : 'pill-down'}`;
}

function connect() {
  source = new EventSource('api/events');
  source.addEventListener('open', () => {
    const wasDown = !state.connected;
    setConnected(true);
    // Whatever happened while we were away: fetch the history again.
    if (wasDown) scheduleReload(false);
  });
  source.addEventListener('error', () => {
    setConnected(false);
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the server answered an error): start again ourselves.
      source = null;
      setTimeout(connect, 3000);
    }
  });
  source.addEventListener('services', (e) => {
    const data = JSON.parse(e.data);
    state.serverSkewMs = data.now - Date.now();
    state.services = data.services;
    for (const s of state.services) noteNames(s.service, s.copies.map((c) => c.host));
    renderServices();
    touch();
  });
  source.addEventListener('depots', (e) => {
    const data = JSON.parse(e.data);
    state.depots = data.depots;
    noteNames(null, state.depots.map((d) => d.name));
    renderDepots();
    touch();
  });
  source.addEventListener('movement', (e) => {
    const { record } = JSON.parse(e.data);
    noteNames(record.service, [record.host, record.fromHost]);
    touch();
    scheduleReload(true, ['failover', 'replaced', 'placed'].includes(record.event));
  });
}

function scheduleReload(markFresh, chart = true) {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    // Only the newest page changes when a record arrives; older pages stay put while read.
    if (state.cursors.length === 0) loadMovements({ markFresh }).catch(showFetchError);
    if (chart) loadFailovers().catch(showFetchError);
  }, 80);
}

function showFetchError(err) {
  console.warn('tracking page fetch failed', err);
}

// ---------- wiring ----------

function resetPaging() {
  state.cursors = [];
  state.before = null;
}

document.addEventListener('DOMContentLoaded', () => {
  $('filters').addEventListener('change', () => {
    resetPaging();
    loadMovements().catch(showFetchError);
  });
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('older').addEventListener('click', () => {
    if (!state.page.nextBefore) return;
    state.cursors.push(state.before);
    state.before = state.page.nextBefore;
    loadMovements().catch(showFetchError);
  });
  $('newest').addEventListener('click', () => {
    resetPaging();
    loadMovements().catch(showFetchError);
  });
  let lastWidth = 0;
  window.addEventListener('resize', () => {
    const w = $('chart').clientWidth;
    if (Math.abs(w - lastWidth) > 20 && state.failovers.length) renderChart();
    lastWidth = w;
  });
  // Ages ("5 s ago") move on between pushes.
  setInterval(() => {
    if (state.services.length) renderServices();
  }, 5000);

  // Alerts change rarely and are small: read them every 5 s; the policy every minute.
  const alerts = () => loadAlerts().catch(showFetchError);
  const policy = () => loadPolicy().catch(showFetchError);
  setInterval(alerts, 5000);
  setInterval(policy, 60_000);

  connect();
  loadMovements().catch(showFetchError);
  loadFailovers().catch(showFetchError);
  alerts();
  policy();
});
