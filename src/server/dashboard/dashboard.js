// The converge dashboard: plain JavaScript on the documented API (docs/api/openapi.yaml).
// The page holds no data of its own. A token, if the server needs one, is asked for once,
// kept in this tab's sessionStorage and sent as `Authorization: Bearer` on every call.
// Live updates: the overview's counters come from GET /v1/overview/stream (Server-Sent Events,
// read with fetch() and a stream reader: EventSource cannot send the Authorization header);
// the rest of the overview, and every other page, is fetched again every REFRESH_MS. If the
// stream fails the overview falls back to polling and the stream is tried again later.
'use strict';

const REFRESH_MS = 3000;
const LIVE_MS = 1000;             // interval_ms asked of the overview stream
const LIVE_POLL_EVERY = 5;        // while the stream is live, the overview polls every 5th tick
const LIVE_RETRY_MS = 30000;      // after a failed stream, polling only for this long
const TOKEN_KEY = 'converge.token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  route: [],
  open: new Set(),          // keys of the <details> the user opened (kept across refreshes)
  rates: null,              // last /metrics sample: {at, published, delivered}
  rateText: {published: '–', delivered: '–'},
  generation: 0,            // bumps on navigation: a stale render is dropped
  busy: false,
  notice: '',
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One API call. `body` (an object) is sent as JSON. Returns the parsed JSON (or text for
// non-JSON replies); throws ApiError for an error reply.
async function api(method, path, body) {
  const headers = {};
  if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
  const init = {method, headers};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const type = res.headers.get('Content-Type') || '';
  const payload = type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) {
    const code = payload && payload.code ? payload.code : String(res.status);
    const message = payload && payload.message ? payload.message : res.statusText;
    throw new ApiError(res.status, code, message);
  }
  return payload;
}

const enc = encodeURIComponent;

// Builds an element: h('td', {class: 'num'}, 'text', childNode, ...). Text is never parsed
// as HTML.
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function table(headers, rows, emptyText, opts) {
  if (rows.length === 0) return h('p', {class: 'muted'}, emptyText || 'None.');
  const labels = headers.map((x) => (Array.isArray(x) ? x[0] : x));
  const head = h('tr', {}, headers.map((x) => {
    const [label, cls] = Array.isArray(x) ? x : [x, null];
    return h('th', {class: cls}, label);
  }));
  // Each cell knows its column: a wide table is shown on a phone as one card per row, each
  // cell with its label (dashboard.css, .stack).
  for (const row of rows) {
    [...row.children].forEach((td, i) => { if (labels[i]) td.dataset.label = labels[i]; });
  }
  const stack = opts && opts.stack !== undefined ? opts.stack : headers.length > 5;
  const cls = stack ? 'stack' : null;
  return h('div', {class: 'table-wrap'},
           h('table', {class: cls}, h('thead', {}, head), h('tbody', {}, rows)));
}

function num(v, props) { return h('td', Object.assign({class: 'num'}, props || {}), v === undefined ? '' : v); }
function card(label, value, test) {
  return h('div', {class: 'card'}, h('div', {class: 'label'}, label),
           h('div', {class: 'value', 'data-test': test}, value));
}
function when(ms) { return ms ? new Date(ms).toLocaleString() : ''; }
function whenMicros(us) { return us ? new Date(Math.floor(us / 1000)).toLocaleString() : ''; }
function json(v) { return JSON.stringify(v, null, 2); }

// A <details> whose open state survives the periodic refresh.
function details(key, summary, ...body) {
  const el = h('details', {open: state.open.has(key)}, h('summary', {}, summary), ...body);
  el.addEventListener('toggle', () => {
    if (el.open) state.open.add(key); else state.open.delete(key);
  });
  return el;
}

function topicEvents(t) {
  return (t.partition_offsets || []).reduce((n, p) => n + (p.end_offset - p.start_offset), 0);
}

function setStatus(text, isError) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = isError ? 'status error' : 'status';
}

