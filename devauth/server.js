// VORA's development authorization server: oidc-provider (a certified OpenID Provider) on loopback.
//
// It issues JWT access tokens for VORA (audience DEVAUTH_AUDIENCE, VORA's scopes) through the
// authorization code flow with PKCE (public web clients: the console and Swagger UI) and through
// client credentials (service clients), signed with the keys in DEVAUTH_JWKS_FILE and published
// at /jwks. Users log in on its own login page, checked against DEVAUTH_USERS.
import { readFileSync } from "node:fs";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

import Provider from "oidc-provider";

const VORA_SCOPES = ["scope.vora.identities", "scope.vora.calls", "scope.vora.presence", "scope.vora.recording"];
const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

function fail(message) {
  console.error(`devauth: ${message}`);
  process.exit(2);
}

function list(raw) {
  return (raw || "")
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

// "name:secret,name:secret" -> Map(name -> secret)
function pairs(name, raw) {
  const found = new Map();
  for (const item of list(raw)) {
    const at = item.indexOf(":");
    if (at <= 0 || at === item.length - 1) fail(`${name} entries must be name:secret, got ${JSON.stringify(item)}`);
    found.set(item.slice(0, at), item.slice(at + 1));
  }
  return found;
}

function readConfig(env) {
  const host = env.DEVAUTH_HOST || "127.0.0.1";
  if (!LOOPBACK.has(host)) fail(`DEVAUTH_HOST must be a loopback address, got ${host}`);
  const port = Number(env.DEVAUTH_PORT || "18087");
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    fail(`DEVAUTH_PORT must be a port number, got ${env.DEVAUTH_PORT}`);
  const jwksFile = env.DEVAUTH_JWKS_FILE;
  if (!jwksFile) fail("DEVAUTH_JWKS_FILE must name the private JWKS (node devauth/keys.js FILE creates one)");
  let jwks;
  try {
    jwks = JSON.parse(readFileSync(jwksFile, "utf8"));
  } catch (error) {
    fail(`cannot read the JWKS ${jwksFile}: ${error.message}`);
  }
  const accessTokenTtl = Number(env.DEVAUTH_ACCESS_TOKEN_TTL || "3600");
  if (!Number.isInteger(accessTokenTtl) || accessTokenTtl <= 0)
    fail("DEVAUTH_ACCESS_TOKEN_TTL must be a positive whole number");
  return {
    host,
    port,
    issuer: env.DEVAUTH_ISSUER || `http://${host}:${port}`,
    jwks,
    audience: env.DEVAUTH_AUDIENCE || "vora",
    resource: env.DEVAUTH_RESOURCE || "urn:vora",
    users: pairs("DEVAUTH_USERS", env.DEVAUTH_USERS || "demo:demo"),
    webClientId: env.DEVAUTH_WEB_CLIENT_ID || "vora-web",
    webRedirectUris: list(env.DEVAUTH_WEB_REDIRECT_URIS),
    serviceClients: pairs("DEVAUTH_SERVICE_CLIENTS", env.DEVAUTH_SERVICE_CLIENTS),
    accessTokenTtl,
  };
}

function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Every page is self-contained: no fonts or scripts from elsewhere (the network here is loopback only).
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}
label,input,button{display:block;width:100%;margin:.4rem 0}input,button{padding:.5rem;font-size:1rem}
.error{color:#b00020}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, clientId, error, login) {
  const message = error ? `<p class="error" id="login-error">${escapeHtml(error)}</p>` : "";
  return page(
    "VORA sign-in",
    `<p>Sign in to continue to <b>${escapeHtml(clientId)}</b>.</p>${message}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="username">User</label><input id="username" name="login" value="${escapeHtml(login || "")}" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="sign-in" type="submit">Sign in</button></form>`,
  );
}

