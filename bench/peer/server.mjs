// The Node.js peer of bench/run.sh: POST /api/infer written the plain way a
// Node team would write it, on LensRoom's own PostgreSQL schema, so both
// servers write the same rows and the benchmark compares designs, not data.
//
//   auth (HS256 JWT from Authorization: Bearer or the lr_session cookie,
//         verified by jose with LensRoom's secret, audience authenticated)
//   -> model from src/providers/catalog.json (same costs, same defaults)
//   -> transaction 1: lock the balance row, check it, insert the generation
//      (processing), debit, insert the ledger row
//   -> mock at 0 ms: text is a string; an image is a real PNG (256x256 RGB,
//      zlib level 1, Sub filter; kept per prompt and size, at most 256, as
//      LensRoom's mock keeps its files) written to a temp file,
//      fdatasync'ed and renamed into place (as LensRoom's local storage)
//   -> transaction 2: one UPDATE to success with the URL (auto-committed)
//   -> {success: true, urls, newBalance, ...}
//
// One process, one event loop, one pg Pool (PEER_POOL, default 16): the
// honest single-process baseline. Statements are named, so pg prepares each
// once per connection. The connections run with lensroom.ledger=on: the
// peer writes its own ledger rows, so the schema's guard trigger (which
// records direct balance changes) must not add a second one.
//
// Environment: DATABASE_URL (postgres), SUPABASE_JWT_SECRET, PEER_PORT
// (3192), PEER_DATA_DIR (./peer-data), PEER_POOL (16), PEER_PUBLIC_URL
// (http://127.0.0.1:PORT), LENSROOM_CATALOG (the repository's catalog.json).
// Logs nothing per request; prints "peer listening on PORT" when ready.

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

import { jwtVerify } from 'jose';
import pg from 'pg';

const here = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.PEER_PORT || 3192);
const dataDir = path.resolve(process.env.PEER_DATA_DIR || 'peer-data');
const publicUrl = process.env.PEER_PUBLIC_URL || `http://127.0.0.1:${port}`;
const secretText = process.env.SUPABASE_JWT_SECRET || process.env.LENSROOM_JWT_SECRET;
if (!process.env.DATABASE_URL || !secretText) {
  console.error('peer: DATABASE_URL and SUPABASE_JWT_SECRET are required');
  process.exit(2);
}
const secret = new TextEncoder().encode(secretText);
const catalogPath = process.env.LENSROOM_CATALOG || path.join(here, '../../src/providers/catalog.json');
const catalog = new Map(JSON.parse(readFileSync(catalogPath, 'utf8')).map((m) => [m.id, m]));
// generations.type for each capability the peer's mock can produce.
const typeOf = { text: 'text', image: 'photo' };
const deflate = promisify(zlib.deflate);

const pool = new pg.Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.PEER_POOL || 16),
  options: '-c lensroom.ledger=on',
});

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) reject(new HttpError(413, 'payload_too_large', 'Request body is too large'));
      else parts.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function tokenOf(req) {
  const auth = req.headers.authorization;
  if (auth && auth.startsWith('Bearer ')) return auth.slice(7).trim();
  for (const part of (req.headers.cookie || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === 'lr_session') return part.slice(eq + 1).trim();
  }
  return null;
}

const uuidShape = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function authenticate(req) {
  const token = tokenOf(req);
  if (!token) throw new HttpError(401, 'unauthorized', 'Sign in first: no session token');
  try {
    const { payload } = await jwtVerify(token, secret, {
      algorithms: ['HS256'],
      audience: 'authenticated',
      clockTolerance: 30,
    });
    if (typeof payload.sub !== 'string' || !uuidShape.test(payload.sub)) throw new Error('sub');
    return payload.sub;
  } catch {
    throw new HttpError(401, 'invalid_token', 'The session token is not valid');
  }
}

// The catalog's defaults, overridden by the request's values for known keys.
function paramsFor(model, given) {
  const out = {};
  for (const [key, spec] of Object.entries(model.paramsSchema || {})) {
    out[key] = given && key in given ? given[key] : spec.default;
  }
  return out;
}

function parseRequest(text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'invalid_json', 'The request body is not JSON');
  }
  const model = catalog.get(body && body.modelId);
  const prompt = body && body.inputs && body.inputs.prompt;
  if (typeof prompt !== 'string' || !prompt || Buffer.byteLength(prompt) > 10000) {
    throw new HttpError(400, 'invalid_request', 'Missing required fields: modelId and inputs.prompt');
  }
  if (!model || !model.enabled) throw new HttpError(404, 'model_not_found', 'No such model');
  if (!typeOf[model.capability]) {
    throw new HttpError(422, 'unsupported_model', 'The peer mocks text and image models only');
  }
  return { model, prompt, params: paramsFor(model, body.params) };
}

