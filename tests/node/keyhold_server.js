'use strict';
/**
 * A real `keyhold serve --in-memory` process for the tests in this directory
 * (official_client.test.js over REST, official_client_grpc.test.js over gRPC).
 *
 * The server listens on a free loopback port, in clear or, given certificates from
 * `keyhold tls dev-certs` (see devCerts), over TLS. It writes its owner's token to
 * `--owner-token-file` in a temporary directory before it listens, so the token is there once
 * `GET /healthz` answers.
 *
 * Environment:
 *   KEYHOLD_BIN  path of the keyhold binary (default: <repo>/target/debug/keyhold)
 */

const {test} = require('node:test');
const assert = require('node:assert/strict');
const {execFileSync, spawn} = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..', '..');

function keyholdBinary() {
  const binary = process.env.KEYHOLD_BIN || path.join(REPO_ROOT, 'target', 'debug', 'keyhold');
  if (!fs.existsSync(binary)) {
    throw new Error(`keyhold binary not found at ${binary}; run \`cargo build -p keyhold\` or set KEYHOLD_BIN`);
  }
  return binary;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const {port} = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

/**
 * Development certificates from `keyhold tls dev-certs --out DIR` (DIR must not exist yet): a CA
 * and a server certificate for localhost, 127.0.0.1 and ::1.
 */
function devCerts(dir) {
  execFileSync(keyholdBinary(), ['tls', 'dev-certs', '--out', dir], {stdio: 'pipe'});
  const certs = {
    dir,
    caFile: path.join(dir, 'ca.pem'),
    certFile: path.join(dir, 'server.pem'),
    keyFile: path.join(dir, 'server.key'),
  };
  for (const file of [certs.caFile, certs.certFile, certs.keyFile]) {
    assert.ok(fs.existsSync(file), `keyhold tls dev-certs did not write ${file}`);
  }
  certs.ca = fs.readFileSync(certs.caFile);
  return certs;
}

/**
 * A `keyhold serve --in-memory` child process, its log and its owner token.
 *
 * `tls` (optional): certificates from devCerts; the server then serves HTTPS (and gRPC over TLS)
 * with `certFile`/`keyFile`, and is addressed as `localhost`, trusting only `ca`.
 */
class KeyholdServer {
  constructor(extraArgs = [], extraEnv = {}, {tls = null} = {}) {
    this.extraArgs = extraArgs;
    this.extraEnv = extraEnv;
    this.tls = tls;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyhold-node-'));
    this.tokenFile = path.join(this.dir, 'owner.token');
    this.logFile = path.join(this.dir, 'keyhold.log');
    this.proc = null;
    this.ownerToken = null;
  }

  async start(timeoutMs = 30000) {
    const binary = keyholdBinary();
    this.port = await freePort();
    this.host = `127.0.0.1:${this.port}`;
    // The dev certificates name localhost (and 127.0.0.1); TLS clients use the host name.
    this.url = this.tls ? `https://localhost:${this.port}` : `http://${this.host}`;
    const args = [
      'serve',
      '--in-memory',
      '--listen',
      this.host,
      '--min-destroy-scheduled-duration',
      '1s',
      // Without this the token would go to DATA_DIR/owner.token, i.e. ./keyhold-data in the repo.
      '--owner-token-file',
      this.tokenFile,
      ...(this.tls ? ['--tls-cert-file', this.tls.certFile, '--tls-key-file', this.tls.keyFile] : []),
      ...this.extraArgs,
    ];
    const env = {
      ...process.env,
      NO_COLOR: '1',
      // One line per request (method, path, status), shown when a test fails.
      KEYHOLD_LOG: process.env.KEYHOLD_LOG || 'info,keyhold_server=debug',
      ...this.extraEnv,
    };
    // The token file and the TLS files must come from this server, not from the caller's shell.
    for (const name of ['KEYHOLD_OWNER_TOKEN_FILE', 'KEYHOLD_TLS_CERT_FILE', 'KEYHOLD_TLS_KEY_FILE']) delete env[name];
    const log = fs.openSync(this.logFile, 'w');
    this.proc = spawn(binary, args, {cwd: REPO_ROOT, env, stdio: ['ignore', log, log]});
    fs.closeSync(log);
    let exited = null;
    this.proc.on('exit', code => {
      exited = code;
    });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (exited !== null) {
        throw new Error(
          `keyhold exited with code ${exited} before it was healthy\n--- keyhold output ---\n${this.output()}`
        );
      }
      let healthy = false;
      try {
        healthy = (await this.request('GET', '/healthz', {timeoutMs: 1000})).status === 200;
      } catch {
        healthy = false;
      }
      if (healthy) {
        // The token is written before the server listens, so it is there once healthy.
        this.ownerToken = fs.readFileSync(this.tokenFile, 'utf8').trim();
        assert.ok(this.ownerToken, `keyhold wrote an empty owner token to ${this.tokenFile}`);
        return;
      }
      await sleep(50);
    }
    await this.stop();
    throw new Error(
      `keyhold did not answer GET /healthz within ${timeoutMs} ms\n--- keyhold output ---\n${this.output()}`
    );
  }

  /**
   * One HTTP/1.1 request to the server (over TLS trusting only the dev CA when it has one):
   * `{status, body}` with the body as text.
   */
  request(method, urlPath, {headers = {}, body = null, timeoutMs = 10000} = {}) {
    return new Promise((resolve, reject) => {
      const lib = this.tls ? https : http;
      const options = {method, headers, timeout: timeoutMs, ...(this.tls ? {ca: this.tls.ca} : {})};
      const req = lib.request(`${this.url}${urlPath}`, options, res => {
        const chunks = [];
        res.on('data', chunk => chunks.push(chunk));
        res.on('end', () => resolve({status: res.statusCode, body: Buffer.concat(chunks).toString('utf8')}));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  output() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise(resolve => this.proc.once('exit', resolve));
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(timer);
    }
  }

  cleanup() {
    fs.rmSync(this.dir, {recursive: true, force: true});
  }

  /** A bearer token for `principal`, minted by the owner through `POST /v1/tokens`. */
  async mintToken(principal) {
    const r = await this.request('POST', '/v1/tokens', {
      headers: {Authorization: `Bearer ${this.ownerToken}`, 'Content-Type': 'application/json'},
      body: JSON.stringify({principal}),
    });
    assert.equal(r.status, 200, r.body);
    const body = JSON.parse(r.body);
    assert.equal(body.principal, principal);
    assert.ok(body.token);
    return body.token;
  }
}

/**
 * `serverTest(name, fn)`: a test that, on failure, prints what the servers `servers()` returns
 * logged while it ran.
 */
function serverTestFor(servers) {
  return function serverTest(name, fn) {
    test(name, async t => {
      const watched = servers().filter(Boolean);
      const starts = watched.map(s => s.output().length);
      try {
        await fn(t);
      } catch (e) {
        watched.forEach((s, i) => {
          const out = s.output().slice(starts[i]);
          if (out) process.stderr.write(`--- keyhold (${s.url}) output during "${name}" ---\n${out}\n`);
        });
        throw e;
      }
    });
  };
}

module.exports = {REPO_ROOT, KeyholdServer, devCerts, freePort, keyholdBinary, serverTestFor, sleep};
