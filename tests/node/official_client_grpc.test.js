'use strict';
/**
 * Keyhold against Google's official Node.js client (@google-cloud/kms 6.x) over its DEFAULT
 * transport, gRPC (google-gax with @grpc/grpc-js, no `fallback`), in clear (HTTP/2 "h2c") and
 * over TLS (ALPN h2) with a custom root, on the same port as REST.
 *
 * The gRPC twin of official_client.test.js (REST): each run starts real `keyhold serve
 * --in-memory` processes (keyhold_server.js) and runs the same workflow through
 * `KeyManagementServiceClient` on both transports. getLocation/listLocationsAsync and
 * getIamPolicy/setIamPolicy/testIamPermissions go to google.cloud.location.Locations and
 * google.iam.v1.IAMPolicy on the same server. Nothing is mocked.
 *
 * How to point the client at Keyhold over gRPC. Two things a user must know:
 *  - Once `sslCreds` is given, google-gax uses it as the channel credentials and never calls
 *    `authClient`: the token must travel in gRPC call credentials. `authClient` is still worth
 *    passing: gax asks it for the universe domain, and without it looks for Application Default
 *    Credentials (and the GCE metadata server).
 *  - `grpc.credentials.createFromGoogleCredential(oauth2Client)` sends nothing with
 *    google-auth-library >= 10 (getRequestHeaders returns a `Headers` object, which grpc-js
 *    reads with Object.keys), so build the call credentials from a metadata generator:
 *
 *      const {KeyManagementServiceClient} = require('@google-cloud/kms');
 *      const {grpc} = require('google-gax');            // the @grpc/grpc-js that gax uses
 *      const {OAuth2Client} = require('google-auth-library');
 *
 *      const auth = new OAuth2Client();
 *      auth.setCredentials({access_token: TOKEN});      // a Keyhold token
 *      const callCreds = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
 *        auth.getRequestHeaders().then(headers => {
 *          const metadata = new grpc.Metadata();
 *          headers.forEach((value, key) => metadata.set(key, value));  // authorization: Bearer TOKEN
 *          callback(null, metadata);
 *        }, callback);
 *      });
 *
 *      // In clear (h2c). grpc-js refuses to compose call credentials with insecure channel
 *      // credentials ("Cannot compose insecure credentials"), but sends per-call credentials;
 *      // gax passes `grpc.callInvocationTransformer` to grpc-js, which runs it on every call.
 *      const clear = new KeyManagementServiceClient({
 *        apiEndpoint: '127.0.0.1',
 *        port: 8080,
 *        sslCreds: grpc.credentials.createInsecure(),
 *        authClient: auth,
 *        'grpc.callInvocationTransformer': call => ({
 *          ...call,
 *          callOptions: {...call.callOptions, credentials: callCreds},
 *        }),
 *      });
 *
 *      // Over TLS (`keyhold serve --tls-cert-file DIR/server.pem --tls-key-file DIR/server.key`),
 *      // trusting only the CA of `keyhold tls dev-certs --out DIR`; apiEndpoint is a name of the
 *      // server certificate (localhost; 127.0.0.1 works too, with a Node.js warning on SNI).
 *      const tls = new KeyManagementServiceClient({
 *        apiEndpoint: 'localhost',
 *        port: 8080,
 *        sslCreds: grpc.credentials.combineChannelCredentials(
 *          grpc.credentials.createSsl(fs.readFileSync('DIR/ca.pem')), callCreds),
 *        authClient: auth,
 *      });
 *
 *   A server started with --allow-anonymous (emulator mode) needs neither: `sslCreds:
 *   grpc.credentials.createInsecure()` and `authClient: new PassThroughClient()`.
 *
 * Errors arrive as gRPC statuses: `error.code` (e.g. 5 NOT_FOUND), `error.details` (the server's
 * message, the same text as REST's `error.message`) and `error.message` ("5 NOT_FOUND: " +
 * details). One difference from REST: an unimplemented method's message names the gRPC method
 * ("ImportTrustedKeyWrappedCryptoKeyVersion is not implemented by Keyhold yet; ..."), where REST names the
 * URL path ("The Cloud KMS method addressed by /v1/... is not implemented by Keyhold yet; ...").
 *
 * Environment:
 *   KEYHOLD_BIN  path of the keyhold binary (default: <repo>/target/debug/keyhold)
 *
 * Run: `npm ci && npm test` in tests/node (scripts/test.sh node does both).
 */

const {describe, test, before, after} = require('node:test');
const assert = require('node:assert/strict');
const {execFileSync} = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const kms = require('@google-cloud/kms');
const {KeyManagementServiceClient} = kms;
const {grpc} = require('google-gax');
const {OAuth2Client, PassThroughClient} = require('google-auth-library');

const {KeyholdServer, devCerts, serverTestFor} = require('./keyhold_server');

