// Tests of the Post-Login Action (aegisd/auth0/actions/link-identities.js).
//
// Run: node --test tests/js/
// The Auth0 runtime is replaced by fake `event`/`api` objects that follow the post-login
// event and API references, and the Management API by a local HTTP server on 127.0.0.1
// (token endpoint, get user, link identities) that behaves like auth0-protocol.md §4/§7.
'use strict';

const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { afterEach, beforeEach, describe, test } = require('node:test');

const action = require(path.join(__dirname, '..', '..', 'aegisd', 'auth0', 'actions', 'link-identities.js'));

const DOMAIN = 'tenant.example.auth0.com';
const CLIENT_ID = 'm2m-client-id';
const CLIENT_SECRET = 'very-secret-client-secret-value';
const TOKEN_PREFIX = 'mgmt-access-token-';
const EMAIL = 'person@example.com';
const PRIMARY = 'google-oauth2|1080';
const SESSION_SECRET = 'link-session-secret-value';

/** A fake Management API: users, issued tokens, and switches to make it fail. */
class FakeManagementApi {
  constructor() {
    this.users = [];
    this.requests = [];
    this.links = [];
    this.tokensIssued = 0;
    this.validTokens = new Set();
    this.fail = {}; // switches: token, readPrimary, link (status), linkAnswer, linkDrop, linkHang, ...
    this.order = null; // shared with the fake api: records 'link' when a link request arrives
    this.sockets = new Set();
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  handle(req, res) {
    let raw = '';
    req.on('data', (chunk) => {
      raw += chunk;
    });
    req.on('end', () => {
      const url = new URL(req.url, this.base);
      this.requests.push({ method: req.method, path: url.pathname, query: url.search });
      const reply = (status, body) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (this.fail.redirectTo) {
        res.writeHead(307, { location: this.fail.redirectTo + req.url });
        return res.end();
      }
      if (req.method === 'POST' && url.pathname === '/oauth/token') return this.token(req, raw, reply);
      const auth = req.headers.authorization || '';
      if (!this.validTokens.has(auth.replace(/^Bearer /, ''))) {
        return reply(401, { statusCode: 401, error: 'Unauthorized', message: 'Invalid token' });
      }
      const link = /^\/api\/v2\/users\/([^/]+)\/identities$/.exec(url.pathname);
      if (req.method === 'POST' && link) return this.link(decodeURIComponent(link[1]), raw, reply, res);
      const get = /^\/api\/v2\/users\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'GET' && get) return this.getUser(decodeURIComponent(get[1]), url, reply);
      return reply(404, { statusCode: 404, error: 'Not Found' });
    });
  }

  token(req, raw, reply) {
    assert.equal(req.headers['content-type'], 'application/x-www-form-urlencoded');
    const form = new URLSearchParams(raw);
    if (this.fail.token) return reply(this.fail.token, { error: 'access_denied', error_description: 'Unauthorized' });
    if (form.get('grant_type') !== 'client_credentials' || form.get('client_id') !== CLIENT_ID || form.get('client_secret') !== CLIENT_SECRET) {
      return reply(401, { error: 'access_denied', error_description: 'Unauthorized' });
    }
    // The canonical tenant domain, also when the tenant is reached through a custom domain.
    if (form.get('audience') !== `https://${DOMAIN}/api/v2/`) {
      return reply(403, { error: 'access_denied', error_description: 'Service not enabled within domain' });
    }
    this.tokensIssued += 1;
    const token = `${TOKEN_PREFIX}${this.tokensIssued}`;
    this.validTokens.add(token);
    return reply(200, { access_token: token, expires_in: 86400, scope: 'read:users update:users', token_type: 'Bearer' });
  }

