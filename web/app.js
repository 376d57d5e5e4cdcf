// app.js -- the agentwire demo page. Plain ES module on top of the gateway's
// JavaScript client (served by the binary at /agentwire.js); no build step.
//
// State: threads (by thread_id) hold runs (by run_id). A run is created by the
// ack of a message this tab sent, by agent_started, or by any event with an
// unknown run_id (runs started in another tab, or published by an agent through
// the HTTP API). Every run and thread keeps its DOM element, updated as events
// arrive, whether or not its thread is on screen.

import { AgentwireClient, decodeJwt } from '/agentwire.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SESSION_KEY = 'agentwire.demo.session'; // sessionStorage: this tab stays signed in on reload
const LAST_NAME_KEY = 'agentwire.demo.lastName'; // localStorage: prefills the sign-in field
const DEV_TOKEN_URL = '/api/v1/dev/token';

const $ = (id) => document.getElementById(id);

/* ------------------------------------------------------------------ DOM helpers */

/** h('div', {class: 'x', dataset: {a: 1}, onclick}, child, 'text', ...) -- never parses HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv != null) el.dataset[dk] = String(dv);
    }
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const ICONS = {
  started: 'M6 4.5v11l9-5.5z',
  thinking: 'M10 3a5 5 0 0 0-3 9v2h6v-2a5 5 0 0 0-3-9zM8 17h4',
  tool: 'M12.5 3.5a3.5 3.5 0 0 0-3.3 4.6L3.5 13.8l2.7 2.7 5.7-5.7a3.5 3.5 0 0 0 4.6-3.3l-2.1 2.1-2.3-.6-.6-2.3z',
  check: 'M4.5 10.5l3.5 3.5 7.5-8',
  pen: 'M4 16l1-4 8-8 3 3-8 8zM11 6l3 3',
  stop: 'M6 6h8v8H6z',
  cross: 'M6 6l8 8M14 6l-8 8',
  clock: 'M10 3.5a6.5 6.5 0 1 0 0 13 6.5 6.5 0 0 0 0-13zM10 6.5V10l2.5 2',
  progress: 'M3 10h3l2-5 4 10 2-5h3',
  spark: 'M10 2.5l1.8 4.7 4.7 1.8-4.7 1.8-1.8 4.7-1.8-4.7-4.7-1.8 4.7-1.8zM15.5 13.5l.7 1.8 1.8.7-1.8.7-.7 1.8-.7-1.8-1.8-.7 1.8-.7z',
  info: 'M10 3.5a6.5 6.5 0 1 0 0 13 6.5 6.5 0 0 0 0-13zM10 9v4.5M10 6.5v.5',
  link: 'M8.5 11.5l3-3M7 9.5 5.5 11a2.5 2.5 0 0 0 3.5 3.5L10.5 13M13 10.5l1.5-1.5A2.5 2.5 0 0 0 11 5.5L9.5 7',
};

function icon(name, cls = 'icon') {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', cls);
  const p = document.createElementNS(SVG_NS, 'path');
  p.setAttribute('d', ICONS[name] || ICONS.info);
  svg.append(p);
  return svg;
}

/** Pretty JSON with light syntax colouring, built from text nodes. */
function jsonView(value) {
  let text;
  try {
    text = JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = 'undefined';
  const pre = h('pre', { class: 'json' });
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1]) {
      pre.append(h('span', { class: m[2] ? 'j-key' : 'j-str', text: m[1] }));
      if (m[2]) pre.append(m[2]);
    } else if (m[3]) pre.append(h('span', { class: 'j-lit', text: m[3] }));
    else pre.append(h('span', { class: 'j-num', text: m[4] }));
    last = m.index + m[0].length;
  }
  if (last < text.length) pre.append(text.slice(last));
  return pre;
}