function showTokenForm(show) {
  document.getElementById('token-form').hidden = !show;
  document.getElementById('main').hidden = show;
  if (show) document.getElementById('token').focus();
}

// A section that failed (403 for this token, a disabled module) says so in place.
function failure(err) {
  if (err instanceof ApiError && err.status === 403) {
    return h('p', {class: 'muted'}, 'Not allowed with this token (' + err.message + ').');
  }
  if (err instanceof ApiError && err.status === 404) {
    return h('p', {class: 'muted'}, 'Not available on this server (' + err.message + ').');
  }
  return h('p', {class: 'error-box'}, String(err.message || err));
}

async function optional(promise) {
  try { return {value: await promise}; } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw err;
    return {error: err};
  }
}

// Every topic with its groups (GET /v1/topics, then each topic's groups).
async function topicsWithGroups() {
  const {topics} = await api('GET', '/v1/topics');
  const groups = await Promise.all(topics.map((t) =>
    optional(api('GET', '/v1/topics/' + enc(t.name) + '/groups'))));
  return topics.map((t, i) => ({topic: t, groups: groups[i].value ? groups[i].value.groups : []}));
}

// Publish and delivery rates from two samples of /metrics (events per second).
async function sampleRates() {
  const text = await api('GET', '/metrics');
  let published = 0, delivered = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('converge_events_published_total')) published += Number(line.split(' ').pop());
    else if (line.startsWith('converge_events_delivered_total')) delivered += Number(line.split(' ').pop());
  }
  const now = performance.now();
  const prev = state.rates;
  if (prev && now > prev.at) {
    const secs = (now - prev.at) / 1000;
    state.rateText.published = ((published - prev.published) / secs).toFixed(1) + '/s';
    state.rateText.delivered = ((delivered - prev.delivered) / secs).toFixed(1) + '/s';
  }
  state.rates = {at: now, published, delivered};
}

// ---------------------------------------------------------------------------------------
// The overview stream.

const live = {controller: null, ok: false, failedAt: -Infinity, prev: null, ticks: 0};

function stopLive() {
  if (live.controller) live.controller.abort();
  live.controller = null;
  live.ok = false;
  live.prev = null;
}

// Shows one `overview` event in the overview's cards (if the overview is on show).
function showLive(o) {
  let rate = null;
  if (live.prev && o.at_ms > live.prev.at_ms) {
    const secs = (o.at_ms - live.prev.at_ms) / 1000;
    rate = ((o.published - live.prev.published) / secs).toFixed(1) + '/s';
    state.rateText.published = rate;
  }
  live.prev = o;
  if (state.route[0] !== 'overview') return;
  const set = (test, value) => {
    const el = document.querySelector('#main [data-test=' + test + ']');
    if (!el) return;
    el.textContent = String(value);
    el.dataset.source = 'stream';
  };
  set('topic-count', o.topics.length);
  set('events-total', o.events);
  if (rate !== null) set('publish-rate', rate);
  document.getElementById('main').dataset.live = 'stream';
  setStatus('updated ' + new Date(o.at_ms).toLocaleTimeString() + ' · live');
}

