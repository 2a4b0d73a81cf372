// Webhook signatures as their own libraries make and check them, for the
// integration tests: Stripe-Signature from npm `stripe`, Standard Webhooks
// from npm `standardwebhooks`.
//
// usage: node webhook_tool.mjs < jobs.json   (a JSON array; prints an array of results)
//   {"op":"stripe_sign","payload":S,"secret":W[,"timestamp":T]} -> Stripe-Signature header
//       (stripe.webhooks.generateTestHeaderString, checked with constructEvent)
//   {"op":"sw_verify","secret":whsec_,"payload":S,"headers":{…}} -> {"ok":bool,"event"|"error"}
import Stripe from 'stripe';
import { Webhook } from 'standardwebhooks';

process.removeAllListeners('warning');
console.warn = () => {};

const stripe = new Stripe('sk_test_unused');

function stripeSign(job) {
  const opts = { payload: job.payload, secret: job.secret };
  if (job.timestamp !== undefined) opts.timestamp = job.timestamp;
  const header = stripe.webhooks.generateTestHeaderString(opts);
  let json = true;
  try { JSON.parse(job.payload); } catch { json = false; }
  if (job.timestamp === undefined && json) {
    // the round trip: what the library signs, the library accepts
    stripe.webhooks.constructEvent(job.payload, header, job.secret);
  }
  return header;
}

function swVerify(job) {
  try {
    const event = new Webhook(job.secret).verify(job.payload, job.headers);
    return { ok: true, event };
  } catch (e) {
    return { ok: false, error: String(e && e.message) };
  }
}

const jobs = JSON.parse(await new Promise((resolve) => {
  let data = '';
  process.stdin.on('data', (c) => { data += c; });
  process.stdin.on('end', () => resolve(data));
}));
const out = jobs.map((job) => (job.op === 'stripe_sign' ? stripeSign(job) : swVerify(job)));
process.stdout.write(JSON.stringify(out));
