"""Keyhold against Google's official Python client (google-cloud-kms), over gRPC.

The same `keyhold serve --in-memory` processes as test_official_client.py (whose helpers this
module imports), reached by `kms_v1.KeyManagementServiceClient` over gRPC on the REST port, in
two ways (the `target` fixture, parametrized):

* "grpc": h2c (gRPC in clear on loopback). The channel is
  `grpc.secure_channel(host, composite_channel_credentials(local_channel_credentials(),
  access_token_call_credentials(token)))`: local credentials are gRPC's way of allowing call
  credentials (the bearer token) on a plaintext loopback connection. It is handed to the client as
  `KeyManagementServiceGrpcTransport(channel=...)`.
* "grpc-tls": gRPC over TLS with the client's DEFAULT transport, unchanged:
  `KeyManagementServiceClient(credentials=Credentials(token=...),
  client_options={"api_endpoint": "localhost:PORT"})`. The server is started with a certificate
  from `keyhold tls dev-certs`, and the client trusts the dev CA through
  GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, which gRPC core reads once per process, when the first TLS
  channel is made. The variable is therefore set when this module is imported, to a file in a
  private temporary directory that the `tls_server` fixture fills (with `tls dev-certs`) before
  any TLS channel exists. The variable is process-wide: no other test in this process talks TLS
  gRPC to a server with public certificates. (The default path works, so no explicit
  `ssl_channel_credentials(root_certificates=...)` fallback is needed.)

Every error is checked as a gRPC status (the google-api-core class and code) with the exact
message REST sends for the same request, which is made too, with urllib, against the same server:
and the `google.rpc` details REST puts in `error.details` must come back, identical, in the
gRPC status details (`grpc-status-details-bin`, read with grpc_status.rpc_status.from_call).

Environment:
    KEYHOLD_BIN  path of the keyhold binary (default: <repo>/target/debug/keyhold)
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import tempfile
from pathlib import Path

# Before grpc is imported, and before any TLS channel is made: see the module docstring.
_CERT_ROOT = Path(tempfile.mkdtemp(prefix="keyhold-py-grpc-certs-"))
atexit.register(shutil.rmtree, _CERT_ROOT, True)
CERTS_DIR = _CERT_ROOT / "certs"  # created by `keyhold tls dev-certs --out` (0700)
CA_FILE = CERTS_DIR / "ca.pem"
os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(CA_FILE)

import base64  # noqa: E402
import json  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import grpc  # noqa: E402
import pytest  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.cloud import kms_v1  # noqa: E402
from google.cloud.kms_v1.services.ekm_service.transports.grpc import EkmServiceGrpcTransport  # noqa: E402
from google.cloud.kms_v1.services.key_management_service.transports.grpc import (  # noqa: E402
    KeyManagementServiceGrpcTransport,
)
from google.iam.v1 import policy_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402,F401  (the detail types, for MessageToDict)
from grpc_status import rpc_status  # noqa: E402

from test_official_client import (  # noqa: E402
    _SERVERS,
    DECRYPT_FAILED,
    ENCRYPTER_DECRYPTER,
    LOCATION,
    LOCATION_NAME,
    MISSING_CREDENTIAL,
    INVALID_CREDENTIAL,
    PROJECT,
    USE_PERMISSIONS,
    Algorithm,
    KeyholdServer,
    ProtectionLevel,
    Purpose,
    State,
    _keyhold_binary,
    _start_server,
    bearer,
    crc32c,
    create_key,
    decrypt,
    denied,
    encrypt,
    set_state,
    unique,
    utcnow,
)

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}: field 1, varint 1
KMS_SERVICE = "google.cloud.kms.v1.KeyManagementService"


# --------------------------------------------------------------------------------------------
# Servers, clients, REST twin
# --------------------------------------------------------------------------------------------


class TlsKeyholdServer(KeyholdServer):
    """A KeyholdServer serving HTTPS (and gRPC over TLS) with the dev certificates."""

    def __init__(self, binary: Path):
        super().__init__(
            binary,
            ("--tls-cert-file", str(CERTS_DIR / "server.pem"), "--tls-key-file", str(CERTS_DIR / "server.key")),
        )
        self.url = f"https://{self.host}"
        self.ssl_context = ssl.create_default_context(cafile=str(CA_FILE))

    def start(self, timeout: float = 30.0) -> None:
        # KeyholdServer.start polls GET {url}/healthz with urllib's default opener: let it trust
        # the dev CA meanwhile, then put the default opener back.
        handler = urllib.request.HTTPSHandler(context=self.ssl_context)
        urllib.request.install_opener(urllib.request.build_opener(handler))
        try:
            super().start(timeout)
        finally:
            urllib.request.install_opener(None)


def h2c_client(srv: KeyholdServer, token: str) -> kms_v1.KeyManagementServiceClient:
    creds = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.access_token_call_credentials(token)
    )
    channel = grpc.secure_channel(srv.host, creds)
    return kms_v1.KeyManagementServiceClient(transport=KeyManagementServiceGrpcTransport(channel=channel))


def tls_client(srv: KeyholdServer, token: str) -> kms_v1.KeyManagementServiceClient:
    # The default transport (gRPC, TLS, roots from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
    return kms_v1.KeyManagementServiceClient(
        credentials=bearer(token), client_options={"api_endpoint": f"localhost:{srv.port}"}
    )


def raw_unary(channel: grpc.Channel, method: str, request: bytes = b""):
    """A unary method called with raw bytes both ways (no generated stubs needed)."""
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)(
        request, timeout=10
    )


def rest(srv: KeyholdServer, method: str, path: str, body=None, token: str | None = "owner"):
    """(HTTP status, JSON answer) of the REST request `method /v1/path` to the same server, as the
    owner by default, with `token`, or with no Authorization header (token=None)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {srv.owner_token if token == 'owner' else token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{srv.url}/v1/{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=getattr(srv, "ssl_context", None)) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Target:
    """One transport to one server: its owner's client, clients for other tokens, the REST twin."""

    def __init__(self, kind: str, srv: KeyholdServer, make):
        self.kind = kind
        self.srv = srv
        self._make = make
        self._clients: list[kms_v1.KeyManagementServiceClient] = []
        self.client = self.client_for(srv.owner_token)

    def client_for(self, token: str) -> kms_v1.KeyManagementServiceClient:
        c = self._make(self.srv, token)
        self._clients.append(c)
        return c

    def mint_token(self, principal: str) -> str:
        status, body = rest(self.srv, "POST", "tokens", {"principal": principal})
        assert status == 200 and body["principal"] == principal and body["token"], body
        return body["token"]

    def rest(self, method: str, path: str, body=None, token: str | None = "owner"):
        return rest(self.srv, method, path, body, token)

    def close(self) -> None:
        for c in self._clients:
            c.transport.close()
        self._clients.clear()


@pytest.fixture(scope="session")
def h2c_server():
    """The normal server in clear: every request needs a bearer token."""
    srv = _start_server()
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture(scope="session")
def tls_server():
    """A server with a `keyhold tls dev-certs` certificate for localhost and 127.0.0.1."""
    binary = _keyhold_binary()
    try:
        made = subprocess.run(
            [str(binary), "tls", "dev-certs", "--out", str(CERTS_DIR), "--force"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        for f in ("ca.pem", "server.pem", "server.key"):
            assert (CERTS_DIR / f).is_file(), f"`keyhold tls dev-certs` wrote no {f}: {made.stdout}"
        srv = TlsKeyholdServer(binary)
        try:
            srv.start()
        except BaseException:
            srv.cleanup()
            raise
    except BaseException:
        shutil.rmtree(_CERT_ROOT, ignore_errors=True)
        raise
    yield srv
    srv.stop()
    srv.cleanup()
    shutil.rmtree(_CERT_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def anonymous_h2c_server():
    """Emulator mode: requests without a token act as user:anonymous@keyhold.local."""
    srv = _start_server(("--allow-anonymous",))
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture(scope="session", params=["grpc", "grpc-tls"])
def target(request) -> Target:
    if request.param == "grpc":
        t = Target("grpc", request.getfixturevalue("h2c_server"), h2c_client)
    else:
        t = Target("grpc-tls", request.getfixturevalue("tls_server"), tls_client)
    yield t
    t.close()


@pytest.fixture
def client(target) -> kms_v1.KeyManagementServiceClient:
    """The official client acting as the server's owner, over the target's transport."""
    return target.client


@pytest.fixture
def key_ring(client) -> kms_v1.KeyRing:
    return client.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
    )


@pytest.fixture(autouse=True)
def _dump_server_output_on_failure(request):
    """When a test fails, print what each server logged during it (bypassing pytest's capture)."""
    failed_before = request.session.testsfailed
    starts = {id(srv): srv.log_size() for srv in _SERVERS}
    yield
    failed = request.session.testsfailed > failed_before
    for srv in list(_SERVERS):
        crashed = srv.proc is not None and srv.proc.poll() is not None
        if failed or crashed:
            lines = srv.output(starts.get(id(srv), 0)).splitlines()[-200:]
            sys.__stderr__.write(
                f"\n--- keyhold {srv.url} {' '.join(srv.extra_args)} output during {request.node.nodeid} ---\n"
                + "\n".join(lines)
                + "\n--- end of keyhold output ---\n"
            )
            sys.__stderr__.flush()


def assert_same_error_as_rest(excinfo, exc_class, code: str, message: str, rest_answer) -> None:
    """The client raised `exc_class` for gRPC status `code` with exactly `message`, and REST's
    answer to the same request is the same error: same code, same message, and its
    `error.details` are the gRPC status's google.rpc details (none if REST sends none)."""
    err = excinfo.value
    assert type(err) is exc_class, f"expected {exc_class.__name__}, got {type(err).__name__}: {err}"
    assert err.grpc_status_code == getattr(grpc.StatusCode, code), err.grpc_status_code
    assert err.message == message
    assert isinstance(err.response, grpc.Call), "the client kept no gRPC call"

    http_status, body = rest_answer
    error = body["error"]
    assert (error["status"], error["message"]) == (code, message), body
    # google-api-core maps the gRPC code to the HTTP code REST sends.
    assert err.code == error["code"] == http_status, (err.code, body)

    rest_details = error.get("details", [])
    status = rpc_status.from_call(err.response)
    if rest_details:
        assert status is not None, f"REST sends details {rest_details}, gRPC none"
        assert status.code == err.grpc_status_code.value[0]
        assert status.message == message
        assert [json_format.MessageToDict(d) for d in status.details] == rest_details
        # google-api-core unpacked the same details into exc.details.
        assert [type(d).DESCRIPTOR.full_name for d in err.details] == [
            d["@type"].removeprefix("type.googleapis.com/") for d in rest_details
        ]
    else:
        assert status is None, f"gRPC sends details {status}, REST none"
        assert err.details == []


# --------------------------------------------------------------------------------------------
# Key rings, keys, locations
# --------------------------------------------------------------------------------------------


def test_create_get_list_key_rings_with_pages(target, client):
    parent = f"projects/{unique('grpc-paging')}/locations/{LOCATION}"
    before = utcnow() - datetime.timedelta(seconds=5)
    created = [
        client.create_key_ring(request={"parent": parent, "key_ring_id": f"r{i}", "key_ring": {}})
        for i in range(3)
    ]
    assert [r.name for r in created] == [f"{parent}/keyRings/r{i}" for i in range(3)]
    assert all(before <= r.create_time <= utcnow() + datetime.timedelta(seconds=5) for r in created)

    got = client.get_key_ring(name=created[0].name)
    assert got.name == created[0].name and got.create_time == created[0].create_time

    pages = list(client.list_key_rings(request={"parent": parent, "page_size": 2}).pages)
    assert [len(p.key_rings) for p in pages] == [2, 1]
    assert pages[0].next_page_token and pages[-1].next_page_token == ""
    assert all(p.total_size == 3 for p in pages)
    names = [r.name for p in pages for r in p.key_rings]
    assert sorted(names) == [r.name for r in created]
    assert sorted(r.name for r in client.list_key_rings(request={"parent": parent})) == names

    # A second create of the same ring: ALREADY_EXISTS, as REST's 409.
    with pytest.raises(gexc.AlreadyExists) as excinfo:
        client.create_key_ring(request={"parent": parent, "key_ring_id": "r0", "key_ring": {}})
    assert_same_error_as_rest(
        excinfo,
        gexc.AlreadyExists,
        "ALREADY_EXISTS",
        f"KeyRing {created[0].name} already exists.",
        target.rest("POST", f"{parent}/keyRings?keyRingId=r0", {}),
    )


def test_missing_resources_are_not_found(target, client, key_ring):
    ring = f"{LOCATION_NAME}/keyRings/{unique('nope')}"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_key_ring(name=ring)
    assert_same_error_as_rest(
        excinfo, gexc.NotFound, "NOT_FOUND", f"KeyRing {ring} not found.", target.rest("GET", ring)
    )

    with pytest.raises(gexc.NotFound) as excinfo:
        create_key(client, ring, "k")
    assert_same_error_as_rest(
        excinfo,
        gexc.NotFound,
        "NOT_FOUND",
        f"KeyRing {ring} not found.",
        target.rest("POST", f"{ring}/cryptoKeys?cryptoKeyId=k", {"purpose": "ENCRYPT_DECRYPT"}),
    )

    key = f"{key_ring.name}/cryptoKeys/nope"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_crypto_key(name=key)
    assert_same_error_as_rest(
        excinfo, gexc.NotFound, "NOT_FOUND", f"CryptoKey {key} not found.", target.rest("GET", key)
    )


def test_create_crypto_key_defaults(target, client, key_ring):
    key_id = unique("key")
    key_name = f"{key_ring.name}/cryptoKeys/{key_id}"
    key = create_key(client, key_ring.name, key_id)

    assert key.name == key_name
    assert key.purpose == Purpose.ENCRYPT_DECRYPT
    assert key.destroy_scheduled_duration == datetime.timedelta(days=1)
    assert key.version_template.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert key.version_template.protection_level == ProtectionLevel.SOFTWARE
    primary = key.primary
    assert primary.name == f"{key_name}/cryptoKeyVersions/1"
    assert primary.state == State.ENABLED
    assert primary.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert primary.protection_level == ProtectionLevel.SOFTWARE
    assert primary.create_time is not None and primary.generate_time is not None
    assert "destroy_time" not in primary

    got = client.get_crypto_key(name=key_name)
    assert got.primary.name == primary.name and got.primary.state == State.ENABLED
    assert got.purpose == Purpose.ENCRYPT_DECRYPT
    # The same key as REST shows it.
    status, body = target.rest("GET", key_name)
    assert status == 200
    assert (body["purpose"], body["primary"]["name"], body["primary"]["state"]) == (
        "ENCRYPT_DECRYPT",
        primary.name,
        "ENABLED",
    )

    with pytest.raises(gexc.AlreadyExists) as excinfo:
        create_key(client, key_ring.name, key_id)
    assert_same_error_as_rest(
        excinfo,
        gexc.AlreadyExists,
        "ALREADY_EXISTS",
        f"CryptoKey {key_name} already exists.",
        target.rest("POST", f"{key_ring.name}/cryptoKeys?cryptoKeyId={key_id}", {"purpose": "ENCRYPT_DECRYPT"}),
    )


def test_update_labels_with_update_mask(client, key_ring):
    key = create_key(client, key_ring.name, labels={"team": "a"})
    assert dict(key.labels) == {"team": "a"}
    updated = client.update_crypto_key(
        request={
            "crypto_key": {"name": key.name, "labels": {"team": "b", "env": "test"}, "purpose": Purpose.MAC},
            "update_mask": {"paths": ["labels"]},
        }
    )
    assert dict(updated.labels) == {"team": "b", "env": "test"}
    # Only the masked field changed.
    assert updated.purpose == Purpose.ENCRYPT_DECRYPT
    assert updated.primary.name == key.primary.name
    assert dict(client.get_crypto_key(name=key.name).labels) == {"team": "b", "env": "test"}


def test_locations(target, client):
    resp = client.list_locations(request={"name": f"projects/{PROJECT}"})
    ids = [loc.location_id for loc in resp.locations]
    assert {"global", "us-central1", "us-east1"} <= set(ids)
    assert len(ids) == len(set(ids))
    assert all(loc.name == f"projects/{PROJECT}/locations/{loc.location_id}" for loc in resp.locations)

    first = client.list_locations(request={"name": f"projects/{PROJECT}", "page_size": 2})
    assert [loc.location_id for loc in first.locations] == ids[:2]
    assert first.next_page_token

    loc = client.get_location(request={"name": LOCATION_NAME})
    assert (loc.name, loc.location_id) == (LOCATION_NAME, LOCATION)
    assert loc.metadata.type_url == "type.googleapis.com/google.cloud.kms.v1.LocationMetadata"
    metadata = kms_v1.LocationMetadata.pb(kms_v1.LocationMetadata())
    assert loc.metadata.Unpack(metadata)
    status, body = target.rest("GET", LOCATION_NAME)
    assert status == 200 and body["metadata"]["@type"] == loc.metadata.type_url
    # proto3 JSON leaves out a false field, as Google's REST does.
    assert metadata.hsm_available == body["metadata"].get("hsmAvailable", False)
    assert metadata.ekm_available == body["metadata"].get("ekmAvailable", False)


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

    plain = encrypt(client, key.name, b"x", aad)
    assert plain.verified_plaintext_crc32c is False
    assert plain.verified_additional_authenticated_data_crc32c is False
    assert plain.ciphertext_crc32c == crc32c(plain.ciphertext)
    assert encrypt(client, key.name, plaintext, aad).ciphertext != enc.ciphertext


def test_crc32c_mismatch_is_invalid_argument(target, client, key_ring):
    key = create_key(client, key_ring.name)
    wrong = crc32c(b"abd")
    with pytest.raises(gexc.InvalidArgument) as excinfo:
        client.encrypt(request={"name": key.name, "plaintext": b"abc", "plaintext_crc32c": wrong})
    assert_same_error_as_rest(
        excinfo,
        gexc.InvalidArgument,
        "INVALID_ARGUMENT",
        "The checksum in field plaintext_crc32c did not match the data in field plaintext.",
        target.rest("POST", f"{key.name}:encrypt", {"plaintext": b64(b"abc"), "plaintextCrc32c": str(wrong)}),
    )

    ct = encrypt(client, key.name, b"abc").ciphertext
    bad = (crc32c(ct) + 1) % 2**32
    with pytest.raises(gexc.InvalidArgument) as excinfo:
        client.decrypt(request={"name": key.name, "ciphertext": ct, "ciphertext_crc32c": bad})
    assert_same_error_as_rest(
        excinfo,
        gexc.InvalidArgument,
        "INVALID_ARGUMENT",
        "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.",
        target.rest("POST", f"{key.name}:decrypt", {"ciphertext": b64(ct), "ciphertextCrc32c": str(bad)}),
    )


def test_wrong_aad_is_invalid_argument(target, client, key_ring):
    key = create_key(client, key_ring.name)
    ct = encrypt(client, key.name, b"secret", b"right aad").ciphertext
    with pytest.raises(gexc.InvalidArgument) as excinfo:
        decrypt(client, key.name, ct, b"wrong aad")
    assert_same_error_as_rest(
        excinfo,
        gexc.InvalidArgument,
        "INVALID_ARGUMENT",
        DECRYPT_FAILED,
        target.rest(
            "POST", f"{key.name}:decrypt", {"ciphertext": b64(ct), "additionalAuthenticatedData": b64(b"wrong aad")}
        ),
    )
    assert decrypt(client, key.name, ct, b"right aad").plaintext == b"secret"


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def test_rotation_keeps_old_ciphertext_readable(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    old = encrypt(client, key.name, b"before rotation", b"aad")
    assert old.name == v1

    v2 = client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    assert v2.name == f"{key.name}/cryptoKeyVersions/2"
    assert v2.state == State.ENABLED
    assert client.get_crypto_key(name=key.name).primary.name == v1

    rotated = client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})
    assert rotated.primary.name == v2.name
    new = encrypt(client, key.name, b"after rotation", b"aad")
    assert new.name == v2.name

    dec_old = decrypt(client, key.name, old.ciphertext, b"aad")
    assert (dec_old.plaintext, dec_old.used_primary) == (b"before rotation", False)
    dec_new = decrypt(client, key.name, new.ciphertext, b"aad")
    assert (dec_new.plaintext, dec_new.used_primary) == (b"after rotation", True)


def test_disabled_primary_is_failed_precondition_with_details(target, client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    ct = encrypt(client, key.name, b"payload", b"aad").ciphertext

    disabled = client.update_crypto_key_version(
        request={"crypto_key_version": {"name": v1, "state": State.DISABLED}, "update_mask": {"paths": ["state"]}}
    )
    assert (disabled.name, disabled.state) == (v1, State.DISABLED)
    assert client.get_crypto_key_version(name=v1).state == State.DISABLED

    not_enabled = f"{v1} is not enabled, current state is: DISABLED."
    with pytest.raises(gexc.FailedPrecondition) as excinfo:
        encrypt(client, key.name, b"more", b"aad")
    rest_answer = target.rest("POST", f"{key.name}:encrypt", {"plaintext": b64(b"more")})
    # REST explains the refusal with google.rpc details: gRPC must carry them too.
    assert rest_answer[1]["error"].get("details"), rest_answer
    assert_same_error_as_rest(excinfo, gexc.FailedPrecondition, "FAILED_PRECONDITION", not_enabled, rest_answer)
    assert any(isinstance(d, error_details_pb2.PreconditionFailure) for d in excinfo.value.details)

    with pytest.raises(gexc.FailedPrecondition) as excinfo:
        decrypt(client, key.name, ct, b"aad")
    assert_same_error_as_rest(
        excinfo,
        gexc.FailedPrecondition,
        "FAILED_PRECONDITION",
        not_enabled,
        target.rest("POST", f"{key.name}:decrypt", {"ciphertext": b64(ct), "additionalAuthenticatedData": b64(b"aad")}),
    )

    assert set_state(client, v1, State.ENABLED).state == State.ENABLED
    assert decrypt(client, key.name, ct, b"aad").plaintext == b"payload"


def test_destroy_and_restore_version(client, key_ring):
    key = create_key(client, key_ring.name)
    v1 = f"{key.name}/cryptoKeyVersions/1"
    ct = encrypt(client, key.name, b"doomed").ciphertext
    client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})

    before = utcnow()
    destroyed = client.destroy_crypto_key_version(name=v1)
    assert (destroyed.name, destroyed.state) == (v1, State.DESTROY_SCHEDULED)
    expected = before + datetime.timedelta(days=1)
    assert abs((destroyed.destroy_time - expected).total_seconds()) < 120, destroyed.destroy_time
    with pytest.raises(gexc.FailedPrecondition) as excinfo:
        decrypt(client, key.name, ct)
    assert excinfo.value.message == f"{v1} is not enabled, current state is: DESTROY_SCHEDULED."

    restored = client.restore_crypto_key_version(name=v1)
    assert (restored.name, restored.state) == (v1, State.DISABLED)
    assert "destroy_time" not in restored
    set_state(client, v1, State.ENABLED)
    assert decrypt(client, key.name, ct).plaintext == b"doomed"


def test_list_versions_with_state_filter(client, key_ring):
    key = create_key(client, key_ring.name)
    for _ in range(2):
        client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    v1, v2, v3 = (f"{key.name}/cryptoKeyVersions/{i}" for i in (1, 2, 3))
    set_state(client, v2, State.DISABLED)

    pages = list(client.list_crypto_key_versions(request={"parent": key.name, "page_size": 2}).pages)
    assert [[v.name for v in p.crypto_key_versions] for p in pages] == [[v1, v2], [v3]]
    enabled = list(client.list_crypto_key_versions(request={"parent": key.name, "filter": "state=ENABLED"}))
    assert [v.name for v in enabled] == [v1, v3]
    assert all(v.state == State.ENABLED for v in enabled)
    disabled = list(client.list_crypto_key_versions(request={"parent": key.name, "filter": "state=DISABLED"}))
    assert [v.name for v in disabled] == [v2]


# --------------------------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------------------------


def test_iam_policy_grants_a_second_principal(target, client, key_ring):
    key = create_key(client, key_ring.name)
    dave_token = target.mint_token("user:dave@example.com")
    dave = target.client_for(dave_token)
    ct_by_owner = encrypt(client, key.name, b"owner's secret").ciphertext

    # Before any grant: PERMISSION_DENIED, with REST's message.
    with pytest.raises(gexc.PermissionDenied) as excinfo:
        encrypt(dave, key.name, b"not yet")
    assert_same_error_as_rest(
        excinfo,
        gexc.PermissionDenied,
        "PERMISSION_DENIED",
        denied("cloudkms.cryptoKeyVersions.useToEncrypt", key.name),
        target.rest("POST", f"{key.name}:encrypt", {"plaintext": b64(b"not yet")}, token=dave_token),
    )
    asked = sorted(USE_PERMISSIONS | {"cloudkms.cryptoKeys.get"})
    assert list(dave.test_iam_permissions(request={"resource": key.name, "permissions": asked}).permissions) == []

    policy = client.get_iam_policy(request={"resource": key.name})
    assert isinstance(policy, policy_pb2.Policy)
    assert policy.etag and list(policy.bindings) == []
    updated = client.set_iam_policy(
        request={
            "resource": key.name,
            "policy": {
                "bindings": [{"role": ENCRYPTER_DECRYPTER, "members": ["user:dave@example.com"]}],
                "etag": policy.etag,
            },
        }
    )
    assert updated.etag and updated.etag != policy.etag
    got = client.get_iam_policy(request={"resource": key.name})
    assert got.etag == updated.etag
    assert [(b.role, list(b.members)) for b in got.bindings] == [(ENCRYPTER_DECRYPTER, ["user:dave@example.com"])]
    # REST sees the same policy.
    status, body = target.rest("POST", f"{key.name}:getIamPolicy", {})
    assert status == 200 and body["bindings"] == [{"role": ENCRYPTER_DECRYPTER, "members": ["user:dave@example.com"]}]
    assert base64.b64decode(body["etag"]) == got.etag

    granted = dave.test_iam_permissions(request={"resource": key.name, "permissions": asked}).permissions
    assert set(granted) == USE_PERMISSIONS
    owner_granted = client.test_iam_permissions(request={"resource": key.name, "permissions": asked}).permissions
    assert sorted(owner_granted) == asked

    # Dave's token now works for encrypt and decrypt over gRPC.
    enc = encrypt(dave, key.name, b"dave's secret", b"aad")
    assert enc.name == f"{key.name}/cryptoKeyVersions/1"
    assert decrypt(client, key.name, enc.ciphertext, b"aad").plaintext == b"dave's secret"
    assert decrypt(dave, key.name, ct_by_owner).plaintext == b"owner's secret"
    # ...and for nothing else.
    with pytest.raises(gexc.PermissionDenied) as excinfo:
        dave.get_crypto_key(name=key.name)
    assert excinfo.value.message == denied("cloudkms.cryptoKeys.get", key.name)


# --------------------------------------------------------------------------------------------
# Methods Keyhold does not serve; health
# --------------------------------------------------------------------------------------------


def test_unimplemented_methods_say_so(target, client, key_ring):
    key = create_key(client, key_ring.name)
    with pytest.raises(gexc.MethodNotImplemented) as excinfo:
        client.import_trusted_key_wrapped_crypto_key_version(request={"parent": key.name})
    err = excinfo.value
    assert err.grpc_status_code == grpc.StatusCode.UNIMPLEMENTED
    assert err.message.startswith("ImportTrustedKeyWrappedCryptoKeyVersion is not implemented by Keyhold"), err.message
    # REST refuses it with the same code (its message names the URL instead of the method).
    status, body = target.rest("POST", f"{key.name}/cryptoKeyVersions:importTrustedKeyWrappedCryptoKeyVersion", {})
    assert (status, body["error"]["status"]) == (501, "UNIMPLEMENTED"), body
    assert "not implemented by Keyhold" in body["error"]["message"]

    # A whole service Keyhold does not serve (EkmService), on the same channel.
    ekm = kms_v1.EkmServiceClient(transport=EkmServiceGrpcTransport(channel=client.transport.grpc_channel))
    with pytest.raises(gexc.MethodNotImplemented) as excinfo:
        ekm.list_ekm_connections(request={"parent": LOCATION_NAME})
    assert excinfo.value.message == (
        "The gRPC method google.cloud.kms.v1.EkmService/ListEkmConnections is not served by Keyhold; "
        "see docs/api.md for the methods it serves."
    )


def test_grpc_health_check(client):
    channel = client.transport.grpc_channel
    # grpcio-health-checking is not installed: the method is called with raw bytes.
    assert raw_unary(channel, HEALTH_CHECK) == SERVING  # the server as a whole
    service = KMS_SERVICE.encode()
    assert raw_unary(channel, HEALTH_CHECK, b"\x0a" + bytes([len(service)]) + service) == SERVING
    with pytest.raises(grpc.RpcError) as excinfo:
        raw_unary(channel, HEALTH_CHECK, b"\x0a\x04nope")
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------------------------
# Authentication in clear; TLS verification
# --------------------------------------------------------------------------------------------


def test_h2c_without_credentials_is_unauthenticated(h2c_server):
    channel = grpc.insecure_channel(h2c_server.host)
    try:
        anonymous = kms_v1.KeyManagementServiceClient(transport=KeyManagementServiceGrpcTransport(channel=channel))
        with pytest.raises(gexc.Unauthenticated) as excinfo:
            anonymous.list_key_rings(request={"parent": LOCATION_NAME})
        assert excinfo.value.message.startswith(MISSING_CREDENTIAL)
        assert_same_error_as_rest(
            excinfo,
            gexc.Unauthenticated,
            "UNAUTHENTICATED",
            excinfo.value.message,
            rest(h2c_server, "GET", f"{LOCATION_NAME}/keyRings", token=None),
        )
        with pytest.raises(gexc.Unauthenticated):
            anonymous.create_key_ring(request={"parent": LOCATION_NAME, "key_ring_id": unique("r"), "key_ring": {}})
        # The health service needs no credential.
        assert raw_unary(channel, HEALTH_CHECK) == SERVING
    finally:
        channel.close()

    # A token the server never issued: UNAUTHENTICATED too, with REST's message.
    forged = h2c_client(h2c_server, "kh1.0000000000000000.not-a-real-secret")
    try:
        with pytest.raises(gexc.Unauthenticated) as excinfo:
            forged.list_key_rings(request={"parent": LOCATION_NAME})
        assert excinfo.value.message.startswith(INVALID_CREDENTIAL)
        assert_same_error_as_rest(
            excinfo,
            gexc.Unauthenticated,
            "UNAUTHENTICATED",
            excinfo.value.message,
            rest(h2c_server, "GET", f"{LOCATION_NAME}/keyRings", token="kh1.0000000000000000.not-a-real-secret"),
        )
    finally:
        forged.transport.close()


def test_h2c_allow_anonymous_with_insecure_channel(anonymous_h2c_server):
    channel = grpc.insecure_channel(anonymous_h2c_server.host)
    try:
        anonymous = kms_v1.KeyManagementServiceClient(transport=KeyManagementServiceGrpcTransport(channel=channel))
        ring = anonymous.create_key_ring(
            request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
        )
        assert ring.name.startswith(LOCATION_NAME + "/keyRings/")
        key = create_key(anonymous, ring.name)
        assert key.primary.state == State.ENABLED
        enc = encrypt(anonymous, key.name, b"no token needed", b"emulator")
        assert enc.name == f"{key.name}/cryptoKeyVersions/1"
        assert decrypt(anonymous, key.name, enc.ciphertext, b"emulator").plaintext == b"no token needed"
        assert ring.name in [r.name for r in anonymous.list_key_rings(request={"parent": LOCATION_NAME})]
        # The owner, with a token, sees the same data.
        status, body = rest(anonymous_h2c_server, "GET", key.name)
        assert status == 200 and body["primary"]["name"] == enc.name
    finally:
        channel.close()


def test_tls_uses_the_default_transport_and_verifies_the_server(tls_server):
    target_client = tls_client(tls_server, tls_server.owner_token)
    try:
        assert type(target_client.transport) is KeyManagementServiceGrpcTransport
        assert target_client.api_endpoint == f"localhost:{tls_server.port}"
        assert os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] == str(CA_FILE)
        assert list(target_client.list_key_rings(request={"parent": f"projects/{unique('p')}/locations/global"})) == []
    finally:
        target_client.transport.close()

    # h2c to the TLS port does not get through.
    plain = grpc.insecure_channel(tls_server.host)
    try:
        with pytest.raises(grpc.RpcError) as excinfo:
            raw_unary(plain, HEALTH_CHECK)
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()

    # A client trusting another CA refuses the server's certificate...
    other = _CERT_ROOT / "other"
    subprocess.run([str(tls_server.binary), "tls", "dev-certs", "--out", str(other)], check=True, capture_output=True)
    stranger = grpc.secure_channel(
        f"localhost:{tls_server.port}", grpc.ssl_channel_credentials((other / "ca.pem").read_bytes())
    )
    try:
        with pytest.raises(grpc.RpcError) as excinfo:
            raw_unary(stranger, HEALTH_CHECK)
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stranger.close()
    # ...and one trusting the dev CA explicitly accepts it, for 127.0.0.1 as for localhost.
    trusting = grpc.secure_channel(tls_server.host, grpc.ssl_channel_credentials(CA_FILE.read_bytes()))
    try:
        assert raw_unary(trusting, HEALTH_CHECK) == SERVING
    finally:
        trusting.close()
