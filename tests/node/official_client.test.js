'use strict';
/**
 * Keyhold against Google's official Node.js client (@google-cloud/kms 6.x), over REST.
 *
 * The Node.js twin of tests/python/test_official_client.py: the run starts a real
 * `keyhold serve --in-memory` process on a free loopback port and points
 * `KeyManagementServiceClient` at it exactly as a user of Keyhold would (README, "Official
 * client libraries"): `fallback: true` (google-gax's HTTP/1.1 REST transport), `protocol:
 * 'http'`, `apiEndpoint` and `port` of the server. Nothing is mocked.
 *
 * Authentication mirrors the Python tests: the server writes its owner's token to
 * `--owner-token-file` (in a temporary directory) before it listens, and the client sends it as
 * a static OAuth access token (google-auth-library's OAuth2Client with only `access_token`
 * set, which it never refreshes). Other principals get tokens from `POST /v1/tokens`. A second
 * server started with `--allow-anonymous` (emulator mode) serves a client without any
 * credentials (google-auth-library's PassThroughClient, which sends no Authorization header).
 *
 * Over REST the Node client, unlike the Python one, turns the JSON error's `status` into the
 * gRPC code (`error.code`, e.g. 3 for INVALID_ARGUMENT), so the error checks look at that code
 * and at the server's message (`error.message`).
 *
 * Issue 17: the client's first call, createKeyRing, was refused with 400 INVALID_ARGUMENT.
 * google-gax sends the JSON string `""` as the body when the body message is empty or absent
 * (`keyRing: {}`, createCryptoKeyVersion, destroy, restore), which Google's front end reads as
 * the empty message; Keyhold now does too (crates/keyhold-server/tests/api.rs pins it).
 *
 * The server process is keyhold_server.js's KeyholdServer, shared with
 * official_client_grpc.test.js (the same workflow over gRPC).
 *
 * Environment:
 *   KEYHOLD_BIN  path of the keyhold binary (default: <repo>/target/debug/keyhold)
 *
 * Run: `npm ci && npm test` in tests/node (scripts/test.sh node does both).
 */

const {test, before, after} = require('node:test');
const assert = require('node:assert/strict');
const {execFileSync} = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const {KeyManagementServiceClient} = require('@google-cloud/kms');
const {OAuth2Client, PassThroughClient} = require('google-auth-library');

const {KeyholdServer, serverTestFor, sleep} = require('./keyhold_server');
const PROJECT = 'keyhold-node';
const LOCATION = 'us-central1';
const LOCATION_NAME = `projects/${PROJECT}/locations/${LOCATION}`;
const DECRYPT_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey.";

// gRPC status codes, as the client reports them in `error.code`.
const Code = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNIMPLEMENTED: 12,
  UNAUTHENTICATED: 16,
};

// --------------------------------------------------------------------------------------------
// Clients
// --------------------------------------------------------------------------------------------

/** Static bearer-token credentials: an access token and nothing to refresh it with. */
function bearer(token) {
  const auth = new OAuth2Client();
  auth.setCredentials({access_token: token});
  return auth;
}

/** The official client over REST on plain HTTP, as README shows. */
function makeClient(srv, authClient) {
  return new KeyManagementServiceClient({
    apiEndpoint: '127.0.0.1',
    port: srv.port,
    protocol: 'http',
    fallback: true,
    authClient,
  });
}

let server;
let anonymousServer;
let client;

before(async () => {
  server = new KeyholdServer();
  anonymousServer = new KeyholdServer(['--allow-anonymous']);
  await Promise.all([server.start(), anonymousServer.start()]);
  client = makeClient(server, bearer(server.ownerToken));
});

after(async () => {
  for (const srv of [server, anonymousServer]) {
    if (!srv) continue;
    await srv.stop();
    srv.cleanup();
  }
});

/** Runs a test body; on failure, prints what the servers logged while it ran. */
const serverTest = serverTestFor(() => [server, anonymousServer]);

// --------------------------------------------------------------------------------------------
// Helpers
// --------------------------------------------------------------------------------------------