// Opens the stream unless it is open or failed lately; returns at once (it runs until
// stopLive(), a server shutdown or an error, then leaves the overview to polling).
async function startLive() {
  if (live.controller || performance.now() - live.failedAt < LIVE_RETRY_MS) return;
  const controller = new AbortController();
  live.controller = controller;
  const headers = {};
  if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
  try {
    const res = await fetch('/v1/overview/stream?interval_ms=' + LIVE_MS,
                            {headers, signal: controller.signal, cache: 'no-store'});
    if (!res.ok || !res.body) throw new Error('overview stream: ' + res.status);
    live.ok = true;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += decoder.decode(value, {stream: true}).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let event = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
        }
        if (event === 'overview' && data) showLive(JSON.parse(data));
      }
    }
  } catch (err) {
    // Refused, aborted or cut: the overview is polled (below).
  } finally {
    if (live.controller === controller) {
      live.controller = null;
      live.ok = false;
      live.prev = null;
      live.failedAt = performance.now();
      delete document.getElementById('main').dataset.live;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Pages: each returns the nodes to show.

const pages = {};

pages.overview = async () => {
  const [all, rates, sagas, relays] = await Promise.all([
    topicsWithGroups(), optional(sampleRates()), optional(api('GET', '/v1/sagas')),
    optional(api('GET', '/v1/relays'))]);
  let events = 0, lag = 0, groups = 0, dead = 0;
  const rows = [];
  for (const {topic, groups: gs} of all) {
    events += topicEvents(topic);
    for (const g of gs) {
      groups++;
      lag += g.lag;
      dead += g.dead_letters - g.dead_letters_replayed;
      rows.push(h('tr', {},
        h('td', {}, h('a', {href: '#/topics/' + enc(topic.name)}, topic.name)),
        h('td', {}, g.name),
        num(g.consumers ? g.consumers.length : g.members),
        num(g.lag, {class: g.lag > 1000 ? 'num lag-high' : 'num',
                    'data-test': 'group-lag', 'data-topic': topic.name, 'data-group': g.name}),
        num(g.dead_letters - g.dead_letters_replayed)));
    }
  }
  const running = sagas.value ? sagas.value.sagas.filter((s) => s.state === 'running' ||
                                                             s.state === 'compensating').length : '–';
  const relayDead = relays.value ? relays.value.dead_letters.pending : '–';
  return [
    h('h1', {}, 'Overview'),
    h('div', {class: 'cards'},
      card('Topics', all.length, 'topic-count'),
      card('Events retained', events, 'events-total'),
      card('Publish rate', rates.error ? '–' : state.rateText.published, 'publish-rate'),
      card('Delivery rate', rates.error ? '–' : state.rateText.delivered, 'deliver-rate'),
      card('Groups', groups, 'group-count'),
      card('Total lag', lag, 'lag-total'),
      card('Dead letters', dead, 'dead-total'),
      card('Relay dead letters', relayDead, 'relay-dead'),
      card('Sagas in flight', running, 'sagas-running')),
    h('h2', {}, 'Consumer groups'),
    table(['Topic', 'Group', ['Members', 'num'], ['Lag', 'num'], ['Dead letters', 'num']], rows,
          'No consumer groups yet.'),
  ];
};

pages.topics = async (name) => {
  if (name) return topicPage(name);
  const all = await topicsWithGroups();
  const rows = all.map(({topic: t, groups}) => h('tr', {},
    h('td', {}, h('a', {href: '#/topics/' + enc(t.name)}, t.name)),
    num(t.partitions),
    num(topicEvents(t), {'data-test': 'topic-events', 'data-topic': t.name}),
    num((t.partition_offsets || []).reduce((n, p) => n + p.size_bytes, 0)),
    num(groups.length),
    h('td', {}, t.durability),
    num(t.retention_max_age_ms ? t.retention_max_age_ms / 1000 + ' s' : '–')));
  return [h('h1', {}, 'Topics'),
          table(['Topic', ['Partitions', 'num'], ['Events', 'num'], ['Bytes', 'num'],
                 ['Groups', 'num'], 'Durability', ['Max age', 'num']], rows, 'No topics yet.')];
};

async function topicPage(name) {
  const t = await api('GET', '/v1/topics/' + enc(name));
  const parts = t.partition_offsets.map((p) => h('tr', {},
    num(p.partition), num(p.start_offset), num(p.end_offset),
    num(p.end_offset - p.start_offset, {'data-test': 'partition-events', 'data-partition': p.partition}),
    num(p.size_bytes)));
  const out = [h('h1', {}, 'Topic ', h('code', {}, t.name)),
               h('p', {class: 'muted'}, t.partitions + ' partitions, durability ' + t.durability),
               h('h2', {}, 'Partitions'),
               table([['Partition', 'num'], ['Start', 'num'], ['End', 'num'], ['Events', 'num'],
                      ['Bytes', 'num']], parts),
               h('h2', {}, 'Groups'), groupTable([{topic: t, groups: t.groups || []}])];
  // The latest events of each partition (GET /v1/topics/{topic}/events).
  out.push(h('h2', {}, 'Latest events'));
  for (const p of t.partition_offsets) {
    if (p.end_offset === p.start_offset) continue;
    const from = Math.max(p.start_offset, p.end_offset - 10);
    const key = 'events:' + name + ':' + p.partition;
    const body = h('div', {});
    const d = details(key, 'Partition ' + p.partition + ': offsets ' + from + '–' + (p.end_offset - 1), body);
    if (state.open.has(key)) {
      const r = await optional(api('GET', '/v1/topics/' + enc(name) + '/events?partition=' + p.partition +
                                   '&from_offset=' + from + '&limit=10'));
      body.append(r.error ? failure(r.error) :
        table([['Offset', 'num'], 'Time', 'Event'], r.value.events.map((e) => h('tr', {},
          num(e.offset), h('td', {}, when(e.timestamp_ms)), h('td', {}, h('pre', {}, json(e.event)))))));
    } else {
      d.addEventListener('toggle', () => { if (d.open) refresh(); }, {once: true});
    }
    out.push(d);
  }
  return out;
}

// One row per group: members, lag, dead letters.
function groupTable(all) {
  const rows = [];
  for (const {topic, groups} of all) {
    for (const g of groups) {
      rows.push(h('tr', {},
        h('td', {}, h('a', {href: '#/topics/' + enc(topic.name)}, topic.name)),
        h('td', {}, g.name),
        num(g.consumers ? g.consumers.length : g.members),
        num(g.lag, {class: g.lag > 1000 ? 'num lag-high' : 'num',
                    'data-test': 'group-lag', 'data-topic': topic.name, 'data-group': g.name}),
        num(g.dead_letters - g.dead_letters_replayed),
        num(g.max_deliveries), num(g.generation === undefined ? '–' : g.generation)));
    }
  }
  return table(['Topic', 'Group', ['Members', 'num'], ['Lag', 'num'], ['Dead letters', 'num'],
                ['Max deliveries', 'num'], ['Generation', 'num']], rows, 'No consumer groups.');
}

// A group in full: its members (the partitions each owns) and its partitions.
function groupSection(topic, g) {
  const members = (g.consumers || []).map((c) => h('tr', {'data-member': c.consumer},
    h('td', {}, c.consumer), h('td', {}, (c.partitions || []).join(', ')), num(c.in_flight),
    num(c.idle_ms)));
  const owners = {};
  for (const a of g.assignments || []) owners[a.partition] = a.consumer;
  const parts = g.partitions.map((p) => h('tr', {},
    num(p.partition), num(p.committed_offset), num(p.end_offset), num(p.lag), num(p.in_flight),
    num(p.delayed), h('td', {}, owners[p.partition] || '–')));
  return h('section', {class: 'group', 'data-group': topic.name + '/' + g.name},
    h('h2', {}, topic.name + ' / ' + g.name),
    h('p', {class: 'muted'}, 'lag ' + g.lag + ' · lease ' + g.lease_ms + ' ms · session ' +
      g.session_timeout_ms + ' ms · dead letters to ' + (g.dead_letter_topic || '–')),
    table(['Consumer', 'Partitions', ['In flight', 'num'], ['Idle ms', 'num']], members,
          'No members.'),
    h('div', {class: 'gap'}),
    table([['Partition', 'num'], ['Committed', 'num'], ['End', 'num'], ['Lag', 'num'],
           ['In flight', 'num'], ['Delayed', 'num'], 'Owner'], parts, '', {stack: false}));
}

pages.groups = async () => {
  const all = await topicsWithGroups();
  const out = [h('h1', {}, 'Consumer groups'), groupTable(all)];
  for (const {topic, groups} of all) for (const g of groups) out.push(groupSection(topic, g));
  return out;
};

// The outcome of the last button pressed on this page.
function noticeBox() {
  const failed = state.notice.startsWith('Failed');
  return h('p', {class: failed ? 'error-box' : 'notice', 'data-test': 'notice'}, state.notice);
}

// A button that runs `action`, then shows its outcome and refreshes the page.
function actionButton(label, cls, test, action) {
  const b = h('button', {type: 'button', class: cls, 'data-test': test}, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      state.notice = await action();
    } catch (err) {
      state.notice = 'Failed: ' + (err.message || err);
    }
    await refresh();
  });
  return b;
}

