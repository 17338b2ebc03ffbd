"""Keyhold against Google's official Python client (google-cloud-kms), over REST.

Each test session starts a real `keyhold serve --in-memory` process on a free loopback port and
points `kms_v1.KeyManagementServiceClient` at it, exactly as a user of Keyhold would. Nothing is
mocked.

Authentication: the server requires `Authorization: Bearer TOKEN` on every request. It is started
with `--owner-token-file` pointing into a temporary directory (never the repository's
./keyhold-data), writes the owner's token (user:owner@keyhold.local, owner of every project) there
before it starts listening, and the client sends that token through
`google.oauth2.credentials.Credentials(token=...)`, a static bearer token that is never refreshed.
Tokens for other principals are minted with `POST /v1/tokens` as the owner. A second server,
started with `--allow-anonymous` (emulator mode), checks that a client with
`AnonymousCredentials` (no Authorization header) works there, and the main server checks that
the same client is refused with 401 UNAUTHENTICATED. (google-auth answers a 401 by trying to
refresh the credentials, which AnonymousCredentials and a bare static token cannot do, so the
client raises google.auth's InvalidOperation / RefreshError, as it would against Cloud KMS; the
tests that look at the 401 itself use credentials whose refresh is a no-op.)

Environment:
    KEYHOLD_BIN  path of the keyhold binary (default: <repo>/target/debug/keyhold)

Note on exception classes: over REST, google-api-core picks the exception class from the HTTP
status alone (400 -> BadRequest, 409 -> Conflict, 404 -> NotFound), not from the JSON error's
`status`. So the client raises BadRequest (not InvalidArgument / FailedPrecondition) and
Conflict (not AlreadyExists) against real Cloud KMS too. The tests therefore check the HTTP
class *and* the canonical code in the response body (`error.status`), which is what Cloud KMS
sends and what gRPC clients map to InvalidArgument / FailedPrecondition / AlreadyExists.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports.rest import (
    KeyManagementServiceRestTransport,
)
from google.iam.v1 import policy_pb2
from google.oauth2.credentials import Credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "keyhold-py"
LOCATION = "us-central1"
LOCATION_NAME = f"projects/{PROJECT}/locations/{LOCATION}"

Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
ProtectionLevel = kms_v1.ProtectionLevel

DECRYPT_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey."


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every server started by this module, so that a failing test can show what each one logged.
_SERVERS: list[KeyholdServer] = []


class KeyholdServer:
    """A `keyhold serve --in-memory` child process, its output log and its owner token.

    Everything it writes (log, owner token) lives in a private temporary directory.
    """

    def __init__(self, binary: Path, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.dir = tempfile.TemporaryDirectory(prefix="keyhold-py-")
        self.token_file = Path(self.dir.name) / "owner.token"
        self.log = open(Path(self.dir.name) / "keyhold.log", "w+b")
        self.proc: subprocess.Popen | None = None
        self.owner_token: str | None = None

    def start(self, timeout: float = 30.0) -> None:
        cmd = [
            str(self.binary),
            "serve",
            "--in-memory",
            "--listen",
            self.host,
            "--min-destroy-scheduled-duration",
            "1s",
            # Without this the token would go to DATA_DIR/owner.token, i.e. ./keyhold-data in the repo.
            "--owner-token-file",
            str(self.token_file),
            *self.extra_args,
        ]
        env = dict(os.environ)
        env.update(self.extra_env)
        env.setdefault("NO_COLOR", "1")
        # One line per request (method, path, status), shown when a test fails.
        env.setdefault("KEYHOLD_LOG", "info,keyhold_server=debug")
        # The token file must come from this server, not from a variable of the caller's shell.
        env.pop("KEYHOLD_OWNER_TOKEN_FILE", None)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        )
        _SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"keyhold exited with code {self.proc.returncode} before it was healthy; "
                    f"command: {' '.join(cmd)}\n--- keyhold output ---\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    healthy = r.status == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                healthy = False
            if healthy:
                # The token is written before the server listens, so it is there once healthy.
                try:
                    token = self.token_file.read_text().strip()
                except OSError as e:
                    self.stop()
                    raise RuntimeError(
                        f"keyhold is healthy but its owner token {self.token_file} is unreadable: {e}\n"
                        f"--- keyhold output ---\n{self.output()}"
                    ) from e
                if not token:
                    self.stop()
                    raise RuntimeError(f"keyhold wrote an empty owner token to {self.token_file}")
                self.owner_token = token
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"keyhold did not answer GET /healthz with 200 within {timeout}s; "
            f"command: {' '.join(cmd)}\n--- keyhold output ---\n{self.output()}"
        )

    def output(self, start: int = 0) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return os.path.getsize(self.log.name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.log.close()
        if self in _SERVERS:
            _SERVERS.remove(self)
        self.dir.cleanup()

    def mint_token(self, principal: str) -> str:
        """A bearer token for `principal`, minted by the owner through `POST /v1/tokens`."""
        req = urllib.request.Request(
            f"{self.url}/v1/tokens",
            data=json.dumps({"principal": principal}).encode(),
            headers={"Authorization": f"Bearer {self.owner_token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status
            body = json.loads(r.read())
        assert body["principal"] == principal, body
        assert body["token"], body
        return body["token"]


def _keyhold_binary() -> Path:
    binary = Path(os.environ.get("KEYHOLD_BIN", REPO_ROOT / "target" / "debug" / "keyhold"))
    if not binary.is_file():
        pytest.fail(f"keyhold binary not found at {binary}; run `cargo build -p keyhold` or set KEYHOLD_BIN")
    return binary


def _start_server(extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
    srv = KeyholdServer(_keyhold_binary(), extra_args, extra_env)
    try:
        srv.start()
    except BaseException:
        srv.cleanup()
        raise
    return srv


@pytest.fixture(scope="session")
def server():
    """The normal server: every request needs a bearer token."""
    srv = _start_server()
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture(scope="session")
def anonymous_server():
    """A second server in emulator mode: requests without a valid token act as
    user:anonymous@keyhold.local, owner of every project."""
    srv = _start_server(("--allow-anonymous",))
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture(autouse=True)
def _dump_server_output_on_failure(request, server):
    """When a test fails, print what each server logged during it (bypassing pytest's capture)."""
    failed_before = request.session.testsfailed
    starts = {id(srv): srv.log_size() for srv in _SERVERS}
    yield
    failed = request.session.testsfailed > failed_before
    for srv in list(_SERVERS):
        crashed = srv.proc is not None and srv.proc.poll() is not None
        if not (failed or crashed):
            continue
        # A server started during the test (a fixture) shows everything it logged.
        text = srv.output(starts.get(id(srv), 0))
        lines = text.splitlines()[-200:]
        state = f"exited with {srv.proc.returncode}" if crashed else "still running"
        flags = " ".join(srv.extra_args)
        sys.__stderr__.write(
            f"\n--- keyhold {srv.host}{' ' + flags if flags else ''} output during {request.node.nodeid} "
            f"(server {state}) ---\n" + "\n".join(lines) + "\n--- end of keyhold output ---\n"
        )
        sys.__stderr__.flush()


def make_client(srv: KeyholdServer, credentials) -> kms_v1.KeyManagementServiceClient:
    transport = KeyManagementServiceRestTransport(host=srv.host, credentials=credentials, url_scheme="http")
    return kms_v1.KeyManagementServiceClient(transport=transport)


def bearer(token: str) -> Credentials:
    """Static bearer-token credentials: no refresh token, so google-auth never tries to refresh."""
    return Credentials(token=token)


@pytest.fixture(scope="session")
def client(server):
    """The official client acting as the server's owner."""
    return make_client(server, bearer(server.owner_token))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


@pytest.fixture
def key_ring(client) -> kms_v1.KeyRing:
    return client.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
    )