const unique = prefix => `${prefix}-${crypto.randomBytes(5).toString('hex')}`;

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as Cloud KMS's *_crc32c fields use.
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32c(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC32C_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** An Int64Value of the response (`{value: '123'}`, int64 as a string) as a number. */
const int64 = wrapped => Number(wrapped.value);

async function createRing(c = client, parent = LOCATION_NAME, keyRingId = unique('ring')) {
  const [ring] = await c.createKeyRing({parent, keyRingId, keyRing: {}});
  return ring;
}

async function createKey(c, ringName, keyId = unique('key'), fields = {}) {
  const [key] = await c.createCryptoKey({
    parent: ringName,
    cryptoKeyId: keyId,
    cryptoKey: {purpose: 'ENCRYPT_DECRYPT', ...fields},
  });
  return key;
}

async function encrypt(c, name, plaintext, aad = Buffer.alloc(0)) {
  const [resp] = await c.encrypt({name, plaintext, additionalAuthenticatedData: aad});
  return resp;
}

async function decrypt(c, name, ciphertext, aad = Buffer.alloc(0)) {
  const [resp] = await c.decrypt({name, ciphertext, additionalAuthenticatedData: aad});
  return resp;
}

async function setState(c, name, state) {
  const [version] = await c.updateCryptoKeyVersion({
    cryptoKeyVersion: {name, state},
    updateMask: {paths: ['state']},
  });
  return version;
}

/** The call fails with gRPC `code` and exactly `message` (or one starting with it). */
async function assertGoogleError(promise, code, message, {prefix = false} = {}) {
  await assert.rejects(promise, err => {
    const name = Object.keys(Code).find(k => Code[k] === err.code) || err.code;
    assert.equal(err.code, code, `expected code ${code}, got ${name}: ${err.message}`);
    if (prefix) {
      assert.ok(err.message.startsWith(message), `${err.message} does not start with ${message}`);
    } else {
      assert.equal(err.message, message);
    }
    return true;
  });
}

const toMillis = ts => Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6);

// --------------------------------------------------------------------------------------------
// Key rings and locations
// --------------------------------------------------------------------------------------------