pages['dead-letters'] = async () => {
  const all = await topicsWithGroups();
  const out = [h('h1', {}, 'Dead letters')];
  if (state.notice) out.push(noticeBox());
  out.push(h('h2', {}, 'Consumer groups'));
  let any = false;
  for (const {topic, groups} of all) {
    for (const g of groups) {
      if (g.dead_letters === 0) continue;
      any = true;
      const base = '/v1/topics/' + enc(topic.name) + '/groups/' + enc(g.name) + '/dead-letters';
      const r = await optional(api('GET', base + '?limit=100'));
      out.push(h('h2', {}, topic.name + ' / ' + g.name));
      if (r.error) { out.push(failure(r.error)); continue; }
      const rows = r.value.dead_letters.map((d) => {
        const range = {from_offset: d.dead_letter_offset, to_offset: d.dead_letter_offset + 1};
        const id = topic.name + '/' + g.name + '/' + d.dead_letter_offset;
        return h('tr', {'data-dead-letter': id},
          num(d.dead_letter_offset), num(d.partition + ':' + d.offset), num(d.delivery_count),
          h('td', {}, d.reason, d.last_error && !d.reason.includes(d.last_error) ?
            h('div', {class: 'muted'}, d.last_error) : null),
          h('td', {}, when(d.dead_lettered_at_ms)),
          h('td', {}, d.replayed ? 'replayed' : 'pending'),
          h('td', {}, h('div', {class: 'actions'},
            details('dl:' + id, 'Inspect', h('pre', {}, json(d.event))),
            d.replayed ? null : actionButton('Replay', '', 'replay', async () => {
              const res = await api('POST', base + '/replay', range);
              return 'Replayed ' + res.replayed + ' from ' + topic.name + '/' + g.name + '.';
            }),
            d.replayed ? null : actionButton('Discard', 'secondary', 'discard', async () => {
              if (!confirm('Discard this dead letter?')) return '';
              await api('POST', base + '/discard', range);
              return 'Discarded.';
            }))));
      });
      out.push(table([['#', 'num'], ['Origin', 'num'], ['Deliveries', 'num'], 'Reason', 'When',
                      'State', ''], rows));
    }
  }
  if (!any) out.push(h('p', {class: 'muted'}, 'No group has dead letters.'));

  out.push(h('h2', {}, 'Outbox relays'));
  const rl = await optional(api('GET', '/v1/relays/dead-letters?limit=100'));
  if (rl.error) {
    out.push(failure(rl.error));
  } else {
    const rows = rl.value.dead_letters.map((d) => {
      const range = {from_offset: d.offset, to_offset: d.offset + 1};
      return h('tr', {'data-relay-dead-letter': d.offset},
        num(d.offset), h('td', {}, d.relay || ''), h('td', {}, d.topic || ''), h('td', {}, d.id),
        h('td', {}, d.reason || d.error || ''), h('td', {}, when(d.dead_lettered_at_ms)),
        h('td', {}, d.state),
        h('td', {}, h('div', {class: 'actions'},
          details('rdl:' + d.offset, 'Inspect', h('pre', {}, json(d.event || d.row))),
          d.state !== 'pending' ? null : actionButton('Replay', '', 'relay-replay', async () => {
            const res = await api('POST', '/v1/relays/dead-letters/replay', range);
            return 'Replayed ' + (res.replayed || 0) + ' relay dead letter(s).';
          }),
          d.state !== 'pending' ? null : actionButton('Discard', 'secondary', 'relay-discard', async () => {
            if (!confirm('Discard this relay dead letter?')) return '';
            await api('POST', '/v1/relays/dead-letters/discard', range);
            return 'Discarded.';
          }))));
    });
    out.push(table([['#', 'num'], 'Relay', 'Topic', 'Id', 'Reason', 'When', 'State', ''], rows,
                   'No relay dead letters (' + rl.value.dead_letter_topic + ').'));
  }
  return out;
};

