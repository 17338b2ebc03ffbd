#!/usr/bin/env python3
"""Keyhold's benchmark suite: every scenario of issue 7, each next to a baseline measured in
the same run, written to docs/benchmarks.md (between the `suite` markers) with SVG plots in
docs/benchmarks/.

    bash bench/run.sh                  # the whole suite (release build), about 13 minutes
    bash bench/run.sh --only kms,store # some scenarios
    bash bench/run.sh --smoke          # seconds per scenario, debug build, nothing written
                                       # to docs/: what CI runs, so the suite cannot rot

`bench/run.sh` runs this under `scripts/test.sh with-postgres` (a throwaway PostgreSQL for the
two-node scenario) after building the release binary. Load comes from wrk (Debian package),
the fixed-answer HTTP baseline of `kms` and `durability` from nginx (Debian package; the suite
runs its own, see `Nginx`, never the system service), the AES-GCM baseline from `openssl speed`,
the chunk sealing figures from criterion (`cargo bench -p keyhold-cmek --bench envelope`).
Shared machines drift: every figure is given as a ratio against its baseline, and the smoke
mode asserts only that every scenario produced numbers, never a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import plot  # noqa: E402  (bench/plot.py, stdlib only)

SCENARIOS = ["kms", "durability", "iam", "aead", "store", "rewrap", "enforcement", "startup", "stream", "fairness", "scale",
             "sustained", "audit", "copies", "purposes"]
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


# ---- small helpers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*args: str, env: dict | None = None, check: bool = True) -> str:
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def commit() -> str:
    try:
        rev = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
        dirty = sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no").strip()
        return rev + ("+changes" if dirty else "")
    except Exception:
        return "unknown"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores{', ' + model if model else ''}, Linux {platform.release()}"


def parse_duration(text: str) -> float:
    """wrk's latency figures: '52.00us', '1.06ms', '2.1s' -> seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


class Server:
    """A `keyhold serve` process with its own data directory and owner token."""

    def __init__(self, binary: Path, extra: list[str] | None = None, data: Path | None = None, env=None,
                 start_timeout: float = 30):
        self.port = free_port()
        self.own_dir = data is None
        self.data = Path(tempfile.mkdtemp(prefix="keyhold-bench-")) if data is None else data
        self.log = open(self.data / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}", *(extra or [])],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "KEYHOLD_LOG": "warn", **(env or {})},
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    raise RuntimeError(f"keyhold serve did not start; see {self.data / 'server.log'}")
                time.sleep(0.02)
        self.token = (self.data / "owner.token").read_text().strip()

    def call(self, method: str, path: str, body=None, token: str | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.base}/v1/{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if raw is None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                payload = r.read()
                return r.status, (json.loads(payload) if payload[:1] in (b"{", b"[") else payload)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def ok(self, method: str, path: str, body=None, **kw):
        status, value = self.call(method, path, body, **kw)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {value}")
        return value

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        if self.own_dir:
            shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# nginx's fixed answer: Keyhold's answer to a 32-byte `:encrypt`, byte for byte in shape and
# size (pretty-printed JSON, 272 bytes, with a real ciphertext of the suite's key name).
NGINX_ANSWER = json.dumps(
    {
        "name": "projects/bench/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "ciphertext": "AQAAAAAAAAABUErs+KbCrBN2E9MmxWnso6Zf04jsVIv0lgj3UJ/AyIlRQ45VNYfSv1fNC4qQnaqXOdKTEaap1Go811e9",
        "ciphertextCrc32c": "2279011760",
        "protectionLevel": "SOFTWARE",
    },
    indent=2,
)


def nginx_binary() -> str:
    """nginx from PATH, or /usr/sbin (Debian's place, outside a normal user's PATH)."""
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if not found:
        raise RuntimeError("nginx not found: install the Debian package nginx (bench/run.sh and scripts/test.sh do)")
    return found


def nginx_conf_string(text: str) -> str:
    """`text` as a single-quoted nginx string (nginx turns \\n back into a newline)."""
    if "$" in text:
        raise ValueError("nginx would read $ in a return text as a variable")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f"'{escaped}'"


def nginx_conf(prefix: Path, port: int, workers: int, answer: str = NGINX_ANSWER, without: tuple = ()) -> str:
    """The baseline's nginx.conf: every request on 127.0.0.1:`port` answered 200 with `answer`,
    no logging, keep-alive as Keyhold's listener (60 s idle, 10 s for a request head, no limit on
    requests per connection: hyper closes none). Every path nginx writes is under `prefix`;
    `without` names the temp-file modules the build lacks (`nginx -V`: --without-http_X_module)."""
    temp = "".join(f'    {m}_temp_path "{prefix / "tmp" / m}";\n'
                   for m in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi") if m not in without)
    return f"""# bench/suite.py: the fixed-answer baseline
worker_processes {workers};
pid "{prefix / 'nginx.pid'}";
error_log "{prefix / 'error.log'}" warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
{temp}    keepalive_timeout 60s;
    keepalive_requests 1000000000;
    client_header_timeout 10s;
    client_body_timeout 60s;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type "application/json; charset=UTF-8";
            return 200 {nginx_conf_string(answer)};
        }}
    }}
}}
"""


def nginx_missing_modules(binary: str) -> tuple:
    """The temp-file modules this nginx build lacks (`nginx -V`: --without-http_X_module), for
    `nginx_conf`'s `without`; and the build's version line."""
    build = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr
    version = build.splitlines()[0].split(":", 1)[-1].strip() if build else "nginx"
    return tuple(m for m in ("proxy", "fastcgi", "uwsgi", "scgi") if f"--without-http_{m}_module" in build), version


class Nginx:
    """nginx answering every request with NGINX_ANSWER: what an HTTP server does when a request
    costs nothing. Its own configuration, pid file, error log and temp files in a temp dir, a
    free loopback port, in the foreground (never the system service); one worker per core this
    process may use, as Keyhold's runtime has one worker thread per core."""

    def __init__(self, answer: str = NGINX_ANSWER):
        binary = nginx_binary()
        without, self.version = nginx_missing_modules(binary)
        self.workers = len(os.sched_getaffinity(0))
        self.answer = answer
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="keyhold-bench-nginx-"))
        (self.prefix / "tmp").mkdir()
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_conf(self.prefix, self.port, self.workers, answer, without))
        self.base = f"http://127.0.0.1:{self.port}"
        # Its own process group: stop() can reach the workers even if the master dies first.
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(self.base + "/", timeout=1) as r:
                        body = r.read().decode()
                    if body != answer:
                        raise RuntimeError(f"nginx answered {body!r}, not the fixed answer")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"nginx did not start: {self.error_log()}")
                    time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def error_log(self) -> str:
        try:
            return (self.prefix / "error.log").read_text().strip()[-2000:]
        except OSError:
            return "(no error log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the master stops its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def agent_email(s: Server, project: str) -> str:
    req = urllib.request.Request(
        f"{s.base}/v1beta1/projects/{project}/services/store.keyhold.dev:generateServiceIdentity", data=b"", method="POST"
    )
    req.add_header("Authorization", f"Bearer {s.token}")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())["response"]["email"]