const PROJECT = 'keyhold-node-grpc';
const LOCATION = 'us-central1';
const LOCATION_NAME = `projects/${PROJECT}/locations/${LOCATION}`;
const DECRYPT_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey.";
const MISSING_CREDENTIAL = 'Request is missing required authentication credential.';
const INVALID_CREDENTIAL = 'Request had invalid authentication credentials.';

const Code = grpc.status;
const SOFTHSM_MODULES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];
const codeName = code => Object.keys(Code).find(k => Code[k] === code) || String(code);

// --------------------------------------------------------------------------------------------
// Clients: the recipe of the header
// --------------------------------------------------------------------------------------------

/** Static bearer-token credentials: an access token and nothing to refresh it with. */
function bearer(token) {
  const auth = new OAuth2Client();
  auth.setCredentials({access_token: token});
  return auth;
}

/** gRPC call credentials sending `authClient`'s request headers (`authorization: Bearer ...`). */
function callCredentials(authClient) {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    authClient.getRequestHeaders().then(headers => {
      const metadata = new grpc.Metadata();
      headers.forEach((value, key) => metadata.set(key, value));
      callback(null, metadata);
    }, callback);
  });
}

const clients = [];
/** Every client is closed at the end (its gRPC channels with it). */
function track(client) {
  clients.push(client);
  return client;
}

/** gRPC in clear (h2c); without `authClient`, no credentials at all. */
function clearClient(srv, authClient = null) {
  const options = {
    apiEndpoint: '127.0.0.1',
    port: srv.port,
    sslCreds: grpc.credentials.createInsecure(),
    authClient: authClient || new PassThroughClient(),
  };
  if (authClient) {
    const credentials = callCredentials(authClient);
    options['grpc.callInvocationTransformer'] = call => ({...call, callOptions: {...call.callOptions, credentials}});
  }
  return track(new KeyManagementServiceClient(options));
}

/** gRPC over TLS trusting only the dev CA; without `authClient`, no call credentials. */
function tlsClient(srv, authClient = null, ca = srv.tls.ca) {
  const ssl = grpc.credentials.createSsl(ca);
  return track(
    new KeyManagementServiceClient({
      apiEndpoint: 'localhost',
      port: srv.port,
      sslCreds: authClient ? grpc.credentials.combineChannelCredentials(ssl, callCredentials(authClient)) : ssl,
      authClient: authClient || new PassThroughClient(),
    })
  );
}

/** The same server over REST (as official_client.test.js does), to compare errors. */
function restClient(srv, authClient) {
  return track(
    new KeyManagementServiceClient({
      apiEndpoint: '127.0.0.1',
      port: srv.port,
      protocol: 'http',
      fallback: true,
      authClient,
    })
  );
}

after(async () => {
  await Promise.all(clients.map(c => c.close()));
});

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
const toMillis = ts => Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6);
const text = plaintext => Buffer.from(plaintext).toString();