async function readForm(req, limit = 16 * 1024) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error("form too large");
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function buildProvider(config) {
  const clients = [];
  if (config.webRedirectUris.length) {
    clients.push({
      client_id: config.webClientId,
      client_name: "VORA console and Swagger UI",
      token_endpoint_auth_method: "none",
      application_type: "web",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: config.webRedirectUris,
      post_logout_redirect_uris: config.webRedirectUris,
      scope: ["openid", ...VORA_SCOPES].join(" "),
    });
  }
  for (const [clientId, secret] of config.serviceClients) {
    clients.push({
      client_id: clientId,
      client_secret: secret,
      client_name: `service client ${clientId}`,
      token_endpoint_auth_method: "client_secret_basic",
      grant_types: ["client_credentials"],
      response_types: [],
      redirect_uris: [],
      scope: VORA_SCOPES.join(" "),
    });
  }

  const resourceServer = {
    scope: VORA_SCOPES.join(" "),
    audience: config.audience,
    accessTokenTTL: config.accessTokenTtl,
    accessTokenFormat: "jwt",
    jwt: { sign: { alg: "ES256" } },
  };

  return new Provider(config.issuer, {
    clients,
    jwks: config.jwks,
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    scopes: ["openid", ...VORA_SCOPES],
    claims: { openid: ["sub"] },
    pkce: { required: () => true },
    ttl: { AccessToken: config.accessTokenTtl, ClientCredentials: config.accessTokenTtl },
    // The key set holds one ES256 key, so ID tokens are ES256 too.
    clientDefaults: { id_token_signed_response_alg: "ES256" },
    enabledJWA: { idTokenSigningAlgValues: ["ES256"] },
    // Browsers may call the token endpoint only from the origin of one of the public client's redirect URIs.
    clientBasedCORS(_ctx, origin, client) {
      return client.clientAuthMethod === "none" && client.redirectUris.some((uri) => new URL(uri).origin === origin);
    },
    async findAccount(_ctx, sub) {
      if (!config.users.has(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub };
        },
      };
    },
    // First-party clients only: the user's sign-in is the consent to VORA's scopes.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (!ctx.oidc.session.accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(["openid", ...VORA_SCOPES].join(" "));
      grant.addResourceScope(config.resource, VORA_SCOPES.join(" "));
      await grant.save();
      return grant;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // Sign out at once: the console asked for it with the user's id_token.
        async logoutSource(ctx, form) {
          ctx.body = page(
            "Signing out",
            `${form}<input type="hidden" form="op.logoutForm" name="logout" value="yes">
<noscript><button form="op.logoutForm" type="submit">Sign out</button></noscript>
<script>document.forms['op.logoutForm'].submit()</script>`,
          );
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page("Signed out", "<p>You are signed out.</p>");
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== config.resource) throw new Provider.errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = "html";
      ctx.body = page(
        "Sign-in error",
        `<p class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description || "")}</p>`,
      );
    },
  });
}

// The login page: GET shows it, POST checks the user's password; consent is implied (see loadExistingGrant).
function interactionRoutes(provider, config) {
  return async (ctx, next) => {
    const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(ctx.path);
    if (!match) return next();
    ctx.set("Cache-Control", "no-store");
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== match[1]) ctx.throw(400, "interaction mismatch");
    const { prompt, params } = details;
    if (ctx.method === "GET" && !match[2]) {
      if (prompt.name === "login") {
        ctx.type = "html";
        ctx.body = loginPage(details.uid, params.client_id);
        return undefined;
      }
      // loadExistingGrant grants VORA's scopes at sign-in, so login is the only prompt there is.
      ctx.throw(400, `unexpected prompt ${prompt.name}`);
    }
    if (ctx.method === "POST" && match[2] && prompt.name === "login") {
      const form = await readForm(ctx.req);
      const login = form.get("login") || "";
      const expected = config.users.get(login);
      if (expected === undefined || !sameSecret(form.get("password") || "", expected)) {
        ctx.status = 401;
        ctx.type = "html";
        ctx.body = loginPage(details.uid, params.client_id, "Unknown user or wrong password.", login);
        return undefined;
      }
      return provider.interactionFinished(
        ctx.req,
        ctx.res,
        { login: { accountId: login } },
        { mergeWithLastSubmission: false },
      );
    }
    return ctx.throw(405);
  };
}

const config = readConfig(process.env);
const provider = buildProvider(config);
provider.use(interactionRoutes(provider, config));
const server = createServer(provider.callback());
server.listen(config.port, config.host, () => {
  console.log(`devauth: issuer ${config.issuer} on ${config.host}:${config.port}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
