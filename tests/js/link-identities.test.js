// Tests of the Post-Login Action (aegisd/auth0/actions/link-identities.js).
//
// Run: node --test tests/js/
// The Auth0 runtime is replaced by fake `event`/`api` objects that follow the post-login
// event and API references, and the Management API by a local HTTP server on 127.0.0.1
// (token endpoint, users-by-email, link identities) that behaves like auth0-protocol.md §4/§7.
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

/** A fake Management API: users, issued tokens, and switches to make it fail. */
class FakeManagementApi {
  constructor() {
    this.users = [];
    this.requests = [];
    this.links = [];
    this.tokensIssued = 0;
    this.validTokens = new Set();
    this.fail = {}; // step name -> HTTP status to answer with
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
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
      if (req.method === 'GET' && url.pathname === '/api/v2/users-by-email') {
        if (this.fail.usersByEmail) return reply(this.fail.usersByEmail, { statusCode: this.fail.usersByEmail, error: 'Internal Server Error', message: `boom ${CLIENT_SECRET}` });
        const email = (url.searchParams.get('email') || '').toLowerCase();
        return reply(200, this.users.filter((u) => u.email.toLowerCase() === email));
      }
      const link = /^\/api\/v2\/users\/([^/]+)\/identities$/.exec(url.pathname);
      if (req.method === 'POST' && link) return this.link(decodeURIComponent(link[1]), raw, reply);
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
    if (form.get('audience') !== `https://${DOMAIN}/api/v2/`) {
      return reply(403, { error: 'access_denied', error_description: 'Service not enabled within domain' });
    }
    this.tokensIssued += 1;
    const token = `${TOKEN_PREFIX}${this.tokensIssued}`;
    this.validTokens.add(token);
    return reply(200, { access_token: token, expires_in: 86400, scope: 'read:users update:users', token_type: 'Bearer' });
  }

