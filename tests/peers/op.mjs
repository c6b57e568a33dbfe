// A real OpenID Provider (the `oidc-provider` package) for Tollgate's
// end-to-end tests, on a free loopback port. It prints `issuer <url>` once
// it listens and stops when its standard input closes.
//
// OP_CONFIG (JSON) names the clients and the accounts:
//   {"clients": [{"client_id", "client_secret", "redirect_uris", "tamper"?}],
//    "accounts": {"<login_hint>": {"email", "email_verified", "name"}}}
// There is no login form: the account signing in is the request's
// `login_hint`, and consent is given at once. A client with
// `"tamper": "aud"` gets ID tokens re-signed (with the provider's own key)
// for another audience, so the tests can see a relying party refuse them.

import http from 'node:http';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OP_CONFIG || '{}');
const accounts = config.accounts || {};
const tamper = {};
const clients = (config.clients || []).map(({ tamper: mode, ...client }) => {
  if (mode) tamper[client.client_id] = mode;
  return {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  };
});

const KID = 'test-op-key';
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: KID, alg: 'RS256', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: ['tollgate-test-op-cookies'] },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  findAccount: (ctx, id) =>
    accounts[id] && {
      accountId: id,
      claims: () => ({ sub: id, ...accounts[id] }),
    },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'token' && ctx.body?.id_token && tamper[ctx.oidc.client?.clientId] === 'aud') {
    const payload = jose.decodeJwt(ctx.body.id_token);
    payload.aud = 'someone-else';
    ctx.body.id_token = await new jose.SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: KID }).sign(privateKey);
  }
});

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    callback(req, res);
    return;
  }
  try {
    const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
    if (prompt.name === 'login') {
      const hint = params.login_hint;
      const result = accounts[hint]
        ? { login: { accountId: hint } }
        : { error: 'access_denied', error_description: 'no such account' };
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
      return;
    }
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const consent = { grantId: await grant.save() };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  } catch (e) {
    res.statusCode = 500;
    res.end(String(e));
  }
});

process.stdout.write(`issuer ${issuer}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