def create_key(client, ring_name: str, key_id: str | None = None, **fields) -> kms_v1.CryptoKey:
    crypto_key = {"purpose": Purpose.ENCRYPT_DECRYPT, **fields}
    return client.create_crypto_key(
        request={"parent": ring_name, "crypto_key_id": key_id or unique("key"), "crypto_key": crypto_key}
    )


def encrypt(client, key_name: str, plaintext: bytes, aad: bytes = b""):
    return client.encrypt(
        request={"name": key_name, "plaintext": plaintext, "additional_authenticated_data": aad}
    )


def decrypt(client, key_name: str, ciphertext: bytes, aad: bytes = b""):
    return client.decrypt(
        request={"name": key_name, "ciphertext": ciphertext, "additional_authenticated_data": aad}
    )


def set_state(client, version_name: str, state) -> kms_v1.CryptoKeyVersion:
    return client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": version_name, "state": state},
            "update_mask": {"paths": ["state"]},
        }
    )


def assert_google_error(excinfo, http_class, status: str, message: str, *, prefix: bool = False) -> None:
    """The client raised `http_class`; the body is a Google error with `status` and `message`
    (with `prefix=True`, a message that starts with `message`)."""
    err = excinfo.value
    assert isinstance(err, http_class), f"expected {http_class.__name__}, got {type(err).__name__}: {err}"
    assert err.response is not None, "the client kept no HTTP response"
    body = err.response.json()
    assert body["error"]["status"] == status, body
    assert body["error"]["code"] == err.code == err.response.status_code, body
    if prefix:
        assert body["error"]["message"].startswith(message), body
        assert ": " + message in err.message, err.message
    else:
        assert body["error"]["message"] == message, body
        # The client prefixes the method and URL: "POST http://...: <message>".
        assert err.message.endswith(": " + message), err.message


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------------------------
# Key rings
# --------------------------------------------------------------------------------------------


def test_crc32c_helper_is_castagnoli():
    # RFC 3720 check value: the tests below are only as good as this.
    assert crc32c(b"123456789") == 0xE3069283