function compactJson(value, max = 72) {
  let s;
  try {
    s = JSON.stringify(value);
  } catch {
    s = String(value);
  }
  if (s === undefined) s = 'undefined';
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A collapsible JSON block: the summary shows a one-line preview. */
function jsonDetails(label, value, open = false) {
  const d = h('details', { class: 'json-details' },
    h('summary', {}, h('span', { class: 'json-label', text: label }),
      h('code', { class: 'json-preview', text: compactJson(value) })),
    jsonView(value));
  d.open = open;
  return d;
}

function fmtDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function fmtClock(ms) {
  if (typeof ms !== 'number') return '';
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function shortId(id) {
  const s = String(id);
  return s.length > 14 ? `${s.slice(0, 12)}…` : s;
}

/* ------------------------------------------------------------------ state */

const state = {
  client: null,
  session: null, // {mode: 'dev', name} | {mode: 'token', token}
  userId: null,
  threads: new Map(), // thread_id -> thread
  runs: new Map(), // run_id -> run
  current: null, // selected thread_id; null = a new (draft) thread
  draftPending: 0, // sends from the draft view waiting for their ack
  everOpened: false,
  bannerTimer: null,
};

const ui = {
  signin: $('signin'),
  nameForm: $('signin-name-form'),
  nameInput: $('signin-name'),
  nameSubmit: $('signin-submit'),
  nameError: $('signin-error'),
  tokenForm: $('signin-token-form'),
  tokenInput: $('signin-token'),
  tokenError: $('signin-token-error'),
  checking: $('signin-checking'),
  app: $('app'),
  conn: $('conn-status'),
  connLabel: document.querySelector('#conn-status .conn-label'),
  userName: $('user-name'),
  userAvatar: $('user-avatar'),
  user: $('user'),
  signout: $('signout'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  bannerClose: $('banner-close'),
  sidebar: $('sidebar'),
  sidebarToggle: $('sidebar-toggle'),
  scrim: $('scrim'),
  newThread: $('new-thread'),
  threadList: $('thread-list'),
  threadEmpty: $('thread-empty'),
  threadTitle: $('thread-title'),
  threadIdLabel: $('thread-id'),
  feed: $('feed'),
  draftView: $('draft-view'),
  draftRuns: document.querySelector('#draft-view .runs'),
  composer: $('composer'),
  input: $('message-input'),
  send: $('send'),
};

/* ------------------------------------------------------------------ sign in */

async function fetchDevToken(name) {
  const res = await fetch(DEV_TOKEN_URL, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
    cache: 'no-store',
  });
  let body = null;
  try {
    body = await res.json();
  } catch { /* not JSON */ }
  if (res.ok && body && typeof body.token === 'string') return body;
  const err = new Error((body && body.message) || `the server answered ${res.status}`);
  err.status = res.status;
  err.code = body && body.error;
  throw err;
}

/** Whether the server issues development tokens: an empty name gets 400 there, 404 elsewhere. */
async function probeDevMode() {
  try {
    const res = await fetch(DEV_TOKEN_URL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: '' }),
      cache: 'no-store',
    });
    return res.status === 400 || res.ok;
  } catch {
    return true; // cannot tell: offer the name form, its submit will say more
  }
}

function showFormError(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

async function showSignin({ tokenMode = false, note = '' } = {}) {
  ui.app.hidden = true;
  ui.signin.hidden = false;
  document.title = 'Sign in · agentwire';
  showFormError(ui.nameError, '');
  showFormError(ui.tokenError, '');
  ui.nameForm.hidden = true;
  ui.tokenForm.hidden = true;
  let dev = !tokenMode;
  if (dev) {
    ui.checking.hidden = false;
    dev = await probeDevMode();
  }
  ui.checking.hidden = true;
  if (dev) {
    ui.nameForm.hidden = false;
    ui.nameInput.value = ui.nameInput.value || localStorage.getItem(LAST_NAME_KEY) || '';
    ui.nameInput.focus();
    ui.nameInput.select();
  } else {
    ui.tokenForm.hidden = false;
    showFormError(ui.tokenError, note);
    ui.tokenInput.focus();
  }
}

ui.nameForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = ui.nameInput.value.trim();
  if (!NAME_RE.test(name)) {
    showFormError(ui.nameError, 'Use 1 to 64 letters, digits, "_", "." or "-".');
    return;
  }
  showFormError(ui.nameError, '');
  ui.nameSubmit.disabled = true;
  ui.nameSubmit.textContent = 'Signing in…';
  try {
    const tok = await fetchDevToken(name);
    localStorage.setItem(LAST_NAME_KEY, name);
    startSession({ mode: 'dev', name }, tok.token);
  } catch (err) {
    if (err.status === 404) {
      showSignin({ tokenMode: true, note: 'This server is not in development mode: sign in with a token.' });
    } else if (err.status === 400) {
      showFormError(ui.nameError, 'That name is not accepted: use 1 to 64 letters, digits, "_", "." or "-".');
    } else {
      showFormError(ui.nameError, `Could not sign in: ${err.message}`);
    }
  } finally {
    ui.nameSubmit.disabled = false;
    ui.nameSubmit.textContent = 'Continue';
  }
});