test('crc32c helper is Castagnoli', () => {
  // RFC 3720 check value: the tests below are only as good as this.
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

serverTest('create, get and list key rings', async () => {
  const ringId = unique('ring');
  const name = `${LOCATION_NAME}/keyRings/${ringId}`;
  const before = Date.now() - 5000;

  const [ring] = await client.createKeyRing({parent: LOCATION_NAME, keyRingId: ringId, keyRing: {}});
  assert.equal(ring.name, name);
  const created = toMillis(ring.createTime);
  assert.ok(before <= created && created <= Date.now() + 5000, `createTime ${created}`);

  await assertGoogleError(
    client.createKeyRing({parent: LOCATION_NAME, keyRingId: ringId, keyRing: {}}),
    Code.ALREADY_EXISTS,
    `KeyRing ${name} already exists.`
  );

  const [got] = await client.getKeyRing({name});
  assert.equal(got.name, name);
  assert.deepEqual(got.createTime, ring.createTime);

  const other = await createRing();
  const [rings] = await client.listKeyRings({parent: LOCATION_NAME});
  const names = rings.map(r => r.name);
  assert.ok(names.includes(name) && names.includes(other.name));
  assert.equal(new Set(names).size, names.length, 'a key ring was listed twice');
  assert.ok(names.every(n => n.startsWith(`${LOCATION_NAME}/keyRings/`)));
});

serverTest('list key rings page by page', async () => {
  const parent = `projects/${unique('paging')}/locations/${LOCATION}`;
  const created = new Set();
  for (let i = 0; i < 3; i++) created.add((await createRing(client, parent, `r${i}`)).name);

  // autoPaginate: false returns one page and the request for the next.
  const [page1, next, raw1] = await client.listKeyRings({parent, pageSize: 2}, {autoPaginate: false});
  assert.equal(page1.length, 2);
  assert.ok(raw1.nextPageToken);
  assert.equal(raw1.totalSize, 3);
  const [page2, none, raw2] = await client.listKeyRings(next, {autoPaginate: false});
  assert.equal(page2.length, 1);
  assert.equal(none, null);
  assert.equal(raw2.nextPageToken, '');
  assert.deepEqual(new Set([...page1, ...page2].map(r => r.name)), created);

  // The async iterator walks every page.
  const all = [];
  for await (const r of client.listKeyRingsAsync({parent, pageSize: 2}, {autoPaginate: false})) all.push(r.name);
  assert.deepEqual(new Set(all), created);
  assert.equal(all.length, 3);
});

serverTest('a missing key ring or key is NOT_FOUND', async () => {
  const name = `${LOCATION_NAME}/keyRings/nope`;
  await assertGoogleError(client.getKeyRing({name}), Code.NOT_FOUND, `KeyRing ${name} not found.`);
  await assertGoogleError(createKey(client, name, 'k'), Code.NOT_FOUND, `KeyRing ${name} not found.`);

  const ring = await createRing();
  const key = `${ring.name}/cryptoKeys/nope`;
  await assertGoogleError(client.getCryptoKey({name: key}), Code.NOT_FOUND, `CryptoKey ${key} not found.`);
});

serverTest('an invalid ID is INVALID_ARGUMENT', async () => {
  await assert.rejects(
    client.createKeyRing({parent: LOCATION_NAME, keyRingId: 'bad.id', keyRing: {}}),
    err => err.code === Code.INVALID_ARGUMENT && /bad\.id/.test(err.message)
  );
});

serverTest('list and get locations', async () => {
  // The locations mixin of @google-cloud/kms cannot decode a Location over REST: its proto root
  // lacks google.cloud.kms.v1.LocationMetadata, the `@type` of `metadata` that Cloud KMS (and
  // Keyhold) send, so the client fails after a 200 answer. Against Cloud KMS too: known client
  // bug https://github.com/googleapis/google-cloud-node/issues/4366. Pinned here so that a
  // client that fixes it shows up; the server's answer itself is checked over plain HTTP below.
  const knownClientBug = err =>
    /cannot find type google\.cloud\.kms\.v1\.LocationMetadata/.test(err.message) || assert.fail(err);
  const listed = async () => {
    const out = [];
    for await (const loc of client.listLocationsAsync({name: `projects/${PROJECT}`}, {autoPaginate: false}))
      out.push(loc);
    return out;
  };
  await assert.rejects(listed(), knownClientBug);
  await assert.rejects(client.getLocation({name: LOCATION_NAME}), knownClientBug);

  // What the client received: the same request, sent as the client sends it.
  const get = async url => {
    const r = await fetch(`${server.url}/v1/${url}?$alt=json%3Benum-encoding=int`, {
      headers: {Authorization: `Bearer ${server.ownerToken}`},
    });
    assert.equal(r.status, 200);
    return r.json();
  };
  const {locations} = await get(`projects/${PROJECT}/locations`);
  const ids = new Set(locations.map(l => l.locationId));
  for (const id of ['global', 'us-central1', 'us-east1']) assert.ok(ids.has(id), `${id} missing from ${[...ids]}`);
  for (const loc of locations) {
    assert.equal(loc.name, `projects/${PROJECT}/locations/${loc.locationId}`);
    assert.equal(loc.metadata['@type'], 'type.googleapis.com/google.cloud.kms.v1.LocationMetadata');
  }
  const loc = await get(LOCATION_NAME);
  assert.equal(loc.name, LOCATION_NAME);
  assert.equal(loc.locationId, LOCATION);
});

// --------------------------------------------------------------------------------------------
// Crypto keys
// --------------------------------------------------------------------------------------------

serverTest('create a crypto key with the defaults', async () => {
  const ring = await createRing();
  const keyId = unique('key');
  const keyName = `${ring.name}/cryptoKeys/${keyId}`;
  const key = await createKey(client, ring.name, keyId);

  assert.equal(key.name, keyName);
  assert.equal(key.purpose, 'ENCRYPT_DECRYPT');
  assert.ok(key.createTime);
  assert.equal(Number(key.destroyScheduledDuration.seconds), 86400);
  assert.equal(key.versionTemplate.protectionLevel, 'SOFTWARE');
  assert.equal(key.versionTemplate.algorithm, 'GOOGLE_SYMMETRIC_ENCRYPTION');

  const primary = key.primary;
  assert.equal(primary.name, `${keyName}/cryptoKeyVersions/1`);
  assert.equal(primary.state, 'ENABLED');
  assert.equal(primary.protectionLevel, 'SOFTWARE');
  assert.equal(primary.algorithm, 'GOOGLE_SYMMETRIC_ENCRYPTION');
  assert.ok(primary.createTime && primary.generateTime);
  assert.equal(primary.destroyTime, null);

  const [got] = await client.getCryptoKey({name: keyName});
  assert.equal(got.primary.name, primary.name);
  assert.equal(got.primary.state, 'ENABLED');

  const [version] = await client.getCryptoKeyVersion({name: primary.name});
  assert.equal(version.state, 'ENABLED');
  assert.equal(version.algorithm, 'GOOGLE_SYMMETRIC_ENCRYPTION');

  await assertGoogleError(
    createKey(client, ring.name, keyId),
    Code.ALREADY_EXISTS,
    `CryptoKey ${keyName} already exists.`
  );
});

serverTest('create a key with rotation, skip the first version, encrypt with a given version', async () => {
  const ring = await createRing();
  const [key] = await client.createCryptoKey({
    parent: ring.name,
    cryptoKeyId: unique('key'),
    cryptoKey: {
      purpose: 'ENCRYPT_DECRYPT',
      rotationPeriod: {seconds: 30 * 86400},
      nextRotationTime: {seconds: Math.floor(Date.parse('2030-01-01T00:00:00Z') / 1000)},
      destroyScheduledDuration: {seconds: 2 * 86400},
      labels: {team: 'payments'},
    },
    skipInitialVersionCreation: true,
  });
  assert.equal(key.primary, null);
  assert.equal(Number(key.rotationPeriod.seconds), 30 * 86400);
  assert.equal(Number(key.nextRotationTime.seconds), Date.parse('2030-01-01T00:00:00Z') / 1000);
  assert.equal(Number(key.destroyScheduledDuration.seconds), 2 * 86400);
  const [versions] = await client.listCryptoKeyVersions({parent: key.name});
  assert.deepEqual(versions, []);

  const [v1] = await client.createCryptoKeyVersion({parent: key.name, cryptoKeyVersion: {}});
  // Encrypting with a version's name uses that version.
  const enc = await encrypt(client, v1.name, Buffer.from('pinned'));
  assert.equal(enc.name, v1.name);
  assert.equal(Buffer.from((await decrypt(client, key.name, enc.ciphertext)).plaintext).toString(), 'pinned');
});

serverTest("update a crypto key's labels", async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name, undefined, {labels: {team: 'a'}});
  assert.deepEqual(key.labels, {team: 'a'});

  const [updated] = await client.updateCryptoKey({
    cryptoKey: {name: key.name, labels: {team: 'b', env: 'test'}},
    updateMask: {paths: ['labels']},
  });
  assert.deepEqual(updated.labels, {team: 'b', env: 'test'});
  assert.equal(updated.purpose, 'ENCRYPT_DECRYPT');
  assert.equal(updated.primary.name, key.primary.name);
  const [got] = await client.getCryptoKey({name: key.name});
  assert.deepEqual(got.labels, {team: 'b', env: 'test'});
});

