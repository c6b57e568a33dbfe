// A real SAML 2.0 identity provider (Auth0's `samlp` package, which signs
// with xml-crypto) for Tollgate's end-to-end tests, on a free loopback port
// with a fresh self-signed certificate. It prints `idp <base URL>` once it
// listens and stops when its standard input closes.
//
// SAML_CONFIG (JSON): {"acs": "<the SP's ACS URL>", "accounts": {"<id>": {"email", "name"}}}
//   GET /metadata                  the IdP metadata (entity id = the base URL)
//   GET /sso?SAMLRequest=..&user=  answers the AuthnRequest (redirect binding) for
//                                  account `user` with the usual auto-posting form
//   GET /sso/expired?...           the same, with an assertion that expired ten minutes ago
//   GET /sso/wrong-audience?...    the same, for another audience
// There is no login form: the account signing in is the `user` parameter.

import http from 'node:http';
import selfsigned from 'selfsigned';
import samlp from 'samlp';

const config = JSON.parse(process.env.SAML_CONFIG || '{}');
const accounts = config.accounts || {};
const pems = await selfsigned.generate([{ name: 'commonName', value: 'tollgate-test-idp' }], {
  keySize: 2048,
  algorithm: 'sha256',
  days: 2,
});

function Profile(user) {
  this.user = user;
}
Profile.prototype.getClaims = function getClaims() {
  return { email: this.user.email, name: this.user.name };
};
Profile.prototype.getNameIdentifier = function getNameIdentifier() {
  return {
    nameIdentifier: this.user.email,
    nameIdentifierFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  };
};
function profileMapper(user) {
  return new Profile(user);
}
profileMapper.prototype.metadata = [];

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

function options(mode) {
  return {
    issuer: base,
    cert: pems.cert,
    key: pems.private,
    profileMapper,
    signatureAlgorithm: 'rsa-sha256',
    digestAlgorithm: 'sha256',
    recipient: config.acs,
    destination: config.acs,
    lifetimeInSeconds: mode === 'expired' ? -600 : 300,
    audience: mode === 'wrong-audience' ? 'urn:someone-else' : undefined,
    getUserFromRequest: (req) => accounts[req.query.user] && { id: req.query.user, ...accounts[req.query.user] },
    getPostURL: (audience, request, req, callback) => callback(null, config.acs),
  };
}

const metadata = samlp.metadata({
  issuer: base,
  cert: pems.cert,
  profileMapper,
  redirectEndpointPath: '/sso',
  postEndpointPath: '/sso',
});

// What samlp expects of Express.
function adapt(req, res) {
  const url = new URL(req.url, base);
  req.query = Object.fromEntries(url.searchParams);
  req.originalUrl = url.pathname;
  req.protocol = 'http';
  res.set = (name, value) => res.setHeader(name, value);
  res.send = (status, body) => {
    if (typeof status === 'number') {
      res.statusCode = status;
      res.end(body === undefined ? '' : String(body));
    } else {
      res.end(status);
    }
  };
  return url.pathname;
}

const modes = { '/sso': 'normal', '/sso/expired': 'expired', '/sso/wrong-audience': 'wrong-audience' };

server.on('request', (req, res) => {
  const path = adapt(req, res);
  const fail = (err) => {
    res.statusCode = 500;
    res.end(String(err));
  };
  if (path === '/metadata') {
    metadata(req, res, fail);
  } else if (modes[path]) {
    samlp.auth(options(modes[path]))(req, res, fail);
  } else {
    res.statusCode = 404;
    res.end('not found');
  }
});

process.stdout.write(`idp ${base}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