ui.tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const token = ui.tokenInput.value.trim().replace(/^Bearer\s+/i, '');
  const claims = decodeJwt(token);
  if (!claims || typeof claims.sub !== 'string' || !claims.sub) {
    showFormError(ui.tokenError, 'That does not look like a JWT with a "sub" claim.');
    return;
  }
  if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) {
    showFormError(ui.tokenError, 'This token has expired.');
    return;
  }
  startSession({ mode: 'token', token });
});

ui.signout.addEventListener('click', async () => {
  sessionStorage.removeItem(SESSION_KEY);
  const c = state.client;
  state.client = null;
  if (c) await c.close();
  clearConversations();
  hideBanner();
  showSignin();
});

/* ------------------------------------------------------------------ session */

function setUser(id) {
  state.userId = id;
  ui.userName.textContent = id;
  ui.user.title = `Signed in as ${id}`;
  ui.userAvatar.textContent = (id[0] || '?').toUpperCase();
  ui.userAvatar.style.setProperty('--hue', String(hue(id)));
  document.title = `${id} · agentwire`;
}

function hue(text) {
  let x = 0;
  for (const ch of String(text)) x = (x * 31 + ch.codePointAt(0)) % 360;
  return x;
}

function startSession(session, firstToken) {
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  ui.signin.hidden = true;
  ui.app.hidden = false;
  setUser(session.mode === 'dev' ? session.name : decodeJwt(session.token)?.sub || 'unknown');
  setConn('connecting');
  selectThread(null);

  let pendingToken = firstToken || null;
  const opts = session.mode === 'token'
    ? { token: session.token }
    : {
      getToken: async () => {
        if (pendingToken) {
          const t = pendingToken;
          pendingToken = null;
          return t;
        }
        return (await fetchDevToken(session.name)).token;
      },
    };
  const client = new AgentwireClient({ ...opts, url: '/ws', backoffMaxMs: 10000 });
  state.client = client;
  state.everOpened = false;
  window.agentwireDemo = { client, state }; // for debugging in the console

  client.on('status', (s) => { if (state.client === client) setConn(s); });
  client.on('open', (info) => {
    if (state.client !== client) return;
    if (info.userId) setUser(info.userId);
    if (state.everOpened && info.resumed) {
      const n = info.missed || 0;
      showBanner('resumed', `Connection restored · resumed (${n} missed)`,
        n ? `${n} event${n === 1 ? '' : 's'} sent while you were away were replayed in order.`
          : 'Nothing was missed.', 10000);
    } else if (state.bannerKind === 'error') {
      hideBanner();
    }
    state.everOpened = true;
    updateComposer();
  });
  client.on('reset', () => {
    if (state.client !== client) return;
    markOpenRunsIncomplete();
    showBanner('reloaded', 'Connection restored · reloaded',
      'The server could no longer replay everything that was missed, so the stream started over. ' +
      'Runs that were in progress may be missing steps.');
  });
  client.on('close', (info) => {
    if (state.client !== client) return;
    if (!state.everOpened && info.willReconnect && info.code !== 0) {
      showBanner('error', 'Cannot connect to the gateway',
        `Retrying… (${info.code === 1006 ? 'handshake refused or network error' : `close ${info.code}`})`);
    }
  });
  client.on('error', (err) => {
    if (state.client !== client) return;
    if (err.code === 'token_expired') {
      showBanner('error', 'Your token has expired', 'Sign out and sign in again to continue.');
    } else if (err.code === 'token_error') {
      showBanner('error', 'Could not get a token', `${err.message}. Retrying…`);
    } else if (err.code === 'gave_up') {
      showBanner('error', 'Disconnected', 'The gateway could not be reached. Reload the page to try again.');
    }
  });
  client.on('event', (ev) => { if (state.client === client) onEvent(ev); });
  client.connect().catch(() => { /* reported through 'error' */ });
}