serverTest('list crypto keys: pages, filter, order', async () => {
  const ring = await createRing();
  const teams = ['x', 'y', 'x'];
  const created = [];
  for (const [i, team] of teams.entries())
    created.push((await createKey(client, ring.name, `key${i}`, {labels: {team}})).name);

  const [page, next, raw] = await client.listCryptoKeys({parent: ring.name, pageSize: 2}, {autoPaginate: false});
  assert.equal(page.length, 2);
  assert.equal(raw.totalSize, 3);
  assert.ok(next && next.pageToken);

  // The async iterator walks every page of 2: each key exactly once.
  const all = [];
  for await (const k of client.listCryptoKeysAsync({parent: ring.name, pageSize: 2}, {autoPaginate: false})) {
    all.push(k.name);
  }
  assert.deepEqual(all.sort(), [...created].sort());

  const [x] = await client.listCryptoKeys({parent: ring.name, filter: 'labels.team=x'});
  assert.deepEqual(x.map(k => k.name).sort(), [created[0], created[2]].sort());

  const [ordered] = await client.listCryptoKeys({parent: ring.name, orderBy: 'name desc'});
  assert.deepEqual(
    ordered.map(k => k.name),
    [...created].sort().reverse()
  );
});

// --------------------------------------------------------------------------------------------
// Encrypt / decrypt
// --------------------------------------------------------------------------------------------

serverTest('encrypt and decrypt with AAD and CRC32C', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const plaintext = Buffer.concat(Array(10).fill(Buffer.from('customer data \x00\xff', 'latin1')));
  const aad = Buffer.from('instance=projects/p/instances/i');

  const [enc] = await client.encrypt({
    name: key.name,
    plaintext,
    additionalAuthenticatedData: aad,
    plaintextCrc32c: {value: crc32c(plaintext)},
    additionalAuthenticatedDataCrc32c: {value: crc32c(aad)},
  });
  assert.equal(enc.name, `${key.name}/cryptoKeyVersions/1`);
  assert.equal(enc.verifiedPlaintextCrc32c, true);
  assert.equal(enc.verifiedAdditionalAuthenticatedDataCrc32c, true);
  assert.equal(enc.protectionLevel, 'SOFTWARE');
  assert.ok(Buffer.isBuffer(enc.ciphertext) && enc.ciphertext.length > 0);
  assert.equal(enc.ciphertext.indexOf(plaintext), -1);
  assert.equal(int64(enc.ciphertextCrc32c), crc32c(enc.ciphertext));

  const [dec] = await client.decrypt({
    name: key.name,
    ciphertext: enc.ciphertext,
    additionalAuthenticatedData: aad,
    ciphertextCrc32c: {value: crc32c(enc.ciphertext)},
    additionalAuthenticatedDataCrc32c: {value: crc32c(aad)},
  });
  assert.deepEqual(Buffer.from(dec.plaintext), plaintext);
  assert.equal(int64(dec.plaintextCrc32c), crc32c(plaintext));
  assert.equal(dec.usedPrimary, true);
  assert.equal(dec.protectionLevel, 'SOFTWARE');

  // Without checksums in the request, nothing is reported as verified.
  const plain = await encrypt(client, key.name, Buffer.from('x'), aad);
  assert.equal(plain.verifiedPlaintextCrc32c, false);
  assert.equal(plain.verifiedAdditionalAuthenticatedDataCrc32c, false);
  assert.equal(int64(plain.ciphertextCrc32c), crc32c(plain.ciphertext));

  // Two encryptions of the same plaintext differ (random nonce).
  assert.notDeepEqual((await encrypt(client, key.name, plaintext, aad)).ciphertext, enc.ciphertext);
});

serverTest('a CRC32C mismatch is INVALID_ARGUMENT', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  await assertGoogleError(
    client.encrypt({
      name: key.name,
      plaintext: Buffer.from('abc'),
      plaintextCrc32c: {value: crc32c(Buffer.from('abd'))},
    }),
    Code.INVALID_ARGUMENT,
    'The checksum in field plaintext_crc32c did not match the data in field plaintext.'
  );
  const ct = (await encrypt(client, key.name, Buffer.from('abc'))).ciphertext;
  await assertGoogleError(
    client.decrypt({name: key.name, ciphertext: ct, ciphertextCrc32c: {value: (crc32c(ct) + 1) % 2 ** 32}}),
    Code.INVALID_ARGUMENT,
    'The checksum in field ciphertext_crc32c did not match the data in field ciphertext.'
  );
});

