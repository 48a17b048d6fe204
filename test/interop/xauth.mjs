// Makes X-Auth-Tokens with the reference clients, for custos's interop test
// (test/e2e/interop_test.go): bitcoin-auth's getAuthToken for both schemes, and one BRC-77
// token forged with @bsv/sdk whose embedded signer differs from its pubkey field.
//
// Reads JSON on stdin: {"private_key": "<64 hex>", "requests": [{"path": "/v1/keys?x=1",
// "body": "<exact body text, or empty>"}, ...]}
// Writes JSON on stdout: {"public_key": "<66 hex>", "tokens": [{"bsm", "brc77", "forged_brc77",
// "bsm_js_verifies", "brc77_js_verifies", "forged_js_verifies"}, ...]} (one per request).
//
// Every token gets its own millisecond timestamp: a node accepts a (key, path, timestamp,
// body) once, so two tokens for the same request must not share one.
import { getAuthToken, verifyAuthToken } from 'bitcoin-auth';
import { PrivateKey, Hash, SignedMessage, Utils } from '@bsv/sdk';

const MAX_INPUT = 1 << 20;

async function readStdin() {
  const chunks = [];
  let n = 0;
  for await (const c of process.stdin) {
    n += c.length;
    if (n > MAX_INPUT) throw new Error('input larger than 1 MiB');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const input = JSON.parse(await readStdin());
if (!/^[0-9a-f]{64}$/.test(input.private_key ?? '')) throw new Error('private_key must be 64 lowercase hex characters');
if (!Array.isArray(input.requests) || input.requests.length === 0 || input.requests.length > 100) {
  throw new Error('requests must be a list of 1 to 100 requests');
}
const key = PrivateKey.fromHex(input.private_key);
const wif = key.toWif();
const pubkey = key.toPublicKey().toString();
const attacker = PrivateKey.fromRandom();

let clock = Date.now();
const stamp = () => new Date(clock++).toISOString();

const tokens = input.requests.map(({ path, body }) => {
  if (typeof path !== 'string' || !path.startsWith('/')) throw new Error('every request needs a path starting with /');
  const b = body ? body : undefined;
  const out = {};
  for (const scheme of ['bsm', 'brc77']) {
    const timestamp = stamp();
    const token = getAuthToken({ privateKeyWif: wif, requestPath: path, body: b, scheme, timestamp });
    out[scheme] = token;
    out[`${scheme}_js_verifies`] = verifyAuthToken(token, { requestPath: path, timestamp, body: b });
  }
  // Forgery: the attacker signs the message with its own key (BRC-77, recipient anyone),
  // then puts the victim's public key in the token's pubkey field.
  const timestamp = stamp();
  const bodyHash = b ? Utils.toHex(Hash.sha256(Utils.toArray(b, 'utf8'))) : '';
  const message = Utils.toArray(`${path}|${timestamp}|${bodyHash}`, 'utf8');
  const sig = Utils.toBase64(SignedMessage.sign(message, attacker));
  out.forged_brc77 = `${pubkey}|brc77|${timestamp}|${path}|${sig}`;
  out.forged_js_verifies = verifyAuthToken(out.forged_brc77, { requestPath: path, timestamp, body: b });
  return out;
});

process.stdout.write(JSON.stringify({ public_key: pubkey, tokens }) + '\n');