  getUser(id, url, reply) {
    if (this.fail.readPrimary) return reply(this.fail.readPrimary, { statusCode: this.fail.readPrimary, error: 'Internal Server Error', message: `boom ${CLIENT_SECRET}` });
    assert.equal(url.searchParams.get('include_fields'), 'true');
    const user = this.users.find((u) => u.user_id === id);
    if (!user) return reply(404, { statusCode: 404, error: 'Not Found', errorCode: 'inexistent_user' });
    return reply(200, { user_id: user.user_id, email: user.email, email_verified: user.email_verified, identities: user.identities });
  }

  applyLink(primaryId, body) {
    const primary = this.users.find((u) => u.user_id === primaryId);
    const secondary = this.users.find((u) => u.user_id === `${body.provider}|${body.user_id}`);
    if (!primary || !secondary) return null;
    this.links.push({ primary: primaryId, body });
    // Effects per A-LINKOV: the secondary disappears and becomes an identity of the primary.
    this.users = this.users.filter((u) => u !== secondary);
    primary.identities.push({ ...secondary.identities[0], profileData: { email: secondary.email } });
    return primary;
  }

  link(primaryId, raw, reply, res) {
    if (this.order) this.order.push('link');
    const body = JSON.parse(raw);
    if (this.fail.link) return reply(this.fail.link, { statusCode: this.fail.link, error: 'Bad Request', message: 'nope' });
    if (this.fail.linkHang) return undefined; // never answers: the Action's fetch times out
    const primary = this.applyLink(primaryId, body);
    if (this.fail.linkDrop) return res.destroy(); // linked, but the answer is lost
    if (!primary) return reply(400, { statusCode: 400, error: 'Bad Request', message: 'not found' });
    if (this.fail.linkAnswer) return reply(201, []);
    return reply(201, primary.identities);
  }
}

function makeUser(userId, { created = '2024-01-01T00:00:00.000Z', verified = true, email = EMAIL, appMetadata = {}, connection } = {}) {
  const cut = userId.indexOf('|');
  const provider = userId.slice(0, cut);
  return {
    user_id: userId,
    email,
    email_verified: verified,
    created_at: created,
    app_metadata: appMetadata,
    identities: [{ provider, user_id: userId.slice(cut + 1), connection: connection || provider, isSocial: provider !== 'auth0' && provider !== 'email' }],
  };
}

/** The post-login event as the Action sees it (subset used by the Action). */
function makeEvent(user, { protocol = 'oidc-basic-profile', connection, secrets = {} } = {}, base) {
  const conn = connection || { id: 'con_side123', name: user.identities[0].connection, strategy: user.identities[0].provider };
  return {
    user: structuredClone(user),
    connection: conn,
    transaction: { protocol, requested_scopes: ['openid'], acr_values: [], ui_locales: [], locale: 'en' },
    secrets: {
      DOMAIN,
      CLIENT_ID,
      CLIENT_SECRET,
      PRIMARY_USER_ID: PRIMARY,
      LINK_CONNECTIONS: 'email,github,corp',
      MGMT_BASE_URL: base,
      ...secrets,
    },
    client: { client_id: 'app', name: 'App' },
    request: { ip: '127.0.0.1', method: 'GET', query: {}, body: {} },
    tenant: { id: 'tenant' },
    stats: { logins_count: 1 },
  };
}

/** An api.cache that enforces the documented limits and hands out records like Auth0's. */
function makeCache() {
  const entries = new Map();
  return {
    entries,
    get(key) {
      const entry = entries.get(key);
      if (!entry || entry.expiresAt <= Date.now()) return undefined;
      return { value: entry.value, expires_at: entry.expiresAt };
    },
    set(key, value, options = {}) {
      assert.equal(typeof value, 'string');
      assert.ok(Buffer.byteLength(key) <= 64, 'cache key longer than 64 bytes');
      assert.ok(Buffer.byteLength(value) <= 4096, 'cache value larger than 4 KB');
      assert.ok(options.ttl === undefined || options.ttl <= 24 * 3600 * 1000, 'cache ttl above 24 h');
      if (!entries.has(key) && entries.size >= 20) return { type: 'error', code: 'TOO_MANY_ENTRIES' };
      entries.set(key, { value, expiresAt: Date.now() + (options.ttl || 15 * 60 * 1000) });
      return { type: 'success', record: { value } };
    },
    delete(key) {
      entries.delete(key);
      return { type: 'success' };
    },
  };
}

