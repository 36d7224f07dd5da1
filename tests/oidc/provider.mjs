// A real OpenID provider for the tests: oidc-provider (panva), configured as an operator would
// configure one for the mailing API. Run by tests/api/test_oidc_provider.py:
//
//     node tests/oidc/provider.mjs <node_modules of oidc-provider> '<JSON config>'
//
// config: {port, audience, otherAudience, redirectUris, postLogoutRedirectUris, secret}
//
// - JWKS: RSA keys made at start; POST /_test/rotate puts a new one first (it signs from then
//   on), with {"retire": true} the older ones are dropped too.
// - Resource indicators: access tokens are JWTs for `audience` (or `otherAudience`, another
//   API) carrying the granted scopes; POST /_test/ttl {"seconds": n} sets their lifetime.
// - Clients: `admin-page` (public, PKCE), `admin-basic` and `admin-post` (confidential, their
//   secret by HTTP Basic or in the form), `machine` (client_credentials, dispatches:read and
//   receipts:write at most).
// - Accounts: `operator` (every permission), `reader` (dispatches:read clients:read); the login
//   page takes a posted username, and consent is given at once for what the account may have.
// - Refresh tokens with offline_access; RP-initiated logout at end_session_endpoint.
// - POST /_test/token-auth: how the token requests since the last call sent their client's
//   credentials (`basic`: an Authorization header; `form`: in the body).
// Stopping the process is the provider going down.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, rawConfig] = process.argv.slice(2);
const config = JSON.parse(rawConfig);
const { default: Provider, errors } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const PERMISSIONS = [
  'clients:read', 'clients:write', 'clients:opt-out', 'dispatches:read', 'dispatches:write',
  'dispatches:control', 'receipts:write',
];
const ACCOUNTS = {
  operator: { name: 'Olga Operator', permissions: PERMISSIONS },
  reader: { name: 'Roman Reader', permissions: ['dispatches:read', 'clients:read'] },
};
const issuer = `http://127.0.0.1:${config.port}`;
const state = { accessTokenTTL: 600 };
// How each request to the token endpoint authenticated its client: oidc-provider takes a
// secret either way, whatever the client registered, so the tests ask here.
let tokenAuth = [];

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = [newKey()];

// The machine client may have only what a gateway's callback and a reporting job need.
const MACHINE_SCOPES = ['dispatches:read', 'receipts:write'];

function resourceServer(audience, client) {
  return {
    audience,
    scope: (client?.clientId === 'machine' ? MACHINE_SCOPES : PERMISSIONS).join(' '),
    accessTokenTTL: state.accessTokenTTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

function build() {
  const client = (id, extra) => ({
    client_id: id,
    redirect_uris: config.redirectUris,
    post_logout_redirect_uris: config.postLogoutRedirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...extra,
  });
  const provider = new Provider(issuer, {
    clients: [
      client('admin-page', { token_endpoint_auth_method: 'none' }),
      client('admin-basic', {
        client_secret: config.secret,
        token_endpoint_auth_method: 'client_secret_basic',
      }),
      client('admin-post', {
        client_secret: config.secret,
        token_endpoint_auth_method: 'client_secret_post',
      }),
      {
        client_id: 'machine',
        client_secret: config.secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys },
    cookies: { keys: ['mailing-tests-cookie-key'] },
    claims: { openid: ['sub'], profile: ['name'] },
    scopes: ['openid', 'offline_access', 'profile'],
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return { accountId: id, async claims() { return { sub: id, name: account.name }; } };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        async getResourceServerInfo(ctx, indicator, client) {
          if (indicator === config.audience || indicator === config.otherAudience) {
            return resourceServer(indicator, client);
          }
          throw new errors.InvalidTarget();
        },
      },
    },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
      IdToken: 3600,
      Grant: 3600,
      Session: 3600,
      Interaction: 600,
      RefreshToken: 3600,
      AuthorizationCode: 60,
    },
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  return provider;
}

let provider = build();
let handler = provider.callback();

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in to the test provider</h1>
${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Username <input name="login" autofocus></label>
  <button type="submit">Sign in</button>
</form></body></html>`;
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

function send(res, status, type, text) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

// Consent for what the account may have: every OIDC scope asked, the resource scopes among its
// permissions; the others are refused (so that they are not asked again).
async function consent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const account = ACCOUNTS[session.accountId];
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    const allowed = scopes.filter((s) => account.permissions.includes(s));
    const refused = scopes.filter((s) => !account.permissions.includes(s));
    if (allowed.length) grant.addResourceScope(indicator, allowed.join(' '));
    if (refused.length) grant.rejectResourceScope(indicator, refused.join(' '));
  }
  const saved = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: saved } }, {
    mergeWithLastSubmission: true,
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  if (action === 'login' && req.method === 'POST') {
    const login = new URLSearchParams(await body(req)).get('login') ?? '';
    if (!ACCOUNTS[login]) return send(res, 200, 'text/html', loginPage(uid, `no such user: ${login}`));
    return provider.interactionFinished(req, res, { login: { accountId: login } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (details.prompt.name === 'login') return send(res, 200, 'text/html', loginPage(uid));
  if (details.prompt.name === 'consent') return consent(req, res, details);
  return send(res, 501, 'text/plain', `prompt ${details.prompt.name} not implemented`);
}

async function control(req, res, what) {
  const asked = JSON.parse((await body(req)) || '{}');
  if (what === 'rotate') {
    keys = asked.retire ? [newKey()] : [newKey(), ...keys];
    provider = build();
    handler = provider.callback();
    return send(res, 200, 'application/json', JSON.stringify({ kid: keys[0].kid }));
  }
  if (what === 'token-auth') {
    const seen = tokenAuth;
    tokenAuth = [];
    return send(res, 200, 'application/json', JSON.stringify({ seen }));
  }
  if (what === 'ttl') {
    state.accessTokenTTL = asked.seconds;
    return send(res, 200, 'application/json', JSON.stringify(state));
  }
  return send(res, 404, 'text/plain', 'unknown control');
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const found = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
    if (found) return await interaction(req, res, found[1], found[2]);
    const asked = url.pathname.match(/^\/_test\/([\w-]+)$/);
    if (asked && req.method === 'POST') return await control(req, res, asked[1]);
    if (url.pathname === '/token' && req.method === 'POST') {
      tokenAuth.push(req.headers.authorization?.startsWith('Basic ') ? 'basic' : 'form');
    }
    return handler(req, res);
  } catch (error) {
    console.error(error);
    if (!res.headersSent) send(res, 500, 'text/plain', String(error));
  }
});

server.listen(config.port, '127.0.0.1', () => console.log(`listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
