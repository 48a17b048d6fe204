// Generates testdata/xauth_bitcoin_auth_vectors.json with the reference client:
// npm install bitcoin-auth@0.0.7 (pulls @bsv/sdk 1.10.4), then: node gen-xauth-vectors.mjs 6
import { getAuthToken, verifyAuthToken } from 'bitcoin-auth';
import { PrivateKey, Hash, Utils } from '@bsv/sdk';
const n = parseInt(process.argv[2] || '6');
const out = [];
const paths = ['/v1/keys', '/v1/keys/k_abc/sign?x=1&y=%20z', '/v1/requests/r_1'];
const bodies = [undefined, '{"message":"00ff","derivation_path":"m/0/7"}', '{"curve":"secp256k1","threshold":2,"label":"ünï"}'];
for (let i = 0; i < n; i++) {
  const seed = Utils.toHex(Hash.sha256(Utils.toArray('custos xauth vector ' + i, 'utf8')));
  const pk = PrivateKey.fromHex(seed);
  const wif = pk.toWif();
  const scheme = i % 2 === 0 ? 'bsm' : 'brc77';
  const requestPath = paths[i % 3];
  const body = bodies[Math.floor(i / 2) % 3];
  const timestamp = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, (i * 37) % 1000)).toISOString();
  const token = getAuthToken({ privateKeyWif: wif, requestPath, body, scheme, timestamp });
  const ok = verifyAuthToken(token, { requestPath, timestamp, body });
  out.push({ private_key: seed, scheme, request_path: requestPath, body: body ?? '', timestamp, token, js_verifies: ok });
}
console.log(JSON.stringify(out, null, 1));