// Transaction 1: balance check, generation row, debit and ledger row.
async function reserve(client, g) {
  await client.query('BEGIN');
  try {
    const bal = await client.query({
      name: 'balance',
      text: 'SELECT amount FROM credits WHERE user_id = $1 FOR UPDATE',
      values: [g.userId],
    });
    const have = bal.rows.length ? bal.rows[0].amount : 0;
    if (have < g.cost) {
      await client.query('ROLLBACK');
      throw new HttpError(402, 'insufficient_credits',
        `Not enough credits: this generation costs ${g.cost}, the balance is ${have}`);
    }
    await client.query({
      name: 'insert_generation',
      text: `INSERT INTO generations (id, user_id, type, model, prompt, status, credits_used,
               outputs_count, provider, params, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'processing', $6, 1, 'mock', $7, $8, $8)`,
      values: [g.id, g.userId, g.type, g.model.id, g.prompt, g.cost, g.params, g.createdAt],
    });
    const debit = await client.query({
      name: 'debit',
      text: 'UPDATE credits SET amount = amount - $2 WHERE user_id = $1 RETURNING amount',
      values: [g.userId, g.cost],
    });
    await client.query({
      name: 'ledger_charge',
      text: `INSERT INTO credit_transactions (user_id, amount, type, description, generation_id,
               metadata, created_at)
             VALUES ($1, $2, 'generation', $3, $4, $5, $6)`,
      values: [g.userId, -g.cost, `Generation: ${g.model.id} x1`, g.id,
        { model: g.model.id, outputs: 1 }, g.createdAt],
    });
    await client.query('COMMIT');
    return debit.rows[0].amount;
  } catch (err) {
    if (!(err instanceof HttpError)) await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

// Transaction 2: the result. One statement, committed on its own.
async function settle(client, g, out) {
  await client.query({
    name: 'settle',
    text: `UPDATE generations SET status = 'success', result_urls = $2, provider_task_ids = $3,
             succeeded_count = 1, duration_ms = $4, finished_at = now(), storage_keys = $5,
             metadata = coalesce(metadata, '{}'::jsonb) || $6::jsonb
           WHERE id = $1 AND status = 'processing'`,
    values: [g.id, JSON.stringify(out.urls), JSON.stringify([g.taskId]), Date.now() - g.createdAt.getTime(),
      JSON.stringify(out.keys), out.text === undefined ? {} : { text: out.text }],
  });
}

// The mock failed after the debit: fail the row and give the credits back.
async function refund(client, g, message) {
  await client.query('BEGIN');
  try {
    await client.query(
      `UPDATE generations SET status = 'failed', failed_count = 1, credits_used = 0,
         error_code = 'internal_error', error_message = $2, finished_at = now()
       WHERE id = $1 AND status = 'processing'`, [g.id, message]);
    await client.query(
      `INSERT INTO credit_transactions (user_id, amount, type, description, generation_id, metadata)
       VALUES ($1, $2, 'refund', 'Refund: internal_error', $3, '{}')`, [g.userId, g.cost, g.id]);
    const r = await client.query('UPDATE credits SET amount = amount + $2 WHERE user_id = $1 RETURNING amount',
      [g.userId, g.cost]);
    await client.query('COMMIT');
    return r.rows[0].amount;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

// A picture seeded by the prompt: a diagonal blend of two colours with
// three discs, as RGB rows each led by PNG's Sub filter byte. The blend
// depends on x + y only, so row y is a window of one precomputed strip.
function pixels(prompt, w, h) {
  const s = createHash('sha256').update(prompt).digest();
  const strip = Buffer.alloc((w + h) * 3);
  for (let i = 0; i < w + h; i++) {
    const t = Math.floor((i * 255) / (w + h));
    for (let c = 0; c < 3; c++) strip[3 * i + c] = (s[c] * (255 - t) + s[3 + c] * t) / 255;
  }
  const discs = [0, 1, 2].map((d) => ({
    x: (s[6 + d] * w) >> 8, y: (s[9 + d] * h) >> 8, r: 8 + ((s[12 + d] * Math.min(w, h)) >> 10),
    rgb: [s[15 + 3 * d], s[16 + 3 * d], s[17 + 3 * d]],
  }));
  const stride = w * 3 + 1;
  const raw = Buffer.alloc(stride * h);
  const row = Buffer.alloc(w * 3);
  for (let y = 0; y < h; y++) {
    strip.copy(row, 0, 3 * y, 3 * (y + w));
    for (const d of discs) {
      const dy = y - d.y;
      if (dy * dy > d.r * d.r) continue;
      const half = Math.floor(Math.sqrt(d.r * d.r - dy * dy));
      for (let x = Math.max(0, d.x - half); x <= Math.min(w - 1, d.x + half); x++) {
        row[3 * x] = d.rgb[0];
        row[3 * x + 1] = d.rgb[1];
        row[3 * x + 2] = d.rgb[2];
      }
    }
    const at = y * stride;
    raw[at] = 1; // Sub: each byte minus the same channel of the pixel to its left
    raw[at + 1] = row[0];
    raw[at + 2] = row[1];
    raw[at + 3] = row[2];
    for (let i = 3; i < w * 3; i++) raw[at + 1 + i] = row[i] - row[i - 3];
  }
  return raw;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(data, zlib.crc32(type)), 0);
  return Buffer.concat([head, data, crc]);
}

async function png(prompt, size) {
  let w = 256, h = 256;
  if (size === 'portrait') w = 144;
  else if (size === 'landscape') h = 144;
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, adaptive filters, no interlace
  const idat = await deflate(pixels(prompt, w, h), { level: 1 });
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('tEXt', Buffer.from('Software\0LensRoom bench peer', 'latin1')),
    chunk('IDAT', idat),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// Rendered PNGs by prompt and size, least recently used dropped past 256:
// LensRoom's mock keeps its files the same way, so with the benchmark's one
// prompt neither side measures its mock's encoder.
const rendered = new Map();
async function cachedPng(prompt, size) {
  const key = `${size}\0${prompt}`;
  let bytes = rendered.get(key);
  if (bytes) rendered.delete(key); // re-inserted below: most recent last
  else bytes = await png(prompt, size);
  rendered.set(key, bytes);
  if (rendered.size > 256) rendered.delete(rendered.keys().next().value);
  return bytes;
}

// Durable like LensRoom's local storage: temp file, fdatasync, rename.
async function store(key, bytes) {
  const final = path.join(dataDir, 'storage', 'generations', key);
  await mkdir(path.dirname(final), { recursive: true });
  const tmp = `${path.dirname(final)}/.${path.basename(final)}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(bytes);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, final).catch(async (err) => {
    await unlink(tmp).catch(() => {});
    throw err;
  });
}

async function mock(g) {
  if (g.model.capability === 'text') return { urls: [], keys: [], text: `Mock answer to: ${g.prompt.slice(0, 400)}` };
  const key = `${g.userId}/${g.type}/${g.id}.png`;
  await store(key, await cachedPng(g.prompt, g.params.image_size));
  return { urls: [`${publicUrl}/storage/v1/object/public/generations/${key}`], keys: [key] };
}

async function infer(req, res) {
  const userId = await authenticate(req);
  const { model, prompt, params } = parseRequest(await readBody(req));
  const id = randomUUID();
  const g = {
    id, userId, model, prompt, params, cost: model.creditCost, type: typeOf[model.capability],
    createdAt: new Date(), taskId: `mock-${id.slice(0, 8)}-0`,
  };
  const client = await pool.connect();
  let broken;
  try {
    let balance = await reserve(client, g);
    let out;
    try {
      out = await mock(g);
    } catch (err) {
      balance = await refund(client, g, 'The mock could not store its output');
      throw new HttpError(500, 'internal_error', `Generation failed; ${g.cost} credits were refunded (${err.code || 'error'})`);
    }
    await settle(client, g, out);
    const body = { success: true, urls: out.urls, newBalance: balance, generationId: id, status: 'success',
      url: out.urls[0] || null, creditsUsed: g.cost };
    if (out.text !== undefined) body.text = out.text;
    reply(res, 200, body);
  } catch (err) {
    if (!(err instanceof HttpError)) broken = err; // the connection may be mid-transaction: drop it
    throw err;
  } finally {
    client.release(broken);
  }
}

const server = http.createServer((req, res) => {
  const url = req.url.split('?')[0];
  if (url === '/healthz' && req.method === 'GET') return reply(res, 200, { ok: true });
  if (url !== '/api/infer') return reply(res, 404, { success: false, error: 'Not found', code: 'not_found' });
  if (req.method !== 'POST') {
    return reply(res, 405, { success: false, error: 'Use POST', code: 'method_not_allowed' });
  }
  infer(req, res).catch((err) => {
    if (res.headersSent) return;
    if (err instanceof HttpError) return reply(res, err.status, { success: false, error: err.message, code: err.code });
    console.error('peer:', err);
    reply(res, 500, { success: false, error: 'Internal error', code: 'internal_error' });
  });
});
server.keepAliveTimeout = 60000;

function shutdown() {
  server.close(() => pool.end().then(() => process.exit(0)));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(port, '127.0.0.1', () => console.log(`peer listening on ${port}`));
