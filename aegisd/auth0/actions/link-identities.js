/**
 * Aegis Post-Login Action: link a fresh side identity into the person's primary profile.
 *
 * Why: aegisd asks one Auth0 user (the CIBA approver, `[auth0].user_id`) to approve, and
 * Token Vault keeps the connected accounts on that same user. A passwordless login or an
 * enterprise SSO login creates a second Auth0 user for the same person; this Action folds
 * such a side user into the primary one, so the approver and the accounts stay one identity.
 *
 * What it owns: the decision whether to link (the safety rules below), the choice of the
 * primary user, the linking call, the switch of the login subject, and the marker it leaves
 * in app_metadata. What it must not do: deny or break a login (every failure is logged and
 * swallowed), log a secret or a token, link on a non-interactive or CIBA transaction, link
 * an unverified email, or run longer than BUDGET_MS (Auth0 stops an Action at 20 s).
 *
 * Safety rules, checked in this order (the first that applies ends the Action quietly):
 *   1. CIBA transactions (`event.transaction.protocol` starts with `oidc-ciba`) are skipped:
 *      the approver is already the primary user, and a push approval is no place to relink.
 *   2. Non-interactive transactions are skipped: refresh-token, token-exchange, password
 *      grants, and whatever `api.redirect.canRedirect()` reports as unable to redirect
 *      (this includes `prompt=none`). Linking must follow a real login by the person.
 *   3. Users already processed (app_metadata.aegis_link present) are skipped.
 *   4. Users that already have several identities are skipped: they are a primary already,
 *      and Auth0 cannot link a user that has linked identities into another one.
 *   5. A user without an email, or whose email is not verified, is skipped; so are
 *      candidates whose email is not verified. Both sides must be verified.
 *   6. If the secret LINK_CONNECTIONS is set (comma-separated connection names), only a
 *      login through one of those connections is linked.
 *
 * Primary rule (deterministic, so two concurrent logins agree): among the current user and
 * every other user with the same verified email, a user whose app_metadata.aegis_primary is
 * `true` wins; otherwise the oldest `created_at` wins; ties are broken by the smaller
 * `user_id`. Only the identity that just logged in is linked (it has just authenticated);
 * if the current user is itself the primary, nothing is linked, and the other accounts are
 * linked when each of them logs in.
 *
 * Secrets (event.secrets):
 *   DOMAIN         the canonical tenant domain, e.g. `example.eu.auth0.com`
 *   CLIENT_ID      an M2M application granted `read:users update:users` on the Management API
 *   CLIENT_SECRET  its secret (never logged)
 *   LINK_CONNECTIONS  optional allow-list of connection names, see rule 6
 *   MGMT_BASE_URL  tests only: an `https://` or loopback `http://` base URL that stands in
 *                  for `https://DOMAIN` (token endpoint and Management API); never set it
 *                  on a real tenant.
 *
 * Plain CommonJS for node 20+ (Auth0 runtime node22): no TypeScript, no npm dependencies.
 */
'use strict';

const MARKER_KEY = 'aegis_link';
const PRIMARY_FLAG = 'aegis_primary';

// Auth0 stops an Action at 20 s; stay well below and leave room for the rest of the flow.
const BUDGET_MS = 10000;
const FETCH_TIMEOUT_MS = 4000;
const MIN_CALL_MS = 250;

// api.cache limits (Actions limitations page): key <= 64 bytes, value <= 4 KB, lifetime
// <= 24 h, at most 20 entries per trigger. One entry is used.
const CACHE_KEY_PREFIX = 'aegis-mgmt:';
const CACHE_MAX_KEY_BYTES = 64;
const CACHE_MAX_VALUE_BYTES = 4096;
const CACHE_MAX_TTL_MS = 24 * 60 * 60 * 1000;
// Stop using a cached token a minute before it expires, so a call never races expiry.
const TOKEN_EARLY_MS = 60 * 1000;

// Only the first 256 characters of a console line are kept by Auth0.
const LOG_MAX_CHARS = 256;
// setPrimaryUser accepts ids of at most 128 characters.
const PRIMARY_ID_MAX = 128;

const NON_INTERACTIVE = new Set([
  'oauth2-refresh-token',
  'oauth2-token-exchange',
  'oauth2-resource-owner',
  'oauth2-resource-owner-jwt-bearer',
  'oauth2-password',
  'oauth2-access-token',
]);