function setConn(status) {
  const labels = { connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' };
  ui.conn.dataset.status = status;
  ui.connLabel.textContent = labels[status] || status;
  ui.conn.title = `Connection: ${status}`;
  updateComposer();
}

/* ------------------------------------------------------------------ banner */

function showBanner(kind, title, detail = '', autoHideMs = 0) {
  clearTimeout(state.bannerTimer);
  state.bannerKind = kind;
  ui.banner.dataset.kind = kind;
  ui.bannerText.replaceChildren(h('strong', { text: title }), detail ? h('span', { text: ` ${detail}` }) : null);
  ui.banner.hidden = false;
  if (autoHideMs) state.bannerTimer = setTimeout(hideBanner, autoHideMs);
}

function hideBanner() {
  clearTimeout(state.bannerTimer);
  state.bannerKind = null;
  ui.banner.hidden = true;
}

ui.bannerClose.addEventListener('click', hideBanner);

/* ------------------------------------------------------------------ threads */

function ensureThread(id) {
  let th = state.threads.get(id);
  if (th) return th;
  const view = h('section', { class: 'thread-view', dataset: { threadId: id }, hidden: true },
    h('div', { class: 'runs' }));
  const title = h('span', { class: 'thread-item-title' });
  const meta = h('span', { class: 'thread-item-meta' });
  const button = h('button', {
    type: 'button', class: 'thread-item', 'data-testid': 'thread-item', dataset: { threadId: id },
    onclick: () => { selectThread(id); closeSidebar(); },
  }, h('span', { class: 'thread-item-dot', 'aria-hidden': 'true' }), h('span', { class: 'thread-item-text' }, title, meta));
  const item = h('li', {}, button);
  th = { id, title: null, titleFromUser: false, runs: [], view, runsEl: view.firstChild, item, button,
    titleEl: title, metaEl: meta, lastActivity: Date.now(), unread: false };
  state.threads.set(id, th);
  ui.feed.append(view);
  ui.threadList.prepend(item);
  ui.threadEmpty.hidden = true;
  updateThreadItem(th);
  return th;
}

function threadTitle(th) {
  return th.title || `Thread ${shortId(th.id)}`;
}

function updateThreadItem(th) {
  th.titleEl.textContent = threadTitle(th);
  const open = th.runs.some((r) => r.status === 'running');
  const n = th.runs.length;
  const last = th.runs[th.runs.length - 1];
  const when = fmtClock(last?.lastTs || th.lastActivity);
  th.metaEl.textContent = [`${n} run${n === 1 ? '' : 's'}`, open ? 'running' : last ? statusLabel(last.status).toLowerCase() : '', when]
    .filter(Boolean).join(' · ');
  th.button.dataset.state = open ? 'running' : th.unread ? 'unread' : 'idle';
  th.button.classList.toggle('unread', th.unread);
  if (state.current === th.id) {
    ui.threadTitle.textContent = threadTitle(th);
    ui.threadIdLabel.textContent = th.titleFromUser ? th.id : '';
  }
}

function touchThread(th, ts) {
  th.lastActivity = ts || Date.now();
  if (ui.threadList.firstChild !== th.item) ui.threadList.prepend(th.item);
  if (state.current !== th.id) th.unread = true;
  updateThreadItem(th);
}

function selectThread(id) {
  state.current = id;
  ui.draftView.hidden = id !== null;
  for (const th of state.threads.values()) {
    const on = th.id === id;
    th.view.hidden = !on;
    if (on) th.unread = false;
    th.button.setAttribute('aria-current', on ? 'true' : 'false');
    updateThreadItem(th);
  }
  if (id === null) {
    ui.threadTitle.textContent = 'New thread';
    ui.threadIdLabel.textContent = '';
  } else {
    const th = state.threads.get(id);
    ui.threadTitle.textContent = threadTitle(th);
    ui.threadIdLabel.textContent = th.titleFromUser ? id : '';
    ui.threadIdLabel.title = `thread_id ${id}`;
  }
  updateComposer();
  scrollToBottom(true);
}

ui.newThread.addEventListener('click', () => {
  selectThread(null);
  closeSidebar();
  ui.input.focus();
});

function clearConversations() {
  for (const th of state.threads.values()) {
    th.view.remove();
    th.item.remove();
  }
  state.threads.clear();
  state.runs.clear();
  state.draftPending = 0;
  ui.draftRuns.replaceChildren();
  ui.threadEmpty.hidden = false;
  selectThread(null);
}

/* ------------------------------------------------------------------ sidebar (narrow screens) */

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  ui.scrim.hidden = true;
  ui.sidebarToggle.setAttribute('aria-expanded', 'false');
}