serverTest('wrong AAD or another key is INVALID_ARGUMENT', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const ct = (await encrypt(client, key.name, Buffer.from('secret'), Buffer.from('right aad'))).ciphertext;
  await assertGoogleError(
    decrypt(client, key.name, ct, Buffer.from('wrong aad')),
    Code.INVALID_ARGUMENT,
    DECRYPT_FAILED
  );
  await assertGoogleError(decrypt(client, key.name, ct), Code.INVALID_ARGUMENT, DECRYPT_FAILED);
  const other = await createKey(client, ring.name);
  await assertGoogleError(
    decrypt(client, other.name, ct, Buffer.from('right aad')),
    Code.INVALID_ARGUMENT,
    DECRYPT_FAILED
  );
  assert.equal(
    Buffer.from((await decrypt(client, key.name, ct, Buffer.from('right aad'))).plaintext).toString(),
    'secret'
  );
});

// --------------------------------------------------------------------------------------------
// Versions: rotation, disable/enable, destroy/restore
// --------------------------------------------------------------------------------------------

serverTest('rotation keeps old ciphertext readable', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const v1 = `${key.name}/cryptoKeyVersions/1`;
  const aad = Buffer.from('aad');
  const old = await encrypt(client, key.name, Buffer.from('before rotation'), aad);
  assert.equal(old.name, v1);

  const [v2] = await client.createCryptoKeyVersion({parent: key.name, cryptoKeyVersion: {}});
  assert.equal(v2.name, `${key.name}/cryptoKeyVersions/2`);
  assert.equal(v2.state, 'ENABLED');
  assert.equal(v2.algorithm, 'GOOGLE_SYMMETRIC_ENCRYPTION');
  // Creating a version does not make it primary.
  assert.equal((await client.getCryptoKey({name: key.name}))[0].primary.name, v1);

  const [rotated] = await client.updateCryptoKeyPrimaryVersion({name: key.name, cryptoKeyVersionId: '2'});
  assert.equal(rotated.primary.name, v2.name);
  assert.equal(rotated.primary.state, 'ENABLED');

  const fresh = await encrypt(client, key.name, Buffer.from('after rotation'), aad);
  assert.equal(fresh.name, v2.name);
  const decOld = await decrypt(client, key.name, old.ciphertext, aad);
  assert.equal(Buffer.from(decOld.plaintext).toString(), 'before rotation');
  assert.equal(decOld.usedPrimary, false);
  const decNew = await decrypt(client, key.name, fresh.ciphertext, aad);
  assert.equal(Buffer.from(decNew.plaintext).toString(), 'after rotation');
  assert.equal(decNew.usedPrimary, true);

  const [versions] = await client.listCryptoKeyVersions({parent: key.name});
  assert.deepEqual(
    versions.map(v => v.name),
    [v1, v2.name]
  );
  assert.ok(versions.every(v => v.state === 'ENABLED'));
});

serverTest('disable and enable a version', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const v1 = `${key.name}/cryptoKeyVersions/1`;
  const ct = (await encrypt(client, key.name, Buffer.from('payload'))).ciphertext;

  const disabled = await setState(client, v1, 'DISABLED');
  assert.equal(disabled.name, v1);
  assert.equal(disabled.state, 'DISABLED');
  const notEnabled = `${v1} is not enabled, current state is: DISABLED.`;
  await assertGoogleError(decrypt(client, key.name, ct), Code.FAILED_PRECONDITION, notEnabled);
  await assertGoogleError(encrypt(client, key.name, Buffer.from('more')), Code.FAILED_PRECONDITION, notEnabled);

  // Enums may also be given as numbers (1 = ENABLED).
  const enabled = await setState(client, v1, 1);
  assert.equal(enabled.state, 'ENABLED');
  assert.equal(Buffer.from((await decrypt(client, key.name, ct)).plaintext).toString(), 'payload');
});

serverTest('destroy and restore a version', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const v1 = `${key.name}/cryptoKeyVersions/1`;
  const ct = (await encrypt(client, key.name, Buffer.from('doomed'))).ciphertext;
  await client.createCryptoKeyVersion({parent: key.name, cryptoKeyVersion: {}});
  await client.updateCryptoKeyPrimaryVersion({name: key.name, cryptoKeyVersionId: '2'});

  const before = Date.now();
  const [destroyed] = await client.destroyCryptoKeyVersion({name: v1});
  assert.equal(destroyed.name, v1);
  assert.equal(destroyed.state, 'DESTROY_SCHEDULED');
  // destroyTime = now + the key's destroy_scheduled_duration (24 h by default).
  const expected = before + 86400 * 1000;
  assert.ok(Math.abs(toMillis(destroyed.destroyTime) - expected) < 120000, JSON.stringify(destroyed.destroyTime));
  assert.equal((await client.getCryptoKeyVersion({name: v1}))[0].state, 'DESTROY_SCHEDULED');
  await assertGoogleError(
    decrypt(client, key.name, ct),
    Code.FAILED_PRECONDITION,
    `${v1} is not enabled, current state is: DESTROY_SCHEDULED.`
  );

  const [restored] = await client.restoreCryptoKeyVersion({name: v1});
  assert.equal(restored.name, v1);
  assert.equal(restored.state, 'DISABLED');
  assert.equal(restored.destroyTime, null);
  await setState(client, v1, 'ENABLED');
  assert.equal(Buffer.from((await decrypt(client, key.name, ct)).plaintext).toString(), 'doomed');
});