// Skip reasons worth a log line: they explain why a person's accounts were not linked.
const LOGGED_SKIPS = new Set(['no email', 'email not verified', 'connection not in LINK_CONNECTIONS']);

/** A failure with a message built only from text this file controls (no secrets). */
class LinkError extends Error {
  constructor(step, detail) {
    super(`${step}: ${detail}`);
    this.name = 'LinkError';
  }
}

/**
 * console.log within Auth0's 256 characters. Messages are built from our own text; `scrub`
 * (the client secret and any token) is removed anyway, as a second line of defence.
 */
function log(message, scrub = []) {
  let line = `aegis-link: ${message}`;
  for (const secret of scrub) {
    if (secret) line = line.split(secret).join('[redacted]');
  }
  console.log(line.length > LOG_MAX_CHARS ? `${line.slice(0, LOG_MAX_CHARS - 3)}...` : line);
}

/** Reduce foreign text (user ids, error codes) to a short, log-safe token. */
function safe(value, max = 80) {
  return String(value === undefined || value === null ? '' : value)
    .replace(/[^A-Za-z0-9_.:|@+-]/g, '_')
    .slice(0, max);
}

/** The `error`/`errorCode` field of an Auth0 error body, never its free text. */
function errorCode(data) {
  if (!data || typeof data !== 'object') return '';
  const code = data.errorCode || data.error;
  return code ? ` ${safe(code, 40)}` : '';
}

function skipReason(event, api) {
  const user = event.user || {};
  const protocol = String((event.transaction && event.transaction.protocol) || '');
  if (protocol.startsWith('oidc-ciba')) return 'CIBA transaction';
  if (NON_INTERACTIVE.has(protocol)) return `non-interactive protocol ${safe(protocol)}`;
  if (api.redirect && typeof api.redirect.canRedirect === 'function' && !api.redirect.canRedirect()) {
    return 'non-interactive transaction (cannot redirect)';
  }
  const meta = user.app_metadata || {};
  if (meta[MARKER_KEY] !== undefined && meta[MARKER_KEY] !== null) return 'already processed';
  if (Array.isArray(user.identities) && user.identities.length > 1) return 'already linked';
  if (!user.email) return 'no email';
  if (user.email_verified !== true) return 'email not verified';
  const allowed = String((event.secrets && event.secrets.LINK_CONNECTIONS) || '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  const connection = event.connection && event.connection.name;
  if (allowed.length > 0 && !allowed.includes(connection)) return 'connection not in LINK_CONNECTIONS';
  return null;
}

function baseUrl(secrets) {
  const override = secrets.MGMT_BASE_URL;
  if (!override) return `https://${secrets.DOMAIN}`;
  let url;
  try {
    url = new URL(override);
  } catch {
    throw new LinkError('config', 'MGMT_BASE_URL is not a URL');
  }
  // The override receives the client secret: only TLS or this machine's loopback.
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new LinkError('config', 'MGMT_BASE_URL must be https or loopback http');
  }
  return override.replace(/\/+$/, '');
}

function makeContext(event, api, started) {
  const secrets = event.secrets || {};
  for (const name of ['DOMAIN', 'CLIENT_ID', 'CLIENT_SECRET']) {
    if (!secrets[name]) throw new LinkError('config', `secret ${name} is not set`);
  }
  const key = (CACHE_KEY_PREFIX + safe(secrets.CLIENT_ID, 64)).slice(0, CACHE_MAX_KEY_BYTES);
  return {
    api,
    secrets,
    scrub: [secrets.CLIENT_SECRET],
    base: baseUrl(secrets),
    audience: `https://${secrets.DOMAIN}/api/v2/`,
    cacheKey: key,
    deadline: started + BUDGET_MS,
  };
}

/** One HTTP exchange within the remaining budget; returns {status, data}. */
async function send(ctx, step, method, path, { form, json, token } = {}) {
  const remaining = ctx.deadline - Date.now();
  if (remaining < MIN_CALL_MS) throw new LinkError(step, 'time budget exhausted');
  const headers = { accept: 'application/json' };
  let body;
  if (form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  } else if (json) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(json);
  }
  if (token) headers.authorization = `Bearer ${token}`;
  let status;
  let text;
  try {
    const res = await fetch(ctx.base + path, {
      method,
      headers,
      body,
      // A redirect would carry the secret or the token to wherever it points.
      redirect: 'error',
      signal: AbortSignal.timeout(Math.min(FETCH_TIMEOUT_MS, remaining)),
    });
    status = res.status;
    text = await res.text();
  } catch (err) {
    // Only the error's class name: a message could quote the request.
    const kind = err && (err.name === 'TimeoutError' || err.name === 'AbortError') ? 'timed out' : 'network error';
    throw new LinkError(step, `${kind} (${safe(err && err.name, 30)})`);
  }
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  return { status, data };
}