async function createRing(c, parent = LOCATION_NAME, keyRingId = unique('ring')) {
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

/**
 * The call fails with gRPC status `code` and exactly `details` (or details starting with it):
 * `error.details` is the server's message and `error.message` is "CODE NAME: details".
 */
async function assertGrpcError(promise, code, details, {prefix = false} = {}) {
  await assert.rejects(promise, err => {
    assert.equal(err.code, code, `expected ${codeName(code)}, got ${codeName(err.code)}: ${err.message}`);
    if (prefix) {
      assert.ok(err.details.startsWith(details), `${err.details} does not start with ${details}`);
    } else {
      assert.equal(err.details, details);
    }
    assert.equal(err.message, `${code} ${codeName(code)}: ${err.details}`);
    assert.ok(err.metadata instanceof grpc.Metadata, 'a gRPC error carries the trailers');
    return true;
  });
}

/** The fields Keyhold sets of a Location's metadata, an Any of google.cloud.kms.v1.LocationMetadata. */
function locationMetadata(location) {
  assert.equal(location.metadata.type_url, 'type.googleapis.com/google.cloud.kms.v1.LocationMetadata');
  const {LocationMetadata} = kms.protos.google.cloud.kms.v1;
  const {hsmAvailable, ekmAvailable} = LocationMetadata.toObject(LocationMetadata.decode(location.metadata.value), {
    defaults: true,
  });
  return {hsmAvailable, ekmAvailable};
}

async function listLocations(c, name = `projects/${PROJECT}`, pageSize = undefined) {
  const out = [];
  for await (const loc of c.listLocationsAsync({name, pageSize}, {autoPaginate: false})) out.push(loc);
  return out;
}

const ENCRYPTER_DECRYPTER = 'roles/cloudkms.cryptoKeyEncrypterDecrypter';
const USE_PERMISSIONS = ['cloudkms.cryptoKeyVersions.useToDecrypt', 'cloudkms.cryptoKeyVersions.useToEncrypt'];
const ASKED_PERMISSIONS = [
  'cloudkms.cryptoKeyVersions.useToEncrypt',
  'cloudkms.cryptoKeyVersions.useToDecrypt',
  'cloudkms.cryptoKeys.get',
  'cloudkms.cryptoKeys.setIamPolicy',
];
const denied = (permission, resource) =>
  `Permission '${permission}' denied on resource '${resource}' (or it may not exist).`;
const bindingsOf = policy => policy.bindings.map(b => [b.role, [...b.members]]);

async function granted(c, resource) {
  const [resp] = await c.testIamPermissions({resource, permissions: ASKED_PERMISSIONS});
  return [...resp.permissions].sort();
}

test('crc32c helper is Castagnoli', () => {
  // RFC 3720 check value: the tests below are only as good as this.
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

// --------------------------------------------------------------------------------------------
// The workflow, on each transport
// --------------------------------------------------------------------------------------------

/**
 * Registers the workflow's tests for one transport. `t.server` is the server, `t.client` the
 * owner's client, `t.connect(authClient | null)` another client to the same server.
 */
function workflowTests(t, serverTest) {
  serverTest('create, get and list key rings', async () => {
    const {client} = t;
    const ringId = unique('ring');
    const name = `${LOCATION_NAME}/keyRings/${ringId}`;
    const before = Date.now() - 5000;

    const [ring] = await client.createKeyRing({parent: LOCATION_NAME, keyRingId: ringId, keyRing: {}});
    assert.equal(ring.name, name);
    const created = toMillis(ring.createTime);
    assert.ok(before <= created && created <= Date.now() + 5000, `createTime ${created}`);

    await assertGrpcError(
      client.createKeyRing({parent: LOCATION_NAME, keyRingId: ringId, keyRing: {}}),
      Code.ALREADY_EXISTS,
      `KeyRing ${name} already exists.`
    );

    const [got] = await client.getKeyRing({name});
    assert.equal(got.name, name);
    assert.deepEqual(got.createTime, ring.createTime);

    const other = await createRing(client);
    const [rings] = await client.listKeyRings({parent: LOCATION_NAME});
    const names = rings.map(r => r.name);
    assert.ok(names.includes(name) && names.includes(other.name));
    assert.equal(new Set(names).size, names.length, 'a key ring was listed twice');
    assert.ok(names.every(n => n.startsWith(`${LOCATION_NAME}/keyRings/`)));

    // Page by page: page tokens travel over gRPC too.
    const parent = `projects/${unique('paging')}/locations/${LOCATION}`;
    const three = new Set();
    for (let i = 0; i < 3; i++) three.add((await createRing(client, parent, `r${i}`)).name);
    const [page1, next, raw1] = await client.listKeyRings({parent, pageSize: 2}, {autoPaginate: false});
    assert.equal(page1.length, 2);
    assert.ok(raw1.nextPageToken);
    assert.equal(raw1.totalSize, 3);
    const [page2, none, raw2] = await client.listKeyRings(next, {autoPaginate: false});
    assert.equal(page2.length, 1);
    assert.equal(none, null);
    assert.equal(raw2.nextPageToken, '');
    assert.deepEqual(new Set([...page1, ...page2].map(r => r.name)), three);
  });

  serverTest('a missing key ring or key is NOT_FOUND, an invalid ID INVALID_ARGUMENT', async () => {
    const {client} = t;
    const name = `${LOCATION_NAME}/keyRings/nope`;
    await assertGrpcError(client.getKeyRing({name}), Code.NOT_FOUND, `KeyRing ${name} not found.`);
    await assertGrpcError(createKey(client, name, 'k'), Code.NOT_FOUND, `KeyRing ${name} not found.`);

    const ring = await createRing(client);
    const key = `${ring.name}/cryptoKeys/nope`;
    await assertGrpcError(client.getCryptoKey({name: key}), Code.NOT_FOUND, `CryptoKey ${key} not found.`);
    await assertGrpcError(
      client.createKeyRing({parent: LOCATION_NAME, keyRingId: 'bad.id', keyRing: {}}),
      Code.INVALID_ARGUMENT,
      'KeyRing id "bad.id" is invalid: it must match [a-zA-Z0-9_-]{1,63}'
    );
  });

  serverTest('create a crypto key with the defaults', async () => {
    const {client} = t;
    const ring = await createRing(client);
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
    assert.deepEqual(got.createTime, key.createTime);

    const [version] = await client.getCryptoKeyVersion({name: primary.name});
    assert.equal(version.state, 'ENABLED');
    assert.equal(version.algorithm, 'GOOGLE_SYMMETRIC_ENCRYPTION');

    const [keys] = await client.listCryptoKeys({parent: ring.name});
    assert.deepEqual(
      keys.map(k => k.name),
      [keyName]
    );

    await assertGrpcError(
      createKey(client, ring.name, keyId),
      Code.ALREADY_EXISTS,
      `CryptoKey ${keyName} already exists.`
    );
  });

  serverTest('encrypt and decrypt with AAD and CRC32C', async () => {
    const {client} = t;
    const ring = await createRing(client);
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

  serverTest('a CRC32C mismatch, a wrong AAD or another key is INVALID_ARGUMENT', async () => {
    const {client} = t;
    const ring = await createRing(client);
    const key = await createKey(client, ring.name);
    await assertGrpcError(
      client.encrypt({
        name: key.name,
        plaintext: Buffer.from('abc'),
        plaintextCrc32c: {value: crc32c(Buffer.from('abd'))},
      }),
      Code.INVALID_ARGUMENT,
      'The checksum in field plaintext_crc32c did not match the data in field plaintext.'
    );
    const aad = Buffer.from('right aad');
    const ct = (await encrypt(client, key.name, Buffer.from('abc'), aad)).ciphertext;
    await assertGrpcError(
      client.decrypt({
        name: key.name,
        ciphertext: ct,
        additionalAuthenticatedData: aad,
        ciphertextCrc32c: {value: (crc32c(ct) + 1) % 2 ** 32},
      }),
      Code.INVALID_ARGUMENT,
      'The checksum in field ciphertext_crc32c did not match the data in field ciphertext.'
    );
    await assertGrpcError(
      decrypt(client, key.name, ct, Buffer.from('wrong aad')),
      Code.INVALID_ARGUMENT,
      DECRYPT_FAILED
    );
    const other = await createKey(client, ring.name);
    await assertGrpcError(decrypt(client, other.name, ct, aad), Code.INVALID_ARGUMENT, DECRYPT_FAILED);
    assert.equal(text((await decrypt(client, key.name, ct, aad)).plaintext), 'abc');
  });

  serverTest('rotation keeps old ciphertext readable', async () => {
    const {client} = t;
    const ring = await createRing(client);
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
    assert.equal(text(decOld.plaintext), 'before rotation');
    assert.equal(decOld.usedPrimary, false);
    const decNew = await decrypt(client, key.name, fresh.ciphertext, aad);
    assert.equal(text(decNew.plaintext), 'after rotation');
    assert.equal(decNew.usedPrimary, true);

    const [versions] = await client.listCryptoKeyVersions({parent: key.name});
    assert.deepEqual(
      versions.map(v => v.name),
      [v1, v2.name]
    );
    assert.ok(versions.every(v => v.state === 'ENABLED'));
  });

  serverTest('disable and enable a version', async () => {
    const {client} = t;
    const ring = await createRing(client);
    const key = await createKey(client, ring.name);
    const v1 = `${key.name}/cryptoKeyVersions/1`;
    const ct = (await encrypt(client, key.name, Buffer.from('payload'))).ciphertext;

    const disabled = await setState(client, v1, 'DISABLED');
    assert.equal(disabled.name, v1);
    assert.equal(disabled.state, 'DISABLED');
    assert.equal((await client.getCryptoKeyVersion({name: v1}))[0].state, 'DISABLED');
    const notEnabled = `${v1} is not enabled, current state is: DISABLED.`;
    await assertGrpcError(encrypt(client, key.name, Buffer.from('more')), Code.FAILED_PRECONDITION, notEnabled);
    await assertGrpcError(decrypt(client, key.name, ct), Code.FAILED_PRECONDITION, notEnabled);
    const [onlyDisabled] = await client.listCryptoKeyVersions({parent: key.name, filter: 'state=DISABLED'});
    assert.deepEqual(
      onlyDisabled.map(v => v.name),
      [v1]
    );

    // Enums may also be given as numbers (1 = ENABLED).
    const enabled = await setState(client, v1, 1);
    assert.equal(enabled.state, 'ENABLED');
    assert.equal(text((await decrypt(client, key.name, ct)).plaintext), 'payload');
  });

  serverTest('destroy and restore a version', async () => {
    const {client} = t;
    const ring = await createRing(client);
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
    await assertGrpcError(
      decrypt(client, key.name, ct),
      Code.FAILED_PRECONDITION,
      `${v1} is not enabled, current state is: DESTROY_SCHEDULED.`
    );

    const [restored] = await client.restoreCryptoKeyVersion({name: v1});
    assert.equal(restored.name, v1);
    assert.equal(restored.state, 'DISABLED');
    assert.equal(restored.destroyTime, null);
    await setState(client, v1, 'ENABLED');
    assert.equal(text((await decrypt(client, key.name, ct)).plaintext), 'doomed');
  });

  serverTest('list and get locations (google.cloud.location.Locations)', async () => {
    const {client} = t;
    // Unlike REST (official_client.test.js, client bug googleapis/google-cloud-node#4366), gRPC
    // leaves the metadata an undecoded Any, so the client reads the answer.
    const locations = await listLocations(client);
    const ids = locations.map(l => l.locationId);
    for (const id of ['global', 'us-central1', 'us-east1']) assert.ok(ids.includes(id), `${id} missing from ${ids}`);
    assert.equal(new Set(ids).size, ids.length, 'a location was listed twice');
    for (const loc of locations) {
      assert.equal(loc.name, `projects/${PROJECT}/locations/${loc.locationId}`);
      assert.deepEqual(locationMetadata(loc), {hsmAvailable: false, ekmAvailable: false});
    }
    // Paged one by one, the same list.
    assert.deepEqual(
      (await listLocations(client, `projects/${PROJECT}`, 1)).map(l => l.locationId),
      ids
    );

    const [loc] = await client.getLocation({name: LOCATION_NAME});
    assert.equal(loc.name, LOCATION_NAME);
    assert.equal(loc.locationId, LOCATION);
    assert.deepEqual(locationMetadata(loc), {hsmAvailable: false, ekmAvailable: false});

    // REST says the same (the client cannot decode it there, so ask over plain HTTP/1.1).
    const r = await t.server.request('GET', `/v1/${LOCATION_NAME}`, {
      headers: {Authorization: `Bearer ${t.server.ownerToken}`},
    });
    assert.equal(r.status, 200, r.body);
    const rest = JSON.parse(r.body);
    assert.equal(rest.name, loc.name);
    assert.equal(rest.locationId, loc.locationId);
    assert.equal(rest.metadata['@type'], loc.metadata.type_url);
    // proto3 JSON leaves out a false field, as Google's REST does.
    assert.equal('hsmAvailable' in rest.metadata, false);
  });

  serverTest('an IAM policy on a key (google.iam.v1.IAMPolicy) grants and revokes its use', async () => {
    const {client} = t;
    const ring = await createRing(client);
    const key = await createKey(client, ring.name);
    const bob = t.connect(bearer(await t.server.mintToken('user:bob@example.com')));
    const ctByOwner = (await encrypt(client, key.name, Buffer.from("owner's secret"))).ciphertext;

    // A new key has an empty policy, with an etag.
    const [policy] = await client.getIamPolicy({resource: key.name});
    assert.ok(Buffer.isBuffer(policy.etag) && policy.etag.length > 0);
    assert.deepEqual(policy.bindings, []);
    const [v3] = await client.getIamPolicy({resource: key.name, options: {requestedPolicyVersion: 3}});
    assert.ok(v3.etag.equals(policy.etag));
    assert.deepEqual(await granted(client, key.name), [...ASKED_PERMISSIONS].sort());
    assert.deepEqual(await granted(bob, key.name), []);
    await assertGrpcError(
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
    assert.deepEqual(bindingsOf(got), bindingsOf(updated));

    // A read-modify-write based on the old etag loses: ABORTED, and nothing changes.
    await assertGrpcError(
      client.setIamPolicy({resource: key.name, policy: {bindings: [], etag: policy.etag}}),
      Code.ABORTED,
      'There were concurrent policy changes.',
      {prefix: true}
    );
    assert.deepEqual(bindingsOf((await client.getIamPolicy({resource: key.name}))[0]), bindingsOf(got));

    // Bob now holds exactly the use permissions, and uses the key, but nothing else.
    assert.deepEqual(await granted(bob, key.name), USE_PERMISSIONS);
    const aad = Buffer.from('aad');
    const enc = await encrypt(bob, key.name, Buffer.from("bob's secret"), aad);
    assert.equal(text((await decrypt(client, key.name, enc.ciphertext, aad)).plaintext), "bob's secret");
    assert.equal(text((await decrypt(bob, key.name, ctByOwner)).plaintext), "owner's secret");
    await assertGrpcError(
      bob.getIamPolicy({resource: key.name}),
      Code.PERMISSION_DENIED,
      denied('cloudkms.cryptoKeys.getIamPolicy', key.name)
    );

    // The owner removes the binding: bob is locked out again.
    const [revoked] = await client.setIamPolicy({resource: key.name, policy: {bindings: [], etag: got.etag}});
    assert.deepEqual(revoked.bindings, []);
    assert.deepEqual(await granted(bob, key.name), []);
    await assertGrpcError(
      decrypt(bob, key.name, enc.ciphertext, aad),
      Code.PERMISSION_DENIED,
      denied('cloudkms.cryptoKeyVersions.useToDecrypt', key.name)
    );
  });

  serverTest('an unimplemented method is UNIMPLEMENTED', async () => {
    const {client} = t;
    const ring = await createRing(client);
    const key = await createKey(client, ring.name);
    await assertGrpcError(
      client.importTrustedKeyWrappedCryptoKeyVersion({parent: key.name}),
      Code.UNIMPLEMENTED,
      'ImportTrustedKeyWrappedCryptoKeyVersion is not implemented by Keyhold yet; see docs/api.md for the methods it serves.'
    );
    await assertGrpcError(
      client.exportTrustedKeyWrappedCryptoKeyVersion({name: `${key.name}/cryptoKeyVersions/1`}),
      Code.UNIMPLEMENTED,
      'ExportTrustedKeyWrappedCryptoKeyVersion is not implemented by Keyhold yet; see docs/api.md for the methods it serves.'
    );
  });

  serverTest('without a token or with an invalid one the call is UNAUTHENTICATED', async () => {
    const ring = await createRing(t.client);
    const anonymous = t.connect(null);
    await assertGrpcError(anonymous.listKeyRings({parent: LOCATION_NAME}), Code.UNAUTHENTICATED, MISSING_CREDENTIAL, {
      prefix: true,
    });
    await assertGrpcError(anonymous.getKeyRing({name: ring.name}), Code.UNAUTHENTICATED, MISSING_CREDENTIAL, {
      prefix: true,
    });
    for (const token of ['kh1.0000000000000000.not-a-real-secret', 'garbage', t.server.ownerToken + 'x']) {
      await assertGrpcError(
        t.connect(bearer(token)).getKeyRing({name: ring.name}),
        Code.UNAUTHENTICATED,
        INVALID_CREDENTIAL,
        {prefix: true}
      );
    }
    assert.equal((await t.client.getKeyRing({name: ring.name}))[0].name, ring.name);
  });
}

// --------------------------------------------------------------------------------------------
// 1. gRPC in clear (h2c)
// --------------------------------------------------------------------------------------------

describe('gRPC in clear (h2c)', () => {
  const t = {server: null, client: null, connect: authClient => clearClient(t.server, authClient)};
  let anonymousServer;
  const serverTest = serverTestFor(() => [t.server, anonymousServer]);

  before(async () => {
    t.server = new KeyholdServer();
    anonymousServer = new KeyholdServer(['--allow-anonymous']);
    await Promise.all([t.server.start(), anonymousServer.start()]);
    t.client = clearClient(t.server, bearer(t.server.ownerToken));
  });

  after(async () => {
    for (const srv of [t.server, anonymousServer]) {
      if (!srv) continue;
      await srv.stop();
      srv.cleanup();
    }
  });

  workflowTests(t, serverTest);

  serverTest('insecure channel credentials carry no token: per-call credentials do', async () => {
    const ring = await createRing(t.client);
    const owner = bearer(t.server.ownerToken);
    // grpc-js refuses to attach call credentials to an insecure channel...
    assert.throws(
      () => grpc.credentials.combineChannelCredentials(grpc.credentials.createInsecure(), callCredentials(owner)),
      /Cannot compose insecure credentials/
    );
    // ...and gax, given sslCreds, never asks authClient for a token.
    const ignored = track(
      new KeyManagementServiceClient({
        apiEndpoint: '127.0.0.1',
        port: t.server.port,
        sslCreds: grpc.credentials.createInsecure(),
        authClient: owner,
      })
    );
    await assertGrpcError(ignored.getKeyRing({name: ring.name}), Code.UNAUTHENTICATED, MISSING_CREDENTIAL, {
      prefix: true,
    });
    // Per call, credentials (or plain `authorization` metadata) are sent in clear.
    const [viaCredentials] = await ignored.getKeyRing(
      {name: ring.name},
      {otherArgs: {options: {credentials: callCredentials(owner)}}}
    );
    assert.equal(viaCredentials.name, ring.name);
    const [viaHeader] = await ignored.getKeyRing(
      {name: ring.name},
      {otherArgs: {headers: {authorization: `Bearer ${t.server.ownerToken}`}}}
    );
    assert.equal(viaHeader.name, ring.name);
  });

  serverTest('--allow-anonymous: emulator mode needs no credentials', async () => {
    const anonymous = clearClient(anonymousServer);
    const ring = await createRing(anonymous);
    assert.ok(ring.name.startsWith(`${LOCATION_NAME}/keyRings/`));
    const key = await createKey(anonymous, ring.name);
    assert.equal(key.primary.state, 'ENABLED');

    const aad = Buffer.from('emulator');
    const enc = await encrypt(anonymous, key.name, Buffer.from('no token needed'), aad);
    assert.equal(enc.name, `${key.name}/cryptoKeyVersions/1`);
    assert.equal(text((await decrypt(anonymous, key.name, enc.ciphertext, aad)).plaintext), 'no token needed');
    assert.equal((await anonymous.getLocation({name: LOCATION_NAME}))[0].locationId, LOCATION);
    assert.deepEqual((await anonymous.getIamPolicy({resource: key.name}))[0].bindings, []);

    // A token the server never issued is not an error there either: it acts as anonymous.
    const forged = clearClient(anonymousServer, bearer('kh1.0000000000000000.not-a-real-secret'));
    assert.equal(text((await decrypt(forged, key.name, enc.ciphertext, aad)).plaintext), 'no token needed');

    // The owner's token works there too, and sees the same data.
    const owner = clearClient(anonymousServer, bearer(anonymousServer.ownerToken));
    assert.equal(text((await decrypt(owner, key.name, enc.ciphertext, aad)).plaintext), 'no token needed');
  });

  serverTest('errors: the same codes and messages as REST', async () => {
    const grpcClient = t.client;
    const rest = restClient(t.server, bearer(t.server.ownerToken));
    const ring = await createRing(grpcClient);
    const key = await createKey(grpcClient, ring.name);
    const ringId = ring.name.split('/').pop();
    const missing = `${LOCATION_NAME}/keyRings/nope`;
    const ct = (await encrypt(grpcClient, key.name, Buffer.from('abc'))).ciphertext;
    const disabledKey = await createKey(grpcClient, ring.name);
    await setState(grpcClient, disabledKey.primary.name, 'DISABLED');
    const bobToken = await t.server.mintToken('user:bob@example.com');
    const [policy] = await grpcClient.getIamPolicy({resource: key.name});
    await grpcClient.setIamPolicy({resource: key.name, policy: {bindings: [], etag: policy.etag}});

    const cases = [
      [Code.NOT_FOUND, c => c.getKeyRing({name: missing})],
      [Code.NOT_FOUND, c => c.getCryptoKey({name: `${ring.name}/cryptoKeys/nope`})],
      [Code.ALREADY_EXISTS, c => c.createKeyRing({parent: LOCATION_NAME, keyRingId: ringId, keyRing: {}})],
      [Code.INVALID_ARGUMENT, c => c.createKeyRing({parent: LOCATION_NAME, keyRingId: 'bad.id', keyRing: {}})],
      [
        Code.INVALID_ARGUMENT,
        c =>
          c.encrypt({
            name: key.name,
            plaintext: Buffer.from('abc'),
            plaintextCrc32c: {value: crc32c(Buffer.from('abd'))},
          }),
      ],
      [Code.INVALID_ARGUMENT, c => decrypt(c, key.name, ct, Buffer.from('wrong aad'))],
      [Code.FAILED_PRECONDITION, c => encrypt(c, disabledKey.name, Buffer.from('x'))],
      [Code.ABORTED, c => c.setIamPolicy({resource: key.name, policy: {bindings: [], etag: policy.etag}})],
    ];
    const failure = async promise => {
      try {
        await promise;
      } catch (err) {
        return err;
      }
      assert.fail('the call succeeded');
    };
    for (const [code, call] of cases) {
      const [viaRest, viaGrpc] = [await failure(call(rest)), await failure(call(grpcClient))];
      assert.equal(viaGrpc.code, code, `${codeName(code)} expected, got ${viaGrpc.message}`);
      assert.equal(viaRest.code, code, `${codeName(code)} expected over REST, got ${viaRest.message}`);
      assert.equal(viaGrpc.details, viaRest.message);
    }

    // Authentication and permission errors, per principal.
    const pairs = [
      [Code.UNAUTHENTICATED, null, c => c.getKeyRing({name: ring.name})],
      [Code.UNAUTHENTICATED, bearer('garbage'), c => c.getKeyRing({name: ring.name})],
      [Code.PERMISSION_DENIED, bearer(bobToken), c => encrypt(c, key.name, Buffer.from('x'))],
    ];
    for (const [code, auth, call] of pairs) {
      const viaRest = await failure(call(restClient(t.server, auth || new PassThroughClient())));
      const viaGrpc = await failure(call(clearClient(t.server, auth)));
      assert.equal(viaGrpc.code, code, viaGrpc.message);
      assert.equal(viaRest.code, code, viaRest.message);
      assert.equal(viaGrpc.details, viaRest.message);
    }

    // One difference: an unimplemented method's message names the gRPC method, not the URL.
    const viaRest = await failure(rest.importTrustedKeyWrappedCryptoKeyVersion({parent: key.name}));
    const viaGrpc = await failure(grpcClient.importTrustedKeyWrappedCryptoKeyVersion({parent: key.name}));
    assert.equal(viaRest.code, Code.UNIMPLEMENTED);
    assert.equal(viaGrpc.code, Code.UNIMPLEMENTED);
    assert.equal(
      viaRest.message,
      `The Cloud KMS method addressed by /v1/${key.name}/cryptoKeyVersions:importTrustedKeyWrappedCryptoKeyVersion ` +
        'is not implemented by Keyhold yet; see docs/api.md.'
    );
    assert.match(viaGrpc.details, /^ImportTrustedKeyWrappedCryptoKeyVersion is not implemented by Keyhold yet/);
  });

  test('HSM key and location metadata over gRPC (SoftHSM2)', async () => {
    const module = SOFTHSM_MODULES.find(m => fs.existsSync(m));
    assert.ok(module, 'SoftHSM2 is not installed: scripts/test.sh installs the softhsm2 package');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyhold-node-grpc-hsm-'));
    const tokens = path.join(dir, 'tokens');
    fs.mkdirSync(tokens);
    const conf = path.join(dir, 'softhsm2.conf');
    fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    const env = {SOFTHSM2_CONF: conf};
    execFileSync(
      'softhsm2-util',
      ['--init-token', '--free', '--label', 'grpc', '--so-pin', '5678', '--pin', 'grpc-pin-1234'],
      {env: {...process.env, ...env}, stdio: 'pipe'}
    );
    const pin = path.join(dir, 'pin');
    fs.writeFileSync(pin, 'grpc-pin-1234\n');
    const hsm = new KeyholdServer(
      ['--pkcs11-module', module, '--pkcs11-token-label', 'grpc', '--pkcs11-pin-file', pin],
      env
    );
    try {
      await hsm.start();
      const c = clearClient(hsm, bearer(hsm.ownerToken));
      // A non-default LocationMetadata crosses the Any intact.
      const [loc] = await c.getLocation({name: LOCATION_NAME});
      assert.deepEqual(locationMetadata(loc), {hsmAvailable: true, ekmAvailable: false});

      const ring = await createRing(c);
      const key = await createKey(c, ring.name, undefined, {versionTemplate: {protectionLevel: 'HSM'}});
      assert.equal(key.primary.protectionLevel, 'HSM');
      assert.equal(JSON.parse(Buffer.from(key.primary.attestation.content).toString()).softwareToken, true);
      const aad = Buffer.from('aad');
      const enc = await encrypt(c, key.name, Buffer.from('in the token'), aad);
      assert.equal(enc.protectionLevel, 'HSM');
      assert.equal(int64(enc.ciphertextCrc32c), crc32c(enc.ciphertext));
      const dec = await decrypt(c, key.name, enc.ciphertext, aad);
      assert.equal(text(dec.plaintext), 'in the token');
      assert.equal(dec.protectionLevel, 'HSM');

      const [random] = await c.generateRandomBytes({location: LOCATION_NAME, lengthBytes: 64, protectionLevel: 'HSM'});
      assert.equal(random.data.length, 64);
      assert.equal(int64(random.dataCrc32c), crc32c(random.data));
    } catch (e) {
      process.stderr.write(`--- keyhold (HSM) output ---\n${hsm.output()}\n`);
      throw e;
    } finally {
      await hsm.stop();
      hsm.cleanup();
      fs.rmSync(dir, {recursive: true, force: true});
    }
  });
});

// --------------------------------------------------------------------------------------------
// 2. gRPC over TLS, trusting the CA of `keyhold tls dev-certs`
// --------------------------------------------------------------------------------------------

describe('gRPC over TLS (custom root)', () => {
  const t = {server: null, client: null, connect: authClient => tlsClient(t.server, authClient)};
  let certDir;
  let otherCerts;
  const serverTest = serverTestFor(() => [t.server]);

  before(async () => {
    certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyhold-node-certs-'));
    const certs = devCerts(path.join(certDir, 'server'));
    // Another CA, which did not sign the server's certificate.
    otherCerts = devCerts(path.join(certDir, 'other'));
    t.server = new KeyholdServer([], {}, {tls: certs});
    await t.server.start();
    t.client = tlsClient(t.server, bearer(t.server.ownerToken));
  });

  after(async () => {
    if (t.server) {
      await t.server.stop();
      t.server.cleanup();
    }
    if (certDir) fs.rmSync(certDir, {recursive: true, force: true});
  });

  workflowTests(t, serverTest);

  serverTest('the server is only reached over verified TLS', async () => {
    const owner = bearer(t.server.ownerToken);
    const once = {retry: null}; // UNAVAILABLE is retried by default: fail on the first attempt
    // A client trusting another CA does not connect.
    await assert.rejects(
      tlsClient(t.server, owner, otherCerts.ca).listKeyRings({parent: LOCATION_NAME}, once),
      err => err.code === Code.UNAVAILABLE && /certificate/.test(err.details)
    );
    // Nor does a client in clear.
    await assert.rejects(
      clearClient(t.server, owner).listKeyRings({parent: LOCATION_NAME}, once),
      err => err.code === Code.UNAVAILABLE
    );
    // The right CA does, with the token, and sees the same data as REST over HTTPS.
    const ring = await createRing(t.client);
    const r = await t.server.request('GET', `/v1/${ring.name}`, {
      headers: {Authorization: `Bearer ${t.server.ownerToken}`},
    });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).name, ring.name);
  });

  serverTest('the token must be in the channel credentials: authClient alone is not sent', async () => {
    const ring = await createRing(t.client);
    const owner = bearer(t.server.ownerToken);
    // gax uses sslCreds as they are once given: authClient's token is not sent.
    const sslOnly = track(
      new KeyManagementServiceClient({
        apiEndpoint: 'localhost',
        port: t.server.port,
        sslCreds: grpc.credentials.createSsl(t.server.tls.ca),
        authClient: owner,
      })
    );
    await assertGrpcError(sslOnly.getKeyRing({name: ring.name}), Code.UNAUTHENTICATED, MISSING_CREDENTIAL, {
      prefix: true,
    });
    // createFromGoogleCredential reads no header from google-auth-library >= 10 (a Headers object).
    const fromGoogleCredential = track(
      new KeyManagementServiceClient({
        apiEndpoint: 'localhost',
        port: t.server.port,
        sslCreds: grpc.credentials.combineChannelCredentials(
          grpc.credentials.createSsl(t.server.tls.ca),
          grpc.credentials.createFromGoogleCredential(owner)
        ),
        authClient: owner,
      })
    );
    await assertGrpcError(
      fromGoogleCredential.getKeyRing({name: ring.name}),
      Code.UNAUTHENTICATED,
      MISSING_CREDENTIAL,
      {prefix: true}
    );
    // The metadata generator of the header does.
    assert.equal((await tlsClient(t.server, owner).getKeyRing({name: ring.name}))[0].name, ring.name);
  });
});