ui.sidebarToggle.addEventListener('click', () => {
  const open = !document.body.classList.contains('sidebar-open');
  document.body.classList.toggle('sidebar-open', open);
  ui.scrim.hidden = !open;
  ui.sidebarToggle.setAttribute('aria-expanded', String(open));
});
ui.scrim.addEventListener('click', closeSidebar);

/* ------------------------------------------------------------------ runs */

const STATUS_LABELS = {
  running: 'Running', success: 'Done', error: 'Error', cancelled: 'Stopped', timeout: 'Timed out',
};

function statusLabel(s) {
  return STATUS_LABELS[s] || String(s || 'unknown');
}

function userBubble(text) {
  if (text != null) return h('div', { class: 'msg-user' }, h('div', { class: 'bubble', text }));
  return h('div', { class: 'msg-user msg-remote' },
    h('div', { class: 'bubble bubble-remote' }, icon('link'), h('span', { text: 'Run started in another tab' })));
}

function ensureRun(runId, threadId) {
  let run = state.runs.get(runId);
  if (run) return run;
  const th = ensureThread(threadId);
  const chip = h('span', { class: 'chip status-chip', 'data-testid': 'run-status' });
  const agentLabel = h('span', { class: 'agent-name', text: 'Agent' });
  const elapsed = h('span', { class: 'run-elapsed' });
  const stop = h('button', {
    type: 'button', class: 'btn btn-ghost btn-sm stop', 'data-testid': 'stop', title: 'Stop this run',
    onclick: () => stopRun(run),
  }, icon('stop'), 'Stop');
  const head = h('div', { class: 'run-head' },
    h('span', { class: 'agent-avatar', 'aria-hidden': 'true' }, icon('spark')),
    agentLabel, chip, elapsed, h('span', { class: 'spacer' }), stop);
  const steps = h('ol', { class: 'steps', 'aria-label': 'Run steps' });
  const answer = h('div', { class: 'answer', 'data-testid': 'answer', hidden: true });
  const errorBox = h('div', { class: 'run-error', role: 'alert', hidden: true });
  const userSlot = userBubble(null);
  const card = h('div', { class: 'run-card' }, head, steps, answer, errorBox);
  const el = h('article', {
    class: 'run', 'data-testid': 'run', dataset: { runId, threadId, status: 'running' },
  }, userSlot, card);
  run = {
    id: runId, threadId, status: 'running', el, card, stepsEl: steps, answerEl: answer, errorEl: errorBox,
    chip, agentLabel, elapsed, stopBtn: stop, userSlot, userText: null, startTs: null, lastTs: null,
    partialStep: null, partialCount: 0, answerText: '', openTools: [],
  };
  state.runs.set(runId, run);
  th.runs.push(run);
  th.runsEl.append(el);
  setRunStatus(run, 'running');
  touchThread(th);
  return run;
}