serverTest('scheduled destruction happens', async () => {
  const ring = await createRing();
  // The server runs with --min-destroy-scheduled-duration 1s, so a key may ask for 1 s.
  const key = await createKey(client, ring.name, undefined, {destroyScheduledDuration: {seconds: 1}});
  assert.equal(Number(key.destroyScheduledDuration.seconds), 1);
  const v1 = `${key.name}/cryptoKeyVersions/1`;
  const ct = (await encrypt(client, key.name, Buffer.from('shred me'))).ciphertext;
  await client.createCryptoKeyVersion({parent: key.name, cryptoKeyVersion: {}});
  await client.updateCryptoKeyPrimaryVersion({name: key.name, cryptoKeyVersionId: '2'});
  assert.equal((await client.destroyCryptoKeyVersion({name: v1}))[0].state, 'DESTROY_SCHEDULED');

  const deadline = Date.now() + 30000;
  let version;
  while (Date.now() < deadline) {
    [version] = await client.getCryptoKeyVersion({name: v1});
    if (version.state === 'DESTROYED') break;
    await sleep(250);
  }
  assert.equal(version.state, 'DESTROYED');
  assert.ok(version.destroyEventTime);
  await assertGoogleError(
    decrypt(client, key.name, ct),
    Code.FAILED_PRECONDITION,
    `${v1} is not enabled, current state is: DESTROYED.`
  );
  await assert.rejects(client.restoreCryptoKeyVersion({name: v1}), err => err.code === Code.FAILED_PRECONDITION);
});

serverTest('list versions with a state filter', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  for (let i = 0; i < 2; i++) await client.createCryptoKeyVersion({parent: key.name, cryptoKeyVersion: {}});
  const v2 = `${key.name}/cryptoKeyVersions/2`;
  await setState(client, v2, 'DISABLED');

  // Page by page, one version per page.
  const names = [];
  let request = {parent: key.name, pageSize: 1};
  while (request) {
    const [page, next] = await client.listCryptoKeyVersions(request, {autoPaginate: false});
    assert.equal(page.length, 1);
    names.push(...page.map(v => v.name));
    request = next;
  }
  assert.deepEqual(
    names,
    [1, 2, 3].map(i => `${key.name}/cryptoKeyVersions/${i}`)
  );
  const [disabled] = await client.listCryptoKeyVersions({parent: key.name, filter: 'state=DISABLED'});
  assert.deepEqual(
    disabled.map(v => v.name),
    [v2]
  );
});

serverTest('an unimplemented method is UNIMPLEMENTED', async () => {
  const ring = await createRing();
  await assert.rejects(
    client.exportTrustedKeyWrappedCryptoKeyVersion({name: `${ring.name}/cryptoKeys/k/cryptoKeyVersions/1`}),
    err => err.code === Code.UNIMPLEMENTED
  );
});

// --------------------------------------------------------------------------------------------
// Authentication
// --------------------------------------------------------------------------------------------

const MISSING_CREDENTIAL = 'Request is missing required authentication credential.';
const INVALID_CREDENTIAL = 'Request had invalid authentication credentials.';

serverTest('without credentials the call is UNAUTHENTICATED', async () => {
  const anonymous = makeClient(server, new PassThroughClient());
  await assertGoogleError(anonymous.listKeyRings({parent: LOCATION_NAME}), Code.UNAUTHENTICATED, MISSING_CREDENTIAL, {
    prefix: true,
  });
  await assertGoogleError(
    anonymous.createKeyRing({parent: LOCATION_NAME, keyRingId: unique('ring'), keyRing: {}}),
    Code.UNAUTHENTICATED,
    MISSING_CREDENTIAL,
    {prefix: true}
  );
});

serverTest('an invalid token is UNAUTHENTICATED', async () => {
  const ring = await createRing();
  for (const token of ['kh1.0000000000000000.not-a-real-secret', 'garbage', server.ownerToken + 'x']) {
    const forged = makeClient(server, bearer(token));
    await assertGoogleError(forged.getKeyRing({name: ring.name}), Code.UNAUTHENTICATED, INVALID_CREDENTIAL, {
      prefix: true,
    });
  }
  assert.equal((await client.getKeyRing({name: ring.name}))[0].name, ring.name);
});