function makeApi({ canRedirect = true, cache = makeCache(), order = [], returned = null } = {}) {
  const seen = { primaryUser: [], appMetadata: {}, denied: [], redirects: [], order };
  const api = {
    authentication: {
      setPrimaryUser: (id) => {
        seen.primaryUser.push(id);
        order.push('switch');
      },
    },
    user: {
      setAppMetadata: (key, value) => {
        seen.appMetadata[key] = value;
      },
      setUserMetadata: () => {},
    },
    redirect: {
      canRedirect: () => canRedirect,
      sendUserTo: (url, options) => seen.redirects.push({ url, options }),
      // A stand-in for Auth0's signed session token: the payload, tagged with the secret.
      encodeToken: ({ secret, payload, expiresInSeconds }) => JSON.stringify({ secret, payload, expiresInSeconds }),
      validateToken: ({ secret, tokenParameterName }) => {
        assert.equal(tokenParameterName, 'session_token');
        if (!returned || returned.secret !== secret) throw new Error('invalid token');
        return returned.payload;
      },
    },
    access: { deny: (reason) => seen.denied.push(reason) },
    cache,
  };
  return { api, seen };
}

let mgmt;
let logs;
let originalLog;

beforeEach(async () => {
  mgmt = new FakeManagementApi();
  await mgmt.start();
  logs = [];
  originalLog = { log: console.log, warn: console.warn, error: console.error, info: console.info };
  for (const name of Object.keys(originalLog)) console[name] = (...args) => logs.push(args.join(' '));
});

afterEach(async () => {
  Object.assign(console, originalLog);
  await mgmt.stop();
});

function assertCleanLogs() {
  for (const line of logs) {
    assert.ok(line.length <= 256, `log line longer than 256 chars: ${line.length}`);
    assert.ok(!line.includes(CLIENT_SECRET), 'client secret in logs');
    assert.ok(!line.includes(SESSION_SECRET), 'session secret in logs');
    assert.ok(!line.includes(TOKEN_PREFIX), 'access token in logs');
  }
}

async function run(user, { event: eventOptions, api: apiOptions, hook = 'onExecutePostLogin' } = {}) {
  const event = makeEvent(user, eventOptions, mgmt.base);
  const { api, seen } = apiOptions && apiOptions.api ? apiOptions : makeApi(apiOptions);
  mgmt.order = seen.order;
  await action[hook](event, api);
  assertCleanLogs();
  return seen;
}

const EMAIL_LOGIN = { connection: { id: 'con_email1', name: 'email', strategy: 'email' } };

function withPrimaryAndSide(sideOptions = {}) {
  const primary = makeUser(PRIMARY, { created: '2023-05-01T10:00:00.000Z' });
  const side = makeUser('email|65f0c0ffee', { created: '2025-02-02T10:00:00.000Z', ...sideOptions });
  mgmt.users.push(structuredClone(primary), structuredClone(side));
  return { primary, side };
}