def test_create_get_list_key_rings(client):
    ring_id = unique("ring")
    name = f"{LOCATION_NAME}/keyRings/{ring_id}"
    before = utcnow() - datetime.timedelta(seconds=5)

    ring = client.create_key_ring(request={"parent": LOCATION_NAME, "key_ring_id": ring_id, "key_ring": {}})
    assert ring.name == name
    assert before <= ring.create_time <= utcnow() + datetime.timedelta(seconds=5)

    with pytest.raises(gexc.Conflict) as excinfo:
        client.create_key_ring(request={"parent": LOCATION_NAME, "key_ring_id": ring_id, "key_ring": {}})
    assert_google_error(excinfo, gexc.Conflict, "ALREADY_EXISTS", f"KeyRing {name} already exists.")

    got = client.get_key_ring(name=name)
    assert got.name == name
    assert got.create_time == ring.create_time

    other = client.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
    )
    names = [r.name for r in client.list_key_rings(request={"parent": LOCATION_NAME})]
    assert name in names and other.name in names
    assert len(names) == len(set(names)), "a key ring was listed twice"
    assert all(n.startswith(LOCATION_NAME + "/keyRings/") for n in names)


def test_list_key_rings_pages(client):
    parent = f"projects/{unique('paging')}/locations/{LOCATION}"
    created = {
        client.create_key_ring(request={"parent": parent, "key_ring_id": f"r{i}", "key_ring": {}}).name
        for i in range(3)
    }
    pager = client.list_key_rings(request={"parent": parent, "page_size": 2})
    pages = list(pager.pages)
    assert len(pages) == 2
    assert [len(p.key_rings) for p in pages] == [2, 1]
    assert pages[0].next_page_token
    assert pages[-1].next_page_token == ""
    assert pages[0].total_size == 3
    assert {r.name for p in pages for r in p.key_rings} == created


def test_missing_key_ring_is_not_found(client):
    name = f"{LOCATION_NAME}/keyRings/nope"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_key_ring(name=name)
    assert_google_error(excinfo, gexc.NotFound, "NOT_FOUND", f"KeyRing {name} not found.")

    with pytest.raises(gexc.NotFound) as excinfo:
        create_key(client, name, "k")
    assert_google_error(excinfo, gexc.NotFound, "NOT_FOUND", f"KeyRing {name} not found.")


def test_missing_crypto_key_is_not_found(client, key_ring):
    name = f"{key_ring.name}/cryptoKeys/nope"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_crypto_key(name=name)
    assert_google_error(excinfo, gexc.NotFound, "NOT_FOUND", f"CryptoKey {name} not found.")


def test_locations(client):
    resp = client.list_locations(request={"name": f"projects/{PROJECT}"})
    ids = {loc.location_id for loc in resp.locations}
    assert {"global", "us-central1", "us-east1"} <= ids
    for loc in resp.locations:
        assert loc.name == f"projects/{PROJECT}/locations/{loc.location_id}"

    loc = client.get_location(request={"name": LOCATION_NAME})
    assert loc.name == LOCATION_NAME
    assert loc.location_id == LOCATION


# --------------------------------------------------------------------------------------------
# Crypto keys
# --------------------------------------------------------------------------------------------


def test_create_crypto_key_defaults(client, key_ring):
    key_id = unique("key")
    key_name = f"{key_ring.name}/cryptoKeys/{key_id}"
    key = create_key(client, key_ring.name, key_id)

    assert key.name == key_name
    assert key.purpose == Purpose.ENCRYPT_DECRYPT
    assert key.create_time is not None
    assert key.destroy_scheduled_duration == datetime.timedelta(seconds=86400)
    assert key.version_template.protection_level == ProtectionLevel.SOFTWARE
    assert key.version_template.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION

    primary = key.primary
    assert primary.name == f"{key_name}/cryptoKeyVersions/1"
    assert primary.state == State.ENABLED
    assert primary.protection_level == ProtectionLevel.SOFTWARE
    assert primary.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert primary.create_time is not None
    assert primary.generate_time is not None
    assert "destroy_time" not in primary

    got = client.get_crypto_key(name=key_name)
    assert got.name == key_name
    assert got.primary.name == primary.name
    assert got.primary.state == State.ENABLED
    assert got.destroy_scheduled_duration == datetime.timedelta(days=1)

    version = client.get_crypto_key_version(name=primary.name)
    assert version.state == State.ENABLED
    assert version.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION

    with pytest.raises(gexc.Conflict) as excinfo:
        create_key(client, key_ring.name, key_id)
    assert_google_error(excinfo, gexc.Conflict, "ALREADY_EXISTS", f"CryptoKey {key_name} already exists.")


def test_update_crypto_key_labels(client, key_ring):
    key = create_key(client, key_ring.name, labels={"team": "a"})
    assert dict(key.labels) == {"team": "a"}

    updated = client.update_crypto_key(
        request={
            "crypto_key": {"name": key.name, "labels": {"team": "b", "env": "test"}},
            "update_mask": {"paths": ["labels"]},
        }
    )
    assert dict(updated.labels) == {"team": "b", "env": "test"}
    assert updated.purpose == Purpose.ENCRYPT_DECRYPT
    assert updated.primary.name == key.primary.name
    assert dict(client.get_crypto_key(name=key.name).labels) == {"team": "b", "env": "test"}