# The body of a 32-byte `:encrypt` (as bench/encrypt.lua).
ENCRYPT_32B = json.dumps({"plaintext": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="})


def encryption_key(s: Server, project: str = "bench", key: str = "k") -> str:
    """The key `key` (ENCRYPT_DECRYPT) in key ring `r` of `project`/global; returns its name."""
    loc = f"projects/{project}/locations/global"
    s.call("POST", f"{loc}/keyRings?keyRingId=r", {})
    s.ok("POST", f"{loc}/keyRings/r/cryptoKeys?cryptoKeyId={key}", {"purpose": "ENCRYPT_DECRYPT"})
    return f"{loc}/keyRings/r/cryptoKeys/{key}"


def wait_operation(s: Server, op: dict, timeout: float = 3600.0) -> dict:
    """Polls a long-running operation (what copies answer with) until it is done; its response."""
    deadline = time.monotonic() + timeout
    while not op.get("done"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation {op.get('name')} did not finish")
        time.sleep(0.05)
        op = s.ok("GET", op["name"])
    if "error" in op:
        raise RuntimeError(f"operation {op['name']} failed: {op['error']}")
    return op["response"]


def key_for_store(s: Server, project: str = "bench", key: str = "k") -> str:
    """[`encryption_key`], usable by the store's service agent."""
    name = encryption_key(s, project, key)
    email = agent_email(s, project)
    policy = {"bindings": [{"role": ENCRYPTER, "members": [f"serviceAccount:{email}"]}]}
    s.ok("POST", f"{name}:setIamPolicy", {"policy": policy})
    return name


class Wrk:
    """wrk runs: requests/s and latency percentiles. At one connection, a request the suite wrote
    itself ([`Wrk.script`], or a GET) goes to h2load instead ([`Wrk.run_one_connection`])."""

    def __init__(self, duration: str, workdir: Path):
        self.duration = duration
        self.workdir = workdir
        self.requests: dict[Path, tuple[str, str | None, str]] = {}

    def script(self, name: str, method: str, body: str | None, content_type: str = "application/json") -> Path:
        lines = [f'wrk.method = "{method}"', 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYHOLD_TOKEN")']
        if body is not None:
            lines.append(f"wrk.body = {json.dumps(body)}")
            lines.append(f'wrk.headers["Content-Type"] = "{content_type}"')
        path = self.workdir / f"{name}.lua"
        path.write_text("\n".join(lines) + "\n")
        self.requests[path] = (method, body, content_type)
        return path

    def run(self, url: str, conns: int, script: Path | None = None, token: str = "", env=None, scale: int = 1) -> dict:
        """`scale` multiplies the duration (for requests so slow that a short run counts few)."""
        threads = 1 if conns == 1 else 2
        duration = self.duration if scale == 1 else f"{parse_duration(self.duration) * scale:g}s"
        if conns == 1 and env is None and (script is None or script in self.requests):
            return self.run_one_connection(url, script, token, parse_duration(duration))
        args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency"]
        if script is not None:
            args += ["-s", str(script)]
        out = sh(*args, url, env={"KEYHOLD_TOKEN": token, **(env or {})})
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        pct = {m.group(1): parse_duration(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        if non2xx and int(non2xx.group(1)) > 0:
            raise RuntimeError(f"wrk {url}: {non2xx.group(1)} error responses")
        return {"rps": rps, "p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99")}

    def run_one_connection(self, url: str, script: Path | None, token: str, seconds: float) -> dict:
        """One connection, one request at a time, with h2load over HTTP/1.1: its log has every
        request's latency, and they must add up to the run's length. wrk's percentiles at one
        connection did not: on the journaled server (2026-12-04) wrk gave p99 9.97 ms and a mean
        of 566 µs over 50,620 requests in 5.1 s (28.6 s of latency), where h2load's log of the
        same server gave p99 334 µs, its latencies adding up to 4.92 s of 5 s."""
        method, body, content_type = self.requests[script] if script is not None else ("GET", None, "")
        log = self.workdir / "h2load-c1.log"
        log.unlink(missing_ok=True)
        args = ["h2load", "--h1", "-D", f"{max(1, round(seconds))}", "-c1", "-t1", "-m1", "--log-file", str(log)]
        if token:
            args += ["-H", f"authorization: Bearer {token}"]
        if body is not None:
            data = self.workdir / "h2load-c1.body"
            data.write_text(body)
            args += ["-d", str(data), "-H", f"content-type: {content_type}"]
        if method not in ("GET", "POST"):
            args += ["-H", f":method: {method}"]
        out = sh(*args, url)
        if not re.search(r" 0 failed, 0 errored", out) or not re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", out):
            raise RuntimeError(f"h2load {url}: failed or non-2xx requests:\n{out}")
        # One line a request: its start (µs since the epoch), HTTP status, latency (µs).
        rows = [tuple(int(x) for x in line.split()[:3]) for line in log.read_text().splitlines() if line.strip()]
        if not rows:
            raise RuntimeError(f"h2load {url}: no request completed")
        lat = sorted(latency / 1e6 for _, _, latency in rows)
        span = (max(start + latency for start, _, latency in rows) - min(start for start, _, _ in rows)) / 1e6
        if sum(lat) > 1.01 * span + 1e-3:
            raise RuntimeError(f"h2load {url}: latencies add up to {sum(lat):.2f} s over {span:.2f} s of requests")
        rps = float(re.search(r"^finished in [\d.]+\w*, ([\d.]+) req/s", out, re.M).group(1))
        return {"rps": rps, "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p99": percentile(lat, 0.99)}


def percentile(ordered: list[float], q: float) -> float:
    """The value at quantile `q` of `ordered` (ascending, not empty): the nearest rank."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


# ---- scenarios -------------------------------------------------------------------------------


def scenario_kms(ctx) -> dict:
    """:encrypt / :decrypt (32 B and 4 KiB) at 1..64 connections against GET /healthz and
    against nginx's fixed answer (the same request as `:encrypt` 32 B, the same wrk settings,
    at each connection count right after the health check)."""
    with Server(ctx.binary) as s, Nginx() as ng:
        name = encryption_key(s)
        key = f"{s.base}/v1/{name}"
        import base64

        bodies = {}
        for size, label in ((32, "32B"), (4096, "4KiB")):
            pt = base64.b64encode(os.urandom(size)).decode()
            ct = s.ok("POST", f"{name}:encrypt", {"plaintext": pt})["ciphertext"]
            bodies[f"encrypt-{label}"] = ctx.wrk.script(f"encrypt-{label}", "POST", json.dumps({"plaintext": pt}))
            bodies[f"decrypt-{label}"] = ctx.wrk.script(f"decrypt-{label}", "POST", json.dumps({"ciphertext": ct}))
        rows = {}
        for conns in ctx.connections:
            rows[f"health-c{conns}"] = ctx.wrk.run(f"{s.base}/healthz", conns)
            rows[f"nginx-c{conns}"] = ctx.wrk.run(f"{ng.base}/v1/{name}:encrypt", conns, bodies["encrypt-32B"], s.token)
            for op in ("encrypt", "decrypt"):
                for label in ("32B", "4KiB"):
                    if label == "4KiB" and conns not in (1, max(ctx.connections)):
                        continue
                    url = f"{key}:{op}"
                    rows[f"{op}-{label}-c{conns}"] = ctx.wrk.run(url, conns, bodies[f"{op}-{label}"], s.token)
        return {"rows": rows, "connections": ctx.connections, "nginx": ng.version, "nginx_workers": ng.workers}


def scenario_durability(ctx) -> dict:
    """What the durable audit entry costs: `:encrypt` and `:decrypt` (32 B) against the health
    check and nginx's fixed answer on the SQLite file with `--audit-sync strict` (every entry
    committed with fsync before the answer), on the default server (`journal`: the entry in the
    node's journal before the answer, fsynced every 100 ms, moved into the log behind the
    requests) and with `--in-memory` (the entry committed in memory, no fsync, nothing on
    disk). nginx runs throughout and is measured next to each server, so that each has a
    baseline from the same minute."""
    rows = {}
    with Nginx() as ng:
        for storage, extra in (("file", ["--audit-sync", "strict"]), ("journal", []), ("memory", ["--in-memory"])):
            with Server(ctx.binary, extra) as s:
                key = encryption_key(s)
                ct = s.ok("POST", f"{key}:encrypt", json.loads(ENCRYPT_32B))["ciphertext"]
                decrypt = json.dumps({"ciphertext": ct})
                scripts = {"encrypt": ctx.wrk.script(f"durability-{storage}-encrypt", "POST", ENCRYPT_32B),
                           "decrypt": ctx.wrk.script(f"durability-{storage}-decrypt", "POST", decrypt)}
                for conns in (1, max(ctx.connections)):
                    rows[f"{storage}-health-c{conns}"] = ctx.wrk.run(f"{s.base}/healthz", conns)
                    url = f"{ng.base}/v1/{key}:encrypt"
                    rows[f"{storage}-nginx-c{conns}"] = ctx.wrk.run(url, conns, scripts["encrypt"], s.token)
                    for op in ("encrypt", "decrypt"):
                        url = f"{s.base}/v1/{key}:{op}"
                        rows[f"{storage}-{op}-c{conns}"] = ctx.wrk.run(url, conns, scripts[op], s.token)
    return {"rows": rows, "nginx": ng.version, "nginx_workers": ng.workers}


PURPOSE_KEYS = (("sign-p256", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
                ("sign-rsa2048", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
                ("mac-sha256", "MAC", "HMAC_SHA256"),
                ("decrypt-oaep2048", "ASYMMETRIC_DECRYPT", "RSA_DECRYPT_OAEP_2048_SHA256"))
# On SoftHSM2 RSA-OAEP is SHA-1 only (Keyhold refuses the others on HSM keys).
HSM_ALGORITHMS = {"decrypt-oaep2048": "RSA_DECRYPT_OAEP_2048_SHA1"}


def softhsm_token(tmp: Path) -> tuple[list[str], dict]:
    """A fresh SoftHSM2 token under `tmp`: the `keyhold serve` flags and environment to use it."""
    module = next((m for m in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
                   if Path(m).exists()), None)
    if module is None:
        raise RuntimeError("SoftHSM2 is not installed (scripts/test.sh installs the softhsm2 package)")
    tokens = tmp / "softhsm-tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    sh("softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", "5678", "--pin", "1234", env=env)
    pin = tmp / "softhsm-pin"
    pin.write_text("1234\n")
    return ["--pkcs11-module", module, "--pkcs11-token-label", "bench", "--pkcs11-pin-file", str(pin)], env


def purpose_bodies(ctx, s, level: str) -> dict:
    """One key per row of PURPOSE_KEYS at `level` on server `s`, generated and enabled, and the
    request each row's call sends (prefixed `hsm-` for HSM keys)."""
    import base64
    import hashlib

    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    keys = "projects/bench/locations/global/keyRings/r/cryptoKeys"
    prefix = "" if level == "SOFTWARE" else "hsm-"
    bodies = {}
    for key, purpose, algorithm in PURPOSE_KEYS:
        if level == "HSM":
            algorithm = HSM_ALGORITHMS.get(key, algorithm)
        template = {"algorithm": algorithm, "protectionLevel": level}
        s.ok("POST", f"{keys}?cryptoKeyId={prefix}{key}", {"purpose": purpose, "versionTemplate": template})
        version = f"{keys}/{prefix}{key}/cryptoKeyVersions/1"
        deadline = time.monotonic() + 120
        while s.ok("GET", version)["state"] != "ENABLED":  # PENDING_GENERATION, as in Cloud KMS
            if time.monotonic() > deadline:
                raise RuntimeError(f"{version} was not generated")
            time.sleep(0.02)
        if purpose == "ASYMMETRIC_SIGN":
            body = {"digest": {"sha256": b64(hashlib.sha256(os.urandom(32)).digest())}}
            bodies[prefix + key] = (f"{version}:asymmetricSign", json.dumps(body))
        elif purpose == "MAC":
            bodies[prefix + key] = (f"{version}:macSign", json.dumps({"data": b64(os.urandom(32))}))
        else:
            md = "sha1" if algorithm.endswith("SHA1") else "sha256"
            pem = ctx.tmp / f"{prefix}{key}.pem"
            pem.write_text(s.ok("GET", f"{version}/publicKey")["pem"])
            (ctx.tmp / "dek").write_bytes(os.urandom(32))
            sh("openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(pem), "-in", str(ctx.tmp / "dek"), "-out",
               str(ctx.tmp / "dek.enc"), "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", f"rsa_oaep_md:{md}",
               "-pkeyopt", f"rsa_mgf1_md:{md}")
            body = {"ciphertext": b64((ctx.tmp / "dek.enc").read_bytes())}
            bodies[prefix + key] = (f"{version}:asymmetricDecrypt", json.dumps(body))
    return bodies


def scenario_purposes(ctx) -> dict:
    """The key operations of the other purposes (issue 19) against `:encrypt` 32 B on the same
    server (the default SQLite file): `:asymmetricSign` of a SHA-256 digest with
    EC P-256 and with RSA-2048 PKCS#1, `:macSign` of 32 B with HMAC-SHA256, and
    `:asymmetricDecrypt` of an RSA-OAEP-2048 ciphertext of 32 B made by openssl; with SOFTWARE
    keys, and the same with HSM keys in a SoftHSM2 token (OAEP with SHA-1 there)."""
    flags, env = softhsm_token(ctx.tmp)
    with Server(ctx.binary, flags, env=env) as s:
        enc = encryption_key(s)
        bodies = {"encrypt": (f"{enc}:encrypt", ENCRYPT_32B)}
        bodies.update(purpose_bodies(ctx, s, "SOFTWARE"))
        bodies.update(purpose_bodies(ctx, s, "HSM"))
        rows = {}
        for conns in (1, max(ctx.connections)):
            for op, (path, body) in bodies.items():
                script = ctx.wrk.script(f"purposes-{op}", "POST", body)
                rows[f"{op}-c{conns}"] = ctx.wrk.run(f"{s.base}/v1/{path}", conns, script, s.token)
    return {"rows": rows}


def scenario_iam(ctx) -> dict:
    """:encrypt with a realistic IAM set-up (the grant found among many bindings, at the key)
    against the same call by the owner (one binding at the project): both authenticate,
    authorize and write an audit entry (through the default journal)."""
    with Server(ctx.binary) as s:
        key = encryption_key(s)
        ring = key.rsplit("/cryptoKeys/", 1)[0]
        user = "user:app@example.com"
        token = s.ok("POST", "tokens", {"principal": user})["token"]
        # Many bindings on the project, the ring and the key; the caller's grant is the last.
        crowd = [f"user:other{i}@example.com" for i in range(50)]
        roles = ["roles/cloudkms.viewer", "roles/cloudkms.cryptoKeyEncrypter", "roles/cloudkms.cryptoKeyDecrypter"]
        for resource in ("projects/bench", ring):
            if resource == "projects/bench":
                policy = s.ok("POST", f"{resource}:getIamPolicy", {})
                bindings = policy.get("bindings", []) + [{"role": r, "members": crowd} for r in roles]
                s.ok("POST", f"{resource}:setIamPolicy", {"policy": {"bindings": bindings, "etag": policy.get("etag")}})
            else:
                s.ok("POST", f"{resource}:setIamPolicy", {"policy": {"bindings": [{"role": r, "members": crowd} for r in roles]}})
        bindings = [{"role": r, "members": crowd} for r in roles] + [{"role": ENCRYPTER, "members": crowd + [user]}]
        s.ok("POST", f"{key}:setIamPolicy", {"policy": {"bindings": bindings}})
        script = ctx.wrk.script("iam-encrypt", "POST", ENCRYPT_32B)
        url = f"{s.base}/v1/{key}:encrypt"
        rows = {}
        for conns in (1, max(ctx.connections)):
            # Alternate which goes first, so drift does not favour one.
            order = [("cheap", s.token), ("full", token)] if conns == 1 else [("full", token), ("cheap", s.token)]
            for name, t in order:
                rows[f"{name}-c{conns}"] = ctx.wrk.run(url, conns, script, t)
        return {"rows": rows}


def scenario_aead(ctx) -> dict:
    """Chunk sealing and opening (criterion) against `openssl speed -evp aes-256-gcm`."""
    out = ctx.tmp / "aead.json"
    env = {"RESULTS_JSON": str(out)}
    if ctx.smoke:
        env |= {"KEYHOLD_BENCH_SECONDS": "0.2", "SECONDS_PER": "1"}
    print(sh("bash", str(ROOT / "bench/aead.sh"), env=env), file=sys.stderr)
    return json.loads(out.read_text())


def put_object(s: Server, instance: str, name: str, size: int) -> float:
    """Uploads `size` bytes (streamed through curl from /dev/urandom); returns seconds."""
    url = f"{s.base}/v1/projects/bench/locations/global/instances/{instance}/objects/{name}"
    script = f'head -c {size} /dev/urandom | curl -sf -o /dev/null -w "%{{time_total}}" -H "Authorization: Bearer $KEYHOLD_TOKEN" -T - "{url}"'
    return float(sh("bash", "-o", "pipefail", "-c", script, env={"KEYHOLD_TOKEN": s.token}))


def scenario_store(ctx) -> dict:
    """Store PUT / GET at 16 connections by object size, CMEK against service-managed."""
    sizes = ctx.object_sizes
    with Server(ctx.binary) as s:
        key = key_for_store(s)
        loc = "projects/bench/locations/global"
        s.ok("POST", f"{loc}/instances?instanceId=plain", {})
        s.ok("POST", f"{loc}/instances?instanceId=cmek", {"kmsKey": key})
        rows = {}
        for size in sizes:
            for op in ("put", "get"):
                rps = {"plain": [], "cmek": []}
                for rnd in range(ctx.rounds):
                    order = ("plain", "cmek") if rnd % 2 == 0 else ("cmek", "plain")
                    for enc in order:
                        base = f"{s.base}/v1/{loc}/instances/{enc}/objects/"
                        if op == "put":
                            naming = "unique" if size <= 65536 else "overwrite"
                            env = {"OBJECT_SIZE": str(size), "OBJECT_BASE": base, "OBJECT_NAMING": naming}
                            # Large uploads are disk-bound (a few per second): a longer run
                            # counts enough of them to compare.
                            scale = 3 if size >= (1 << 20) else 1
                            r = ctx.wrk.run(base, 16, ROOT / "bench/store-put.lua", s.token, env, scale)
                        else:
                            if rnd == 0:
                                put_object(s, enc, f"read-{size}", size)
                            r = ctx.wrk.run(f"{base}read-{size}?alt=media", 16, ROOT / "bench/store-get.lua", s.token)
                        rps[enc].append(r["rps"])
                plain, cmek = statistics.mean(rps["plain"]), statistics.mean(rps["cmek"])
                # Each round measures both instances back to back: its ratio is one paired sample.
                paired = [c / p for p, c in zip(rps["plain"], rps["cmek"])]
                rows[f"{op}-{size}"] = {"size": size, "op": op, "plain_rps": plain, "cmek_rps": cmek,
                                        "ratio": cmek / plain, "round_ratios": paired}
        return {"rows": rows, "overall": paired_ratio_summary([r for row in rows.values() for r in row["round_ratios"]])}


# Two-sided 95% Student t quantiles by degrees of freedom (beyond 30, the normal 1.96 is close).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
       12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04}


def paired_ratio_summary(ratios: list[float]) -> dict:
    """Geometric mean of paired ratios with its 95% confidence interval (t on the log ratios).

    Nothing on the store's CMEK path differs per request (the customer's key only gates access),
    so every size and direction estimates the same overhead; pooling them is what gives the
    figure enough precision to say whether a 5% difference is there at all."""
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    mean = statistics.mean(logs)
    if n < 2:
        return {"n": n, "geomean": math.exp(mean), "low": float("nan"), "high": float("nan")}
    df = n - 1
    t = T95[max(k for k in T95 if k <= df)] if df <= 30 else 1.96
    half = t * statistics.stdev(logs) / math.sqrt(n)
    return {"n": n, "geomean": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half)}


def interval_verdict(summary: dict, goal: float) -> str:
    """Met only if the whole interval clears `goal`, missed only if none of it does."""
    if summary["low"] >= goal:
        return "met"
    if summary["high"] < goal:
        return "missed"
    return "not decided at this precision"


def scenario_rewrap(ctx) -> dict:
    """:rewrap (one KMS call per KEK) and :reencrypt (every chunk) against the data size."""
    with Server(ctx.binary) as s:
        key = key_for_store(s)
        loc = "projects/bench/locations/global"
        rows = []
        version = 1
        for size in ctx.rewrap_sizes:
            inst = f"rw-{size}"
            s.ok("POST", f"{loc}/instances?instanceId={inst}", {"kmsKey": key})
            # Objects of at most 64 MiB each, as a real instance would hold.
            left, n = size, 0
            while left > 0:
                part = min(left, 64 * 1024 * 1024)
                put_object(s, inst, f"o{n}", part)
                left -= part
                n += 1
            version += 1
            s.ok("POST", f"{key}/cryptoKeyVersions", {})
            s.ok("POST", f"{key}:updatePrimaryVersion", {"cryptoKeyVersionId": str(version)})
            times = []
            for _ in range(ctx.rewrap_repeats):
                t0 = time.perf_counter()
                s.ok("POST", f"{loc}/instances/{inst}:rewrap", {})
                times.append(time.perf_counter() - t0)
            # Copies answer with a long-running operation at once (issue 18, finding 7): the
            # answer's latency and the time to the end, for :reencrypt and a backup.
            t0 = time.perf_counter()
            op = s.ok("POST", f"{loc}/instances/{inst}:reencrypt", {})
            reencrypt_answer = time.perf_counter() - t0
            wait_operation(s, op)
            reencrypt = time.perf_counter() - t0
            t0 = time.perf_counter()
            op = s.ok("POST", f"{loc}/instances/{inst}/backups?backupId=b", {})
            backup_answer = time.perf_counter() - t0
            backup = wait_operation(s, op)
            assert backup["state"] == "READY", backup
            rows.append({"bytes": size, "rewrap_s": statistics.median(times), "reencrypt_s": reencrypt,
                         "reencrypt_answer_s": reencrypt_answer, "backup_s": time.perf_counter() - t0,
                         "backup_answer_s": backup_answer})
        return {"rows": rows}


def time_until_refused(s: Server, instance: str, change) -> float:
    """Seconds from the end of `change()` to the first refused read of `instance`'s object."""
    path = f"projects/bench/locations/global/instances/{instance}/objects/probe?alt=media"
    status, _ = s.call("GET", path)
    assert status == 200, f"probe not readable before the change: {status}"
    change()
    t0 = time.perf_counter()
    while True:
        status, body = s.call("GET", path)
        if status != 200:
            assert "not accessible" in str(body), body
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > 30:
            raise RuntimeError("no refusal within 30 s")


def enforcement_on(nodes: list[Server], label: str) -> dict:
    """Disable / revoke on nodes[0]; the first refused read on nodes[-1]."""
    a, b = nodes[0], nodes[-1]
    key = key_for_store(a)
    loc = "projects/bench/locations/global"
    a.ok("POST", f"{loc}/instances?instanceId=enf", {"kmsKey": key})
    a.call("PUT", f"{loc}/instances/enf/objects/probe", raw=b"probe")
    # Let the other node see the instance and its key as usable.
    deadline = time.monotonic() + 10
    while b.call("GET", f"{loc}/instances/enf/objects/probe?alt=media")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: the second node never served the probe")
        time.sleep(0.05)
    disable = time_until_refused(
        b, "enf", lambda: a.ok("PATCH", f"{key}/cryptoKeyVersions/1?updateMask=state", {"state": "DISABLED"})
    )
    a.ok("PATCH", f"{key}/cryptoKeyVersions/1?updateMask=state", {"state": "ENABLED"})
    deadline = time.monotonic() + 30
    while b.call("GET", f"{loc}/instances/enf/objects/probe?alt=media")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: not served again after enabling")
        time.sleep(0.05)
    revoke = time_until_refused(b, "enf", lambda: a.ok("POST", f"{key}:setIamPolicy", {"policy": {"bindings": []}}))
    return {"disable_s": disable, "revoke_s": revoke}


def scenario_enforcement(ctx) -> dict:
    """Key disable / role revoke to the first refused read: one process, and two nodes on
    PostgreSQL (change made on one, read refused on the other)."""
    out = {}
    with Server(ctx.binary) as s:
        out["one-process"] = enforcement_on([s], "one process")
    url = os.environ.get("KEYHOLD_TEST_POSTGRES_URL")
    if not url:
        raise RuntimeError("KEYHOLD_TEST_POSTGRES_URL is not set: run the suite through bench/run.sh")
    db = f"bench_{os.getpid()}_{int(time.time())}"
    sh("psql", url, "-qc", f"CREATE DATABASE {db}")
    db_url = url.rsplit("/", 1)[0] + "/" + db
    shared = Path(tempfile.mkdtemp(prefix="keyhold-bench-root-"))
    root = shared / "root.key"
    import base64

    root.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    root.chmod(0o600)
    try:
        flags = ["--database", db_url, "--root-key-file", str(root)]
        d1, d2 = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        with Server(ctx.binary, flags, data=d1) as a:
            with Server(ctx.binary, flags, data=d2) as b:
                b.token = a.token
                out["two-nodes-postgres"] = enforcement_on([a, b], "two nodes")
        shutil.rmtree(d1, ignore_errors=True)
        shutil.rmtree(d2, ignore_errors=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        sh("psql", url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
    return out


def scenario_startup(ctx) -> dict:
    """`keyhold serve --in-memory`: process start to the first answered request."""
    times = []
    for _ in range(ctx.startup_repeats):
        port = free_port()
        data = Path(tempfile.mkdtemp(prefix="keyhold-bench-start-"))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(ctx.binary), "serve", "--in-memory", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "KEYHOLD_LOG": "warn"},
        )
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        if c.recv(64).startswith(b"HTTP/1.1 200"):
                            times.append(time.perf_counter() - t0)
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 30 or proc.poll() is not None:
                    raise RuntimeError("the in-memory server did not answer")
                time.sleep(0.001)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(data, ignore_errors=True)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def scenario_stream(ctx) -> dict:
    """One large object streamed in and out of a CMEK instance; the server's peak RSS."""
    with Server(ctx.binary) as s:
        key = key_for_store(s)
        loc = "projects/bench/locations/global"
        s.ok("POST", f"{loc}/instances?instanceId=big", {"kmsKey": key})
        before = s.rss_peak_kib()
        script = (
            f'head -c {ctx.stream_bytes} /dev/zero | curl -sf -o /dev/null -w "%{{time_total}}" '
            f'-H "Authorization: Bearer $KEYHOLD_TOKEN" -T - "{s.base}/v1/{loc}/instances/big/objects/huge"'
        )
        put_s = float(sh("bash", "-o", "pipefail", "-c", script, env={"KEYHOLD_TOKEN": s.token}))
        after_put = s.rss_peak_kib()
        get = sh(
            "curl", "-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
            "-H", f"Authorization: Bearer {s.token}", f"{s.base}/v1/{loc}/instances/big/objects/huge?alt=media",
        ).split()
        if int(get[1]) != ctx.stream_bytes:
            raise RuntimeError(f"downloaded {get[1]} bytes of {ctx.stream_bytes}")
        return {
            "bytes": ctx.stream_bytes,
            "put_s": put_s,
            "get_s": float(get[0]),
            "rss_start_kib": before,
            "rss_after_put_kib": after_put,
            "rss_after_get_kib": s.rss_peak_kib(),
        }


# Fairness (hardening issue 15): the server-wide quota (the flooder's: one request a second, a
# burst of 60, which even a debug build on a busy machine spends in the flood's first second,
# so that the smoke run sees refusals however slow the machine) and the quiet project's own,
# raised one (above anything one connection can send, so it is never refused).
FAIRNESS_QUOTA_PER_MINUTE = 60
FAIRNESS_QUIET_QUOTA_PER_MINUTE = 6_000_000
# --quota-max-in-flight-per-project of the third run.
FAIRNESS_IN_FLIGHT = 4


def wrk_totals(out: str) -> dict:
    """Requests sent and non-2xx answers of one wrk run (its summary lines)."""
    sent = re.search(r"^\s*(\d+) requests in", out, re.M)
    if not sent:
        raise ValueError("no request count in wrk's output")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests": int(sent.group(1)), "non2xx": int(non2xx.group(1)) if non2xx else 0}


def quiet_under_flood(ctx, flags: list[str]) -> dict:
    """The quiet project's `:encrypt` at one connection, alone and while project `flood` sends
    `:encrypt` at 64 connections, on one server started with `flags`."""
    with Server(ctx.binary, flags) as s:
        quiet_key, flood_key = encryption_key(s, "quiet"), encryption_key(s, "flood")
        script = ctx.wrk.script("fairness", "POST", ENCRYPT_32B)
        quiet_url, flood_url = f"{s.base}/v1/{quiet_key}:encrypt", f"{s.base}/v1/{flood_key}:encrypt"
        alone = ctx.wrk.run(quiet_url, 1, script, s.token)
        # The flood starts half a second before the quiet client and ends after it.
        flood_s = parse_duration(ctx.duration) + 1
        proc = subprocess.Popen(
            ["wrk", "-t2", "-c64", f"-d{flood_s:g}s", "-s", str(script), flood_url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KEYHOLD_TOKEN": s.token},
        )
        try:
            time.sleep(0.5)
            # wrk.run fails on any non-2xx: the quiet project is never refused.
            flooded = ctx.wrk.run(quiet_url, 1, script, s.token)
            out, err = proc.communicate(timeout=flood_s + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode != 0:
            raise RuntimeError(f"flood wrk failed: {err.strip()[-500:]}")
        totals = wrk_totals(out)
        return {
            "alone": alone,
            "flooded": flooded,
            "flood": {"rps": totals["requests"] / flood_s, "refused_share": totals["non2xx"] / max(totals["requests"], 1)},
            "rps_ratio": flooded["rps"] / alone["rps"],
            "p50_ratio": flooded["p50"] / alone["p50"],
            "p99_ratio": flooded["p99"] / alone["p99"],
        }


def scenario_fairness(ctx) -> dict:
    """Two projects under one flood: the quiet project's `:encrypt` throughput and latency
    while the other floods, as ratios to its own alone in the same server, with quotas off,
    with rate quotas (the flooder held to --quota-crypto-per-minute, the quiet project with a
    raised quota of its own), and with rate quotas and --quota-max-in-flight-per-project."""
    rates = ["--quota-crypto-per-minute", str(FAIRNESS_QUOTA_PER_MINUTE),
             "--quota-override", f"quiet:crypto={FAIRNESS_QUIET_QUOTA_PER_MINUTE}"]
    off = quiet_under_flood(ctx, [])
    if off["flood"]["refused_share"] > 0:
        raise RuntimeError(f"the flood was refused without quotas ({off['flood']})")
    on = quiet_under_flood(ctx, rates)
    capped = quiet_under_flood(ctx, rates + ["--quota-max-in-flight-per-project", str(FAIRNESS_IN_FLIGHT)])
    for r in (on, capped):
        if r["flood"]["refused_share"] <= 0:
            raise RuntimeError(f"the flood was never refused ({r['flood']}): quotas are not on")
    return {"quota_per_minute": FAIRNESS_QUOTA_PER_MINUTE, "quiet_quota_per_minute": FAIRNESS_QUIET_QUOTA_PER_MINUTE,
            "in_flight": FAIRNESS_IN_FLIGHT, "quotas_off": off, "quotas_on": on, "quotas_and_cap": capped}


# Scale (issue 18): `:encrypt` over one key, then spread at random over many keys of one ring
# (each request names a key; all warm after the first pass), then spread while another
# principal changes one other key a second (a PATCH of its labels). Before the change log, every
# change emptied every cache of every node, its own included; and the key cache had no bound.
SCALE_LUA = """
local n = tonumber(os.getenv("SCALE_KEYS"))
local prefix = os.getenv("KEY_PREFIX")
local headers = {["Authorization"] = "Bearer " .. os.getenv("KEYHOLD_TOKEN"), ["Content-Type"] = "application/json"}
local body = '{"plaintext":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}'
request = function()
  return wrk.format("POST", prefix .. math.random(0, n - 1) .. ":encrypt", headers, body)
end
"""


def each_key(s: Server, ring: str, n: int, call, threads: int = 8):
    """`call(s, key_name)` for keys k0..k{n-1} of `ring`, over `threads` connections."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: call(s, f"{ring}/cryptoKeys/k{i}"), range(n)))


def spread_load(ctx, ring: str, n: int, name: str) -> tuple[Path, dict]:
    """wrk's script and environment for `:encrypt` on keys k0..k{n-1} of `ring`, one at random a request."""
    lua = ctx.tmp / f"{name}.lua"
    lua.write_text(SCALE_LUA)
    return lua, {"SCALE_KEYS": str(n), "KEY_PREFIX": f"/v1/{ring}/cryptoKeys/k"}


def create_keys(s: Server, ring: str, n: int):
    """Keys k0..k{n-1} in `ring`."""
    each_key(s, ring, n, lambda s, key: s.ok("POST", f"{ring}/cryptoKeys?cryptoKeyId={key.rsplit('/', 1)[1]}",
                                              {"purpose": "ENCRYPT_DECRYPT"}))


SCALE_RUNS = ("one key", "spread", "spread, one change a second")
# The goal (issue 18): spread within 10% of one key, with and without the change a second.
SCALE_GOAL = 0.90


def scale_orders(rounds: int) -> list[tuple[str, ...]]:
    """The order of the three runs in each round, rotated a place a round: the log grows run
    after run, and no kind of run should always come first or last."""
    return [SCALE_RUNS[r % 3:] + SCALE_RUNS[:r % 3] for r in range(rounds)]


def scenario_scale(ctx) -> dict:
    """`:encrypt` on one key, spread over many keys, and spread while one other key changes a
    second, in rounds: each round's two ratios to its own one-key run are paired samples."""
    import threading

    n = ctx.scale_keys
    with Server(ctx.binary) as s:
        loc = "projects/bench/locations/global"
        s.ok("POST", f"{loc}/keyRings?keyRingId=r", {})
        ring = f"{loc}/keyRings/r"
        t0 = time.perf_counter()
        create_keys(s, ring, n + 1)
        created_s = time.perf_counter() - t0
        lua, env = spread_load(ctx, ring, n, "scale")
        conns = max(ctx.connections)
        one = ctx.wrk.script("scale-one", "POST", ENCRYPT_32B)
        health = ctx.wrk.run(f"{s.base}/healthz", conns)
        # One :encrypt per key warms every cache entry (not reported).
        each_key(s, ring, n, lambda s, key: s.ok("POST", f"{key}:encrypt", json.loads(ENCRYPT_32B)))
        changes = []

        def changing(run):
            """`run()` while another principal changes one other key a second."""
            stop = threading.Event()

            def changer():
                while not stop.is_set():
                    s.ok("PATCH", f"{ring}/cryptoKeys/k{n}?updateMask=labels", {"labels": {"v": str(len(changes))}})
                    changes.append(time.monotonic())
                    stop.wait(1.0)

            thread = threading.Thread(target=changer)
            thread.start()
            try:
                return run()
            finally:
                stop.set()
                thread.join()

        spread = lambda: ctx.wrk.run(f"{s.base}/", conns, lua, token=s.token, env=env)  # noqa: E731
        runs = {
            "one key": lambda: ctx.wrk.run(f"{s.base}/v1/{ring}/cryptoKeys/k0:encrypt", conns, one, token=s.token),
            "spread": spread,
            "spread, one change a second": lambda: changing(spread),
        }
        rounds = []
        for order in scale_orders(ctx.scale_rounds):
            got = {name: runs[name]() for name in order}
            for r in got.values():
                r["ratio_to_one_key"] = r["rps"] / got["one key"]["rps"]
            rounds.append({"order": list(order), "runs": got})
        return {"keys": n, "connections": conns, "create_s": created_s, "changes": len(changes), "health": health,
                "rounds": rounds, "summary": scale_summary(rounds), "rss_peak_kib": s.rss_peak_kib()}


def plural(n: int, word: str) -> str:
    """`1 round`, `4 rounds`."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def scale_summary(rounds: list[dict]) -> dict:
    """Per spread run: the geometric mean of its rounds' ratios to one key, its 95% interval and
    the verdict against the goal."""
    out = {}
    for name in SCALE_RUNS[1:]:
        summary = paired_ratio_summary([r["runs"][name]["ratio_to_one_key"] for r in rounds])
        if summary["n"] > 1:
            summary["verdict"] = interval_verdict(summary, SCALE_GOAL)
        else:
            # One round has no interval: no bounds rather than NaN ones.
            del summary["low"], summary["high"]
            summary["verdict"] = ("met" if summary["geomean"] >= SCALE_GOAL else "missed") + " (one round)"
        out[name] = summary
    return out


# Sustained load (issue 18): `:encrypt` spread over many keys in back-to-back runs, nothing
# between them. Every request adds an entry to the audit log; on a server on disk the journal's
# ingest task indexes them behind the requests, and once it takes them slower than they come
# the journal's bound on entries not yet in the log makes requests wait for it. Each run's
# rate and p99 show when that happens, and the server says so in its log.
LAG_WARNING = "the audit log is behind"


def scenario_sustained(ctx) -> dict:
    """`:encrypt` spread over many keys, run after run: where the audit log's ingest limits the server."""
    n = ctx.sustained_keys
    conns = max(ctx.connections)
    with Server(ctx.binary) as s:
        loc = "projects/bench/locations/global"
        s.ok("POST", f"{loc}/keyRings?keyRingId=r", {})
        ring = f"{loc}/keyRings/r"
        create_keys(s, ring, n)
        each_key(s, ring, n, lambda s, key: s.ok("POST", f"{key}:encrypt", json.loads(ENCRYPT_32B)))
        lua, env = spread_load(ctx, ring, n, "sustained")
        seconds = parse_duration(ctx.duration)
        runs, entries = [], 2 * n
        for _ in range(ctx.sustained_runs):
            r = ctx.wrk.run(f"{s.base}/", conns, lua, token=s.token, env=env)
            r["entries_before"] = entries
            entries += round(r["rps"] * seconds)
            runs.append(r)
        for r in runs:
            r["ratio_to_first"] = r["rps"] / runs[0]["rps"]
        warnings = (s.data / "server.log").read_text(errors="replace").count(LAG_WARNING)
        return {"keys": n, "connections": conns, "seconds": seconds, "runs": runs, "lag_warnings": warnings}


def scenario_copies(ctx) -> dict:
    """Copies of many objects as long-running operations (issue 18, finding 7): how long the
    request takes to answer, how long the copy runs, and a read of the instance while it runs,
    against the same read with no copy running."""
    from concurrent.futures import ThreadPoolExecutor

    n = ctx.copy_objects
    loc = "projects/bench/locations/global"
    with Server(ctx.binary) as s:
        s.ok("POST", f"{loc}/instances?instanceId=many", {})
        body = b"x" * 1024

        def put(i):
            status, value = s.call("PUT", f"{loc}/instances/many/objects/o{i:06d}", raw=body)
            if status != 200:
                raise RuntimeError(f"upload {i}: {status} {value}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(n)))

        def read_ms() -> float:
            t0 = time.perf_counter()
            s.ok("GET", f"{loc}/instances/many/objects/o000000")
            return (time.perf_counter() - t0) * 1000

        idle = statistics.median(read_ms() for _ in range(20))
        rows = {}
        for what, path in (("backup", f"{loc}/instances/many/backups?backupId=b"),
                           (":reencrypt", f"{loc}/instances/many:reencrypt")):
            t0 = time.perf_counter()
            op = s.ok("POST", path, {})
            answered = time.perf_counter() - t0
            reads = []
            while not op.get("done"):
                reads.append(read_ms())
                op = s.ok("GET", op["name"])
            done = time.perf_counter() - t0
            if "error" in op:
                raise RuntimeError(f"{what} failed: {op['error']}")
            rows[what] = {"answered_s": answered, "done_s": done,
                          "read_ms": statistics.median(reads) if reads else idle}
        return {"objects": n, "idle_read_ms": idle, "rows": rows}


def scenario_audit(ctx) -> dict:
    """Audit reads on a log of many entries (bench/audit_scale.py), and `--in-memory`'s memory
    under load with its audit retention: peak RSS after one run of load and after a second,
    longer one (flat once the retention is full)."""
    import audit_scale  # bench/audit_scale.py

    result = {"log": audit_scale.run(ctx.binary, ctx.audit_entries, 3 if ctx.smoke else 20)}
    kept = ctx.memory_audit_entries
    with Server(ctx.binary, ["--in-memory", "--in-memory-audit-entries", str(kept)]) as s:
        key = encryption_key(s)
        script = ctx.wrk.script("audit-memory", "POST", ENCRYPT_32B)
        conns = max(ctx.connections)
        runs = []
        for _ in range(3):
            r = ctx.wrk.run(f"{s.base}/v1/{key}:encrypt", conns, script, s.token)
            runs.append({"requests": r["rps"] * parse_duration(ctx.duration), "rss_peak_kib": s.rss_peak_kib()})
        # The log's span, oldest to newest chain position: the retention, once full. The newest
        # is read first: each read is itself audited, so read the other way round the span could
        # count the entries appended in between.
        newest, oldest = [
            int(s.ok("GET", f"projects/-/auditLogs?pageSize=1&orderBy=timestamp%20{o}")["entries"][0]["insertId"])
            for o in ("desc", "asc")]
        span = newest - oldest + 1
        # Pruned a 64th of the limit at a time (at least 1, at most 4,096): the log holds from
        # `kept` to `kept + chunk - 1` entries.
        most = kept + min(max(kept // 64, 1), 4096) - 1
        if span > most:
            raise RuntimeError(f"the in-memory log holds {span} entries, more than the {most} it may keep")
    result["memory"] = {"kept": kept, "runs": runs, "span": span}
    return result


# ---- report --------------------------------------------------------------------------------


def report(results: dict, ctx, plots_dir: Path) -> str:
    """The markdown section, and the SVG plots written into `plots_dir`."""
    note = f"{ctx.machine}; commit {ctx.commit}; {ctx.command}"
    out = [
        "## The benchmark suite (issue 7)",
        "",
        f"Generated by `{ctx.command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {ctx.machine}, commit "
        f"{ctx.commit}, {ctx.duration} per load scenario. Every figure is next to a baseline from the same run.",
        "",
    ]
    rel = os.path.relpath(plots_dir, ROOT / "docs")

    if "kms" in results:
        k = results["kms"]
        rows = k["rows"]
        top = max(k["connections"])
        out += ["### KMS `:encrypt` / `:decrypt` against the health check and nginx", "",
                f"nginx ({k['nginx']}, {k['nginx_workers']} workers, keep-alive, no logging) answers every request "
                "with a fixed JSON of the size of Keyhold's `:encrypt` answer (272 bytes); wrk (h2load at one "
                "connection) sends it the same request as `:encrypt` 32 B, with the same settings, at each "
                "connection count right after the health check.", "",
                "| scenario | requests/s | p50 | p99 | ratio to health check | ratio to nginx |",
                "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            conns = name.rsplit("-c", 1)[1]
            health, ng = rows[f"health-c{conns}"]["rps"], rows[f"nginx-c{conns}"]["rps"]
            out.append(f"| {name} | {r['rps']:.0f} | {fmt_s(r['p50'])} | {fmt_s(r['p99'])} | {r['rps'] / health:.2f} "
                       f"| {r['rps'] / ng:.2f} |")
        enc = rows[f"encrypt-32B-c{top}"]["rps"] / rows[f"health-c{top}"]["rps"]
        to_ng = {op: rows[f"{op}-32B-c{top}"]["rps"] / rows[f"nginx-c{top}"]["rps"] for op in ("encrypt", "decrypt")}
        p99 = {op: rows[f"{op}-32B-c1"]["p99"] for op in ("encrypt", "decrypt")}
        out += ["", "Goals (default server, 32 B):",
                f"- `:encrypt` at {top} connections ≥ 0.60 of the health check: {enc:.2f}, {verdict(enc >= 0.6)};",
                f"- at {top} connections ≥ 0.50 of nginx: "
                + "; ".join(f"`:{op}` {x:.2f}, {verdict(x >= 0.5)}" for op, x in to_ng.items()) + ";",
                "- p99 at one connection < 1 ms: "
                + "; ".join(f"`:{op}` {fmt_s(x)}, {verdict(x < 1e-3)}" for op, x in p99.items()) + ".", "",
                f"![throughput against connections]({rel}/throughput-vs-connections.svg)",
                f"![latency percentiles at one connection]({rel}/latency-c1.svg)", ""]
        series = {}
        for op in ("nginx", "health", "encrypt-32B", "decrypt-32B"):
            series[op] = [(c, rows[f"{op}-c{c}"]["rps"]) for c in k["connections"]]
        plot.line_chart(plots_dir / "throughput-vs-connections.svg", "Requests/s against keep-alive connections",
                        "connections", "requests/s", series, log_x=True, note=note)
        cats = [n for n in rows if n.endswith("-c1")]
        plot.bar_chart(plots_dir / "latency-c1.svg", "Latency at one connection (ms)", "ms", cats,
                       {p: [rows[c][p] * 1e3 for c in cats] for p in ("p50", "p90", "p99")}, note=note,
                       reference=(1.0, "goal: p99 < 1 ms"))

    if "durability" in results:
        d = results["durability"]
        r = d["rows"]
        conns = sorted({int(k.rsplit("-c", 1)[1]) for k in r})
        top = max(conns)
        storages = [st for st in ("file", "journal", "memory") if f"{st}-health-c{top}" in r]
        out += ["### What the durable audit entry costs", "",
                "`:encrypt` and `:decrypt` (32 B) on the SQLite file with `--audit-sync strict` (`file`: each audit "
                "entry committed with fsync before the answer), on the default server (`journal`: the entry in the "
                "node's journal before the answer, fsynced every 100 ms) and with `--in-memory` (the entry committed "
                "in memory, no fsync), "
                "each against its own health check and against nginx's fixed answer "
                f"({d['nginx']}, {d['nginx_workers']} workers) measured next to it.", "",
                "| storage | connections | call | requests/s | p50 | p99 | ratio to health check | ratio to nginx |",
                "|---|---|---|---|---|---|---|---|"]
        for storage in storages:
            for c in conns:
                health, ng = r[f"{storage}-health-c{c}"]["rps"], r[f"{storage}-nginx-c{c}"]["rps"]
                for call in ("health", "nginx", "encrypt", "decrypt"):
                    e = r[f"{storage}-{call}-c{c}"]
                    label = {"nginx": "nginx", "health": "health check"}.get(call, f"`:{call}`")
                    out.append(f"| {storage} | {c} | {label} | {e['rps']:.0f} | {fmt_s(e['p50'])} | {fmt_s(e['p99'])} "
                               f"| {e['rps'] / health:.2f} | {e['rps'] / ng:.2f} |")
        goals = []
        for storage, label, goal in (("file", "`--audit-sync strict`", 0.5),
                                     ("journal", "default server (journal, 100 ms)", 0.5),
                                     ("memory", "`--in-memory`", 0.6)):
            if storage not in storages:
                continue
            ng = r[f"{storage}-nginx-c{top}"]["rps"]
            ratios = {op: r[f"{storage}-{op}-c{top}"]["rps"] / ng for op in ("encrypt", "decrypt")}
            goals.append(f"- {label} ≥ {goal:.2f}: "
                         + "; ".join(f"`:{op}` {x:.2f}, {verdict(x >= goal)}" for op, x in ratios.items()))
        out += ["", f"Goals at {top} connections, to nginx:", ";\n".join(goals) + ".", ""]
        if 1 in conns:
            p99 = []
            for storage in [st for st in ("file", "journal") if st in storages]:
                p99.append(f"- {storage}: " + "; ".join(
                    f"`:{op}` {fmt_s(r[f'{storage}-{op}-c1']['p99'])}, {verdict(r[f'{storage}-{op}-c1']['p99'] < 1e-3)}"
                    for op in ("encrypt", "decrypt")))
            out += ["Goal: p99 at one connection < 1 ms:", ";\n".join(p99) + ".", ""]

    if "purposes" in results:
        r = results["purposes"]["rows"]
        conns = sorted({int(k.rsplit("-c", 1)[1]) for k in r})
        out += ["### Signing, asymmetric decryption and MACs against `:encrypt`", "",
                "The same server (the default SQLite file and audit journal, "
                "SOFTWARE keys, then HSM keys in a SoftHSM2 token): `:asymmetricSign` of a SHA-256 digest (EC P-256; RSA-2048 PKCS#1 v1.5), "
                "`:macSign` of 32 B (HMAC-SHA256), `:asymmetricDecrypt` of an RSA-OAEP-2048 ciphertext (32 B), "
                "each against `:encrypt` 32 B at the same connection count.", "",
                "| call | connections | requests/s | p50 | p99 | ratio to `:encrypt` |", "|---|---|---|---|---|---|"]
        labels = {"encrypt": "`:encrypt` 32 B", "sign-p256": "`:asymmetricSign` EC P-256",
                  "sign-rsa2048": "`:asymmetricSign` RSA-2048", "mac-sha256": "`:macSign` HMAC-SHA256",
                  "decrypt-oaep2048": "`:asymmetricDecrypt` RSA-OAEP-2048",
                  "hsm-sign-p256": "`:asymmetricSign` EC P-256, SoftHSM2",
                  "hsm-sign-rsa2048": "`:asymmetricSign` RSA-2048, SoftHSM2",
                  "hsm-mac-sha256": "`:macSign` HMAC-SHA256, SoftHSM2",
                  "hsm-decrypt-oaep2048": "`:asymmetricDecrypt` RSA-OAEP-2048 (SHA-1), SoftHSM2"}
        for c in conns:
            base = r[f"encrypt-c{c}"]["rps"]
            for op, label in labels.items():
                if f"{op}-c{c}" not in r:  # a run from before the SoftHSM2 rows
                    continue
                e = r[f"{op}-c{c}"]
                out.append(f"| {label} | {c} | {e['rps']:.0f} | {fmt_s(e['p50'])} | {fmt_s(e['p99'])} "
                           f"| {e['rps'] / base:.2f} |")
        out.append("")

    if "iam" in results:
        r = results["iam"]["rows"]
        out += ["### Full IAM path against a trivially evaluated grant", "",
                "Both authenticate, authorize and write an audit entry; the full path finds its grant "
                "among 50 members x 4 roles on the key, with crowded policies on the project and the key ring; "
                "the cheap path is the owner's single binding on the project.", "",
                "| connections | cheap path req/s | full path req/s | full / cheap |", "|---|---|---|---|"]
        ratios = []
        for c in sorted({int(k.rsplit("-c", 1)[1]) for k in r}):
            ratio = r[f"full-c{c}"]["rps"] / r[f"cheap-c{c}"]["rps"]
            ratios.append(ratio)
            out.append(f"| {c} | {r[f'cheap-c{c}']['rps']:.0f} | {r[f'full-c{c}']['rps']:.0f} | {ratio:.2f} |")
        out += ["", f"Goal: the full path ≥ 0.80 of the cheap path: {', '.join(f'{x:.2f}' for x in ratios)}, "
                f"{verdict(min(ratios) >= 0.8)}.", ""]

    if "aead" in results:
        a = results["aead"]
        seal, opn = a["seal_mbps"] / a["openssl_mbps"], a["open_mbps"] / a["openssl_mbps"]
        out += ["### Chunk sealing and opening (1 MiB, one core) against OpenSSL", "",
                "| operation | MB/s | relative to `openssl speed -evp aes-256-gcm` (16 KiB) |", "|---|---|---|",
                f"| openssl AES-256-GCM, 16 KiB blocks | {a['openssl_mbps']:.0f} | 1.00 |",
                f"| `seal_chunk` (criterion) | {a['seal_mbps']:.0f} | {seal:.2f} |",
                f"| `open_chunk` (criterion) | {a['open_mbps']:.0f} | {opn:.2f} |", "",
                f"Goal ≥ 0.80: seal {seal:.2f}, open {opn:.2f}, {verdict(min(seal, opn) >= 0.8)}.", ""]

    if "store" in results:
        rows = results["store"]["rows"]
        overall = results["store"]["overall"]
        out += ["### Store PUT / GET at 16 connections: CMEK against service-managed", "",
                "Each round runs both instances back to back, in alternating order; a round's CMEK / "
                "service-managed ratio is one paired sample.", "",
                "| scenario | service-managed req/s | CMEK req/s | CMEK / service-managed | range over rounds |",
                "|---|---|---|---|---|"]
        for name, r in rows.items():
            rr = r["round_ratios"]
            out.append(f"| {r['op'].upper()} {human(r['size'])} | {r['plain_rps']:.1f} | {r['cmek_rps']:.1f} "
                       f"| {r['ratio']:.3f} | {min(rr):.2f}-{max(rr):.2f} |")
        lo, hi, gm = overall["low"], overall["high"], overall["geomean"]
        word = interval_verdict(overall, 0.95)
        word = word if word == "met" else f"**{word}**"
        out += ["", f"All {overall['n']} paired samples together (nothing on the CMEK path differs by size or "
                f"direction): geometric mean {gm:.3f}, 95% confidence interval {lo:.3f}-{hi:.3f}.", "",
                f"Goal: CMEK within 5% (ratio ≥ 0.95, judged on the interval's lower bound): {word}.", "",
                f"![store overhead by object size]({rel}/store-overhead.svg)", ""]
        sizes = sorted({r["size"] for r in rows.values()})
        plot.bar_chart(plots_dir / "store-overhead.svg", "CMEK / service-managed throughput by object size",
                       "ratio", [human(x) for x in sizes],
                       {op.upper(): [rows[f"{op}-{x}"]["ratio"] for x in sizes] for op in ("put", "get")},
                       note=note, reference=(0.95, "goal ≥ 0.95"))

    if "rewrap" in results:
        rows = results["rewrap"]["rows"]
        out += ["### `:rewrap`, `:reencrypt` and backups against the data size", "",
                "`:reencrypt` and backups run as long-running operations: *answered* is the request's latency "
                "(the operation, at once), *done* the time until the operation finished.", "",
                "| data | :rewrap | :reencrypt answered | :reencrypt done | backup answered | backup done |",
                "|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {human(r['bytes'])} | {fmt_s(r['rewrap_s'])} | {fmt_s(r['reencrypt_answer_s'])} "
                       f"| {fmt_s(r['reencrypt_s'])} | {fmt_s(r['backup_answer_s'])} | {fmt_s(r['backup_s'])} |")
        flat = rows[-1]["rewrap_s"] / rows[0]["rewrap_s"]
        out += ["", f"Goal: `:rewrap` flat: largest / smallest = {flat:.2f} (noise at these durations is about "
                f"±50%), {verdict(flat < 2.0)}.", "", f"![rewrap time against data size]({rel}/rewrap.svg)", ""]
        plot.line_chart(plots_dir / "rewrap.svg", "Seconds against data in the instance", "MB", "seconds",
                        {":rewrap": [(r["bytes"] / 1e6, r["rewrap_s"]) for r in rows],
                         ":reencrypt": [(r["bytes"] / 1e6, r["reencrypt_s"]) for r in rows]}, log_x=True, note=note)

    if "enforcement" in results:
        e = results["enforcement"]
        out += ["### Enforcement: key disabled or role revoked to the first refused read", "",
                "| where | disable | revoke |", "|---|---|---|"]
        worst = 0.0
        for where, r in e.items():
            worst = max(worst, r["disable_s"], r["revoke_s"])
            out.append(f"| {where} | {fmt_s(r['disable_s'])} | {fmt_s(r['revoke_s'])} |")
        out += ["", f"Goal < 1 s: slowest {fmt_s(worst)}, {verdict(worst < 1.0)}.", ""]

    if "startup" in results:
        s = results["startup"]
        out += ["### Start-up", "",
                f"`keyhold serve --in-memory`, process start to the first answered request, {s['runs']} runs: "
                f"median {fmt_s(s['median_s'])} (min {fmt_s(s['min_s'])}, max {fmt_s(s['max_s'])}). "
                f"Goal < 200 ms: {verdict(s['median_s'] < 0.2)}.", ""]

    if "stream" in results:
        s = results["stream"]
        peak = max(s["rss_after_put_kib"], s["rss_after_get_kib"]) / 1024
        out += ["### One large object streamed", "",
                "| | seconds | MB/s | server peak RSS |", "|---|---|---|---|",
                f"| start | | | {s['rss_start_kib'] / 1024:.0f} MiB |",
                f"| PUT {human(s['bytes'])} | {s['put_s']:.1f} | {s['bytes'] / s['put_s'] / 1e6:.0f} | {s['rss_after_put_kib'] / 1024:.0f} MiB |",
                f"| GET {human(s['bytes'])} | {s['get_s']:.1f} | {s['bytes'] / s['get_s'] / 1e6:.0f} | {s['rss_after_get_kib'] / 1024:.0f} MiB |",
                "", f"Goal: peak RSS < 150 MB: {peak:.0f} MiB, {verdict(peak * 1.048576 < 150)}.", ""]
    if "fairness" in results:
        f = results["fairness"]
        out += ["### Fairness: one project under another's flood", "",
                "The quiet project sends `:encrypt` (32 B) on one connection, alone and then while another "
                "project floods `:encrypt` at 64 connections, on three servers: quotas off; rate quotas "
                f"(`--quota-crypto-per-minute {f['quota_per_minute']}` for every project, the quiet one with its "
                f"own `--quota-override quiet:crypto={f['quiet_quota_per_minute']}`); rate quotas and "
                f"`--quota-max-in-flight-per-project {f['in_flight']}`. Each refusal of the flood is still "
                "authenticated, authorized and audited. The quiet project is never refused (the run fails "
                "otherwise). Ratios: under the flood / alone, same server.", "",
                "| quotas | quiet alone req/s | under the flood req/s | ratio | p50 ratio | p99 ratio | flood req/s | flood refused |",
                "|---|---|---|---|---|---|---|---|"]
        for label, key in (("off", "quotas_off"), ("rates", "quotas_on"), (f"rates + {f['in_flight']} in flight", "quotas_and_cap")):
            r = f[key]
            out.append(f"| {label} | {r['alone']['rps']:.0f} | {r['flooded']['rps']:.0f} | {r['rps_ratio']:.2f} "
                       f"| {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} | {r['flood']['rps']:.0f} "
                       f"| {r['flood']['refused_share']:.1%} |")
        out.append("")
    if "scale" in results:
        sc = results["scale"]
        out += [f"### Scale: `:encrypt` over {sc['keys']:,} keys, and while another key changes", "",
                f"{sc['keys']:,} keys in one ring (created in {sc['create_s']:.0f} s over 8 connections), "
                f"{sc['connections']} connections, 32 B. \"spread\": each request names a key at random, all "
                "warm; \"one change a second\": meanwhile another principal PATCHes one other key's labels "
                f"every second ({plural(sc['changes'], 'change')} in all). {plural(len(sc['rounds']), 'round')} of the three runs, "
                "their order rotated a place a round (the log grows run after run); each round's spread runs "
                "against its own one-key run are paired samples. The health check answered "
                f"{sc['health']['rps']:.0f} requests/s before the rounds. Peak RSS of the server: "
                f"{sc['rss_peak_kib'] / 1024:.0f} MiB.", "",
                "| round | order | one key | spread | spread, one change a second | p99 one key / spread / with change |",
                "|---|---|---|---|---|---|"]
        for i, rnd in enumerate(sc["rounds"], 1):
            r = rnd["runs"]
            order = ", ".join({"one key": "one", "spread": "spread", "spread, one change a second": "change"}[x]
                              for x in rnd["order"])
            out.append(f"| {i} | {order} | {r['one key']['rps']:.0f} "
                       f"| {r['spread']['rps']:.0f} ({r['spread']['ratio_to_one_key']:.2f}) "
                       f"| {r['spread, one change a second']['rps']:.0f} "
                       f"({r['spread, one change a second']['ratio_to_one_key']:.2f}) "
                       f"| {' / '.join(fmt_s(r[x]['p99']) for x in SCALE_RUNS)} |")
        out += ["", f"Goal: within 10% of one key (a ratio of at least {SCALE_GOAL:.2f}), decided on the rounds' "
                "geometric mean and its 95% confidence interval:"]
        for name, m in sc["summary"].items():
            interval = f", 95% interval {m['low']:.3f}-{m['high']:.3f}" if m["n"] > 1 else ""
            out.append(f"- {name}: {m['geomean']:.3f}{interval}, **{m['verdict']}**;")
        out[-1] = out[-1].rstrip(";") + "."
        out.append("")
    if "sustained" in results:
        su = results["sustained"]
        out += [f"### Sustained load: `:encrypt` spread over {su['keys']:,} keys, run after run", "",
                f"Runs of {su['seconds']:.0f} s back to back, {su['connections']} connections, 32 B, each request "
                "naming one of the keys at random; every request adds an audit entry. *Entries before*: the log's "
                "size when the run began (about). The server said \"" + LAG_WARNING + "\" (requests waiting for "
                f"the log's ingest; at most once every 10 s) {times(su['lag_warnings'])}.", "",
                "| run | entries before | requests/s | p50 | p99 | ratio to the first run |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(su["runs"], 1):
            out.append(f"| {i} | {r['entries_before']:,} | {r['rps']:.0f} | {fmt_s(r['p50'])} | {fmt_s(r['p99'])} "
                       f"| {r['ratio_to_first']:.2f} |")
        out.append("")
    if "copies" in results:
        c = results["copies"]
        out += [f"### Copies of {c['objects']:,} objects as long-running operations", "",
                f"An instance of {c['objects']:,} objects of 1 KiB. Each copy answers with an operation; *answered* is "
                "the request's latency, *done* the time until `operations.get` said done. *Read during* is the median "
                "latency of a metadata read of the same instance while the copy ran, against the same read with no "
                f"copy running ({c['idle_read_ms']:.1f} ms).", "",
                "| copy | answered | done | read during | read during / idle |", "|---|---|---|---|---|"]
        for what, r in c["rows"].items():
            out.append(f"| {what} | {fmt_s(r['answered_s'])} | {fmt_s(r['done_s'])} | {r['read_ms']:.1f} ms "
                       f"| {r['read_ms'] / c['idle_read_ms']:.2f} |")
        out.append("")

    if "audit" in results:
        log, mem = results["audit"]["log"], results["audit"]["memory"]
        out += [f"### Audit reads at scale: {log['entries']:,} entries", "",
                f"A log of {log['entries']:,} entries ({log['db_bytes_indexed'] / 1e9:.1f} GB of SQLite with its "
                "indexes; 100 projects, 100,000 keys, 1,000 principals, one hot key with a tenth of the entries; "
                "written by `bench/audit_scale.py` in the server's own layout and chain), read through "
                "`GET /v1/projects/P/auditLogs` with 100 entries a page. The server built its read indexes when "
                f"it opened the file ({log['open_s']:.0f} s); `keyhold audit verify` checked the chain in "
                f"{log['verify_s']:.0f} s.", "",
                "| read | entries | median | slowest | next page |", "|---|---|---|---|---|"]
        for name, r in log["reads"].items():
            page2 = f"{r['page2_ms']:.1f} ms" if "page2_ms" in r else "—"
            out.append(f"| {name} | {r['entries']} | {r['median_ms']:.1f} ms | {r['max_ms']:.1f} ms | {page2} |")
        worst = max(r["median_ms"] for r in log["reads"].values())
        out += ["", f"Goal: every read < 50 ms at 10 million entries: slowest median {worst:.1f} ms, "
                f"{verdict(worst < 50 and log['entries'] >= 10_000_000)}.", "",
                f"`--in-memory --in-memory-audit-entries {mem['kept']:,}` under `:encrypt` load "
                f"({max(ctx.connections)} connections, {ctx.duration} a run): peak RSS after each run; at the end "
                f"the log held {mem['span']:,} entries.", "",
                "| run | requests so far | peak RSS |", "|---|---|---|"]
        total = 0.0
        for i, r in enumerate(mem["runs"], 1):
            total += r["requests"]
            out.append(f"| {i} | {total:,.0f} | {r['rss_peak_kib'] / 1024:.0f} MiB |")
        out.append("")
    return "\n".join(out)


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 1_000_000:
        return f"{n / 1e6:g} MB"
    return f"{n} B"


def times(n: int) -> str:
    """0 -> 'no times', 1 -> 'once', n -> 'n times'."""
    return {0: "no times", 1: "once"}.get(n, f"{n} times")


def check_numbers(value, path="results"):
    """Smoke mode: every leaf is a finite, non-negative number (or a string / list of them)."""
    if isinstance(value, dict):
        if not value:
            raise AssertionError(f"{path} is empty")
        for k, v in value.items():
            check_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        if not value:
            raise AssertionError(f"{path} is empty")
        for i, v in enumerate(value):
            check_numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise AssertionError(f"{path} = {value}")
    elif value is None:
        raise AssertionError(f"{path} has no value")


MARK_BEGIN = "<!-- suite:begin (generated by bench/run.sh; edits here are overwritten) -->"
MARK_END = "<!-- suite:end -->"


def write_doc(section: str):
    doc = ROOT / "docs/benchmarks.md"
    text = doc.read_text()
    block = f"{MARK_BEGIN}\n{section}\n{MARK_END}"
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END), lambda _: block, text, flags=re.S)
    else:
        head, _, rest = text.partition("\n## ")
        text = f"{head}\n{block}\n\n## {rest}"
    doc.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds per scenario; check numbers; write nothing to docs/")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--binary", help="keyhold binary (default: target/release/keyhold, target/debug in --smoke)")
    ap.add_argument("--duration", default=None, help="per wrk scenario (default 5s; 1s with --smoke)")
    ap.add_argument("--out", help="where results.json and the plots go (default docs/benchmarks)")
    args = ap.parse_args()

    class Ctx:
        pass

    ctx = Ctx()
    ctx.smoke = args.smoke
    ctx.binary = Path(args.binary or ROOT / ("target/debug/keyhold" if args.smoke else "target/release/keyhold"))
    ctx.duration = args.duration or ("1s" if args.smoke else "5s")
    ctx.tmp = Path(tempfile.mkdtemp(prefix="keyhold-suite-"))
    ctx.wrk = Wrk(ctx.duration, ctx.tmp)
    ctx.connections = [1, 64] if args.smoke else [1, 4, 16, 64]
    ctx.rounds = 1 if args.smoke else 4
    ctx.object_sizes = [4096, 1 << 20] if args.smoke else [4096, 65536, 1 << 20, 16 << 20]
    ctx.rewrap_sizes = [1_000_000, 4_000_000] if args.smoke else [10_000_000, 100_000_000, 1_000_000_000]
    ctx.rewrap_repeats = 1 if args.smoke else 5
    ctx.startup_repeats = 2 if args.smoke else 7
    ctx.stream_bytes = (64 << 20) if args.smoke else (5 << 30)
    ctx.scale_keys = int(os.environ.get("SCALE_KEYS", 200 if args.smoke else 20_000))
    ctx.scale_rounds = int(os.environ.get("SCALE_ROUNDS", 1 if args.smoke else 4))
    ctx.sustained_keys = int(os.environ.get("SUSTAINED_KEYS", 200 if args.smoke else 5_000))
    ctx.sustained_runs = int(os.environ.get("SUSTAINED_RUNS", 2 if args.smoke else 6))
    ctx.audit_entries = int(os.environ.get("AUDIT_ENTRIES", 20_000 if args.smoke else 10_000_000))
    ctx.memory_audit_entries = int(os.environ.get("MEMORY_AUDIT_ENTRIES", 2_000 if args.smoke else 100_000))
    ctx.copy_objects = int(os.environ.get("COPY_OBJECTS", 200 if args.smoke else 10_000))
    ctx.machine = machine()
    ctx.commit = commit()
    ctx.command = "bash bench/run.sh --smoke" if args.smoke else "bash bench/run.sh"
    out_dir = Path(args.out) if args.out else (ctx.tmp / "out" if args.smoke else ROOT / "docs/benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)

    chosen = [s for s in args.only.split(",") if s]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {SCENARIOS}")
    print(f"== {ctx.machine}; commit {ctx.commit}; binary {ctx.binary}; {ctx.duration} per load scenario", file=sys.stderr)
    results, failed = {}, []
    for name in chosen:
        t0 = time.monotonic()
        print(f"== {name}", file=sys.stderr)
        try:
            results[name] = globals()[f"scenario_{name}"](ctx)
            if ctx.smoke:
                check_numbers(results[name], name)
        except Exception as e:  # a failed scenario is reported; the others still run
            failed.append(name)
            print(f"!! {name} failed: {e}", file=sys.stderr)
        print(f"   {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    (out_dir / "results.json").write_text(json.dumps({"machine": ctx.machine, "commit": ctx.commit, "results": results}, indent=2))
    section = report(results, ctx, out_dir)
    print(section)
    if not ctx.smoke and not args.out and not failed and set(chosen) == set(SCENARIOS):
        write_doc(section)
        print(f"== wrote docs/benchmarks.md and {out_dir}", file=sys.stderr)
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    if failed:
        print(f"!! failed scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
