/**
 * Aegis Post-Login Action: link a side identity into the person's one primary profile.
 *
 * Why: aegisd asks one Auth0 user (the CIBA approver, `[auth0] user_id`) to approve, and
 * Token Vault keeps the connected accounts on that same user. A passwordless or enterprise
 * SSO login creates a second Auth0 user for the same person; this Action folds such a side
 * user into the configured primary, so the approver and the accounts stay one identity.
 *
 * Auth0's guidance (link-user-accounts): "Every manual account link should prompt the user
 * to enter credentials ... request authentication for both accounts before linking occurs."
 * Hence: only ever link INTO the configured primary (secret PRIMARY_USER_ID, which
 * `aegisctl auth0 deploy-action` sets to `[auth0] user_id`), only logins through an
 * allow-listed connection (LINK_CONNECTIONS; empty means linking is off: fail closed), and
 * two ways to prove both accounts belong to the person:
 *   LINK_MODE=verified_email (default): the login just authenticated the side account, and
 *     the primary's email is verified and equal to it (weaker: it trusts the email).
 *   LINK_MODE=reauthenticate (Auth0's pattern): redirect to LINK_REDIRECT_URL, where the
 *     person signs in to the primary account; the page returns a session_token signed with
 *     LINK_SESSION_SECRET (HS256) whose claims are {candidate: <side user_id>,
 *     authenticated: <primary user_id>}; the link happens in onContinuePostLogin.
 *
 * Order of the link (as Auth0's sample, "to prevent 'Unable to construct login user'"):
 * every check first, then api.authentication.setPrimaryUser(primary), then the link call.
 * If the link call times out or answers unclearly, the primary's identities are read before
 * deciding; a link that did not happen after the switch would make Auth0 fail the login
 * anyway, so the Action then denies it with a clear reason (the next login tries again).
 *
 * What it must not do: link into anyone but PRIMARY_USER_ID, log a secret or a token, link
 * on a non-interactive or CIBA transaction, or run longer than BUDGET_MS (Auth0 stops an
 * Action at 20 s). Before the switch, every failure is logged and the login goes on unlinked.
 *
 * Skips, in this order (the first that applies ends the Action quietly):
 *   1. CIBA transactions (`event.transaction.protocol` starts with `oidc-ciba`).
 *   2. Non-interactive transactions (refresh-token, token-exchange, password grants, and
 *      whatever `api.redirect.canRedirect()` reports as unable to redirect, e.g. prompt=none).
 *   3. The primary itself, users already linked (several identities), users processed
 *      before (app_metadata.aegis_link).
 *   4. LINK_CONNECTIONS empty (logged: linking is off), or this connection not in it.
 *   5. verified_email mode: no email, or an unverified one, on either side.
 *
 * Secrets (event.secrets), all set by `aegisctl auth0 deploy-action`:
 *   DOMAIN            the CANONICAL tenant domain (`TENANT.REGION.auth0.com`), also behind a
 *                     custom domain: the Management API audience must name it
 *   CLIENT_ID         an M2M application granted `read:users update:users`
 *   CLIENT_SECRET     its secret (never logged)
 *   PRIMARY_USER_ID   the one user side identities are linked into
 *   LINK_CONNECTIONS  comma-separated connection names whose logins may be linked
 *   LINK_MODE         `verified_email` (default) or `reauthenticate`
 *   LINK_REDIRECT_URL, LINK_SESSION_SECRET  for `reauthenticate` only
 *   MGMT_BASE_URL     tests only: an `https://` or loopback `http://` base URL standing in for
 *                     `https://DOMAIN`; never set it on a real tenant.
 *
 * Plain CommonJS for node 20+ (Auth0 runtime node22): no TypeScript, no npm dependencies.
 */
'use strict';

const MARKER_KEY = 'aegis_link';

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
const SESSION_TOKEN_SECONDS = 600;

const NON_INTERACTIVE = new Set([
  'oauth2-refresh-token',
  'oauth2-token-exchange',
  'oauth2-resource-owner',
  'oauth2-resource-owner-jwt-bearer',
  'oauth2-password',
  'oauth2-access-token',
]);