function stateCell(s, props) { return h('td', Object.assign({class: 'state-' + s}, props || {}), s); }

pages.sagas = async (id) => {
  if (id) return sagaPage(id);
  const [sagas, timers, defs] = await Promise.all([
    api('GET', '/v1/sagas'), optional(api('GET', '/v1/saga-timers')),
    optional(api('GET', '/v1/saga-definitions'))]);
  const rows = sagas.sagas.map((s) => h('tr', {},
    h('td', {}, h('a', {href: '#/sagas/' + enc(s.id)}, s.id)), h('td', {}, s.definition),
    stateCell(s.state, {'data-test': 'saga-state', 'data-saga': s.id}),
    num(s.step), h('td', {}, s.stuck ? 'stuck' : 'no'), h('td', {}, whenMicros(s.started_micros)),
    h('td', {}, whenMicros(s.updated_micros))));
  const out = [h('h1', {}, 'Sagas'),
               table(['Id', 'Definition', 'State', ['Step', 'num'], 'Stuck', 'Started', 'Updated'], rows,
                     'No sagas.'),
               h('h2', {}, 'Timers')];
  out.push(timers.error ? failure(timers.error) : timerTable(timers.value.timers));
  out.push(h('h2', {}, 'Definitions'));
  out.push(defs.error ? failure(defs.error) : table(['Name', ['Version', 'num'], 'Steps'],
    defs.value.definitions.map((d) => h('tr', {}, h('td', {}, d.name), num(d.version),
      h('td', {}, (d.steps || []).map((s) => s.name).join(' → ')))), 'No definitions.'));
  return out;
};