# --------------------------------------------------------------------------------------------
# Encrypt / decrypt
# --------------------------------------------------------------------------------------------


def test_encrypt_decrypt_with_aad_and_crc32c(client, key_ring):
    key = create_key(client, key_ring.name)
    plaintext = b"customer data \x00\xff" * 10
    aad = b"instance=projects/p/instances/i"

    enc = client.encrypt(
        request={
            "name": key.name,
            "plaintext": plaintext,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": crc32c(plaintext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }
    )
    assert enc.name == f"{key.name}/cryptoKeyVersions/1"
    assert enc.verified_plaintext_crc32c is True
    assert enc.verified_additional_authenticated_data_crc32c is True
    assert enc.protection_level == ProtectionLevel.SOFTWARE
    assert enc.ciphertext and plaintext not in enc.ciphertext
    assert enc.ciphertext_crc32c == crc32c(enc.ciphertext)

    dec = client.decrypt(
        request={
            "name": key.name,
            "ciphertext": enc.ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": crc32c(enc.ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }
    )
    assert dec.plaintext == plaintext
    assert dec.plaintext_crc32c == crc32c(plaintext)
    assert dec.used_primary is True
    assert dec.protection_level == ProtectionLevel.SOFTWARE

    # Without checksums in the request, nothing is reported as verified.
    plain = encrypt(client, key.name, b"x", aad)
    assert plain.verified_plaintext_crc32c is False
    assert plain.verified_additional_authenticated_data_crc32c is False
    assert plain.ciphertext_crc32c == crc32c(plain.ciphertext)

    # Two encryptions of the same plaintext differ (random nonce).
    assert encrypt(client, key.name, plaintext, aad).ciphertext != enc.ciphertext


def test_crc32c_mismatch_is_invalid_argument(client, key_ring):
    key = create_key(client, key_ring.name)
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(
            request={"name": key.name, "plaintext": b"abc", "plaintext_crc32c": crc32c(b"abd")}
        )
    assert_google_error(
        excinfo,
        gexc.BadRequest,
        "INVALID_ARGUMENT",
        "The checksum in field plaintext_crc32c did not match the data in field plaintext.",
    )

    ct = encrypt(client, key.name, b"abc").ciphertext
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(
            request={"name": key.name, "ciphertext": ct, "ciphertext_crc32c": (crc32c(ct) + 1) % 2**32}
        )
    assert_google_error(
        excinfo,
        gexc.BadRequest,
        "INVALID_ARGUMENT",
        "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.",
    )


def test_wrong_aad_is_invalid_argument(client, key_ring):
    key = create_key(client, key_ring.name)
    ct = encrypt(client, key.name, b"secret", b"right aad").ciphertext

    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, ct, b"wrong aad")
    assert_google_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT", DECRYPT_FAILED)

    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, ct)  # no AAD at all
    assert_google_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT", DECRYPT_FAILED)

    # A ciphertext is bound to its key: another key cannot open it, with the same message.
    other = create_key(client, key_ring.name)
    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, other.name, ct, b"right aad")
    assert_google_error(excinfo, gexc.BadRequest, "INVALID_ARGUMENT", DECRYPT_FAILED)

    assert decrypt(client, key.name, ct, b"right aad").plaintext == b"secret"


# --------------------------------------------------------------------------------------------
# Versions: rotation, disable/enable, destroy/restore
# --------------------------------------------------------------------------------------------