// Skip reasons worth a log line: they explain why a person's accounts were not linked.
const LOGGED_SKIPS = new Set([
  'no email',
  'email not verified',
  'connection not in LINK_CONNECTIONS',
  'LINK_CONNECTIONS is empty: linking is off',
  'PRIMARY_USER_ID is not set',
]);

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
  const mode = linkMode(secrets);
  const needed = ['DOMAIN', 'CLIENT_ID', 'CLIENT_SECRET', 'PRIMARY_USER_ID'];
  if (mode === 'reauthenticate') needed.push('LINK_REDIRECT_URL', 'LINK_SESSION_SECRET');
  for (const name of needed) {
    if (!secrets[name]) throw new LinkError('config', `secret ${name} is not set`);
  }
  if (secrets.PRIMARY_USER_ID.length > PRIMARY_ID_MAX) {
    throw new LinkError('config', 'PRIMARY_USER_ID is longer than setPrimaryUser accepts');
  }
  const key = (CACHE_KEY_PREFIX + safe(secrets.CLIENT_ID, 64)).slice(0, CACHE_MAX_KEY_BYTES);
  return {
    api,
    secrets,
    scrub: [secrets.CLIENT_SECRET, secrets.LINK_SESSION_SECRET].filter(Boolean),
    mode,
    primaryId: secrets.PRIMARY_USER_ID,
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
  // One token per execution: the link right after the switch must not depend on a new fetch.
  if (!fresh && ctx.token) return { token: ctx.token, cached: true };
  if (!fresh) {
    const cached = cacheGet(ctx);
    if (cached) {
      ctx.scrub.push(cached);
      ctx.token = cached;
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
  ctx.token = res.data.access_token;
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

function allowList(secrets) {
  return String(secrets.LINK_CONNECTIONS || '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
}

function linkMode(secrets) {
  return secrets.LINK_MODE === 'reauthenticate' ? 'reauthenticate' : 'verified_email';
}

function skipReason(event, api) {
  const user = event.user || {};
  const secrets = event.secrets || {};
  const protocol = String((event.transaction && event.transaction.protocol) || '');
  if (protocol.startsWith('oidc-ciba')) return 'CIBA transaction';
  if (NON_INTERACTIVE.has(protocol)) return `non-interactive protocol ${safe(protocol)}`;
  if (api.redirect && typeof api.redirect.canRedirect === 'function' && !api.redirect.canRedirect()) {
    return 'non-interactive transaction (cannot redirect)';
  }
  if (!secrets.PRIMARY_USER_ID) return 'PRIMARY_USER_ID is not set';
  if (user.user_id === secrets.PRIMARY_USER_ID) return 'the primary itself';
  const meta = user.app_metadata || {};
  if (meta[MARKER_KEY] !== undefined && meta[MARKER_KEY] !== null) return 'already processed';
  if (Array.isArray(user.identities) && user.identities.length > 1) return 'already linked';
  const allowed = allowList(secrets);
  if (allowed.length === 0) return 'LINK_CONNECTIONS is empty: linking is off';
  const connection = event.connection && event.connection.name;
  if (!allowed.includes(connection)) return 'connection not in LINK_CONNECTIONS';
  if (linkMode(secrets) === 'verified_email') {
    if (!user.email) return 'no email';
    if (user.email_verified !== true) return 'email not verified';
  }
  return null;
}

function userPath(id, suffix = '') {
  return `/api/v2/users/${encodeURIComponent(id)}${suffix}`;
}

/** The primary, read fresh from the Management API (its identities and email). */
async function readPrimary(ctx) {
  const query = new URLSearchParams({ fields: 'user_id,email,email_verified,identities', include_fields: 'true' });
  const res = await management(ctx, 'read-primary', 'GET', `${userPath(ctx.primaryId)}?${query}`);
  if (res.status !== 200 || !res.data || !Array.isArray(res.data.identities)) {
    throw new LinkError('read-primary', `HTTP ${res.status}${errorCode(res.data)}`);
  }
  return res.data;
}

function lists(identities, identity) {
  return (
    Array.isArray(identities) &&
    identities.some((i) => i && i.provider === identity.provider && String(i.user_id) === identity.user_id)
  );
}

function mark(api, value) {
  api.user.setAppMetadata(MARKER_KEY, { ...value, at: new Date().toISOString() });
}

/** Checks that need the primary: it exists, its email matches (verified_email mode). */
async function checkPrimary(ctx, user) {
  const primary = await readPrimary(ctx);
  if (ctx.mode !== 'verified_email') return primary;
  const same =
    primary.email_verified === true &&
    typeof primary.email === 'string' &&
    primary.email.toLowerCase() === String(user.email).toLowerCase();
  if (!same) throw new LinkError('check', 'the primary has no verified email equal to this login\'s');
  return primary;
}

/**
 * Switch, then link (Auth0's order), then make sure the link happened. Called only after
 * every check passed. Returns normally when linked; denies the login when the link did not
 * happen (after the switch Auth0 would fail it anyway, with a less clear message).
 */
async function switchAndLink(ctx, event, api, user) {
  const identity = loginIdentity(event, user);
  const body = { provider: identity.provider, user_id: identity.user_id };
  // connection_id tells Auth0 which database connection is meant when several exist.
  const conn = event.connection || {};
  if (conn.id && (!identity.connection || identity.connection === conn.name)) body.connection_id = conn.id;
  api.authentication.setPrimaryUser(ctx.primaryId);
  let res = null;
  let failure = '';
  try {
    res = await management(ctx, 'link', 'POST', userPath(ctx.primaryId, '/identities'), body);
  } catch (err) {
    failure = err instanceof LinkError ? err.message : `unexpected ${safe(err && err.name, 30)}`;
  }
  let linked = res !== null && (res.status === 200 || res.status === 201) && lists(res.data, body);
  if (!linked && (res === null || res.status >= 500 || res.status < 300)) {
    // A timeout or an unclear answer: the link may have happened. Read before deciding.
    try {
      linked = lists((await readPrimary(ctx)).identities, body);
    } catch (err) {
      failure = `${failure}; ${err instanceof LinkError ? err.message : 'read failed'}`;
    }
  }
  if (!linked) {
    const why = failure || `link: HTTP ${res && res.status}${errorCode(res && res.data)}`;
    log(`${safe(user.user_id)}: link did not happen after the switch (${why}); login denied`, ctx.scrub);
    api.access.deny('Linking this sign-in to your Aegis account did not complete. Please sign in again.');
    return;
  }
  mark(api, { status: 'linked', primary: ctx.primaryId });
  log(`${safe(user.user_id)}: linked into ${safe(ctx.primaryId)}`, ctx.scrub);
}

async function onLogin(event, api, started, holder) {
  const user = event.user || {};
  const reason = skipReason(event, api);
  if (reason) {
    // Routine skips (CIBA, refresh, processed, linked) happen on most logins: no log line.
    if (LOGGED_SKIPS.has(reason)) log(`skip ${safe(user.user_id)}: ${reason}`);
    return;
  }
  const ctx = makeContext(event, api, started);
  holder.scrub = ctx.scrub;
  if (ctx.mode === 'reauthenticate') {
    // Auth0's pattern: prove the primary too, on a page of the tenant owner's choosing.
    const token = api.redirect.encodeToken({
      secret: ctx.secrets.LINK_SESSION_SECRET,
      expiresInSeconds: SESSION_TOKEN_SECONDS,
      payload: { candidate: user.user_id, primary: ctx.primaryId },
    });
    api.redirect.sendUserTo(ctx.secrets.LINK_REDIRECT_URL, { query: { session_token: token } });
    log(`${safe(user.user_id)}: sent to re-authenticate the primary before linking`);
    return;
  }
  await checkPrimary(ctx, user);
  await switchAndLink(ctx, event, api, user);
}

async function continueAfterReauthentication(event, api, started, holder) {
  const user = event.user || {};
  const ctx = makeContext(event, api, started);
  holder.scrub = ctx.scrub;
  if (ctx.mode !== 'reauthenticate') throw new LinkError('continue', 'LINK_MODE is not reauthenticate');
  let payload;
  try {
    payload = api.redirect.validateToken({ secret: ctx.secrets.LINK_SESSION_SECRET, tokenParameterName: 'session_token' });
  } catch {
    throw new LinkError('continue', 'the session_token is not valid');
  }
  if (!payload || payload.candidate !== user.user_id || payload.authenticated !== ctx.primaryId) {
    throw new LinkError('continue', 'the session_token does not prove the primary for this login');
  }
  const reason = skipReason(event, api);
  if (reason && !reason.startsWith('non-interactive transaction')) throw new LinkError('continue', reason);
  await checkPrimary(ctx, user);
  await switchAndLink(ctx, event, api, user);
}

async function guarded(step, event, api) {
  const holder = { scrub: [] };
  try {
    await step(event, api, Date.now(), holder);
  } catch (err) {
    // Nothing was switched: the login goes on with the unlinked user. A foreign error's
    // message is not ours to trust, so only its class name is logged.
    const detail = err instanceof LinkError ? err.message : `unexpected ${safe(err && err.name, 30)}`;
    log(`not linked, login continues: ${detail}`, holder.scrub);
  }
}

/**
 * @param {Event} event - the post-login event (user, transaction, connection, secrets).
 * @param {PostLoginAPI} api - the post-login API object.
 */
exports.onExecutePostLogin = async (event, api) => guarded(onLogin, event, api);

/** Back from LINK_REDIRECT_URL (reauthenticate mode only). */
exports.onContinuePostLogin = async (event, api) => guarded(continueAfterReauthentication, event, api);