// A saga's timers; on its own page each with Fire now (rescheduled to now) and Cancel.
function timerTable(timers, withActions) {
  return table(['Saga', 'Kind', ['Step', 'num'], 'Due', withActions ? '' : null].filter((x) => x !== null),
    timers.map((t) => {
      const path = '/v1/sagas/' + enc(t.saga_id) + '/timers/' + enc(t.kind);
      return h('tr', {'data-timer': t.kind},
        h('td', {}, h('a', {href: '#/sagas/' + enc(t.saga_id)}, t.saga_id)), h('td', {}, t.kind),
        num(t.step), h('td', {}, whenMicros(t.due_micros)),
        withActions ? h('td', {}, h('div', {class: 'actions'},
          actionButton('Fire now', 'secondary', 'fire-timer', async () => {
            if (!confirm('Fire the ' + t.kind + ' timer of ' + t.saga_id + ' now?')) return '';
            await api('PUT', path, {due_micros: Date.now() * 1000});
            return 'Timer ' + t.kind + ' rescheduled to now.';
          }),
          actionButton('Cancel', 'secondary', 'cancel-timer', async () => {
            if (!confirm('Cancel the ' + t.kind + ' timer of ' + t.saga_id + '?')) return '';
            await api('DELETE', path);
            return 'Timer ' + t.kind + ' cancelled.';
          }))) : null);
    }), 'No timers.');
}

