// Session cookies exactly as @supabase/ssr writes them, for the tests.
//
// stdin: {"url": SUPABASE_URL, "key": publishable key, "sessions": [{
//   "access_token": JWT | "mint": {"secret", "claims"} (signed HS256 by jose),
//   "refresh_token", "user": what GET /auth/v1/user answers,
//   "encoding": "base64url" | "raw", "now_s": clock the library sees (optional)}]}
// stdout: [{"cookies": [{"name", "value", "set_cookie"}], "chunks": N}]
// where value is the cookie's value as a browser sends it back (the
// Set-Cookie line made by the `cookie` package's serialize, as Next.js and
// others do). A createServerClient with a getAll/setAll adapter runs
// auth.setSession; its GET /auth/v1/user goes to an in-process fetch that
// answers with "user", so nothing leaves the process.
"use strict";
const { createServerClient } = require("@supabase/ssr");
const { serialize } = require("cookie");
const { SignJWT } = require("jose");

const realNow = Date.now;

async function sessionCookies(url, key, s) {
  let token = s.access_token;
  if (s.mint) {
    token = await new SignJWT(s.mint.claims)
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .sign(new TextEncoder().encode(s.mint.secret));
  }
  let written;
  const done = new Promise((resolve) => { written = resolve; });
  const fetch = async (input) => {
    const u = new URL(typeof input === "string" ? input : input.url);
    if (u.pathname === "/auth/v1/user")
      return new Response(JSON.stringify(s.user), { status: 200, headers: { "content-type": "application/json" } });
    return new Response('{"msg":"not in this fake"}', { status: 404, headers: { "content-type": "application/json" } });
  };
  const client = createServerClient(url, key, {
    cookieEncoding: s.encoding,
    cookies: { getAll: () => [], setAll: (list) => written(list) },
    global: { fetch },
    // Node 20 has no WebSocket; realtime is never used here, only built.
    realtime: { transport: class NoWebSocket {} },
  });
  // An expired token is written by a library that believes it is still valid.
  if (s.now_s) Date.now = () => s.now_s * 1000;
  try {
    const { error } = await client.auth.setSession({ access_token: token, refresh_token: s.refresh_token });
    if (error) throw error;
  } finally {
    Date.now = realNow;
  }
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("setAll never called")), 30000));
  const list = await Promise.race([done, timeout]);
  const cookies = list.filter((c) => c.value).map((c) => {
    const line = serialize(c.name, c.value, c.options);
    return { name: c.name, value: line.slice(c.name.length + 1, line.indexOf(";")), set_cookie: line };
  });
  return { cookies, chunks: cookies.length, access_token: token };
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const req = JSON.parse(input);
  const out = [];
  for (const s of req.sessions) out.push(await sessionCookies(req.url, req.key, s));
  // stdout is asynchronous on a pipe: exit only once it is written.
  await new Promise((resolve) => process.stdout.write(JSON.stringify(out), resolve));
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