def test_rotation_keeps_old_ciphertext_readable(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    old = encrypt(client, key.name, b"before rotation", b"aad")
    assert old.name == v1

    v2 = client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    assert v2.name == f"{key.name}/cryptoKeyVersions/2"
    assert v2.state == State.ENABLED
    assert v2.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    # Creating a version does not make it primary.
    assert client.get_crypto_key(name=key.name).primary.name == v1

    rotated = client.update_crypto_key_primary_version(
        request={"name": key.name, "crypto_key_version_id": "2"}
    )
    assert rotated.primary.name == v2.name
    assert rotated.primary.state == State.ENABLED
    assert client.get_crypto_key(name=key.name).primary.name == v2.name

    new = encrypt(client, key.name, b"after rotation", b"aad")
    assert new.name == v2.name

    dec_old = decrypt(client, key.name, old.ciphertext, b"aad")
    assert dec_old.plaintext == b"before rotation"
    assert dec_old.used_primary is False

    dec_new = decrypt(client, key.name, new.ciphertext, b"aad")
    assert dec_new.plaintext == b"after rotation"
    assert dec_new.used_primary is True

    versions = list(client.list_crypto_key_versions(request={"parent": key.name}))
    assert [v.name for v in versions] == [v1, v2.name]
    assert all(v.state == State.ENABLED for v in versions)


def test_disable_and_enable_version(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    ct = encrypt(client, key.name, b"payload", b"aad").ciphertext

    disabled = set_state(client, v1, State.DISABLED)
    assert disabled.name == v1
    assert disabled.state == State.DISABLED
    assert client.get_crypto_key_version(name=v1).state == State.DISABLED

    not_enabled = f"{v1} is not enabled, current state is: DISABLED."
    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, ct, b"aad")
    assert_google_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION", not_enabled)

    # The primary is disabled, so encryption fails the same way.
    with pytest.raises(gexc.BadRequest) as excinfo:
        encrypt(client, key.name, b"more", b"aad")
    assert_google_error(excinfo, gexc.BadRequest, "FAILED_PRECONDITION", not_enabled)

    enabled = set_state(client, v1, State.ENABLED)
    assert enabled.state == State.ENABLED
    assert decrypt(client, key.name, ct, b"aad").plaintext == b"payload"
    assert encrypt(client, key.name, b"more", b"aad").name == v1


def test_disable_old_version_after_rotation(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    old_ct = encrypt(client, key.name, b"old", b"").ciphertext
    client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})

    set_state(client, v1, State.DISABLED)
    # New data still encrypts under the (enabled) primary ...
    new = encrypt(client, key.name, b"new", b"")
    assert new.name == f"{key.name}/cryptoKeyVersions/2"
    assert decrypt(client, key.name, new.ciphertext).plaintext == b"new"
    # ... but the old version's ciphertext is unreadable.
    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, old_ct)
    assert_google_error(
        excinfo, gexc.BadRequest, "FAILED_PRECONDITION", f"{v1} is not enabled, current state is: DISABLED."
    )


def test_destroy_and_restore_version(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    ct = encrypt(client, key.name, b"doomed", b"").ciphertext
    client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})

    before = utcnow()
    destroyed = client.destroy_crypto_key_version(name=v1)
    assert destroyed.name == v1
    assert destroyed.state == State.DESTROY_SCHEDULED
    assert "destroy_time" in destroyed
    # destroy_time = now + the key's destroy_scheduled_duration (24 h by default).
    expected = before + datetime.timedelta(days=1)
    assert abs((destroyed.destroy_time - expected).total_seconds()) < 120, destroyed.destroy_time
    assert client.get_crypto_key_version(name=v1).state == State.DESTROY_SCHEDULED

    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, ct)
    assert_google_error(
        excinfo,
        gexc.BadRequest,
        "FAILED_PRECONDITION",
        f"{v1} is not enabled, current state is: DESTROY_SCHEDULED.",
    )

    restored = client.restore_crypto_key_version(name=v1)
    assert restored.name == v1
    assert restored.state == State.DISABLED
    assert "destroy_time" not in restored
    assert client.get_crypto_key_version(name=v1).state == State.DISABLED

    set_state(client, v1, State.ENABLED)
    assert decrypt(client, key.name, ct).plaintext == b"doomed"


def test_scheduled_destruction_happens(client, key_ring):
    # The server runs with --min-destroy-scheduled-duration 1s, so a key may ask for 1 s.
    key = create_key(client, key_ring.name, destroy_scheduled_duration={"seconds": 1})
    assert key.destroy_scheduled_duration == datetime.timedelta(seconds=1)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    ct = encrypt(client, key.name, b"shred me", b"").ciphertext
    client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})

    scheduled = client.destroy_crypto_key_version(name=v1)
    assert scheduled.state == State.DESTROY_SCHEDULED

    deadline = time.monotonic() + 30
    version = scheduled
    while time.monotonic() < deadline:
        version = client.get_crypto_key_version(name=v1)
        if version.state == State.DESTROYED:
            break
        time.sleep(0.25)
    assert version.state == State.DESTROYED, f"still {version.state.name} 30 s after a 1 s schedule"
    assert "destroy_event_time" in version

    with pytest.raises(gexc.BadRequest) as excinfo:
        decrypt(client, key.name, ct)
    assert_google_error(
        excinfo, gexc.BadRequest, "FAILED_PRECONDITION", f"{v1} is not enabled, current state is: DESTROYED."
    )
    # A destroyed version cannot come back.
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.restore_crypto_key_version(name=v1)
    assert excinfo.value.response.json()["error"]["status"] == "FAILED_PRECONDITION"


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def test_list_crypto_keys_paging_and_filter(client, key_ring):
    teams = ["x", "y", "x", "z", "x"]
    created = [create_key(client, key_ring.name, f"key{i}", labels={"team": t}).name for i, t in enumerate(teams)]

    pager = client.list_crypto_keys(request={"parent": key_ring.name, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.crypto_keys) for p in pages] == [2, 2, 1]
    assert all(p.total_size == 5 for p in pages)
    assert all(p.next_page_token for p in pages[:-1])
    assert pages[-1].next_page_token == ""

    # Iterating the pager walks every page: each key exactly once.
    names = [k.name for k in client.list_crypto_keys(request={"parent": key_ring.name, "page_size": 2})]
    assert len(names) == 5
    assert sorted(names) == sorted(created)

    x_keys = [
        k.name
        for k in client.list_crypto_keys(
            request={"parent": key_ring.name, "filter": "labels.team=x", "page_size": 2}
        )
    ]
    assert sorted(x_keys) == sorted(created[i] for i, t in enumerate(teams) if t == "x")

    none = list(client.list_crypto_keys(request={"parent": key_ring.name, "filter": "labels.team=nobody"}))
    assert none == []

    ordered = [
        k.name for k in client.list_crypto_keys(request={"parent": key_ring.name, "order_by": "name desc"})
    ]
    assert ordered == sorted(created, reverse=True)