async function sagaPage(id) {
  const s = await api('GET', '/v1/sagas/' + enc(id));
  const out = [h('h1', {}, 'Saga ', h('code', {}, s.id))];
  if (state.notice) out.push(noticeBox());
  out.push(h('div', {class: 'toolbar'},
    h('span', {}, s.definition + ' v' + s.version + ': '),
    h('strong', {class: 'state-' + s.state, 'data-test': 'saga-state'}, s.state),
    s.stuck ? h('span', {class: 'pill'}, 'stuck') : null,
    s.state === 'running' ? actionButton('Cancel saga', 'danger', 'cancel-saga', async () => {
      if (!confirm('Cancel saga ' + s.id + '? Its completed steps are compensated.')) return '';
      const res = await api('POST', '/v1/sagas/' + enc(s.id) + '/cancel',
                            {reason: 'cancelled from the dashboard'});
      return 'Cancelled: ' + (res.state || 'compensating') + '.';
    }) : null));
  if (s.error) out.push(h('p', {class: 'error-box'}, s.error));
  out.push(h('h2', {}, 'Steps'), table(['#', 'Step', 'State', ['Attempts', 'num']],
    (s.steps || []).map((st, i) => h('tr', {}, num(i), h('td', {}, st.name), stateCell(st.state),
                                      num(st.attempts)))));
  out.push(h('h2', {}, 'Timers'), timerTable(s.timers || [], true));
  out.push(h('h2', {}, 'History'), table(['Time', 'Event', ['Step', 'num'], ['Attempt', 'num'], 'Detail'],
    (s.history || []).map((e) => h('tr', {}, h('td', {}, whenMicros(e.time_micros)),
      h('td', {}, e.event), num(e.step), num(e.attempt), h('td', {}, e.detail || '')))));
  if (s.history_dropped) out.push(h('p', {class: 'muted'}, s.history_dropped + ' older entries dropped.'));
  out.push(details('saga-data:' + s.id, 'Input', h('pre', {}, json(s.data))));
  return out;
}

pages.store = async (collection, key) => {
  if (collection && key !== undefined) return documentPage(collection, key);
  if (collection) return collectionPage(collection);
  // The list names the collections; each one's settings and size come from its own route.
  const {collections: names} = await api('GET', '/v1/collections');
  const collections = await Promise.all(names.map(async (n) => {
    const r = await optional(api('GET', '/v1/collections/' + enc(n)));
    return r.value || {name: n};
  }));
  const rows = collections.map((c) => h('tr', {},
    h('td', {}, h('a', {href: '#/store/' + enc(c.name)}, c.name)), h('td', {}, c.owner),
    h('td', {}, (c.writers || []).join(', ')), num(c.documents), num(c.bytes),
    num(c.default_ttl_ms ? c.default_ttl_ms / 1000 + ' s' : '–')));
  return [h('h1', {}, 'Store'), table(['Collection', 'Owner', 'Writers', ['Documents', 'num'],
                                       ['Bytes', 'num'], ['Default TTL', 'num']], rows,
                                      'No collections.')];
};

async function collectionPage(name) {
  const page = await api('GET', '/v1/collections/' + enc(name) + '/docs?limit=100');
  const rows = page.documents.map((d) => h('tr', {},
    h('td', {}, h('a', {href: '#/store/' + enc(name) + '/' + enc(d.key)}, d.key)), num(d.version),
    h('td', {}, d.expires_at_ms ? when(d.expires_at_ms) : ''),
    h('td', {}, details('doc:' + name + '/' + d.key, 'Value', h('pre', {}, json(d.value))))));
  const out = [h('h1', {}, 'Collection ', h('code', {}, name)),
               table(['Key', ['Version', 'num'], 'Expires', ''], rows, 'No documents.')];
  if (page.next_page_token) out.push(h('p', {class: 'muted'}, 'Showing the first 100 documents.'));
  return out;
}

async function documentPage(name, key) {
  const path = key.split('/').map(enc).join('/');
  const doc = await api('GET', '/v1/collections/' + enc(name) + '/docs/' + path);
  return [h('h1', {}, h('a', {href: '#/store/' + enc(name)}, name), ' / ', h('code', {}, key)),
          h('pre', {}, json(doc))];
}

