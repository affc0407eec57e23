// The VORA web console: log in (authorization code + PKCE), set up a session, subscribe,
// watch the event socket live (resuming with lastEventId after a drop) and log out.
'use strict';

(() => {
  const store = window.sessionStorage;
  const $ = (id) => document.getElementById(id);
  const ENDING_REASONS = new Set(['logout', 'replaced', 'tokenExpired', 'revoked']);
  const RECONNECT_DELAY_MS = 1000;

  let config = null;
  let discovery = null;
  let socket = null;
  let wsToken = null;
  let lastEventId = null;
  let keepSocket = false;
  let endedReason = null;
  let reconnectTimer = null;

  function status(text, isError = false) {
    $('status').textContent = text;
    $('status').className = isError ? 'error' : '';
  }

  function socketState(text) {
    $('socket-state').textContent = text;
  }

  function base64url(bytes) {
    return btoa(String.fromCharCode(...new Uint8Array(bytes)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function randomString(length) {
    return base64url(crypto.getRandomValues(new Uint8Array(length)));
  }

  async function challengeOf(verifier) {
    return base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  }

  function redirectUri() {
    return location.origin + location.pathname;
  }

  function tokens() {
    const saved = JSON.parse(store.getItem('vora.tokens') || 'null');
    return saved && saved.expiresAt > Date.now() ? saved : null;
  }

  function subjectOf(accessToken) {
    const payload = accessToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub;
  }

  async function startLogin() {
    const verifier = randomString(48);
    const state = randomString(16);
    store.setItem('vora.pkce', JSON.stringify({ verifier, state }));
    const params = new URLSearchParams({
      client_id: config.clientId,
      response_type: 'code',
      redirect_uri: redirectUri(),
      scope: config.scopes.join(' '),
      state,
      code_challenge: await challengeOf(verifier),
      code_challenge_method: 'S256',
    });
    location.assign(`${discovery.authorization_endpoint}?${params}`);
  }

  async function finishLogin(query) {
    const pending = JSON.parse(store.getItem('vora.pkce') || 'null');
    store.removeItem('vora.pkce');
    history.replaceState(null, '', redirectUri());
    if (query.get('error')) {
      throw new Error(`Login failed: ${query.get('error')} ${query.get('error_description') || ''}`);
    }
    if (!pending || pending.state !== query.get('state')) {
      throw new Error('Login failed: the answer does not belong to a login this page started');
    }
    const response = await fetch(discovery.token_endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: query.get('code'),
        redirect_uri: redirectUri(),
        client_id: config.clientId,
        code_verifier: pending.verifier,
      }),
    });
    const body = await response.json();
    if (!response.ok) {
      throw new Error(`The token request failed: ${body.error} ${body.error_description || ''}`);
    }
    store.setItem('vora.tokens', JSON.stringify({
      access: body.access_token,
      id: body.id_token || null,
      expiresAt: Date.now() + body.expires_in * 1000,
    }));
  }

  async function api(method, path, body) {
    const saved = tokens();
    if (!saved) {
      showLoggedOut('Your login has expired; log in again.');
      throw new Error('not logged in');
    }
    const headers = { Authorization: `Bearer ${saved.access}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(`${config.apiBase}${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      throw new Error(`${method} ${path}: ${response.status} ${(data && data.message) || ''}`);
    }
    return data;
  }

  function showLoggedOut(message) {
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('who').textContent = '';
    status(message);
  }

  async function showLoggedIn() {
    $('app').hidden = false;
    $('login').hidden = true;
    $('logout').hidden = false;
    $('who').textContent = `signed in as ${subjectOf(tokens().access)}`;
    status('Logged in.');
    const spec = await (await fetch(`${config.apiBase}/openapi.json`)).json();
    $('event-types').replaceChildren(...spec.components.schemas.EventType.enum.map((type) => {
      const label = document.createElement('label');
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.value = type;
      box.name = 'event-type';
      label.append(box, ` ${type}`);
      return label;
    }));
  }

  async function loadIdentities() {
    const { identities } = await api('GET', '/identity');
    $('identity').replaceChildren(...identities.map((identity) => new Option(identity, identity)));
    $('setup').disabled = identities.length === 0;
    status(identities.length ? `You own ${identities.length} identities.` : 'You own no identities.');
  }

  async function setUp() {
    const identity = $('identity').value;
    ({ webSocketToken: wsToken } = await api('POST', '/identity/setup', {
      connectionType: 'WebSocket', identity, holdUpMode: false,
    }));
    lastEventId = null;
    $('last-event-id').textContent = 'none';
    $('subscribe').disabled = false;
    $('connect').disabled = false;
    status(`Session set up on ${identity}.`);
  }

  async function subscribe() {
    const identity = $('identity').value;
    const all = $('subscribe-all').checked;
    const events = [...document.querySelectorAll('input[name=event-type]:checked')].map((box) => box.value);
    await api('POST', `/identity/${encodeURIComponent(identity)}/eventSubscription`,
      all ? { subscribeAll: true } : { subscribeAll: false, events });
    status(all ? 'Subscribed to every event.' : `Subscribed to ${events.join(', ') || 'nothing'}.`);
  }

  function showEvent(envelope) {
    const item = document.createElement('li');
    item.className = 'event';
    item.dataset.type = envelope.type;
    if (envelope.eventId) item.dataset.eventId = envelope.eventId;
    const body = document.createElement('pre');
    body.textContent = JSON.stringify(envelope, null, 2);
    item.append(body);
    $('events').append(item);
  }

  function openSocket() {
    keepSocket = true;
    clearTimeout(reconnectTimer);
    const url = new URL(config.socketPath, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', wsToken);
    const resumeAfter = lastEventId;
    if (resumeAfter) url.searchParams.set('lastEventId', resumeAfter);
    const ws = new WebSocket(url);
    socket = ws;
    socketState('connecting');
    $('drop').disabled = false;
    ws.onopen = () => socketState(resumeAfter ? `open (resumed after ${resumeAfter})` : 'open');
    ws.onmessage = (message) => {
      const envelope = JSON.parse(message.data);
      showEvent(envelope);
      if (envelope.eventId) {
        lastEventId = envelope.eventId;
        $('last-event-id').textContent = lastEventId;
      }
      if (envelope.type === 'channelTerminated' && ENDING_REASONS.has(envelope.data.reason)) {
        keepSocket = false;
        endedReason = envelope.data.reason;
      }
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      if (keepSocket) {
        socketState(`dropped (${event.code}); reconnecting with lastEventId ${lastEventId || 'none'}`);
        reconnectTimer = setTimeout(openSocket, RECONNECT_DELAY_MS);
      } else {
        $('drop').disabled = true;
        socketState(`closed (${event.code}${endedReason ? `, ${endedReason}` : ''})`);
      }
    };
  }

  function dropSocket() {
    if (socket) socket.close(4000, 'dropped by the console');
  }

  function socketClosed(timeoutMs) {
    return new Promise((resolve) => {
      if (!socket) { resolve(); return; }
      const ws = socket;
      const timer = setTimeout(resolve, timeoutMs);
      ws.addEventListener('close', () => { clearTimeout(timer); resolve(); });
    });
  }

  async function logOut() {
    const identity = $('identity').value;
    clearTimeout(reconnectTimer);
    if (identity && wsToken) {
      // VORA ends the session everywhere; its socket says channelTerminated(logout) and closes.
      await api('POST', `/logout/${encodeURIComponent(identity)}`);
      await socketClosed(5000);
    }
    keepSocket = false;
    if (socket) socket.close();
    const saved = JSON.parse(store.getItem('vora.tokens') || 'null');
    store.removeItem('vora.tokens');
    store.setItem('vora.farewell', endedReason ? `Logged out (the socket ended: ${endedReason}).` : 'Logged out.');
    if (discovery.end_session_endpoint && saved && saved.id) {
      location.assign(`${discovery.end_session_endpoint}?${new URLSearchParams({
        id_token_hint: saved.id, post_logout_redirect_uri: redirectUri(), client_id: config.clientId,
      })}`);
    } else {
      showLoggedOut(store.getItem('vora.farewell'));
    }
  }

  function guarded(action) {
    return () => action().catch((error) => status(error.message, true));
  }

  async function start() {
    config = await (await fetch('config.json')).json();
    if (!config.issuer) {
      status('No authorization server is configured (VORA_OAUTH_ISSUER is not a URL), so nobody can log in here.', true);
      return;
    }
    discovery = await (await fetch(`${config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`)).json();
    $('login').onclick = guarded(startLogin);
    $('logout').onclick = guarded(logOut);
    $('load-identities').onclick = guarded(loadIdentities);
    $('setup').onclick = guarded(setUp);
    $('subscribe').onclick = guarded(subscribe);
    $('connect').onclick = () => openSocket();
    $('drop').onclick = () => dropSocket();
    const query = new URLSearchParams(location.search);
    if (query.has('code') || query.has('error')) await finishLogin(query);
    if (tokens()) {
      await showLoggedIn();
    } else {
      showLoggedOut(store.getItem('vora.farewell') || 'Log in to use the console.');
      store.removeItem('vora.farewell');
    }
  }

  start().catch((error) => status(error.message, true));
})();