function cacheGet(ctx) {
  try {
    const record = ctx.api.cache && ctx.api.cache.get(ctx.cacheKey);
    if (!record || typeof record.value !== 'string' || !record.value) return null;
    // An entry about to expire is not worth a call that may outlive it.
    if (record.expires_at && record.expires_at < Date.now() + TOKEN_EARLY_MS / 2) return null;
    return record.value;
  } catch {
    return null;
  }
}

function cacheSet(ctx, token, expiresInSeconds) {
  const ttl = Math.min(CACHE_MAX_TTL_MS, Number(expiresInSeconds || 0) * 1000 - TOKEN_EARLY_MS);
  if (!(ttl > 0) || Buffer.byteLength(token, 'utf8') > CACHE_MAX_VALUE_BYTES || !ctx.api.cache) return;
  try {
    const result = ctx.api.cache.set(ctx.cacheKey, token, { ttl });
    if (result && result.type === 'error') log(`cache: token not stored${errorCode({ error: result.code })}`, ctx.scrub);
  } catch {
    log('cache: token not stored', ctx.scrub);
  }
}

function cacheDelete(ctx) {
  try {
    if (ctx.api.cache && typeof ctx.api.cache.delete === 'function') ctx.api.cache.delete(ctx.cacheKey);
  } catch {
    // Nothing to do: the entry expires on its own.
  }
}

/** A Management API token: from api.cache when possible, else client_credentials. */
async function managementToken(ctx, { fresh }) {
  if (!fresh) {
    const cached = cacheGet(ctx);
    if (cached) {
      ctx.scrub.push(cached);
      return { token: cached, cached: true };
    }
  }
  const res = await send(ctx, 'token', 'POST', '/oauth/token', {
    form: {
      grant_type: 'client_credentials',
      client_id: ctx.secrets.CLIENT_ID,
      client_secret: ctx.secrets.CLIENT_SECRET,
      audience: ctx.audience,
    },
  });
  if (res.status !== 200 || !res.data || typeof res.data.access_token !== 'string') {
    throw new LinkError('token', `HTTP ${res.status}${errorCode(res.data)}`);
  }
  ctx.scrub.push(res.data.access_token);
  cacheSet(ctx, res.data.access_token, res.data.expires_in);
  return { token: res.data.access_token, cached: false };
}

/** A Management API call; a cached token refused with 401 is dropped and replaced once. */
async function management(ctx, step, method, path, json) {
  let tok = await managementToken(ctx, { fresh: false });
  let res = await send(ctx, step, method, path, { json, token: tok.token });
  if (res.status === 401 && tok.cached) {
    cacheDelete(ctx);
    tok = await managementToken(ctx, { fresh: true });
    res = await send(ctx, step, method, path, { json, token: tok.token });
  }
  return res;
}

async function findCandidates(ctx, user) {
  const query = new URLSearchParams({ email: user.email }).toString();
  const res = await management(ctx, 'users-by-email', 'GET', `/api/v2/users-by-email?${query}`);
  if (res.status !== 200 || !Array.isArray(res.data)) {
    throw new LinkError('users-by-email', `HTTP ${res.status}${errorCode(res.data)}`);
  }
  const email = String(user.email).toLowerCase();
  return res.data.filter(
    (other) =>
      other &&
      typeof other.user_id === 'string' &&
      other.user_id !== user.user_id &&
      other.email_verified === true &&
      typeof other.email === 'string' &&
      other.email.toLowerCase() === email,
  );
}

function createdAt(user) {
  const ms = Date.parse(user.created_at);
  // A user without a readable creation date sorts last: it cannot claim to be the oldest.
  return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
}