serverTest('--allow-anonymous: emulator mode needs no credentials', async () => {
  const anonymous = makeClient(anonymousServer, new PassThroughClient());
  const ring = await createRing(anonymous);
  assert.ok(ring.name.startsWith(`${LOCATION_NAME}/keyRings/`));
  const key = await createKey(anonymous, ring.name);
  assert.equal(key.primary.state, 'ENABLED');

  const aad = Buffer.from('emulator');
  const enc = await encrypt(anonymous, key.name, Buffer.from('no token needed'), aad);
  assert.equal(enc.name, `${key.name}/cryptoKeyVersions/1`);
  assert.equal(
    Buffer.from((await decrypt(anonymous, key.name, enc.ciphertext, aad)).plaintext).toString(),
    'no token needed'
  );

  // A token the server never issued is not an error there either: it acts as anonymous.
  const forged = makeClient(anonymousServer, bearer('kh1.0000000000000000.not-a-real-secret'));
  assert.equal(
    Buffer.from((await decrypt(forged, key.name, enc.ciphertext, aad)).plaintext).toString(),
    'no token needed'
  );

  // The owner's token works there too, and sees the same data.
  const owner = makeClient(anonymousServer, bearer(anonymousServer.ownerToken));
  assert.equal(
    Buffer.from((await decrypt(owner, key.name, enc.ciphertext, aad)).plaintext).toString(),
    'no token needed'
  );
});

// --------------------------------------------------------------------------------------------
// IAM
// --------------------------------------------------------------------------------------------

const ENCRYPTER_DECRYPTER = 'roles/cloudkms.cryptoKeyEncrypterDecrypter';
const USE_PERMISSIONS = ['cloudkms.cryptoKeyVersions.useToDecrypt', 'cloudkms.cryptoKeyVersions.useToEncrypt'];
const ASKED_PERMISSIONS = [
  'cloudkms.cryptoKeyVersions.useToEncrypt',
  'cloudkms.cryptoKeyVersions.useToDecrypt',
  'cloudkms.cryptoKeys.get',
  'cloudkms.cryptoKeys.update',
  'cloudkms.cryptoKeys.getIamPolicy',
  'cloudkms.cryptoKeys.setIamPolicy',
];
const denied = (permission, resource) =>
  `Permission '${permission}' denied on resource '${resource}' (or it may not exist).`;

async function granted(c, resource) {
  const [resp] = await c.testIamPermissions({resource, permissions: ASKED_PERMISSIONS});
  return [...resp.permissions].sort();
}

const bindingsOf = policy => policy.bindings.map(b => [b.role, [...b.members]]);

serverTest('an IAM policy grants and revokes the use of a key', async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const bob = makeClient(server, bearer(await server.mintToken('user:bob@example.com')));
  const ctByOwner = (await encrypt(client, key.name, Buffer.from("owner's secret"))).ciphertext;

  // A new key has an empty policy, with an etag.
  const [policy] = await client.getIamPolicy({resource: key.name});
  assert.ok(Buffer.isBuffer(policy.etag) && policy.etag.length > 0);
  assert.deepEqual(policy.bindings, []);
  // GetPolicyOptions travel as query parameters (options.requestedPolicyVersion=3).
  const [v3] = await client.getIamPolicy({resource: key.name, options: {requestedPolicyVersion: 3}});
  assert.ok(v3.etag.equals(policy.etag));

  assert.deepEqual(await granted(client, key.name), [...ASKED_PERMISSIONS].sort());
  assert.deepEqual(await granted(bob, key.name), []);
  await assertGoogleError(
    encrypt(bob, key.name, Buffer.from('not yet')),
    Code.PERMISSION_DENIED,
    denied('cloudkms.cryptoKeyVersions.useToEncrypt', key.name)
  );

  // Grant bob encrypt/decrypt.
  const [updated] = await client.setIamPolicy({
    resource: key.name,
    policy: {bindings: [{role: ENCRYPTER_DECRYPTER, members: ['user:bob@example.com']}], etag: policy.etag},
  });
  assert.ok(updated.etag.length > 0 && !updated.etag.equals(policy.etag));
  assert.deepEqual(bindingsOf(updated), [[ENCRYPTER_DECRYPTER, ['user:bob@example.com']]]);
  const [got] = await client.getIamPolicy({resource: key.name});
  assert.ok(got.etag.equals(updated.etag));

  // A read-modify-write based on the old etag loses: ABORTED, and nothing changes.
  await assertGoogleError(
    client.setIamPolicy({resource: key.name, policy: {bindings: [], etag: policy.etag}}),
    Code.ABORTED,
    'There were concurrent policy changes.',
    {prefix: true}
  );
  assert.deepEqual(bindingsOf((await client.getIamPolicy({resource: key.name}))[0]), bindingsOf(got));

  // Bob now holds exactly the use permissions, and uses the key.
  assert.deepEqual(await granted(bob, key.name), USE_PERMISSIONS);
  const aad = Buffer.from('aad');
  const enc = await encrypt(bob, key.name, Buffer.from("bob's secret"), aad);
  assert.equal(
    Buffer.from((await decrypt(client, key.name, enc.ciphertext, aad)).plaintext).toString(),
    "bob's secret"
  );
  assert.equal(Buffer.from((await decrypt(bob, key.name, ctByOwner)).plaintext).toString(), "owner's secret");
  // ...but nothing else.
  await assertGoogleError(
    bob.getCryptoKey({name: key.name}),
    Code.PERMISSION_DENIED,
    denied('cloudkms.cryptoKeys.get', key.name)
  );
  await assertGoogleError(
    bob.getIamPolicy({resource: key.name}),
    Code.PERMISSION_DENIED,
    denied('cloudkms.cryptoKeys.getIamPolicy', key.name)
  );

  // The owner removes the binding: bob is locked out again.
  const [revoked] = await client.setIamPolicy({resource: key.name, policy: {bindings: [], etag: got.etag}});
  assert.deepEqual(revoked.bindings, []);
  assert.deepEqual(await granted(bob, key.name), []);
  await assertGoogleError(
    decrypt(bob, key.name, enc.ciphertext, aad),
    Code.PERMISSION_DENIED,
    denied('cloudkms.cryptoKeyVersions.useToDecrypt', key.name)
  );
});