  link(primaryId, raw, reply) {
    if (this.fail.link) return reply(this.fail.link, { statusCode: this.fail.link, error: 'Bad Request', message: 'nope' });
    if (this.fail.linkAnswer) return reply(201, []);
    const body = JSON.parse(raw);
    const primary = this.users.find((u) => u.user_id === primaryId);
    if (!primary) return reply(404, { statusCode: 404, error: 'Not Found', message: 'user not found', errorCode: 'inexistent_user' });
    const secondaryId = `${body.provider}|${body.user_id}`;
    const secondary = this.users.find((u) => u.user_id === secondaryId);
    if (!secondary) return reply(400, { statusCode: 400, error: 'Bad Request', message: 'secondary not found' });
    this.links.push({ primary: primaryId, body });
    // Effects per A-LINKOV: the secondary disappears and becomes an identity of the primary.
    this.users = this.users.filter((u) => u !== secondary);
    primary.identities.push({ ...secondary.identities[0], profileData: { email: secondary.email } });
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
    secrets: { DOMAIN, CLIENT_ID, CLIENT_SECRET, MGMT_BASE_URL: base, ...secrets },
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

function makeApi({ canRedirect = true, cache = makeCache() } = {}) {
  const seen = { primaryUser: [], appMetadata: {}, denied: [] };
  const api = {
    authentication: { setPrimaryUser: (id) => seen.primaryUser.push(id) },
    user: {
      setAppMetadata: (key, value) => {
        seen.appMetadata[key] = value;
      },
      setUserMetadata: () => {},
    },
    redirect: { canRedirect: () => canRedirect, sendUserTo: () => {} },
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
    assert.ok(!line.includes(TOKEN_PREFIX), 'access token in logs');
  }
}

async function run(user, { event: eventOptions, api: apiOptions } = {}) {
  const event = makeEvent(user, eventOptions, mgmt.base);
  const { api, seen } = apiOptions && apiOptions.api ? apiOptions : makeApi(apiOptions);
  await action.onExecutePostLogin(event, api);
  assertCleanLogs();
  return seen;
}

describe('link-identities post-login action', () => {
  test('links a fresh side identity into the older primary and switches the login to it', async () => {
    const primary = makeUser('google-oauth2|1080', { created: '2023-05-01T10:00:00.000Z' });
    const side = makeUser('email|65f0c0ffee', { created: '2025-02-02T10:00:00.000Z' });
    mgmt.users.push(structuredClone(primary), structuredClone(side));

    const seen = await run(side, { event: { connection: { id: 'con_email1', name: 'email', strategy: 'email' } } });

    assert.deepEqual(mgmt.links, [{ primary: 'google-oauth2|1080', body: { provider: 'email', user_id: '65f0c0ffee', connection_id: 'con_email1' } }]);
    assert.deepEqual(seen.primaryUser, ['google-oauth2|1080']);
    assert.equal(seen.appMetadata.aegis_link.status, 'linked');
    assert.equal(seen.appMetadata.aegis_link.primary, 'google-oauth2|1080');
    assert.deepEqual(seen.denied, []);
    // The Management API now shows one user holding both identities.
    assert.equal(mgmt.users.length, 1);
    assert.deepEqual(mgmt.users[0].identities.map((i) => i.provider), ['google-oauth2', 'email']);
  });

  test('a user that already has linked identities is left alone without any API call', async () => {
    const primary = makeUser('google-oauth2|1080');
    primary.identities.push({ provider: 'email', user_id: '65f0c0ffee', connection: 'email' });
    mgmt.users.push(structuredClone(primary));

    const seen = await run(primary);

    assert.deepEqual(mgmt.requests, []);
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(seen.appMetadata, {});
  });

  test('a user already processed is not looked up again', async () => {
    const side = makeUser('email|65f0c0ffee', { appMetadata: { aegis_link: { status: 'alone', at: '2025-01-01T00:00:00Z' } } });
    mgmt.users.push(makeUser('google-oauth2|1080', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    const seen = await run(side);

    assert.deepEqual(mgmt.requests, []);
    assert.deepEqual(mgmt.links, []);
    assert.deepEqual(seen.primaryUser, []);
  });

  test('an unverified email is never linked', async () => {
    const side = makeUser('email|65f0c0ffee', { verified: false, created: '2025-02-02T00:00:00Z' });
    mgmt.users.push(makeUser('google-oauth2|1080', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    const seen = await run(side);

    assert.deepEqual(mgmt.requests, []);
    assert.deepEqual(seen.primaryUser, []);
    // Not marked: once the email is verified, a later login links it.
    assert.deepEqual(seen.appMetadata, {});
  });

  test('candidates with an unverified email are ignored', async () => {
    const side = makeUser('samlp|corp|jdoe', { created: '2025-02-02T00:00:00Z', connection: 'corp' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z', verified: false }), structuredClone(side));

    const seen = await run(side);

    assert.deepEqual(mgmt.links, []);
    assert.deepEqual(seen.primaryUser, []);
    assert.equal(seen.appMetadata.aegis_link.status, 'alone');
  });

  test('with several candidates the primary is chosen deterministically', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    const flagged = makeUser('google-oauth2|flagged', { created: '2024-06-01T00:00:00Z', appMetadata: { aegis_primary: true } });
    const oldest = makeUser('auth0|oldest', { created: '2021-01-01T00:00:00Z' });
    const twinB = makeUser('auth0|b-twin', { created: '2022-01-01T00:00:00Z' });
    const twinA = makeUser('auth0|a-twin', { created: '2022-01-01T00:00:00Z' });

    // The aegis_primary flag beats age, whatever order the API lists users in.
    for (const order of [[flagged, oldest, side], [side, oldest, flagged], [oldest, side, flagged]]) {
      mgmt.users = order.map((u) => structuredClone(u));
      mgmt.links = [];
      const seen = await run(side);
      assert.deepEqual(seen.primaryUser, ['google-oauth2|flagged']);
      assert.equal(mgmt.links[0].primary, 'google-oauth2|flagged');
    }

    // Without a flag the oldest wins.
    mgmt.users = [twinB, side, oldest].map((u) => structuredClone(u));
    mgmt.links = [];
    assert.deepEqual((await run(side)).primaryUser, ['auth0|oldest']);

    // Equal age: the smaller user_id wins, in either listing order.
    for (const order of [[twinB, twinA, side], [twinA, side, twinB]]) {
      mgmt.users = order.map((u) => structuredClone(u));
      mgmt.links = [];
      assert.deepEqual((await run(side)).primaryUser, ['auth0|a-twin']);
    }
  });

  test('when the current user is the primary nothing is linked', async () => {
    const current = makeUser('auth0|oldest', { created: '2020-01-01T00:00:00Z' });
    mgmt.users.push(structuredClone(current), makeUser('email|newer', { created: '2025-01-01T00:00:00Z' }));

    const seen = await run(current);

    assert.deepEqual(mgmt.links, []);
    assert.deepEqual(seen.primaryUser, []);
    assert.equal(seen.appMetadata.aegis_link.status, 'primary');
  });

  test('a Management API failure lets the login continue and leaks no secret', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));
    mgmt.fail.usersByEmail = 500;

    const seen = await run(side); // must not throw

    assert.deepEqual(seen.denied, []);
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(seen.appMetadata, {}); // not marked: the next login tries again
    assert.ok(logs.some((line) => line.includes('users-by-email') && line.includes('500')), logs.join('\n'));
  });

  test('a refused token request or a failed link also lets the login continue', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    mgmt.fail.token = 401;
    let seen = await run(side);
    assert.deepEqual([seen.denied, seen.primaryUser, seen.appMetadata], [[], [], {}]);
    assert.ok(logs.some((line) => line.includes('token') && line.includes('401')));

    mgmt.fail = { link: 400 };
    seen = await run(side);
    assert.deepEqual([seen.denied, seen.primaryUser, seen.appMetadata], [[], [], {}]);
    assert.ok(logs.some((line) => line.includes('link') && line.includes('400')));
  });

  test('the login is not switched unless the link answer lists the identity', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));
    mgmt.fail.linkAnswer = true;

    const seen = await run(side);

    // setPrimaryUser to a primary that does not hold this identity would fail the login.
    assert.deepEqual([seen.denied, seen.primaryUser, seen.appMetadata], [[], [], {}]);
    assert.ok(logs.some((line) => line.includes('does not list the identity')));
  });

  test('a redirect is not followed, so the secret never reaches another host', async () => {
    const elsewhere = new FakeManagementApi();
    await elsewhere.start();
    try {
      const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
      mgmt.fail.redirectTo = elsewhere.base;

      const seen = await run(side);

      assert.deepEqual([seen.denied, seen.primaryUser], [[], []]);
      assert.deepEqual(elsewhere.requests, []);
      assert.ok(logs.some((line) => line.includes('token') && line.includes('network error')));
    } finally {
      await elsewhere.stop();
    }
  });

  test('an unreachable Management API lets the login continue', async () => {
    const side = makeUser('email|side');
    await mgmt.stop();
    const event = makeEvent(side, {}, mgmt.base);
    const { api, seen } = makeApi();
    await action.onExecutePostLogin(event, api);
    assertCleanLogs();
    assert.deepEqual([seen.denied, seen.primaryUser], [[], []]);
    assert.ok(logs.some((line) => line.includes('network error')));
    await mgmt.start(); // for afterEach
  });

  test('missing secrets and a non-loopback http override are refused without a call', async () => {
    const side = makeUser('email|side');
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    let seen = await run(side, { event: { secrets: { CLIENT_SECRET: '' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.ok(logs.some((line) => line.includes('CLIENT_SECRET is not set')));

    seen = await run(side, { event: { secrets: { MGMT_BASE_URL: 'http://attacker.example' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(mgmt.requests, []);
  });

  test('CIBA transactions are skipped', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    for (const protocol of ['oidc-ciba', 'oidc-ciba-web-link']) {
      const seen = await run(side, { event: { protocol } });
      assert.deepEqual(seen.primaryUser, []);
    }
    assert.deepEqual(mgmt.requests, []);
  });

  test('non-interactive transactions are skipped', async () => {
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));

    for (const protocol of ['oauth2-refresh-token', 'oauth2-token-exchange']) {
      assert.deepEqual((await run(side, { event: { protocol } })).primaryUser, []);
    }
    // prompt=none and similar: the runtime says the login cannot redirect.
    assert.deepEqual((await run(side, { api: { canRedirect: false } })).primaryUser, []);
    assert.deepEqual(mgmt.requests, []);
  });

  test('LINK_CONNECTIONS limits which logins are linked', async () => {
    const side = makeUser('samlp|corp|jdoe', { created: '2025-03-01T00:00:00Z', connection: 'corp' });
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), structuredClone(side));
    const connection = { id: 'con_corp', name: 'corp', strategy: 'samlp' };

    let seen = await run(side, { event: { connection, secrets: { LINK_CONNECTIONS: 'email, google-oauth2' } } });
    assert.deepEqual(seen.primaryUser, []);
    assert.deepEqual(mgmt.requests, []);

    seen = await run(side, { event: { connection, secrets: { LINK_CONNECTIONS: 'email,corp' } } });
    assert.deepEqual(seen.primaryUser, ['auth0|old']);
    assert.deepEqual(mgmt.links[0].body, { provider: 'samlp', user_id: 'corp|jdoe', connection_id: 'con_corp' });
  });

  test('the Management token is cached: a second run does not fetch it again', async () => {
    const cache = makeCache();
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }));
    const first = makeUser('email|first', { created: '2025-03-01T00:00:00Z' });
    const second = makeUser('google-oauth2|second', { created: '2025-04-01T00:00:00Z' });
    mgmt.users.push(structuredClone(first), structuredClone(second));

    await run(first, { api: makeApi({ cache }) });
    await run(second, { api: makeApi({ cache }) });

    assert.equal(mgmt.tokensIssued, 1);
    assert.equal(mgmt.requests.filter((r) => r.path === '/oauth/token').length, 1);
    assert.equal(mgmt.links.length, 2);
    assert.equal(cache.entries.size, 1);
  });

  test('a cached token that the API refuses is replaced once', async () => {
    const cache = makeCache();
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }));
    const side = makeUser('email|side', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(structuredClone(side));
    await run(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }), { api: makeApi({ cache }) });
    assert.equal(mgmt.tokensIssued, 1);
    mgmt.validTokens.clear(); // e.g. the grant was rotated

    const seen = await run(side, { api: makeApi({ cache }) });

    assert.equal(mgmt.tokensIssued, 2);
    assert.deepEqual(seen.primaryUser, ['auth0|old']);
  });

  test('a numeric provider user_id is sent as a string', async () => {
    mgmt.users.push(makeUser('auth0|old', { created: '2020-01-01T00:00:00Z' }));
    const side = makeUser('github|4242', { created: '2025-03-01T00:00:00Z' });
    mgmt.users.push(structuredClone(side));
    side.identities[0].user_id = 4242;

    const seen = await run(side, { event: { connection: { id: 'con_gh', name: 'github', strategy: 'github' } } });

    assert.deepEqual(seen.primaryUser, ['auth0|old']);
    assert.deepEqual(mgmt.links[0].body, { provider: 'github', user_id: '4242', connection_id: 'con_gh' });
  });
});