/** The primary rule from the header: aegis_primary flag, then oldest, then smallest id. */
function choosePrimary(users) {
  const flagged = (u) => (u.app_metadata && u.app_metadata[PRIMARY_FLAG] === true ? 0 : 1);
  return [...users].sort((a, b) => {
    const byFlag = flagged(a) - flagged(b);
    if (byFlag !== 0) return byFlag;
    const byAge = createdAt(a) - createdAt(b);
    if (byAge !== 0 && !Number.isNaN(byAge)) return byAge;
    return a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0;
  })[0];
}

/** The identity used for this login, as {provider, user_id, connection}. */
function loginIdentity(event, user) {
  const identities = Array.isArray(user.identities) ? user.identities : [];
  const connection = event.connection && event.connection.name;
  const identity = identities.find((i) => i && i.connection === connection) || identities[0];
  if (identity && identity.provider && identity.user_id !== undefined && identity.user_id !== null) {
    // Some providers (GitHub) report user_id as a number; the API wants a string.
    return { provider: identity.provider, user_id: String(identity.user_id), connection: identity.connection };
  }
  const cut = String(user.user_id || '').indexOf('|');
  if (cut <= 0) throw new LinkError('link', 'cannot tell the provider of this login');
  return { provider: user.user_id.slice(0, cut), user_id: user.user_id.slice(cut + 1), connection };
}

function mark(api, value) {
  api.user.setAppMetadata(MARKER_KEY, { ...value, at: new Date().toISOString() });
}

async function linkSideIdentity(event, api, started, holder) {
  const user = event.user || {};
  const reason = skipReason(event, api);
  if (reason) {
    // Routine skips (CIBA, refresh, processed, linked) happen on most logins: no log line.
    if (LOGGED_SKIPS.has(reason)) log(`skip ${safe(user.user_id)}: ${reason}`);
    return;
  }
  const ctx = makeContext(event, api, started);
  holder.scrub = ctx.scrub;
  const candidates = await findCandidates(ctx, user);
  if (candidates.length === 0) {
    mark(api, { status: 'alone' });
    log(`${safe(user.user_id)}: no other verified account with this email`);
    return;
  }
  const primary = choosePrimary([user, ...candidates]);
  if (primary.user_id === user.user_id) {
    mark(api, { status: 'primary' });
    log(`${safe(user.user_id)}: is the primary of ${candidates.length + 1} accounts; nothing linked`);
    return;
  }
  if (primary.user_id.length > PRIMARY_ID_MAX) {
    throw new LinkError('link', 'primary user_id is longer than setPrimaryUser accepts');
  }
  const identity = loginIdentity(event, user);
  const body = { provider: identity.provider, user_id: identity.user_id };
  // connection_id tells Auth0 which database connection is meant when several exist.
  const conn = event.connection || {};
  if (conn.id && (!identity.connection || identity.connection === conn.name)) body.connection_id = conn.id;
  const path = `/api/v2/users/${encodeURIComponent(primary.user_id)}/identities`;
  const res = await management(ctx, 'link', 'POST', path, body);
  if (res.status !== 201 && res.status !== 200) {
    throw new LinkError('link', `HTTP ${res.status}${errorCode(res.data)}`);
  }
  // setPrimaryUser fails the whole login unless this identity is now a secondary of the
  // primary, so switch only when the answer (the primary's identities) lists it.
  const listed =
    Array.isArray(res.data) &&
    res.data.some((i) => i && i.provider === body.provider && String(i.user_id) === body.user_id);
  if (!listed) throw new LinkError('link', 'answer does not list the identity; not switching');
  api.authentication.setPrimaryUser(primary.user_id);
  // After the switch Auth0 may apply this to the primary or drop it; either is harmless,
  // because the linked identity now logs in as the primary, which has several identities.
  mark(api, { status: 'linked', primary: primary.user_id });
  log(`${safe(user.user_id)}: linked into ${safe(primary.user_id)}`, ctx.scrub);
}

/**
 * @param {Event} event - the post-login event (user, transaction, connection, secrets).
 * @param {PostLoginAPI} api - the post-login API object.
 */
exports.onExecutePostLogin = async (event, api) => {
  const holder = { scrub: [] };
  try {
    await linkSideIdentity(event, api, Date.now(), holder);
  } catch (err) {
    // Never lock a person out: the login goes on with the unlinked user. A foreign error's
    // message is not ours to trust, so only its class name is logged.
    const detail = err instanceof LinkError ? err.message : `unexpected ${safe(err && err.name, 30)}`;
    log(`not linked, login continues: ${detail}`, holder.scrub);
  }
};