function setRunUserText(run, text) {
  run.userText = text;
  const slot = userBubble(text);
  run.userSlot.replaceWith(slot);
  run.userSlot = slot;
  const th = state.threads.get(run.threadId);
  if (th && !th.titleFromUser && th.runs[0] === run) {
    th.title = text.replace(/\s+/g, ' ').slice(0, 80);
    th.titleFromUser = true;
    updateThreadItem(th);
  }
}

function setRunStatus(run, status) {
  run.status = status;
  run.el.dataset.status = status;
  run.chip.dataset.status = status;
  run.chip.textContent = statusLabel(status);
  if (status !== 'running' && run.stopBtn) {
    run.stopBtn.remove();
    run.stopBtn = null;
  }
}

async function stopRun(run) {
  const btn = run.stopBtn;
  if (!btn || !state.client) return;
  btn.disabled = true;
  btn.lastChild.textContent = 'Stopping…';
  try {
    await state.client.stopAgent(run.id);
  } catch (err) {
    if (run.stopBtn === btn) {
      btn.disabled = false;
      btn.lastChild.textContent = 'Stop';
      btn.title = `Could not stop: ${err.message}`;
    }
  }
}

function addStep(run, ev, kind, { iconName, title, body, tone, time = true }) {
  const rel = time && typeof ev.timestamp === 'number' && run.startTs != null ? ev.timestamp - run.startTs : null;
  const li = h('li', { class: `step step-${kind}`, 'data-testid': 'run-step', dataset: { step: kind, seq: ev.seq } },
    h('span', { class: `step-marker${tone ? ` tone-${tone}` : ''}` }, icon(iconName)),
    h('div', { class: 'step-main' },
      h('div', { class: 'step-title' }, title,
        rel != null ? h('span', { class: 'step-time', title: new Date(ev.timestamp).toLocaleTimeString(), text: `+${fmtDuration(rel)}` }) : null),
      body ? h('div', { class: 'step-body' }, body) : null));
  run.stepsEl.append(li);
  return li;
}