serverTest("a key ring's policy is inherited by its keys", async () => {
  const ring = await createRing();
  const key = await createKey(client, ring.name);
  const carol = makeClient(server, bearer(await server.mintToken('user:carol@example.com')));
  const [policy] = await client.getIamPolicy({resource: ring.name});
  await client.setIamPolicy({
    resource: ring.name,
    policy: {bindings: [{role: ENCRYPTER_DECRYPTER, members: ['user:carol@example.com']}], etag: policy.etag},
  });
  assert.deepEqual((await client.getIamPolicy({resource: key.name}))[0].bindings, []);
  assert.deepEqual(await granted(carol, key.name), USE_PERMISSIONS);
  const ct = (await encrypt(carol, key.name, Buffer.from('via the ring'))).ciphertext;
  assert.equal(Buffer.from((await decrypt(client, key.name, ct)).plaintext).toString(), 'via the ring');
  await assertGoogleError(
    carol.getKeyRing({name: ring.name}),
    Code.PERMISSION_DENIED,
    denied('cloudkms.keyRings.get', ring.name)
  );
});

// --------------------------------------------------------------------------------------------
// HSM keys (SoftHSM2) through the official client
// --------------------------------------------------------------------------------------------

const SOFTHSM_MODULES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];

test('HSM key and random bytes', async () => {
  const module = SOFTHSM_MODULES.find(m => fs.existsSync(m));
  assert.ok(module, 'SoftHSM2 is not installed: scripts/test.sh installs the softhsm2 package');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyhold-node-hsm-'));
  const tokens = path.join(dir, 'tokens');
  fs.mkdirSync(tokens);
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = {SOFTHSM2_CONF: conf};
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', 'node', '--so-pin', '5678', '--pin', 'node-pin-1234'],
    {
      env: {...process.env, ...env},
      stdio: 'pipe',
    }
  );
  const pin = path.join(dir, 'pin');
  fs.writeFileSync(pin, 'node-pin-1234\n');
  const hsm = new KeyholdServer(
    ['--pkcs11-module', module, '--pkcs11-token-label', 'node', '--pkcs11-pin-file', pin],
    env
  );
  try {
    await hsm.start();
    const c = makeClient(hsm, bearer(hsm.ownerToken));
    const ring = await createRing(c);
    const key = await createKey(c, ring.name, undefined, {versionTemplate: {protectionLevel: 'HSM'}});
    assert.equal(key.primary.protectionLevel, 'HSM');
    assert.equal(key.versionTemplate.protectionLevel, 'HSM');
    assert.equal(JSON.parse(Buffer.from(key.primary.attestation.content).toString()).softwareToken, true);

    const aad = Buffer.from('aad');
    const enc = await encrypt(c, key.name, Buffer.from('in the token'), aad);
    assert.equal(enc.protectionLevel, 'HSM');
    assert.equal(int64(enc.ciphertextCrc32c), crc32c(enc.ciphertext));
    const dec = await decrypt(c, key.name, enc.ciphertext, aad);
    assert.equal(Buffer.from(dec.plaintext).toString(), 'in the token');
    assert.equal(dec.protectionLevel, 'HSM');
    await assert.rejects(
      encrypt(c, key.name, Buffer.alloc(8 * 1024 + 1)),
      err => err.code === Code.INVALID_ARGUMENT && /8192/.test(err.message)
    );

    const [random] = await c.generateRandomBytes({location: LOCATION_NAME, lengthBytes: 64, protectionLevel: 'HSM'});
    assert.equal(random.data.length, 64);
    assert.equal(int64(random.dataCrc32c), crc32c(random.data));
    await assert.rejects(
      c.generateRandomBytes({location: LOCATION_NAME, lengthBytes: 4, protectionLevel: 'HSM'}),
      err => err.code === Code.INVALID_ARGUMENT
    );
  } catch (e) {
    process.stderr.write(`--- keyhold (HSM) output ---\n${hsm.output()}\n`);
    throw e;
  } finally {
    await hsm.stop();
    hsm.cleanup();
    fs.rmSync(dir, {recursive: true, force: true});
  }
});