def test_list_crypto_key_versions_paging_and_state_filter(client, key_ring):
    key = create_key(client, key_ring.name)
    for _ in range(2):
        client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    v2 = f"{key.name}/cryptoKeyVersions/2"
    set_state(client, v2, State.DISABLED)

    pages = list(client.list_crypto_key_versions(request={"parent": key.name, "page_size": 1}).pages)
    assert [len(p.crypto_key_versions) for p in pages] == [1, 1, 1]
    names = [v.name for p in pages for v in p.crypto_key_versions]
    assert names == [f"{key.name}/cryptoKeyVersions/{i}" for i in (1, 2, 3)]

    disabled = list(client.list_crypto_key_versions(request={"parent": key.name, "filter": "state=DISABLED"}))
    assert [v.name for v in disabled] == [v2]


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


class NeverRefreshingAnonymousCredentials(AnonymousCredentials):
    """AnonymousCredentials (no Authorization header) that let a 401 reach google-api-core.

    google-auth's AuthorizedSession answers a 401 by refreshing the credentials and retrying, and
    `AnonymousCredentials.refresh` raises InvalidOperation, so with plain AnonymousCredentials
    the caller never sees the HTTP error (the same happens against Cloud KMS). With a no-op
    refresh, the session retries twice more, still without a header, then hands the 401 to
    google-api-core, which raises Unauthorized with the response attached.
    """

    def refresh(self, request):
        pass


class NeverRefreshingCredentials(Credentials):
    """A static bearer token that, like the one above, lets a 401 through instead of
    failing with RefreshError."""

    def refresh(self, request):
        pass


MISSING_CREDENTIAL = "Request is missing required authentication credential."
INVALID_CREDENTIAL = "Request had invalid authentication credentials."


def test_without_credentials_is_unauthenticated(server):
    # Exactly what a user gets with AnonymousCredentials: google-auth sees the 401, tries to
    # refresh the credentials, and cannot.
    anonymous = make_client(server, AnonymousCredentials())
    with pytest.raises(auth_exceptions.InvalidOperation, match="cannot be refreshed"):
        anonymous.list_key_rings(request={"parent": LOCATION_NAME})

    # The HTTP answer behind it: 401 UNAUTHENTICATED, the client's Unauthorized.
    anonymous = make_client(server, NeverRefreshingAnonymousCredentials())
    with pytest.raises(gexc.Unauthorized) as excinfo:
        anonymous.list_key_rings(request={"parent": LOCATION_NAME})
    assert_google_error(excinfo, gexc.Unauthorized, "UNAUTHENTICATED", MISSING_CREDENTIAL, prefix=True)
    assert excinfo.value.code == 401
    assert excinfo.value.response.headers["WWW-Authenticate"].startswith("Bearer")

    # Nothing is readable or writable without a token.
    with pytest.raises(gexc.Unauthorized) as excinfo:
        anonymous.create_key_ring(
            request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
        )
    assert_google_error(excinfo, gexc.Unauthorized, "UNAUTHENTICATED", MISSING_CREDENTIAL, prefix=True)


def test_invalid_token_is_unauthenticated(server, client, key_ring):
    # A static token the server never issued: google-auth tries to refresh it and cannot.
    with pytest.raises(auth_exceptions.RefreshError):
        make_client(server, bearer("kh1.0000000000000000.not-a-real-secret")).get_key_ring(name=key_ring.name)

    for token in ("kh1.0000000000000000.not-a-real-secret", "garbage", server.owner_token + "x"):
        forged = make_client(server, NeverRefreshingCredentials(token=token))
        with pytest.raises(gexc.Unauthorized) as excinfo:
            forged.get_key_ring(name=key_ring.name)
        assert_google_error(excinfo, gexc.Unauthorized, "UNAUTHENTICATED", INVALID_CREDENTIAL, prefix=True)

    # The real token still works.
    assert client.get_key_ring(name=key_ring.name).name == key_ring.name


