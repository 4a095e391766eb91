// The OpenID provider the grantry-oauth2 tests run against: panva/oidc-provider (pinned in
// package.json) on a free loopback port. The tests start it with `node server.mjs`; it prints
// `listening <issuer>` once it serves.
//
// Environment:
//   IDP_CLIENTS                JSON array of client registrations (oidc-provider client metadata)
//   IDP_ACCESS_TOKEN_TTL       seconds an access token lives (default 60)
//
// Besides the OpenID routes it answers `GET /__test/token-log`: every token request it saw
// (grant type, the refresh token presented, the client authentication used, the outcome), so a
// test can prove that no refresh token was ever presented twice.

import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const clients = JSON.parse(process.env.IDP_CLIENTS ?? '[]');
const accessTokenTtl = Number(process.env.IDP_ACCESS_TOKEN_TTL ?? '60');
const tokenLog = [];

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients,
    cookies: { keys: ['grantry-oauth2-test-cookie-key'] },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: { AccessToken: accessTokenTtl },
    claims: {
      openid: ['sub'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({
        sub,
        name: `User ${sub}`,
        email: `${sub}@example.test`,
        email_verified: true,
      }),
    }),
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === '/__test/token-log') {
      ctx.body = tokenLog;
      return;
    }
    await next();
    if (ctx.path === '/token' && ctx.method === 'POST') {
      const params = ctx.oidc?.params ?? {};
      tokenLog.push({
        grant_type: params.grant_type ?? null,
        refresh_token: params.refresh_token ?? null,
        content_type: ctx.request.type,
        client_auth: ctx.get('authorization') ? 'basic' : 'body',
        status: ctx.status,
        error: ctx.body?.error ?? null,
      });
    }
  });

  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});
