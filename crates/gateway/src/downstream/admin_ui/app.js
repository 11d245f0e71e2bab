// Tether admin console.
//
// One page, no dependencies. The admin token is asked for in a form, kept in
// sessionStorage (this tab only) and sent in the Authorization header of every
// admin API call; it never goes into a URL. Server data is only ever put into
// the page as text (textContent), never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'tether-admin-token';
  const POLL_MS = 2000;
  const WINDOW_MS = 120000;
  const REDACTED = '<redacted>';
  const VIEWS = ['overview', 'upstreams', 'virtual-servers', 'sessions', 'cluster'];

  const state = {
    token: null,
    // Bumped on every sign-in and sign-out: answers to older calls are dropped.
    generation: 0,
    timer: null,
    view: 'overview',
    inflight: new Set(),
    prevStats: null,
    samples: [],
    upstreams: new Map(),
    editing: null,
    virtualServers: new Map(),
    editingVs: null,
    noticeTimer: null,
    bannerFrom: null,
  };

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  /** Builds an element: `props` are attributes (plus class, text, dataset), children are nodes or text. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function message(node, text) {
    setText(node, text || '');
    show(node, Boolean(text));
  }

  /** Rebuilds a cell only when what it shows changed (keeps focus and hover steady). */
  const signatures = new WeakMap();
  function fill(cell, signature, build) {
    if (signatures.get(cell) === signature) return;
    signatures.set(cell, signature);
    cell.replaceChildren(...build());
  }

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  function fmtCount(n) {
    return isNum(n) ? n.toLocaleString('en-US') : '–';
  }

  function fmtRate(v) {
    if (!isNum(v)) return '–';
    if (v === 0) return '0';
    if (v < 10) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return Math.round(v).toLocaleString('en-US');
  }

  function fmtMs(v) {
    if (!isNum(v)) return '–';
    if (v < 1) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return Math.round(v).toLocaleString('en-US');
  }

  function fmtDuration(secs) {
    if (!isNum(secs)) return '–';
    const s = Math.max(0, Math.floor(secs));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = s % 60;
    const two = (x) => String(x).padStart(2, '0');
    if (d > 0) return `${d}d ${two(h)}h`;
    if (h > 0) return `${h}h ${two(m)}m`;
    if (m > 0) return `${m}m ${two(r)}s`;
    return `${r}s`;
  }

  function fmtClock(date) {
    return date.toLocaleTimeString('en-GB', { hour12: false });
  }

  function shortId(id) {
    const s = String(id);
    return s.length > 12 ? `${s.slice(0, 8)}…` : s;
  }

  const TRANSPORT_NAMES = { StreamableHttp: 'Streamable HTTP', Sse: 'HTTP+SSE', Stdio: 'stdio' };

  function transportName(wiring) {
    return TRANSPORT_NAMES[wiring] || String(wiring);
  }

  // ------------------------------------------------------------ API access

  class ApiError extends Error {
    constructor(status, text) {
      super(text);
      this.status = status;
    }
  }

  /** Thrown for an answer that arrived after a sign-out or a new sign-in: ignored. */
  class Stale extends Error {}

  /** The admin API, relative to this page (`/admin/ui/` → `/admin/...`). */
  function apiUrl(path) {
    return new URL(`../${path}`, document.baseURI).href;
  }

  function segment(value) {
    return encodeURIComponent(String(value));
  }

  async function request(token, method, path, body) {
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(apiUrl(path), init);
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    return { status: resp.status, ok: resp.ok, data };
  }

  function errorText(answer) {
    const d = answer.data;
    return d && typeof d.error === 'string' && d.error ? d.error : `HTTP ${answer.status}`;
  }

  /** One admin API call with the signed-in token. A 401 signs out. */
  async function api(method, path, body) {
    const generation = state.generation;
    if (!state.token) throw new Stale('signed out');
    let answer;
    try {
      answer = await request(state.token, method, path, body);
    } catch (err) {
      if (generation !== state.generation) throw new Stale('signed out');
      setConnection(false, 'gateway unreachable');
      throw new ApiError(0, 'The gateway did not answer (network error).');
    }
    if (generation !== state.generation) throw new Stale('signed out');
    setConnection(true);
    if (answer.status === 401) {
      signOut('The admin token was refused. Sign in again.');
      throw new Stale('signed out');
    }
    if (!answer.ok) throw new ApiError(answer.status, errorText(answer));
    return answer.data || {};
  }

  function setConnection(ok, text) {
    const node = $('conn-status');
    node.dataset.state = ok ? 'ok' : 'down';
    setText(node, ok ? 'live' : text || 'offline');
  }

  /** Shows an error in the banner; `source` names the poll that failed (its next success clears it). */
  function reportError(err, source = 'action') {
    if (err instanceof Stale) return;
    if (err instanceof ApiError && err.status === 0 && source !== 'action') return; // shown as "unreachable"
    state.bannerFrom = source;
    message($('console-error'), err && err.message ? err.message : String(err));
  }

  function clearError(source) {
    if (state.bannerFrom === source) message($('console-error'), '');
  }

  function notice(text) {
    message($('console-notice'), text);
    clearTimeout(state.noticeTimer);
    state.noticeTimer = setTimeout(() => message($('console-notice'), ''), 5000);
  }

  /** Runs `fn` unless the same job is still running (slow gateway: no pile-up). */
  async function once(key, fn) {
    if (state.inflight.has(key)) return;
    state.inflight.add(key);
    try {
      await fn();
      clearError(key);
    } catch (err) {
      reportError(err, key);
    } finally {
      state.inflight.delete(key);
    }
  }

  // ------------------------------------------------------ sign in and out

  function readSavedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function saveToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage unavailable: the token lives in memory for this page only.
    }
  }

  function showLogin(errorMessage) {
    show($('console'), false);
    show($('topbar-status'), false);
    show($('login'), true);
    message($('login-error'), errorMessage);
    const input = $('login-token');
    input.value = '';
    input.focus();
  }

  /** Checks a token against `GET /admin/stats`: null when accepted, else why not. */
  async function checkToken(token) {
    let answer;
    try {
      answer = await request(token, 'GET', 'stats');
    } catch (_) {
      return 'The gateway did not answer (network error).';
    }
    if (answer.status === 200) return null;
    if (answer.status === 401) return 'Wrong token.';
    if (answer.status === 403) return errorText(answer);
    return `Unexpected answer from the gateway: ${errorText(answer)}`;
  }

  async function signIn(token) {
    const problem = await checkToken(token);
    if (problem) return problem;
    state.generation += 1;
    state.token = token;
    saveToken(token);
    enterConsole();
    return null;
  }

  function signOut(why) {
    state.generation += 1;
    state.token = null;
    saveToken(null);
    stopPolling();
    state.inflight.clear();
    state.prevStats = null;
    state.samples = [];
    state.upstreams = new Map();
    state.virtualServers = new Map();
    resetUpstreamForm();
    resetVsForm();
    $('upstreams-body').replaceChildren();
    $('vs-body').replaceChildren();
    $('sessions-body').replaceChildren();
    $('cluster-body').replaceChildren();
    $('overview-upstreams-body').replaceChildren();
    renderStats({});
    message($('console-error'), '');
    message($('console-notice'), '');
    showLogin(why);
  }

  async function onLoginSubmit(event) {
    event.preventDefault();
    const input = $('login-token');
    const button = $('login-submit');
    const token = input.value.trim();
    if (!token) {
      message($('login-error'), 'Enter the admin token.');
      return;
    }
    button.disabled = true;
    message($('login-error'), '');
    try {
      const problem = await signIn(token);
      if (problem) {
        message($('login-error'), problem);
        input.select();
      } else {
        input.value = '';
      }
    } finally {
      button.disabled = false;
    }
  }

  function enterConsole() {
    show($('login'), false);
    message($('login-error'), '');
    show($('console'), true);
    show($('topbar-status'), true);
    setConnection(true);
    selectView(viewFromHash(), false);
    startPolling();
  }

  // ---------------------------------------------------------------- views

  function viewFromHash() {
    const name = location.hash.replace(/^#/, '');
    return VIEWS.includes(name) ? name : 'overview';
  }

  function selectView(name, refresh = true) {
    state.view = name;
    for (const view of VIEWS) {
      const tab = $(`tab-${view}`);
      const active = view === name;
      tab.setAttribute('aria-selected', active ? 'true' : 'false');
      tab.classList.toggle('active', active);
      show($(`view-${view}`), active);
    }
    const hash = `#${name}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    if (name === 'overview') drawCharts();
    if (refresh && state.token) refreshView();
  }

  function startPolling() {
    stopPolling();
    tick();
    state.timer = setInterval(tick, POLL_MS);
  }

  function stopPolling() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
  }

  function tick() {
    if (!state.token) return;
    once('stats', pollStats);
    refreshView();
  }

  function refreshView() {
    if (state.view === 'upstreams' || state.view === 'overview') once('upstreams', refreshUpstreams);
    else if (state.view === 'virtual-servers') once('virtual-servers', refreshVirtualServers);
    else if (state.view === 'sessions') once('sessions', refreshSessions);
    else if (state.view === 'cluster') once('cluster', refreshCluster);
  }

  // ------------------------------------------------------------- overview

  async function pollStats() {
    const stats = await api('GET', 'stats');
    const at = performance.now();
    const prev = state.prevStats;
    const now = { at, requests: stats.requests, errors: stats.errors, latency: stats.latency_us_sum };
    if (prev && isNum(now.requests) && isNum(prev.requests)) {
      const seconds = (at - prev.at) / 1000;
      const dr = now.requests - prev.requests;
      const de = now.errors - prev.errors;
      const dl = now.latency - prev.latency;
      // Counters only grow; a drop means the gateway restarted: start over.
      if (dr < 0 || de < 0 || dl < 0) {
        state.samples = [];
      } else if (seconds > 0.25) {
        state.samples.push({
          at,
          req: dr / seconds,
          err: isNum(de) ? de / seconds : null,
          lat: dr > 0 && isNum(dl) ? dl / dr / 1000 : null,
        });
      }
    }
    state.prevStats = now;
    while (state.samples.length && at - state.samples[0].at > WINDOW_MS + POLL_MS) state.samples.shift();
    renderStats(stats);
    drawCharts();
  }

  function lastSample() {
    return state.samples.length ? state.samples[state.samples.length - 1] : null;
  }

  function renderStats(stats) {
    const last = lastSample();
    const req = last ? last.req : null;
    const err = last ? last.err : null;
    const lat = last ? last.lat : null;
    for (const [id, value, fmt] of [
      ['stat-req-rate', req, fmtRate],
      ['stat-err-rate', err, fmtRate],
      ['stat-latency', lat, fmtMs],
    ]) {
      const node = $(id);
      setText(node, fmt(value));
      node.dataset.value = isNum(value) ? String(value) : '';
    }
    setText($('stat-requests-total'), `${fmtCount(stats.requests)} total`);
    setText($('stat-errors-total'), `${fmtCount(stats.errors)} total`);
    setText($('stat-sessions'), fmtCount(stats.downstream_sessions));
    setText($('stat-upstream-sessions'), fmtCount(stats.upstream_sessions));
    setText($('stat-uptime'), fmtDuration(stats.uptime_secs));
    setText($('stat-updated'), isNum(stats.uptime_secs) ? `updated ${fmtClock(new Date())}` : 'waiting for data');
    setText($('chart-requests-now'), `${fmtRate(req)} req/s`);
    setText($('chart-errors-now'), `${fmtRate(err)} err/s`);
    setText($('chart-latency-now'), `${fmtMs(lat)} ms`);
    const node = $('node-name');
    setText(node, stats.node ? `node ${stats.node}` : 'single node');
  }

  const CHARTS = [
    ['chart-requests', 'req', fmtRate],
    ['chart-errors', 'err', fmtRate],
    ['chart-latency', 'lat', fmtMs],
  ];

  function drawCharts() {
    const last = lastSample();
    for (const [id, key, fmt] of CHARTS) {
      const canvas = $(id);
      const value = last ? last[key] : null;
      canvas.dataset.last = isNum(value) ? String(value) : '';
      canvas.dataset.samples = String(state.samples.length);
      canvas.setAttribute('aria-label', `${canvas.dataset.unit}: ${fmt(value)} now`);
      drawChart(canvas, key, fmt);
    }
  }

  /** A round upper bound for the y axis: 1, 2, 2.5 or 5 times a power of ten. */
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= v * 1.0001) return step * power;
    }
    return 10 * power;
  }

  function drawChart(canvas, key, fmt) {
    const box = canvas.getBoundingClientRect();
    if (box.width < 10 || box.height < 10) return; // not shown
    const ratio = window.devicePixelRatio || 1;
    const pw = Math.round(box.width * ratio);
    const ph = Math.round(box.height * ratio);
    if (canvas.width !== pw || canvas.height !== ph) {
      canvas.width = pw;
      canvas.height = ph;
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const w = box.width;
    const h = box.height;
    ctx.clearRect(0, 0, w, h);

    const style = getComputedStyle(canvas);
    const line = style.color || '#2f6fdf';
    const grid = style.getPropertyValue('--grid').trim() || '#e3e7ee';
    const label = style.getPropertyValue('--label').trim() || '#6b7380';
    const font = `11px ${style.fontFamily || 'sans-serif'}`;

    const now = performance.now();
    const points = state.samples.map((s) => ({ at: s.at, v: s[key] }));
    const values = points.map((p) => p.v).filter(isNum);
    const top = niceCeil(values.length ? Math.max(...values) : 0);

    ctx.font = font;
    const ticks = [0, 1, 2, 3, 4].map((i) => (i === 0 ? '0' : fmt((top * i) / 4)));
    const left = Math.ceil(Math.max(...ticks.map((t) => ctx.measureText(t).width))) + 10;
    const area = { x: left, y: 8, w: w - left - 8, h: h - 8 - 20 };
    const xOf = (at) => area.x + area.w * (1 - (now - at) / WINDOW_MS);
    const yOf = (v) => area.y + area.h * (1 - v / top);

    // Grid and labels.
    ctx.lineWidth = 1;
    ctx.strokeStyle = grid;
    ctx.fillStyle = label;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      const y = Math.round(yOf(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(area.x, y);
      ctx.lineTo(area.x + area.w, y);
      ctx.stroke();
      ctx.fillText(ticks[i], area.x - 6, y);
    }
    ctx.textBaseline = 'top';
    for (const [secs, text, align] of [[120, '−2m', 'left'], [60, '−1m', 'center'], [0, 'now', 'right']]) {
      ctx.textAlign = align;
      ctx.fillText(text, xOf(now - secs * 1000), area.y + area.h + 5);
    }

    if (!values.length) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(state.samples.length ? 'no data in this window' : 'collecting…', area.x + area.w / 2, area.y + area.h / 2);
      return;
    }

    // The series, split where a value is missing (no requests: no latency).
    ctx.save();
    ctx.beginPath();
    ctx.rect(area.x - 4, area.y - 4, area.w + 8, area.h + 8);
    ctx.clip();
    const runs = [];
    let run = [];
    for (const p of points) {
      if (isNum(p.v)) run.push(p);
      else if (run.length) {
        runs.push(run);
        run = [];
      }
    }
    if (run.length) runs.push(run);
    for (const r of runs) {
      ctx.beginPath();
      r.forEach((p, i) => (i ? ctx.lineTo(xOf(p.at), yOf(p.v)) : ctx.moveTo(xOf(p.at), yOf(p.v))));
      ctx.strokeStyle = line;
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.stroke();
      ctx.lineTo(xOf(r[r.length - 1].at), yOf(0));
      ctx.lineTo(xOf(r[0].at), yOf(0));
      ctx.closePath();
      ctx.globalAlpha = 0.14;
      ctx.fillStyle = line;
      ctx.fill();
      ctx.globalAlpha = 1;
      if (r.length === 1) {
        ctx.beginPath();
        ctx.arc(xOf(r[0].at), yOf(r[0].v), 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
    const last = points[points.length - 1];
    if (isNum(last.v)) {
      ctx.beginPath();
      ctx.fillStyle = line;
      ctx.arc(xOf(last.at), yOf(last.v), 3, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.restore();
  }

  // ------------------------------------------------------------ keyed rows

  /** Makes `tbody` show one row per item, in order, reusing rows by key. */
  function syncRows(tbody, items, key, create, update, emptyText, columns) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) {
      if (row.dataset.key !== undefined) existing.set(row.dataset.key, row);
      else row.remove();
    }
    const wanted = [];
    for (const item of items) {
      const k = String(key(item));
      let row = existing.get(k);
      if (row) existing.delete(k);
      else {
        row = create(item);
        row.dataset.key = k;
      }
      update(row, item);
      wanted.push(row);
    }
    for (const row of existing.values()) row.remove();
    wanted.forEach((row, i) => {
      if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
    });
    if (!wanted.length) {
      tbody.append(el('tr', { class: 'empty-row' }, el('td', { colspan: columns, class: 'empty', text: emptyText })));
    }
  }

  // A table row with one cell per column name (numeric columns aligned),
  // reachable later as row.cellsByName[name].
  function rowWith(attrs, names) {
    const row = el('tr', attrs);
    const out = {};
    for (const name of names) {
      const td = el('td', { class: `col-${name}`, dataset: { col: name } });
      if (NUMERIC.has(name)) td.classList.add('num');
      row.append(td);
      out[name] = td;
    }
    row.cellsByName = out;
    return row;
  }

  function badge(text, kind, title) {
    return el('span', { class: `badge badge-${kind}`, text, title });
  }

  // ------------------------------------------------------------ upstreams

  const UPSTREAM_COLS = ['name', 'source', 'transport', 'eras', 'health', 'sessions', 'requests', 'errors', 'latency', 'actions'];
  const NUMERIC = new Set(['sessions', 'requests', 'errors', 'latency', 'age', 'idle', 'uses', 'silent']);

  async function refreshUpstreams() {
    const data = await api('GET', 'upstreams');
    const list = Array.isArray(data.upstreams) ? data.upstreams : [];
    state.upstreams = new Map(list.map((u) => [u.definition.name, u]));
    const tbody = $('upstreams-body');
    syncRows(tbody, list, (u) => u.definition.name, createUpstreamRow, updateUpstreamRow, 'No upstreams are defined.', UPSTREAM_COLS.length);
    syncRows($('overview-upstreams-body'), list, (u) => u.definition.name, createHealthRow, updateHealthRow, 'No upstreams are defined.', 6);
    const running = list.filter((u) => 'healthy' in u).length;
    const healthy = list.filter((u) => u.healthy === true).length;
    setText($('upstreams-count'), `${list.length} defined, ${running} running`);
    setText($('overview-upstreams-count'), `${healthy} of ${list.length} healthy`);
  }

  function healthOf(u) {
    return 'healthy' in u ? (u.healthy ? 'healthy' : 'unhealthy') : 'stopped';
  }

  function healthBadge(health) {
    return badge(health, health === 'healthy' ? 'ok' : health === 'unhealthy' ? 'bad' : 'idle');
  }

  function errorRateOf(u) {
    return isNum(u.requests) && u.requests > 0 && isNum(u.errors) ? `${((100 * u.errors) / u.requests).toFixed(1)}%` : '–';
  }

  function latencyOf(u) {
    return isNum(u.requests) && u.requests > 0 && isNum(u.latency_us_sum) ? `${fmtMs(u.latency_us_sum / u.requests / 1000)} ms` : '–';
  }

  const HEALTH_COLS = ['name', 'health', 'sessions', 'requests', 'errors', 'latency'];

  function createHealthRow(u) {
    return rowWith({ 'data-name': u.definition.name }, HEALTH_COLS);
  }

  function updateHealthRow(row, u) {
    const c = row.cellsByName;
    const health = healthOf(u);
    row.dataset.healthy = 'healthy' in u ? String(Boolean(u.healthy)) : '';
    setText(c.name, u.definition.name);
    fill(c.health, health, () => [healthBadge(health)]);
    setText(c.sessions, 'healthy' in u ? fmtCount(u.upstream_sessions) : '–');
    setText(c.requests, isNum(u.requests) ? fmtCount(u.requests) : '–');
    setText(c.errors, errorRateOf(u));
    c.errors.classList.toggle('warn', isNum(u.errors) && u.errors > 0);
    setText(c.latency, latencyOf(u));
  }

  function createUpstreamRow(u) {
    return rowWith({ 'data-testid': 'upstream-row', 'data-name': u.definition.name }, UPSTREAM_COLS);
  }

  function updateUpstreamRow(row, u) {
    const c = row.cellsByName;
    const def = u.definition || {};
    const running = 'healthy' in u;
    row.dataset.source = u.source || '';
    row.dataset.healthy = running ? String(Boolean(u.healthy)) : '';

    fill(c.name, JSON.stringify([def.name, def.display_name, def.description, def.url, def.command]), () => {
      const target = def.url || (Array.isArray(def.command) ? joinCommand(def.command) : '');
      return [
        el('div', { class: 'name', text: def.display_name ? `${def.name} (${def.display_name})` : def.name }),
        def.description ? el('div', { class: 'sub', text: def.description }) : null,
        target ? el('div', { class: 'sub mono', text: target, title: target }) : null,
      ].filter(Boolean);
    });

    fill(c.source, u.source, () => [sourceBadge(u.source)]);

    const configured = Array.isArray(def.command) && def.command.length ? 'stdio' : def.transport || 'auto';
    const shown = running && u.transport ? transportName(u.transport) : '–';
    fill(c.transport, `${shown}|${configured}`, () => [
      el('span', { text: shown }),
      el('div', { class: 'sub', text: `configured: ${configured}` }),
    ]);

    const eras = u.eras;
    const eraSig = eras ? `${Boolean(eras.legacy)}${Boolean(eras.modern)}` : String(eras);
    fill(c.eras, `${eraSig}|${def.era}`, () => {
      const out = [];
      if (eras) {
        if (eras.legacy) out.push(badge('legacy', 'era', 'speaks the initialize + session era'));
        if (eras.modern) out.push(badge('modern', 'era', 'speaks the stateless 2026-07-28 era'));
        if (!out.length) out.push(el('span', { class: 'muted', text: 'none' }));
      } else {
        out.push(el('span', { class: 'muted', text: running ? 'not probed yet' : '–' }));
      }
      if (def.era && def.era !== 'auto') out.push(el('div', { class: 'sub', text: `forced: ${def.era}` }));
      return out;
    });

    const health = healthOf(u);
    fill(c.health, health, () => [healthBadge(health)]);

    const created = isNum(u.upstream_sessions_created) ? `${fmtCount(u.upstream_sessions_created)} opened in all` : undefined;
    setText(c.sessions, running ? fmtCount(u.upstream_sessions) : '–');
    c.sessions.title = created || '';
    setText(c.requests, isNum(u.requests) ? fmtCount(u.requests) : '–');
    setText(c.errors, errorRateOf(u));
    c.errors.title = isNum(u.errors) ? `${fmtCount(u.errors)} errors` : '';
    c.errors.classList.toggle('warn', isNum(u.errors) && u.errors > 0);
    setText(c.latency, latencyOf(u));

    fillActions(c.actions, u.source, def.name, 'upstream');
  }

  // The Edit and Delete buttons of a definition the admin API made (one from
  // the config file is read-only here).
  function fillActions(cell, source, name, testid) {
    fill(cell, `${source}|${name}`, () => {
      if (source !== 'api') return [el('span', { class: 'muted small', text: 'read-only', title: 'defined in the config file' })];
      const edit = el('button', { type: 'button', class: 'btn btn-small', text: 'Edit', 'data-action': 'edit', 'data-testid': `${testid}-edit` });
      const del = el('button', { type: 'button', class: 'btn btn-small btn-danger', text: 'Delete', 'data-action': 'delete', 'data-testid': `${testid}-delete` });
      return [el('div', { class: 'row-actions' }, edit, del)];
    });
  }

  function sourceBadge(source) {
    return badge(source || '?', source === 'api' ? 'api' : 'config', source === 'api' ? 'defined through the admin API' : 'from the config file (read-only here)');
  }

  /** A table's click handler: its rows' Edit and Delete buttons call `edit(name)` and `remove(name, button)`. */
  function onRowAction(edit, remove) {
    return (event) => {
      const button = event.target.closest('button[data-action]');
      if (!button) return;
      const row = button.closest('tr');
      const name = row && row.dataset.name;
      if (!name) return;
      if (button.dataset.action === 'edit') edit(name);
      else if (button.dataset.action === 'delete') remove(name, button);
    };
  }

  /** Deletes the definition at admin `path` once confirmed; `done` runs after a deletion. */
  async function deleteDefinition(what, path, consequence, button, done) {
    if (!window.confirm(`Delete ${what}? ${consequence}`)) return false;
    button.disabled = true;
    try {
      await api('DELETE', path);
      done();
      message($('console-error'), '');
      notice(`${what.charAt(0).toUpperCase()}${what.slice(1)} deleted.`);
    } catch (err) {
      reportError(err);
    } finally {
      button.disabled = false;
    }
    return true;
  }

  async function deleteUpstream(name, button) {
    const done = () => {
      if (state.editing === name) resetUpstreamForm();
    };
    if (await deleteDefinition(`upstream "${name}"`, `upstreams/${segment(name)}`, 'Its upstream sessions are closed.', button, done)) {
      once('upstreams', refreshUpstreams);
    }
  }

  // The command line: words split on white space; '...' or "..." keep spaces
  // in one argument, and a backslash escapes the next character (outside '...').
  function splitCommand(line) {
    const args = [];
    let current = '';
    let started = false;
    let quote = null;
    for (let i = 0; i < line.length; i += 1) {
      const ch = line[i];
      if (quote === "'") {
        if (ch === "'") quote = null;
        else current += ch;
      } else if (ch === '\\' && i + 1 < line.length) {
        i += 1;
        current += line[i];
        started = true;
      } else if (quote === '"') {
        if (ch === '"') quote = null;
        else current += ch;
      } else if (ch === '"' || ch === "'") {
        quote = ch;
        started = true;
      } else if (/\s/.test(ch)) {
        if (started) args.push(current);
        current = '';
        started = false;
      } else {
        current += ch;
        started = true;
      }
    }
    if (quote) throw new Error('The command has an unclosed quote.');
    if (started) args.push(current);
    return args;
  }

  function quoteArg(arg) {
    if (arg !== '' && !/[\s'"\\]/.test(arg)) return arg;
    if (!arg.includes("'")) return `'${arg}'`;
    if (!/["\\]/.test(arg)) return `"${arg}"`;
    return `'${arg.replace(/'/g, `'\\''`)}'`;
  }

  function joinCommand(args) {
    return args.map(quoteArg).join(' ');
  }

  function onTransportChange() {
    const stdio = $('up-transport').value === 'stdio';
    show($('up-url-field'), !stdio);
    show($('up-command-field'), stdio);
  }

  /**
   * Puts a definition form (`<form id>`, its fields `<prefix>-…`) in add mode
   * (`editing` null) or edit mode for the definition `editing`, named `what`.
   */
  function formMode(id, prefix, what, editing) {
    if (editing === null) $(id).reset();
    $(`${prefix}-name`).readOnly = editing !== null;
    setText($(`${id}-title`), editing === null ? `Add ${what}` : `Edit ${what} "${editing}"`);
    setText($(`${prefix}-submit`), editing === null ? `Add ${what}` : 'Save changes');
    show($(`${prefix}-cancel`), editing !== null);
    message($(`${prefix}-error`), '');
  }

  function resetUpstreamForm() {
    state.editing = null;
    formMode('upstream-form', 'up', 'upstream', null);
    onTransportChange();
  }

  function hasSecrets(def) {
    const maps = [def.headers, def.env].filter((m) => m && typeof m === 'object');
    return maps.some((m) => Object.values(m).some((v) => v === REDACTED));
  }

  function startEdit(name) {
    const entry = state.upstreams.get(name);
    if (!entry) return;
    const def = entry.definition;
    if (hasSecrets(def)) {
      message($('console-error'), `Upstream "${name}" has header or environment values the console cannot show (secrets); saving here would overwrite them. Change it with "tether upstreams" instead.`);
      return;
    }
    resetUpstreamForm();
    state.editing = name;
    const command = Array.isArray(def.command) ? def.command : [];
    $('up-name').value = def.name;
    $('up-transport').value = command.length ? 'stdio' : def.transport || 'auto';
    $('up-url').value = def.url || '';
    $('up-command').value = joinCommand(command);
    $('up-era').value = def.era || 'auto';
    $('up-timeout').value = isNum(def.timeout_secs) ? String(def.timeout_secs) : '';
    $('up-shared').checked = Boolean(def.shared);
    $('up-description').value = def.description || '';
    formMode('upstream-form', 'up', 'upstream', name);
    onTransportChange();
    $('upstream-form').scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    $('up-url').focus();
  }

  /** The definition the form describes; on edit, the rest of the stored definition is kept. */
  function definitionFromForm() {
    const base = state.editing && state.upstreams.has(state.editing) ? JSON.parse(JSON.stringify(state.upstreams.get(state.editing).definition)) : {};
    const name = $('up-name').value.trim();
    if (!name) throw new Error('Give the upstream a name.');
    if (/[\s/]/.test(name)) throw new Error('The name cannot contain spaces or "/".');
    const def = Object.assign(base, { name });
    const transport = $('up-transport').value;
    if (transport === 'stdio') {
      const command = splitCommand($('up-command').value.trim());
      if (!command.length) throw new Error('Give the command to run.');
      def.command = command;
      def.transport = 'auto';
      delete def.url;
    } else {
      const url = $('up-url').value.trim();
      if (!url) throw new Error('Give the upstream\'s URL.');
      def.url = url;
      def.transport = transport;
      delete def.command;
    }
    def.era = $('up-era').value;
    def.shared = $('up-shared').checked;
    const timeout = $('up-timeout').value.trim();
    if (timeout === '') delete def.timeout_secs;
    else if (/^\d+$/.test(timeout)) def.timeout_secs = Number(timeout);
    else throw new Error('The timeout is a whole number of seconds.');
    const description = $('up-description').value.trim();
    if (description) def.description = description;
    else delete def.description;
    return def;
  }

  /**
   * Sends the definition a form describes (`form.read()`): a PUT over the one
   * being edited, else a POST to `form.collection`; errors go under the form.
   */
  async function submitDefinition(form) {
    const errorBox = $(`${form.prefix}-error`);
    message(errorBox, '');
    let def;
    try {
      def = form.read();
    } catch (err) {
      message(errorBox, err.message);
      return;
    }
    const button = $(`${form.prefix}-submit`);
    button.disabled = true;
    const editing = form.editing();
    try {
      if (editing) await api('PUT', `${form.collection}/${segment(editing)}`, def);
      else await api('POST', form.collection, def);
      form.reset();
      notice(`${form.label} "${def.name}" ${editing ? 'saved' : 'added'}.`);
      once(form.collection, form.refresh);
    } catch (err) {
      if (!(err instanceof Stale)) message(errorBox, err.message);
    } finally {
      button.disabled = false;
    }
  }

  function onUpstreamSubmit(event) {
    event.preventDefault();
    submitDefinition({
      prefix: 'up',
      collection: 'upstreams',
      label: 'Upstream',
      read: definitionFromForm,
      editing: () => state.editing,
      reset: resetUpstreamForm,
      refresh: refreshUpstreams,
    });
  }

  // ------------------------------------------------------- virtual servers

  const VS_COLS = ['name', 'source', 'endpoint', 'exposes', 'listing', 'actions'];
  const VS_KINDS = [['tools', 'tool'], ['prompts', 'prompt'], ['resources', 'resource']];

  async function refreshVirtualServers() {
    const data = await api('GET', 'virtual-servers');
    const list = Array.isArray(data.virtual_servers) ? data.virtual_servers : [];
    state.virtualServers = new Map(list.map((v) => [v.name, v]));
    syncRows($('vs-body'), list, (v) => v.name, createVsRow, updateVsRow, 'No virtual servers are defined.', VS_COLS.length);
    setText($('vs-count'), `${list.length} defined`);
  }

  function createVsRow(v) {
    return rowWith({ 'data-testid': 'vs-row', 'data-name': v.name }, VS_COLS);
  }

  function updateVsRow(row, v) {
    const c = row.cellsByName;
    row.dataset.source = v.source || '';
    fill(c.name, JSON.stringify([v.name, v.title, v.description]), () => [
      el('div', { class: 'name', text: v.title ? `${v.name} (${v.title})` : v.name }),
      v.description ? el('div', { class: 'sub', text: v.description }) : null,
    ].filter(Boolean));
    fill(c.source, v.source, () => [sourceBadge(v.source)]);
    setText(c.endpoint, `/v/${v.name}/mcp`);
    c.endpoint.classList.add('mono');
    const patterns = VS_KINDS.flatMap(([key, kind]) => (Array.isArray(v[key]) ? v[key] : []).map((p) => [kind, p]));
    const shaped = v.shape && typeof v.shape === 'object' ? Object.keys(v.shape).length : 0;
    fill(c.exposes, JSON.stringify([patterns, shaped]), () => {
      if (!patterns.length) return [el('span', { class: 'muted', text: 'nothing' })];
      const chips = patterns.map(([kind, p]) =>
        el('span', { class: 'chip', 'data-pattern': p }, el('span', { class: 'chip-kind', text: kind }), el('span', { class: 'chip-name mono', text: p })),
      );
      if (shaped) chips.push(el('div', { class: 'sub', text: `${shaped} tool shape${shaped === 1 ? '' : 's'}` }));
      return chips;
    });
    const listing = v.progressive_discovery ? 'progressive' : 'full';
    row.dataset.listing = listing;
    fill(c.listing, listing, () => [v.progressive_discovery ? badge('search + call', 'era', 'lists search_tools and call_tool instead of the tools') : el('span', { text: 'every tool' })]);
    fillActions(c.actions, v.source, v.name, 'vs');
  }

  async function deleteVirtualServer(name, button) {
    const done = () => {
      if (state.editingVs === name) resetVsForm();
    };
    if (await deleteDefinition(`virtual server "${name}"`, `virtual-servers/${segment(name)}`, 'Its endpoint then answers 404.', button, done)) {
      once('virtual-servers', refreshVirtualServers);
    }
  }

  function resetVsForm() {
    state.editingVs = null;
    formMode('vs-form', 'vs', 'virtual server', null);
  }

  function lines(text) {
    return text.split('\n').map((l) => l.trim()).filter(Boolean);
  }

  function startVsEdit(name) {
    const v = state.virtualServers.get(name);
    if (!v) return;
    resetVsForm();
    state.editingVs = name;
    $('vs-name').value = v.name;
    $('vs-title').value = v.title || '';
    $('vs-description').value = v.description || '';
    $('vs-instructions').value = v.instructions || '';
    for (const [key] of VS_KINDS) $(`vs-${key}`).value = (Array.isArray(v[key]) ? v[key] : []).join('\n');
    $('vs-shape').value = v.shape && Object.keys(v.shape).length ? JSON.stringify(v.shape, null, 2) : '';
    $('vs-progressive').checked = Boolean(v.progressive_discovery);
    formMode('vs-form', 'vs', 'virtual server', name);
    $('vs-form').scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    $('vs-tools').focus();
  }

  /** The definition the form describes (the admin API checks it in full). */
  function vsFromForm() {
    const name = $('vs-name').value.trim();
    if (!name) throw new Error('Give the virtual server a name.');
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new Error('The name is 1-64 letters, digits, "_" or "-".');
    const def = { name };
    for (const key of ['title', 'description', 'instructions']) {
      const value = $(`vs-${key}`).value.trim();
      if (value) def[key] = value;
    }
    for (const [key] of VS_KINDS) def[key] = lines($(`vs-${key}`).value);
    def.progressive_discovery = $('vs-progressive').checked;
    const shape = $('vs-shape').value.trim();
    if (shape) {
      let parsed;
      try {
        parsed = JSON.parse(shape);
      } catch (err) {
        throw new Error(`Tool shapes are not JSON: ${err.message}`);
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('Tool shapes are a JSON object: tool name → shape.');
      def.shape = parsed;
    }
    return def;
  }

  function onVsSubmit(event) {
    event.preventDefault();
    submitDefinition({
      prefix: 'vs',
      collection: 'virtual-servers',
      label: 'Virtual server',
      read: vsFromForm,
      editing: () => state.editingVs,
      reset: resetVsForm,
      refresh: refreshVirtualServers,
    });
  }

  // ------------------------------------------------------------- sessions

  /** Where a session's client talks to, as a path. */
  function endpointOf(endpoint) {
    if (endpoint === 'federated') return 'federated /mcp';
    if (typeof endpoint === 'string' && endpoint.startsWith('v/')) return `/${endpoint}`;
    return `/u/${endpoint}`;
  }

  const SESSION_COLS = ['id', 'principal', 'endpoint', 'transport', 'protocol', 'age', 'idle', 'uses', 'upstreams', 'actions'];

  // The most recently used sessions, a page of them: a node may hold thousands.
  const SESSION_PAGE = 500;

  async function refreshSessions() {
    const data = await api('GET', `sessions?limit=${SESSION_PAGE}`);
    const list = Array.isArray(data.sessions) ? data.sessions : [];
    const total = isNum(data.total) ? data.total : list.length;
    syncRows($('sessions-body'), list, (s) => s.id, createSessionRow, updateSessionRow, 'No client sessions on this node.', SESSION_COLS.length);
    setText($('sessions-count'), total > list.length
      ? `${list.length} most recently used of ${total} on this node`
      : `${total} on this node`);
  }

  function createSessionRow(s) {
    const row = rowWith({ 'data-testid': 'session-row', 'data-session-id': s.id }, SESSION_COLS);
    const c = row.cellsByName;
    c.id.append(el('span', { class: 'mono', text: shortId(s.id), title: s.id }));
    c.actions.append(el('button', { type: 'button', class: 'btn btn-small btn-danger', text: 'Evict', 'data-action': 'evict', 'data-testid': 'session-evict', title: 'End this client session and its upstream sessions' }));
    return row;
  }

  function updateSessionRow(row, s) {
    const c = row.cellsByName;
    setText(c.principal, s.principal || '–');
    setText(c.endpoint, endpointOf(s.endpoint));
    setText(c.transport, s.transport || '–');
    setText(c.protocol, s.protocol_version || '–');
    setText(c.age, fmtDuration(s.age_secs));
    c.age.title = isNum(s.created_ms) ? `since ${new Date(s.created_ms).toLocaleString('en-GB')}` : '';
    setText(c.idle, fmtDuration(s.idle_secs));
    setText(c.uses, fmtCount(s.uses));
    const ups = Array.isArray(s.upstreams) ? s.upstreams : [];
    row.dataset.upstreams = ups.map((u) => u.upstream).join(' ');
    fill(c.upstreams, JSON.stringify(ups), () => {
      if (!ups.length) return [el('span', { class: 'muted', text: 'none yet' })];
      return ups.map((u) =>
        el(
          'span',
          { class: 'chip', 'data-upstream': u.upstream, title: [u.protocol_version, u.transport && transportName(u.transport)].filter(Boolean).join(', ') },
          el('span', { class: 'chip-name', text: u.upstream }),
          el('span', { class: 'chip-era', text: u.era || '?' }),
        ),
      );
    });
  }

  async function onSessionsClick(event) {
    const button = event.target.closest('button[data-action="evict"]');
    if (!button) return;
    const row = button.closest('tr');
    const id = row && row.dataset.sessionId;
    if (!id) return;
    button.disabled = true;
    try {
      await api('DELETE', `sessions/${segment(id)}`);
      row.remove();
      message($('console-error'), '');
      notice(`Session ${shortId(id)} evicted.`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        row.remove();
        notice(`Session ${shortId(id)} had already ended.`);
      } else {
        reportError(err);
        button.disabled = false;
      }
    }
    once('sessions', refreshSessions);
  }

  // -------------------------------------------------------------- cluster

  async function refreshCluster() {
    let data;
    try {
      data = await api('GET', 'cluster');
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        show($('cluster-single'), true);
        show($('cluster-table-wrap'), false);
        setText($('cluster-count'), '');
        return;
      }
      throw err;
    }
    show($('cluster-single'), false);
    show($('cluster-table-wrap'), true);
    const nodes = Array.isArray(data.nodes) ? data.nodes : [];
    const self = data.node;
    syncRows(
      $('cluster-body'),
      nodes,
      (n) => n.id,
      (n) => {
        return rowWith({ 'data-testid': 'cluster-row', 'data-node': n.id }, ['id', 'address', 'state', 'silent']);
      },
      (row, n) => {
        const c = row.cellsByName;
        const mine = n.id === self;
        row.classList.toggle('self', mine);
        fill(c.id, `${n.id}|${mine}`, () => [el('span', { class: 'mono', text: n.id }), mine ? badge('this node', 'api') : null].filter(Boolean));
        setText(c.address, n.address || '–');
        const st = n.draining ? 'draining' : n.alive ? 'alive' : 'silent';
        fill(c.state, st, () => [badge(st, st === 'alive' ? 'ok' : st === 'draining' ? 'warn' : 'bad')]);
        setText(c.silent, isNum(n.silent_ms) ? `${fmtDuration(n.silent_ms / 1000)} ago` : '–');
      },
      'The store knows no nodes.',
      4,
    );
    const alive = nodes.filter((n) => n.alive).length;
    setText($('cluster-count'), `${nodes.length} nodes, ${alive} alive`);
  }

  // ---------------------------------------------------------------- start

  function init() {
    $('login-form').addEventListener('submit', onLoginSubmit);
    $('sign-out').addEventListener('click', () => signOut(''));
    for (const view of VIEWS) $(`tab-${view}`).addEventListener('click', () => selectView(view));
    window.addEventListener('hashchange', () => {
      if (state.token) selectView(viewFromHash());
    });
    $('upstreams-body').addEventListener('click', onRowAction(startEdit, deleteUpstream));
    $('sessions-body').addEventListener('click', onSessionsClick);
    $('upstream-form').addEventListener('submit', onUpstreamSubmit);
    $('vs-body').addEventListener('click', onRowAction(startVsEdit, deleteVirtualServer));
    $('vs-form').addEventListener('submit', onVsSubmit);
    $('vs-cancel').addEventListener('click', resetVsForm);
    $('up-transport').addEventListener('change', onTransportChange);
    $('up-cancel').addEventListener('click', resetUpstreamForm);
    $('console-error').addEventListener('click', () => message($('console-error'), ''));
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(drawCharts, 100);
    });
    onTransportChange();

    const saved = readSavedToken();
    if (!saved) {
      showLogin('');
      return;
    }
    signIn(saved).then((problem) => {
      if (problem) {
        saveToken(null);
        showLogin(problem === 'Wrong token.' ? '' : problem);
      }
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
