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
the same client is refused with 401 UNAUTHENTICATED.

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
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms_v1
from google.oauth2.credentials import Credentials
from google.cloud.kms_v1.services.key_management_service.transports.rest import (
    KeyManagementServiceRestTransport,
)

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

    def __init__(self, binary: Path, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.extra_args = tuple(extra_args)
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


def _start_server(extra_args: tuple[str, ...] = ()):
    srv = KeyholdServer(_keyhold_binary(), extra_args)
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


def assert_google_error(excinfo, http_class, status: str, message: str) -> None:
    """The client raised `http_class`; the body is a Google error with `status` and `message`."""
    err = excinfo.value
    assert isinstance(err, http_class), f"expected {http_class.__name__}, got {type(err).__name__}: {err}"
    assert err.response is not None, "the client kept no HTTP response"
    body = err.response.json()
    assert body["error"]["status"] == status, body
    assert body["error"]["code"] == err.code, body
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