function onEvent(ev) {
  if (!ev || typeof ev.run_id !== 'string' || !ev.run_id) return; // not part of a run
  const known = state.runs.get(ev.run_id);
  const threadId = known ? known.threadId : (typeof ev.thread_id === 'string' && ev.thread_id) || 'unthreaded';
  const isNewThread = !state.threads.has(threadId);
  const run = known || ensureRun(ev.run_id, threadId);
  const th = state.threads.get(run.threadId);
  const stick = isNearBottom();
  if (run.startTs == null && typeof ev.timestamp === 'number') run.startTs = ev.timestamp;
  if (typeof ev.timestamp === 'number') run.lastTs = ev.timestamp;

  switch (ev.type) {
    case 'agent_started': {
      const name = ev.agent_name || 'agent';
      run.agentName = name;
      run.agentLabel.textContent = name;
      addStep(run, ev, 'started', { iconName: 'started', tone: 'accent',
        title: append(h('span'), [h('b', { text: name }), ' started']) });
      break;
    }
    case 'agent_thinking':
      addStep(run, ev, 'thinking', { iconName: 'thinking', title: 'Thinking',
        body: h('p', { class: 'reasoning', text: String(ev.reasoning ?? '') }) });
      break;
    case 'tool_executing': {
      const li = addStep(run, ev, 'tool_executing', { iconName: 'tool', tone: 'busy',
        title: append(h('span'), ['Calling ', h('code', { class: 'tool-name', text: String(ev.tool_name) })]),
        body: jsonDetails('Parameters', ev.parameters ?? {}) });
      run.openTools.push({ name: ev.tool_name, li });
      break;
    }
    case 'tool_completed': {
      for (let i = run.openTools.length - 1; i >= 0; i--) {
        if (run.openTools[i].name === ev.tool_name) {
          run.openTools[i].li.querySelector('.step-marker').classList.replace('tone-busy', 'tone-done');
          run.openTools.splice(i, 1);
          break;
        }
      }
      const dur = fmtDuration(ev.duration);
      addStep(run, ev, 'tool_completed', { iconName: 'check', tone: 'ok',
        title: append(h('span'), [h('code', { class: 'tool-name', text: String(ev.tool_name) }), ' returned',
          dur ? h('span', { class: 'chip chip-muted duration', text: dur }) : null]),
        body: jsonDetails('Result', ev.results, false) });
      break;
    }
    case 'partial_result': {
      const piece = typeof ev.content === 'string' ? ev.content
        : ev.content == null ? '' : JSON.stringify(ev.content);
      run.partialCount++;
      if (!run.partialStep) {
        run.partialStep = addStep(run, ev, 'partial', { iconName: 'pen', tone: 'busy', title: 'Writing the answer' });
      }
      run.answerText += piece;
      run.answerEl.textContent = run.answerText;
      run.answerEl.hidden = false;
      run.answerEl.classList.add('streaming');
      break;
    }
    case 'progress_update': {
      const pct = typeof ev.progress === 'number' ? ` · ${Math.round(ev.progress <= 1 ? ev.progress * 100 : ev.progress)}%` : '';
      const text = ev.message || ev.status || ev.stage || 'Progress';
      addStep(run, ev, 'progress', { iconName: 'progress', title: `${text}${pct}` });
      break;
    }
    case 'agent_completed':
      completeRun(run, ev);
      break;
    default:
      break; // other events of a run: nothing to draw
  }
  const ms = run.startTs != null && run.lastTs != null ? run.lastTs - run.startTs : null;
  run.elapsed.textContent = run.status !== 'running' && ms != null ? fmtDuration(ms) : '';
  touchThread(th, ev.timestamp);
  if (isNewThread && state.current === null && state.draftPending === 0 && !ui.input.value.trim()) {
    selectThread(run.threadId); // idle on an empty new thread: follow the activity
  } else if (state.current === run.threadId) {
    scrollToBottom(stick);
  }
}

function completeRun(run, ev) {
  const status = ['success', 'error', 'cancelled', 'timeout'].includes(ev.status) ? ev.status : 'error';
  setRunStatus(run, status);
  for (const t of run.openTools) t.li.querySelector('.step-marker').classList.replace('tone-busy', 'tone-muted');
  run.openTools = [];
  if (run.partialStep) {
    run.partialStep.querySelector('.step-marker').classList.replace('tone-busy', 'tone-done');
    const t = run.partialStep.querySelector('.step-title').firstChild;
    t.textContent = `Answer streamed in ${run.partialCount} piece${run.partialCount === 1 ? '' : 's'}`;
  }
  const final = typeof ev.final_response === 'string' ? ev.final_response : '';
  if (final) {
    run.answerText = final;
    run.answerEl.textContent = final;
  }
  run.answerEl.classList.remove('streaming');
  run.answerEl.hidden = !run.answerText;
  const titles = { success: 'Completed', error: 'Failed', cancelled: 'Stopped', timeout: 'Timed out' };
  const icons = { success: 'check', error: 'cross', cancelled: 'stop', timeout: 'clock' };
  const tones = { success: 'ok', error: 'bad', cancelled: 'muted', timeout: 'warn' };
  addStep(run, ev, 'completed', { iconName: icons[status], tone: tones[status], title: titles[status] });
  if (status !== 'success') {
    const why = typeof ev.error === 'string' && ev.error ? ev.error
      : ev.error != null ? JSON.stringify(ev.error)
        : status === 'cancelled' ? 'The run was stopped.' : status === 'timeout' ? 'The agent took too long.' : 'The agent failed.';
    run.errorEl.replaceChildren(icon(icons[status]), h('span', { text: why }));
    run.errorEl.dataset.status = status;
    run.errorEl.hidden = false;
  }
}