def test_allow_anonymous_emulator_mode(anonymous_server):
    # --allow-anonymous: no Authorization header at all, and the caller owns every project.
    anonymous = make_client(anonymous_server, AnonymousCredentials())
    ring = anonymous.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
    )
    assert ring.name.startswith(LOCATION_NAME + "/keyRings/")
    key = create_key(anonymous, ring.name)
    assert key.primary.state == State.ENABLED

    aad = b"emulator"
    enc = encrypt(anonymous, key.name, b"no token needed", aad)
    assert enc.name == f"{key.name}/cryptoKeyVersions/1"
    assert decrypt(anonymous, key.name, enc.ciphertext, aad).plaintext == b"no token needed"

    assert anonymous.get_crypto_key(name=key.name).name == key.name
    assert ring.name in [r.name for r in anonymous.list_key_rings(request={"parent": LOCATION_NAME})]

    # A token the server never issued is not an error there either: it acts as anonymous.
    forged = make_client(anonymous_server, bearer("kh1.0000000000000000.not-a-real-secret"))
    assert decrypt(forged, key.name, enc.ciphertext, aad).plaintext == b"no token needed"

    # The owner's token works there too, and sees the same data.
    owner = make_client(anonymous_server, bearer(anonymous_server.owner_token))
    assert decrypt(owner, key.name, enc.ciphertext, aad).plaintext == b"no token needed"


# --------------------------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------------------------

ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
USE_PERMISSIONS = {"cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"}
ASKED_PERMISSIONS = [
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeys.getIamPolicy",
    "cloudkms.cryptoKeys.setIamPolicy",
]


def denied(permission: str, resource: str) -> str:
    return f"Permission '{permission}' denied on resource '{resource}' (or it may not exist)."


def granted(c, resource: str) -> list[str]:
    resp = c.test_iam_permissions(request={"resource": resource, "permissions": ASKED_PERMISSIONS})
    return list(resp.permissions)


def test_iam_policy_grants_and_revokes_use_of_a_key(server, client, key_ring):
    key = create_key(client, key_ring.name)
    bob = make_client(server, bearer(server.mint_token("user:bob@example.com")))
    ct_by_owner = encrypt(client, key.name, b"owner's secret").ciphertext

    # A new key has an empty policy, with an etag.
    policy = client.get_iam_policy(request={"resource": key.name})
    assert isinstance(policy, policy_pb2.Policy)
    assert isinstance(policy.etag, bytes) and policy.etag
    assert list(policy.bindings) == []

    # The owner holds every permission asked for; bob none, and he cannot use the key.
    assert sorted(granted(client, key.name)) == sorted(ASKED_PERMISSIONS)
    assert granted(bob, key.name) == []
    with pytest.raises(gexc.Forbidden) as excinfo:
        encrypt(bob, key.name, b"not yet")
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeyVersions.useToEncrypt", key.name)
    )

    # Grant bob encrypt/decrypt.
    bob_binding = {"role": ENCRYPTER_DECRYPTER, "members": ["user:bob@example.com"]}
    updated = client.set_iam_policy(
        request={"resource": key.name, "policy": {"bindings": [bob_binding], "etag": policy.etag}}
    )
    assert isinstance(updated, policy_pb2.Policy)
    assert updated.etag and updated.etag != policy.etag
    assert [(b.role, list(b.members)) for b in updated.bindings] == [(ENCRYPTER_DECRYPTER, ["user:bob@example.com"])]
    got = client.get_iam_policy(request={"resource": key.name})
    assert got.etag == updated.etag
    assert [(b.role, list(b.members)) for b in got.bindings] == [(ENCRYPTER_DECRYPTER, ["user:bob@example.com"])]

    # A read-modify-write based on the old etag loses: 409 ABORTED, and nothing changes.
    with pytest.raises(gexc.Conflict) as excinfo:
        client.set_iam_policy(request={"resource": key.name, "policy": {"bindings": [], "etag": policy.etag}})
    assert_google_error(excinfo, gexc.Conflict, "ABORTED", "There were concurrent policy changes.", prefix=True)
    assert client.get_iam_policy(request={"resource": key.name}) == got

    # Bob now holds exactly the use permissions, and uses the key through the official client.
    bob_perms = granted(bob, key.name)
    assert len(bob_perms) == len(set(bob_perms))
    assert set(bob_perms) == USE_PERMISSIONS
    enc = encrypt(bob, key.name, b"bob's secret", b"aad")
    assert enc.name == f"{key.name}/cryptoKeyVersions/1"
    assert decrypt(bob, key.name, enc.ciphertext, b"aad").plaintext == b"bob's secret"
    assert decrypt(client, key.name, enc.ciphertext, b"aad").plaintext == b"bob's secret"
    assert decrypt(bob, key.name, ct_by_owner).plaintext == b"owner's secret"

    # ...but nothing else: the role does not let him read the key or its policy.
    with pytest.raises(gexc.Forbidden) as excinfo:
        bob.get_crypto_key(name=key.name)
    assert_google_error(excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeys.get", key.name))
    with pytest.raises(gexc.Forbidden) as excinfo:
        bob.get_iam_policy(request={"resource": key.name})
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeys.getIamPolicy", key.name)
    )
    with pytest.raises(gexc.Forbidden) as excinfo:
        bob.set_iam_policy(request={"resource": key.name, "policy": {"bindings": [], "etag": got.etag}})
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeys.setIamPolicy", key.name)
    )
    # The grant is on this key only: another key in the same ring stays closed to him.
    other = create_key(client, key_ring.name)
    with pytest.raises(gexc.Forbidden) as excinfo:
        encrypt(bob, other.name, b"x")
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeyVersions.useToEncrypt", other.name)
    )

    # The owner removes the binding: bob is locked out again.
    revoked = client.set_iam_policy(
        request={"resource": key.name, "policy": {"bindings": [], "etag": got.etag}}
    )
    assert list(revoked.bindings) == []
    assert revoked.etag not in (policy.etag, got.etag)
    assert list(client.get_iam_policy(request={"resource": key.name}).bindings) == []
    assert granted(bob, key.name) == []
    with pytest.raises(gexc.Forbidden) as excinfo:
        encrypt(bob, key.name, b"again")
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeyVersions.useToEncrypt", key.name)
    )
    with pytest.raises(gexc.Forbidden) as excinfo:
        decrypt(bob, key.name, enc.ciphertext, b"aad")
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.cryptoKeyVersions.useToDecrypt", key.name)
    )
    # The owner is unaffected.
    assert decrypt(client, key.name, enc.ciphertext, b"aad").plaintext == b"bob's secret"