pages.relays = async () => {
  const r = await api('GET', '/v1/relays');
  const rows = r.relays.map((x) => h('tr', {},
    h('td', {}, x.name), h('td', {}, x.active ? 'active' : 'standby'), num(x.buckets),
    num(x.batches), num(x.published), num(x.dead_lettered), num(x.failures),
    h('td', {}, x.last_error || '')));
  return [h('h1', {}, 'Outbox relays'),
          h('p', {class: 'muted'}, r.enabled ? 'Relays run in this server.' :
            'No relays run in this server (no relays: section).'),
          h('div', {class: 'cards'},
            card('Dead letters', r.dead_letters.total), card('Pending', r.dead_letters.pending),
            card('Replayed', r.dead_letters.replayed), card('Discarded', r.dead_letters.discarded)),
          h('h2', {}, 'Relays'),
          table(['Relay', 'State', ['Buckets', 'num'], ['Batches', 'num'], ['Published', 'num'],
                 ['Dead-lettered', 'num'], ['Failures', 'num'], 'Last error'], rows, 'No relays.')];
};

// ---------------------------------------------------------------------------------------
// Navigation and refresh

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '');
  const route = parts.map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
  if (route.length === 0 || !pages[route[0]]) return ['overview'];
  // A store key keeps its slashes: #/store/<collection>/<key with slashes>.
  if (route[0] === 'store' && route.length > 3) return ['store', route[1], route.slice(2).join('/')];
  return route;
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const gen = state.generation;
  const [page, ...args] = state.route;
  try {
    const nodes = await pages[page](...args);
    if (gen !== state.generation) return;
    const main = document.getElementById('main');
    // Keep the reader's place: the refresh replaces the content, not the scroll position.
    const y = window.scrollY;
    main.replaceChildren(...nodes);
    window.scrollTo(0, y);
    main.dataset.page = page;
    main.dataset.loaded = String(Number(main.dataset.loaded || 0) + 1);
    showTokenForm(false);
    if (page === 'overview' && live.ok) {
      main.dataset.live = 'stream';
      setStatus('updated ' + new Date().toLocaleTimeString() + ' · live');
    } else {
      setStatus('updated ' + new Date().toLocaleTimeString() + ' · every ' + REFRESH_MS / 1000 + ' s');
    }
  } catch (err) {
    if (gen !== state.generation) return;
    if (err instanceof ApiError && err.status === 401) {
      setStatus(state.token ? 'token refused' : 'token needed', true);
      showTokenForm(true);
    } else {
      const main = document.getElementById('main');
      main.replaceChildren(h('h1', {}, page), failure(err));
      setStatus('error', true);
    }
  } finally {
    state.busy = false;
  }
}

function navigate() {
  state.route = parseRoute();
  state.generation++;
  state.notice = '';
  state.busy = false;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === state.route[0]);
  }
  if (state.route[0] === 'overview') startLive(); else stopLive();
  refresh();
}

document.getElementById('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  state.token = document.getElementById('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  state.generation++;
  state.busy = false;
  stopLive();
  live.failedAt = -Infinity;
  if (state.route[0] === 'overview') startLive();
  refresh();
});
document.getElementById('logout').addEventListener('click', () => {
  state.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  document.getElementById('token').value = '';
  showTokenForm(true);
  setStatus('token cleared');
});
window.addEventListener('hashchange', navigate);
setInterval(() => {
  if (document.visibilityState !== 'visible' || !document.getElementById('token-form').hidden) return;
  if (state.route[0] === 'overview') {
    startLive();
    // The stream carries the counters; groups, dead letters and sagas are polled less often.
    if (live.ok && ++live.ticks % LIVE_POLL_EVERY !== 0) return;
  }
  refresh();
}, REFRESH_MS);
navigate();