function markOpenRunsIncomplete() {
  for (const run of state.runs.values()) {
    if (run.status !== 'running' || run.el.querySelector('.run-gap')) continue;
    run.card.insertBefore(h('p', { class: 'run-gap' }, icon('info'),
      'Some steps of this run may be missing: the event stream was reset.'), run.answerEl);
  }
}

/* ------------------------------------------------------------------ composer */

function updateComposer() {
  const open = state.client && state.client.status === 'open';
  const text = ui.input.value.trim();
  const blocked = state.current === null && state.draftPending > 0;
  ui.send.disabled = !open || !text || blocked;
  ui.input.placeholder = open ? (state.current === null ? 'Ask something, e.g. 2+3*4' : 'Reply in this thread…')
    : 'Waiting for the connection…';
  ui.draftView.classList.toggle('has-runs', ui.draftRuns.childElementCount > 0);
}

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

ui.input.addEventListener('input', () => { autosize(); updateComposer(); });
ui.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  if (ui.send.disabled) return;
  const text = ui.input.value.trim();
  ui.input.value = '';
  autosize();
  sendMessage(text);
});

for (const b of document.querySelectorAll('.suggestion')) {
  b.addEventListener('click', () => {
    ui.input.value = b.dataset.text;
    autosize();
    updateComposer();
    if (!ui.send.disabled) ui.composer.requestSubmit();
    else ui.input.focus();
  });
}

async function sendMessage(text) {
  const client = state.client;
  const threadId = state.current;
  const container = threadId === null ? ui.draftRuns : state.threads.get(threadId).runsEl;
  const status = h('div', { class: 'pending-status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Starting…');
  const placeholder = h('article', { class: 'run pending' }, userBubble(text), h('div', { class: 'run-card' }, status));
  container.append(placeholder);
  if (threadId === null) state.draftPending++;
  updateComposer();
  scrollToBottom(true);
  try {
    const ack = await client.startAgent({ userRequest: text, threadId: threadId ?? undefined });
    if (state.client !== client) return;
    const tid = ack.thread_id || threadId || 'unthreaded';
    const existed = state.runs.has(ack.run_id);
    const run = ensureRun(ack.run_id, tid);
    setRunUserText(run, text);
    if (!existed && placeholder.parentNode === state.threads.get(tid).runsEl) placeholder.replaceWith(run.el);
    else placeholder.remove();
    if (threadId === null) {
      state.draftPending--;
      if (state.current === null) selectThread(tid);
    }
    updateComposer();
    if (state.current === tid) scrollToBottom(true);
  } catch (err) {
    if (threadId === null) state.draftPending--;
    const why = {
      not_connected: 'Not connected. Try again when the connection is back.',
      connection_closed: 'The connection dropped before the server answered. The run may have started; watch this thread.',
      too_many_runs: 'Too many runs at once. Wait for one to finish.',
      timeout: 'The server did not answer in time.',
    }[err.code] || err.message || String(err);
    placeholder.classList.add('failed');
    status.replaceChildren(icon('cross'), h('span', { text: `Could not start: ${why}` }));
    if (!ui.input.value) {
      ui.input.value = text;
      autosize();
    }
    updateComposer();
  }
}

/* ------------------------------------------------------------------ scrolling */

function isNearBottom() {
  const f = ui.feed;
  return f.scrollHeight - f.scrollTop - f.clientHeight < 160;
}

function scrollToBottom(force) {
  if (!force) return;
  requestAnimationFrame(() => { ui.feed.scrollTop = ui.feed.scrollHeight; });
}

/* ------------------------------------------------------------------ boot */

function boot() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch { /* ignore */ }
  if (saved && saved.mode === 'dev' && NAME_RE.test(saved.name || '')) startSession(saved);
  else if (saved && saved.mode === 'token' && decodeJwt(saved.token)) startSession(saved);
  else showSignin();
}

boot();