def test_key_ring_policy_is_inherited_by_its_keys(server, client, key_ring):
    key = create_key(client, key_ring.name)
    carol = make_client(server, bearer(server.mint_token("user:carol@example.com")))

    policy = client.get_iam_policy(request={"resource": key_ring.name})
    assert policy.etag and list(policy.bindings) == []
    client.set_iam_policy(
        request={
            "resource": key_ring.name,
            "policy": {
                "bindings": [{"role": ENCRYPTER_DECRYPTER, "members": ["user:carol@example.com"]}],
                "etag": policy.etag,
            },
        }
    )
    # The key's own policy stays empty; carol's access comes from the ring.
    assert list(client.get_iam_policy(request={"resource": key.name}).bindings) == []
    assert set(granted(carol, key.name)) == USE_PERMISSIONS
    ct = encrypt(carol, key.name, b"via the ring").ciphertext
    assert decrypt(client, key.name, ct).plaintext == b"via the ring"
    with pytest.raises(gexc.Forbidden) as excinfo:
        carol.get_key_ring(name=key_ring.name)
    assert_google_error(
        excinfo, gexc.Forbidden, "PERMISSION_DENIED", denied("cloudkms.keyRings.get", key_ring.name)
    )


# --------------------------------------------------------------------------------------------
# HSM keys (SoftHSM2) through the official client [K4]
# --------------------------------------------------------------------------------------------

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


@pytest.fixture
def hsm_server(tmp_path):
    """A server with a throwaway SoftHSM2 token (scripts/test.sh installs softhsm2)."""
    module = next((m for m in SOFTHSM_MODULES if os.path.exists(m)), None)
    assert module, "SoftHSM2 is not installed: scripts/test.sh installs the softhsm2 package"
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "py", "--so-pin", "5678", "--pin", "py-pin-1234"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    pin = tmp_path / "pin"
    pin.write_text("py-pin-1234\n")
    srv = _start_server(
        ("--pkcs11-module", module, "--pkcs11-token-label", "py", "--pkcs11-pin-file", str(pin)), env
    )
    yield srv
    srv.stop()
    srv.cleanup()


def test_hsm_key_and_random_bytes(hsm_server):
    c = make_client(hsm_server, bearer(hsm_server.owner_token))
    ring = c.create_key_ring(request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}})
    key = create_key(c, ring.name, version_template={"protection_level": ProtectionLevel.HSM})
    assert key.primary.protection_level == ProtectionLevel.HSM
    assert key.version_template.protection_level == ProtectionLevel.HSM
    statement = json.loads(key.primary.attestation.content)
    assert statement["softwareToken"] is True, statement

    enc = encrypt(c, key.name, b"in the token", b"aad")
    assert enc.protection_level == ProtectionLevel.HSM
    assert enc.ciphertext_crc32c == crc32c(enc.ciphertext)
    dec = decrypt(c, key.name, enc.ciphertext, b"aad")
    assert dec.plaintext == b"in the token"
    assert dec.protection_level == ProtectionLevel.HSM

    with pytest.raises(gexc.BadRequest) as excinfo:
        encrypt(c, key.name, b"x" * (8 * 1024 + 1))
    assert "8192" in str(excinfo.value)

    random = c.generate_random_bytes(
        request={"location": LOCATION_NAME, "length_bytes": 64, "protection_level": ProtectionLevel.HSM}
    )
    assert len(random.data) == 64
    assert random.data_crc32c == crc32c(random.data)
    with pytest.raises(gexc.BadRequest):
        c.generate_random_bytes(
            request={"location": LOCATION_NAME, "length_bytes": 4, "protection_level": ProtectionLevel.HSM}
        )
