// Tokens and session cookies as real Supabase clients make them, for the
// integration tests: keys and JWTs from npm `jose`, session cookies from
// `@supabase/ssr` (createServerClient + auth.setSession against the fake
// Supabase Auth in tests/integration/fake_supabase_auth.py).
//
// usage: node jwt_tool.mjs < jobs.json   (a JSON array; prints an array of results)
//   {"op":"keygen","alg":"ES256"|"RS256","kid":K[,"bits":N]} -> {"private","public" (JWKs),"spki" (PEM)}
//   {"op":"sign","alg":A,"key":privateJwk | {"secret":"text"},"claims":{…}[,"header":{…}]} -> token
//   {"op":"cookies","url":SUPABASE_URL,"access_token":T} -> [{"name","value"}, …]
import * as jose from 'jose';
import { createServerClient } from '@supabase/ssr';

process.removeAllListeners('warning'); // keep stdout pure JSON
console.warn = () => {};

async function keygen(job) {
  const opts = { extractable: true };
  if (job.alg === 'RS256') opts.modulusLength = job.bits || 2048;
  const { publicKey, privateKey } = await jose.generateKeyPair(job.alg, opts);
  const pub = { ...(await jose.exportJWK(publicKey)), kid: job.kid, alg: job.alg, use: 'sig' };
  const priv = { ...(await jose.exportJWK(privateKey)), kid: job.kid, alg: job.alg };
  return { private: priv, public: pub, spki: await jose.exportSPKI(publicKey) };
}

async function sign(job) {
  const key = job.key.secret !== undefined
    ? new TextEncoder().encode(job.key.secret)
    : await jose.importJWK(job.key, job.alg);
  const header = { alg: job.alg, typ: 'JWT', ...(job.key.kid ? { kid: job.key.kid } : {}),
                   ...(job.header || {}) };
  // jose refuses to sign a crit it does not know unless told it is understood.
  const crit = Object.fromEntries((header.crit || []).map((name) => [name, true]));
  return new jose.SignJWT(job.claims).setProtectedHeader(header).sign(key, { crit });
}

async function cookies(job) {
  const written = new Map();
  const client = createServerClient(job.url, 'sb_publishable_test_key', {
    // Node 20 has no global WebSocket and realtime-js insists on one at
    // construction; nothing here subscribes, so a placeholder does.
    realtime: { transport: class NoWebSocket {} },
    cookies: {
      getAll: () => [...written].map(([name, value]) => ({ name, value })),
      setAll: (list) => { for (const c of list) written.set(c.name, c.value); },
    },
  });
  const { error } = await client.auth.setSession({ access_token: job.access_token,
                                                   refresh_token: 'refresh-token-unused' });
  if (error) throw error;
  // setAll runs once the auth state change settles.
  for (let i = 0; i < 200 && written.size === 0; i++) await new Promise((r) => setTimeout(r, 5));
  return [...written].filter(([, v]) => v).map(([name, value]) => ({ name, value }));
}

const ops = { keygen, sign, cookies };
let input = '';
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const job of JSON.parse(input)) out.push(await ops[job.op](job));
process.stdout.write(JSON.stringify(out));