describe('link-identities post-login action', () => {
  test('links a side identity into PRIMARY_USER_ID, switching before the link call', async () => {
    const { side } = withPrimaryAndSide();

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.deepEqual(mgmt.links, [{ primary: PRIMARY, body: { provider: 'email', user_id: '65f0c0ffee', connection_id: 'con_email1' } }]);
    assert.deepEqual(seen.primaryUser, [PRIMARY]);
    assert.deepEqual(seen.order, ['switch', 'link']); // Auth0's sample: setPrimaryUser first
    assert.equal(seen.appMetadata.aegis_link.status, 'linked');
    assert.deepEqual(seen.denied, []);
    assert.equal(mgmt.users.length, 1);
    assert.deepEqual(mgmt.users[0].identities.map((i) => i.provider), ['google-oauth2', 'email']);
  });

  test('links only into the configured primary, never into another account with the email', async () => {
    const older = makeUser('auth0|oldest', { created: '2019-01-01T00:00:00Z', appMetadata: { aegis_primary: true } });
    const { side } = withPrimaryAndSide();
    mgmt.users.push(structuredClone(older));

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.deepEqual(seen.primaryUser, [PRIMARY]);
    assert.deepEqual(mgmt.links.map((l) => l.primary), [PRIMARY]);
    assert.ok(!mgmt.requests.some((r) => r.path.includes('users-by-email')));
  });

  test('an empty LINK_CONNECTIONS turns linking off (fail closed) without any call', async () => {
    const { side } = withPrimaryAndSide();

    for (const value of ['', ' , ']) {
      const seen = await run(side, { event: { ...EMAIL_LOGIN, secrets: { LINK_CONNECTIONS: value } } });
      assert.deepEqual([seen.primaryUser, seen.appMetadata, seen.denied], [[], {}, []]);
    }
    assert.deepEqual(mgmt.requests, []);
    assert.ok(logs.some((line) => line.includes('LINK_CONNECTIONS is empty')));
  });

  test('LINK_CONNECTIONS limits which logins are linked', async () => {
    const primary = makeUser(PRIMARY, { created: '2020-01-01T00:00:00Z' });
    const side = makeUser('samlp|corp|jdoe', { created: '2025-03-01T00:00:00Z', connection: 'corp' });
    mgmt.users.push(primary, structuredClone(side));
    const connection = { id: 'con_corp', name: 'corp', strategy: 'samlp' };

    let seen = await run(side, { event: { connection, secrets: { LINK_CONNECTIONS: 'email, google-oauth2' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(mgmt.requests, []);

    seen = await run(side, { event: { connection, secrets: { LINK_CONNECTIONS: 'email,corp' } } });
    assert.deepEqual(seen.primaryUser, [PRIMARY]);
    assert.deepEqual(mgmt.links[0].body, { provider: 'samlp', user_id: 'corp|jdoe', connection_id: 'con_corp' });
  });

  test('the primary must have the same verified email before anything is switched', async () => {
    for (const change of [{ email_verified: false }, { email: 'someone-else@example.com' }]) {
      mgmt.users = [];
      const { side } = withPrimaryAndSide();
      Object.assign(mgmt.users[0], change);
      const seen = await run(side, { event: EMAIL_LOGIN });
      assert.deepEqual([seen.primaryUser, seen.denied, mgmt.links], [[], [], []]);
      assert.deepEqual(seen.order, []);
    }
    assert.ok(logs.some((line) => line.includes('no verified email equal')));
  });

  test('an unverified email on this login is never linked, and is not marked', async () => {
    const { side } = withPrimaryAndSide({ verified: false });

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.deepEqual(mgmt.requests, []);
    assert.deepEqual([seen.primaryUser, seen.appMetadata], [[], {}]);
  });

  test('the primary itself, linked users and processed users are left alone without a call', async () => {
    const { primary, side } = withPrimaryAndSide();
    const linked = structuredClone(side);
    linked.identities.push({ provider: 'github', user_id: '1', connection: 'github' });
    const processed = makeUser('email|done', { appMetadata: { aegis_link: { status: 'linked' } } });

    for (const user of [primary, linked, processed]) {
      const seen = await run(user, { event: EMAIL_LOGIN });
      assert.deepEqual(seen.primaryUser, []);
    }
    assert.deepEqual(mgmt.requests, []);
  });

  test('CIBA and non-interactive transactions are skipped', async () => {
    const { side } = withPrimaryAndSide();

    for (const protocol of ['oidc-ciba', 'oidc-ciba-web-link', 'oauth2-refresh-token', 'oauth2-token-exchange']) {
      assert.deepEqual((await run(side, { event: { ...EMAIL_LOGIN, protocol } })).primaryUser, []);
    }
    assert.deepEqual((await run(side, { event: EMAIL_LOGIN, api: { canRedirect: false } })).primaryUser, []);
    assert.deepEqual(mgmt.requests, []);
  });

  test('a link answer that is lost after the link happened: the primary is read, the login stands', async () => {
    const { side } = withPrimaryAndSide();
    mgmt.fail.linkDrop = true;

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.deepEqual(seen.order, ['switch', 'link']);
    assert.equal(mgmt.links.length, 1);
    assert.deepEqual(seen.denied, []);
    assert.equal(seen.appMetadata.aegis_link.status, 'linked');
    const paths = mgmt.requests.map((r) => `${r.method} ${r.path}`);
    assert.equal(paths.filter((p) => p === `GET /api/v2/users/${encodeURIComponent(PRIMARY)}`).length, 2);
  });

  test('a link call that times out and did not happen: read, then the login is denied clearly', async () => {
    const { side } = withPrimaryAndSide();
    mgmt.fail.linkHang = true;

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.deepEqual(seen.primaryUser, [PRIMARY]);
    assert.equal(mgmt.links.length, 0);
    assert.equal(seen.denied.length, 1); // after the switch, Auth0 would fail it anyway
    assert.ok(logs.some((line) => line.includes('timed out') && line.includes('login denied')));
    assert.equal(mgmt.requests.filter((r) => r.method === 'GET').length, 2); // read before deciding
  });

  test('a refused link after the switch denies the login with a clear reason', async () => {
    const { side } = withPrimaryAndSide();
    mgmt.fail.link = 400;

    const seen = await run(side, { event: EMAIL_LOGIN });

    assert.equal(seen.denied.length, 1);
    assert.deepEqual(seen.appMetadata, {});
    assert.ok(logs.some((line) => line.includes('HTTP 400')));
  });

  test('Management API failures before the switch let the login continue and leak no secret', async () => {
    const { side } = withPrimaryAndSide();

    mgmt.fail.readPrimary = 500;
    let seen = await run(side, { event: EMAIL_LOGIN });
    assert.deepEqual([seen.denied, seen.primaryUser, seen.appMetadata], [[], [], {}]);
    assert.ok(logs.some((line) => line.includes('read-primary') && line.includes('500')));

    mgmt.fail = { token: 401 };
    seen = await run(side, { event: EMAIL_LOGIN });
    assert.deepEqual([seen.denied, seen.primaryUser, seen.appMetadata], [[], [], {}]);
    assert.ok(logs.some((line) => line.includes('token') && line.includes('401')));
  });

  test('a redirect is not followed, so the secret never reaches another host', async () => {
    const elsewhere = new FakeManagementApi();
    await elsewhere.start();
    try {
      const { side } = withPrimaryAndSide();
      mgmt.fail.redirectTo = elsewhere.base;

      const seen = await run(side, { event: EMAIL_LOGIN });

      assert.deepEqual([seen.denied, seen.primaryUser], [[], []]);
      assert.deepEqual(elsewhere.requests, []);
      assert.ok(logs.some((line) => line.includes('token') && line.includes('network error')));
    } finally {
      await elsewhere.stop();
    }
  });

  test('missing secrets and a non-loopback http override are refused without a call', async () => {
    const { side } = withPrimaryAndSide();

    let seen = await run(side, { event: { ...EMAIL_LOGIN, secrets: { CLIENT_SECRET: '' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.ok(logs.some((line) => line.includes('CLIENT_SECRET is not set')));

    seen = await run(side, { event: { ...EMAIL_LOGIN, secrets: { PRIMARY_USER_ID: '' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.ok(logs.some((line) => line.includes('PRIMARY_USER_ID is not set')));

    seen = await run(side, { event: { ...EMAIL_LOGIN, secrets: { MGMT_BASE_URL: 'http://attacker.example' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(mgmt.requests, []);
  });

  test('reauthenticate mode: redirect first, link only with a token proving the primary', async () => {
    const { side } = withPrimaryAndSide();
    const secrets = { LINK_MODE: 'reauthenticate', LINK_REDIRECT_URL: 'https://link.example/start', LINK_SESSION_SECRET: SESSION_SECRET };

    const first = await run(side, { event: { ...EMAIL_LOGIN, secrets } });
    assert.deepEqual([first.primaryUser, mgmt.requests], [[], []]);
    assert.equal(first.redirects.length, 1);
    assert.equal(first.redirects[0].url, 'https://link.example/start');
    const sent = JSON.parse(first.redirects[0].options.query.session_token);
    assert.deepEqual(sent.payload, { candidate: side.user_id, primary: PRIMARY });

    // The companion page proved someone else, or nobody: nothing is switched or linked.
    for (const payload of [{ candidate: side.user_id, authenticated: 'auth0|intruder' }, { candidate: 'email|other', authenticated: PRIMARY }]) {
      const returned = { secret: SESSION_SECRET, payload };
      const seen = await run(side, { hook: 'onContinuePostLogin', event: { ...EMAIL_LOGIN, secrets }, api: { returned } });
      assert.deepEqual([seen.primaryUser, mgmt.links], [[], []]);
    }
    const forged = { secret: 'guess', payload: { candidate: side.user_id, authenticated: PRIMARY } };
    assert.deepEqual((await run(side, { hook: 'onContinuePostLogin', event: { ...EMAIL_LOGIN, secrets }, api: { returned: forged } })).primaryUser, []);

    const returned = { secret: SESSION_SECRET, payload: { candidate: side.user_id, authenticated: PRIMARY } };
    const seen = await run(side, { hook: 'onContinuePostLogin', event: { ...EMAIL_LOGIN, secrets }, api: { returned } });
    assert.deepEqual(seen.order, ['switch', 'link']);
    assert.equal(seen.appMetadata.aegis_link.status, 'linked');
  });

  test('the Management token is cached: a second run does not fetch it again', async () => {
    const cache = makeCache();
    mgmt.users.push(makeUser(PRIMARY, { created: '2020-01-01T00:00:00Z' }));
    const first = makeUser('email|first', { created: '2025-03-01T00:00:00Z' });
    const second = makeUser('github|second', { created: '2025-04-01T00:00:00Z' });
    mgmt.users.push(structuredClone(first), structuredClone(second));

    await run(first, { event: EMAIL_LOGIN, api: makeApi({ cache }) });
    await run(second, { event: { connection: { id: 'con_gh', name: 'github', strategy: 'github' } }, api: makeApi({ cache }) });

    assert.equal(mgmt.tokensIssued, 1);
    assert.equal(mgmt.requests.filter((r) => r.path === '/oauth/token').length, 1);
    assert.equal(mgmt.links.length, 2);
    assert.equal(cache.entries.size, 1);
  });

  test('a cached token that the API refuses is replaced once', async () => {
    const cache = makeCache();
    const { side } = withPrimaryAndSide();
    const other = makeUser('github|77', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(structuredClone(other));
    await run(other, { event: { connection: { id: 'con_gh', name: 'github', strategy: 'github' } }, api: makeApi({ cache }) });
    assert.equal(mgmt.tokensIssued, 1);
    mgmt.validTokens.clear(); // e.g. the grant was rotated

    const seen = await run(side, { event: EMAIL_LOGIN, api: makeApi({ cache }) });

    assert.equal(mgmt.tokensIssued, 2);
    assert.deepEqual(seen.primaryUser, [PRIMARY]);
  });

  test('a numeric provider user_id is sent as a string', async () => {
    mgmt.users.push(makeUser(PRIMARY, { created: '2020-01-01T00:00:00Z' }));
    const side = makeUser('github|4242', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(structuredClone(side));
    side.identities[0].user_id = 4242;

    const seen = await run(side, { event: { connection: { id: 'con_gh', name: 'github', strategy: 'github' } } });

    assert.deepEqual(seen.primaryUser, [PRIMARY]);
    assert.deepEqual(mgmt.links[0].body, { provider: 'github', user_id: '4242', connection_id: 'con_gh' });
  });
});
