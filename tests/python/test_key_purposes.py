"""Signing, asymmetric decryption and MAC keys (issue 19) through Google's official Python client,
over REST and over gRPC (the `kms` fixture, parametrized), against a real `keyhold serve`.

Every signature Keyhold makes is verified, and every ciphertext for `asymmetric_decrypt` is made,
by pyca/cryptography with the public key `get_public_key` returns: the check a user's verifier
does, with nothing of Keyhold's on that side. Versions are polled out of PENDING_GENERATION the
way Google's own contract tests do (`CreateTestCKVAndWait`).
"""

from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from google.api_core import exceptions as gexc
from google.cloud import kms_v1

from test_official_client import (
    LOCATION_NAME,
    Algorithm,
    Purpose,
    State,
    _start_server,
    bearer,
    crc32c,
    make_client,
    unique,
)
from test_official_client_grpc import h2c_client


@pytest.fixture(scope="module")
def purposes_server():
    srv = _start_server()
    yield srv
    srv.stop()
    srv.cleanup()


@pytest.fixture(scope="module", params=["rest", "grpc"])
def kms(request, purposes_server) -> kms_v1.KeyManagementServiceClient:
    if request.param == "rest":
        client = make_client(purposes_server, bearer(purposes_server.owner_token))
    else:
        client = h2c_client(purposes_server, purposes_server.owner_token)
    yield client
    client.transport.close()


@pytest.fixture
def ring(kms) -> str:
    return kms.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": unique("ring"), "key_ring": {}}
    ).name


def create_version(kms, ring: str, purpose, algorithm) -> kms_v1.CryptoKeyVersion:
    """A key of `algorithm`, and its first version once generated (polled like Google's contract
    tests poll: every few milliseconds while PENDING_GENERATION)."""
    key = kms.create_crypto_key(
        request={
            "parent": ring,
            "crypto_key_id": unique("key"),
            "crypto_key": {"purpose": purpose, "version_template": {"algorithm": algorithm}},
        }
    )
    assert not key.primary.name, "only ENCRYPT_DECRYPT keys have a primary"
    name = f"{key.name}/cryptoKeyVersions/1"
    deadline = time.monotonic() + 30
    while True:
        version = kms.get_crypto_key_version(request={"name": name})
        if version.state != State.PENDING_GENERATION or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert version.state == State.ENABLED, version
    assert version.algorithm == algorithm
    assert version.generate_time
    return version


def public_key(kms, name: str):
    pk = kms.get_public_key(request={"name": name})
    assert pk.pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert pk.pem_crc32c == crc32c(pk.pem.encode())
    assert pk.name == name
    assert pk.protection_level == kms_v1.ProtectionLevel.SOFTWARE
    return serialization.load_pem_public_key(pk.pem.encode())


SIGNING = [
    (Algorithm.EC_SIGN_P256_SHA256, "sha256", lambda h: ec.ECDSA(h)),
    (Algorithm.EC_SIGN_P384_SHA384, "sha384", lambda h: ec.ECDSA(h)),
    (
        Algorithm.RSA_SIGN_PSS_2048_SHA256,
        "sha256",
        lambda h: (padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h),
    ),
    (Algorithm.RSA_SIGN_PKCS1_2048_SHA256, "sha256", lambda h: (padding.PKCS1v15(), h)),
    (Algorithm.EC_SIGN_ED25519, None, None),
]


@pytest.mark.parametrize("algorithm,hash_name,scheme", SIGNING, ids=[a.name for a, _, _ in SIGNING])
def test_signatures_verify_with_cryptography(kms, ring, algorithm, hash_name, scheme):
    version = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, algorithm)
    public = public_key(kms, version.name)
    data = b"artifact sha: 6f1ed002ab5595859014ebf0951522d9"

    def verify(signature: bytes, message: bytes) -> None:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, scheme(getattr(hashes, hash_name.upper())()))
        else:
            assert isinstance(public, rsa.RSAPublicKey)
            pad, h = scheme(getattr(hashes, hash_name.upper())())
            public.verify(signature, message, pad, h)

    if hash_name is None:
        resp = kms.asymmetric_sign(request={"name": version.name, "data": data, "data_crc32c": crc32c(data)})
        assert resp.verified_data_crc32c
    else:
        digest = hashlib.new(hash_name, data).digest()
        resp = kms.asymmetric_sign(
            request={"name": version.name, "digest": {hash_name: digest}, "digest_crc32c": crc32c(digest)}
        )
        assert resp.verified_digest_crc32c and not resp.verified_data_crc32c
    assert resp.signature_crc32c == crc32c(resp.signature)
    assert resp.name == version.name
    verify(resp.signature, data)
    with pytest.raises(InvalidSignature):
        verify(resp.signature, data + b"!")


def test_asymmetric_decrypt_opens_what_cryptography_encrypted(kms, ring):
    version = create_version(kms, ring, Purpose.ASYMMETRIC_DECRYPT, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256)
    public = public_key(kms, version.name)
    secret = b"wrapped data key, 32 bytes long."
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ciphertext = public.encrypt(secret, oaep)
    resp = kms.asymmetric_decrypt(
        request={"name": version.name, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
    )
    assert resp.plaintext == secret
    assert resp.plaintext_crc32c == crc32c(secret)
    assert resp.verified_ciphertext_crc32c
    with pytest.raises((gexc.BadRequest, gexc.InvalidArgument)) as e:
        kms.asymmetric_decrypt(request={"name": version.name, "ciphertext": ciphertext[:-1] + b"\0"})
    assert "Decryption failed." in str(e.value)


def test_mac_sign_and_verify(kms, ring):
    version = create_version(kms, ring, Purpose.MAC, Algorithm.HMAC_SHA256)
    data = b"session=7f3a; exp=1767225600"
    signed = kms.mac_sign(request={"name": version.name, "data": data, "data_crc32c": crc32c(data)})
    assert len(signed.mac) == 32 and signed.mac_crc32c == crc32c(signed.mac) and signed.verified_data_crc32c
    ok = kms.mac_verify(
        request={
            "name": version.name,
            "data": data,
            "data_crc32c": crc32c(data),
            "mac": signed.mac,
            "mac_crc32c": crc32c(signed.mac),
        }
    )
    assert ok.success and ok.verified_success_integrity and ok.verified_data_crc32c and ok.verified_mac_crc32c
    bad = kms.mac_verify(request={"name": version.name, "data": data + b"x", "mac": signed.mac})
    assert not bad.success and not bad.verified_success_integrity


def test_wrong_purpose_and_disabled_versions_are_failed_preconditions(kms, ring):
    sign = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256)
    mac = create_version(kms, ring, Purpose.MAC, Algorithm.HMAC_SHA256)
    # REST clients raise the class of the HTTP status (400), gRPC clients the code's.
    refused = (gexc.BadRequest, gexc.FailedPrecondition)
    with pytest.raises(refused) as e:
        kms.mac_sign(request={"name": sign.name, "data": b"x"})
    assert "may not be used for MAC signing" in str(e.value)
    with pytest.raises(refused) as e:
        kms.get_public_key(request={"name": mac.name})
    assert "getPublicKey" in str(e.value)
    kms.update_crypto_key_version(
        request={"crypto_key_version": {"name": sign.name, "state": State.DISABLED}, "update_mask": {"paths": ["state"]}}
    )
    with pytest.raises(refused) as e:
        kms.asymmetric_sign(request={"name": sign.name, "data": b"x"})
    assert "is not enabled, current state is: DISABLED." in str(e.value)


def test_raw_encrypt_and_decrypt(kms, ring):
    # AES-GCM: the server's nonce, AAD bound; the checksums of empty fields are checked too, as
    # gcloud sends them.
    gcm = create_version(kms, ring, Purpose.RAW_ENCRYPT_DECRYPT, Algorithm.AES_256_GCM)
    data, aad = b"a record written elsewhere", b"row 7"
    sealed = kms.raw_encrypt(
        request={
            "name": gcm.name,
            "plaintext": data,
            "plaintext_crc32c": crc32c(data),
            "additional_authenticated_data": aad,
            "additional_authenticated_data_crc32c": crc32c(aad),
            "initialization_vector_crc32c": crc32c(b""),
        }
    )
    assert sealed.tag_length == 16 and len(sealed.initialization_vector) == 12
    assert sealed.verified_plaintext_crc32c and sealed.verified_additional_authenticated_data_crc32c
    assert sealed.verified_initialization_vector_crc32c
    assert sealed.ciphertext_crc32c == crc32c(sealed.ciphertext)
    opened = kms.raw_decrypt(
        request={
            "name": gcm.name,
            "ciphertext": sealed.ciphertext,
            "initialization_vector": sealed.initialization_vector,
            "additional_authenticated_data": aad,
            "tag_length": 16,
        }
    )
    assert opened.plaintext == data and opened.plaintext_crc32c == crc32c(data)
    with pytest.raises((gexc.BadRequest, gexc.InvalidArgument)) as e:
        kms.raw_decrypt(
            request={
                "name": gcm.name,
                "ciphertext": sealed.ciphertext,
                "initialization_vector": sealed.initialization_vector,
                "additional_authenticated_data": b"row 8",
            }
        )
    assert "Decryption failed." in str(e.value)
    # AES-CBC with the caller's IV: no padding, the same IV gives the same ciphertext.
    cbc = create_version(kms, ring, Purpose.RAW_ENCRYPT_DECRYPT, Algorithm.AES_128_CBC)
    block, iv = b"sixteen byte blk" * 2, bytes(range(16))
    first = kms.raw_encrypt(request={"name": cbc.name, "plaintext": block, "initialization_vector": iv})
    again = kms.raw_encrypt(request={"name": cbc.name, "plaintext": block, "initialization_vector": iv})
    assert first.ciphertext == again.ciphertext and first.initialization_vector == iv and not first.tag_length
    back = kms.raw_decrypt(request={"name": cbc.name, "ciphertext": first.ciphertext, "initialization_vector": iv})
    assert back.plaintext == block
    with pytest.raises((gexc.BadRequest, gexc.InvalidArgument)) as e:
        kms.raw_encrypt(request={"name": cbc.name, "plaintext": block[:15]})
    assert "multiple of 16" in str(e.value)


def test_ml_kem_decapsulates_what_cryptography_encapsulated(kms, ring):
    from cryptography.hazmat.primitives.asymmetric import mlkem

    version = create_version(kms, ring, Purpose.KEY_ENCAPSULATION, Algorithm.ML_KEM_768)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.NIST_PQC})
    assert raw.public_key.crc32c_checksum == crc32c(raw.public_key.data)
    from_raw = mlkem.MLKEM768PublicKey.from_public_bytes(raw.public_key.data)
    # The PEM is a SubjectPublicKeyInfo pyca/cryptography reads as the same ML-KEM-768 key.
    pem = kms.get_public_key(request={"name": version.name, "public_key_format": Format.PEM})
    from_pem = serialization.load_pem_public_key(pem.public_key.data)
    assert isinstance(from_pem, mlkem.MLKEM768PublicKey)
    assert from_pem.public_bytes_raw() == from_raw.public_bytes_raw()
    shared, ciphertext = from_raw.encapsulate()
    resp = kms.decapsulate(
        request={"name": version.name, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
    )
    assert resp.shared_secret == shared
    assert resp.shared_secret_crc32c == crc32c(shared)
    assert resp.verified_ciphertext_crc32c


def test_x_wing_decapsulates_what_an_independent_sender_encapsulated(kms, ring):
    """X-Wing (draft-connolly-cfrg-xwing-kem-06) built here from pyca/cryptography's ML-KEM-768
    and X25519 and hashlib's SHA3-256: the KMS recovers the sender's shared secret."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    version = create_version(kms, ring, Purpose.KEY_ENCAPSULATION, Algorithm.KEM_XWING)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.XWING_RAW_BYTES})
    assert raw.public_key.crc32c_checksum == crc32c(raw.public_key.data)
    public = raw.public_key.data
    assert len(public) == 1216 and not raw.pem
    pk_m, pk_x = public[:1184], public[1184:]
    ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
    shared = hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()
    ciphertext = ct_m + ct_x
    resp = kms.decapsulate(
        request={"name": version.name, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
    )
    assert resp.shared_secret == shared
    assert resp.shared_secret_crc32c == crc32c(shared)
    assert resp.verified_ciphertext_crc32c
    # Its public key has no PEM (X-Wing has no standard SubjectPublicKeyInfo).
    with pytest.raises((gexc.BadRequest, gexc.InvalidArgument)) as e:
        kms.get_public_key(request={"name": version.name, "public_key_format": Format.PEM})
    assert "XWING_RAW_BYTES is required" in str(e.value)


@pytest.mark.parametrize(
    "algorithm, key_class",
    [
        (Algorithm.PQ_SIGN_ML_DSA_44, "MLDSA44PublicKey"),
        (Algorithm.PQ_SIGN_ML_DSA_65, "MLDSA65PublicKey"),
        (Algorithm.PQ_SIGN_ML_DSA_87, "MLDSA87PublicKey"),
    ],
)
def test_ml_dsa_signatures_verify_with_cryptography(kms, ring, algorithm, key_class):
    from cryptography.hazmat.primitives.asymmetric import mldsa

    version = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, algorithm)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.NIST_PQC})
    assert raw.public_key.crc32c_checksum == crc32c(raw.public_key.data)
    public = getattr(mldsa, key_class).from_public_bytes(raw.public_key.data)
    # The PEM is a SubjectPublicKeyInfo pyca/cryptography reads as the same key.
    pem = kms.get_public_key(request={"name": version.name, "public_key_format": Format.PEM})
    from_pem = serialization.load_pem_public_key(pem.public_key.data)
    assert isinstance(from_pem, getattr(mldsa, key_class))
    assert from_pem.public_bytes_raw() == public.public_bytes_raw()
    data = b"a release to sign"
    resp = kms.asymmetric_sign(request={"name": version.name, "data": data, "data_crc32c": crc32c(data)})
    assert resp.verified_data_crc32c
    assert resp.signature_crc32c == crc32c(resp.signature)
    public.verify(resp.signature, data)
    with pytest.raises(InvalidSignature):
        public.verify(resp.signature, b"another release")


def test_slh_dsa_signatures_verify_with_an_independent_fips_205_implementation(kms, ring, tmp_path):
    """SLH-DSA-SHA2-128s: verified by the `slh-dsa` package (pure Python FIPS 205), which reads
    the PEM SubjectPublicKeyInfo Keyhold hands out."""
    import slhdsa

    version = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, Algorithm.PQ_SIGN_SLH_DSA_SHA2_128S)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.NIST_PQC})
    assert len(raw.public_key.data) == 32
    assert raw.public_key.crc32c_checksum == crc32c(raw.public_key.data)
    pem = kms.get_public_key(request={"name": version.name, "public_key_format": Format.PEM})
    pem_file = tmp_path / "slh-dsa.pem"
    pem_file.write_bytes(pem.public_key.data)
    public = slhdsa.PublicKey.from_pkcs(str(pem_file))
    assert public.digest() == raw.public_key.data
    data = b"a release to sign"
    resp = kms.asymmetric_sign(request={"name": version.name, "data": data, "data_crc32c": crc32c(data)})
    assert resp.verified_data_crc32c
    assert len(resp.signature) == 7856
    assert public.verify_pure(data, resp.signature)
    assert not public.verify_pure(b"another release", resp.signature)
    # Pure SLH-DSA signs the data, never a digest.
    with pytest.raises(gexc.BadRequest):
        kms.asymmetric_sign(request={"name": version.name, "digest": {"sha256": hashlib.sha256(data).digest()}})


def test_hash_slh_dsa_signatures_verify_with_an_independent_fips_205_implementation(kms, ring):
    """HashSLH-DSA-SHA2-128s with SHA-256: what Keyhold signs, from the data or from the caller's
    digest, verifies with the `slh-dsa` package's `verify_hash` (FIPS 205, algorithm 25)."""
    import slhdsa

    version = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, Algorithm.PQ_SIGN_HASH_SLH_DSA_SHA2_128S_SHA256)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.NIST_PQC})
    public = slhdsa.PublicKey.from_digest(raw.public_key.data, slhdsa.sha2_128s)
    data = b"a release to sign"
    by_data = kms.asymmetric_sign(request={"name": version.name, "data": data})
    digest = hashlib.sha256(data).digest()
    by_digest = kms.asymmetric_sign(
        request={"name": version.name, "digest": {"sha256": digest}, "digest_crc32c": crc32c(digest)}
    )
    assert by_digest.verified_digest_crc32c
    for signature in (by_data.signature, by_digest.signature):
        assert public.verify_hash(data, signature)
        assert not public.verify_hash(b"another release", signature)
        assert not public.verify_pure(data, signature)


def test_ml_dsa_external_mu_signatures_verify_with_cryptography(kms, ring):
    """ML-DSA-65 over a caller's mu: the client computes FIPS 204's mu with hashlib's SHAKE256
    and pyca/cryptography verifies the signature as a pure ML-DSA signature of the message."""
    from cryptography.hazmat.primitives.asymmetric import mldsa

    version = create_version(kms, ring, Purpose.ASYMMETRIC_SIGN, Algorithm.PQ_SIGN_ML_DSA_65_EXTERNAL_MU)
    Format = kms_v1.PublicKey.PublicKeyFormat
    raw = kms.get_public_key(request={"name": version.name, "public_key_format": Format.NIST_PQC})
    public = mldsa.MLDSA65PublicKey.from_public_bytes(raw.public_key.data)
    data = b"a release to sign"
    tr = hashlib.shake_256(raw.public_key.data).digest(64)
    mu = hashlib.shake_256(tr + b"\x00\x00" + data).digest(64)
    resp = kms.asymmetric_sign(request={"name": version.name, "digest": {"external_mu": mu}, "digest_crc32c": crc32c(mu)})
    assert resp.verified_digest_crc32c
    public.verify(resp.signature, data)
    with pytest.raises(InvalidSignature):
        public.verify(resp.signature, b"another release")


def test_import_a_key_wrapped_with_cryptography(kms, ring):
    """An import job, and an EC key wrapped for it the way Google's guide wraps with Python:
    RSA-OAEP (SHA-256) of a fresh AES-256 key, then AES key wrap with padding of the key."""
    import os

    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    Method = kms_v1.ImportJob.ImportMethod
    job = kms.create_import_job(
        request={
            "parent": ring,
            "import_job_id": unique("job"),
            "import_job": {
                "import_method": Method.RSA_OAEP_3072_SHA256_AES_256,
                "protection_level": kms_v1.ProtectionLevel.SOFTWARE,
            },
        }
    )
    assert job.state == kms_v1.ImportJob.ImportJobState.ACTIVE
    assert kms.get_import_job(request={"name": job.name}).public_key.pem == job.public_key.pem
    assert job.name in [j.name for j in kms.list_import_jobs(request={"parent": ring})]
    key = kms.create_crypto_key(
        request={
            "parent": ring,
            "crypto_key_id": unique("key"),
            "crypto_key": {
                "purpose": Purpose.ASYMMETRIC_SIGN,
                "version_template": {"algorithm": Algorithm.EC_SIGN_P256_SHA256},
                "import_only": True,
            },
            "skip_initial_version_creation": True,
        }
    )
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kek = os.urandom(32)
    wrapping = serialization.load_pem_public_key(job.public_key.pem.encode())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = wrapping.encrypt(kek, oaep) + aes_key_wrap_with_padding(kek, pkcs8)
    version = kms.import_crypto_key_version(
        request={
            "parent": key.name,
            "algorithm": Algorithm.EC_SIGN_P256_SHA256,
            "import_job": job.name,
            "wrapped_key": wrapped,
        }
    )
    assert version.state == State.ENABLED
    assert version.import_job == job.name
    assert version.reimport_eligible
    data = b"signed by an imported key"
    signature = kms.asymmetric_sign(request={"name": version.name, "data": data}).signature
    private.public_key().verify(signature, data, ec.ECDSA(hashes.SHA256()))
    with pytest.raises((gexc.BadRequest, gexc.InvalidArgument)):
        kms.import_crypto_key_version(
            request={
                "parent": key.name,
                "algorithm": Algorithm.EC_SIGN_P256_SHA256,
                "import_job": job.name,
                "wrapped_key": wrapped[:-8],
            }
        )


def test_delete_versions_and_keys_as_long_running_operations(kms, ring):
    """DeleteCryptoKeyVersion and DeleteCryptoKey as the official client calls them: operations
    it follows with .result(), that get_operation reads back, and a retired resource."""
    key_id = unique("key")
    key = kms.create_crypto_key(
        request={
            "parent": ring,
            "crypto_key_id": key_id,
            "crypto_key": {"purpose": Purpose.ENCRYPT_DECRYPT, "destroy_scheduled_duration": {"seconds": 1}},
        }
    )
    version = f"{key.name}/cryptoKeyVersions/1"
    with pytest.raises((gexc.BadRequest, gexc.FailedPrecondition)):
        kms.delete_crypto_key_version(request={"name": version})
    kms.destroy_crypto_key_version(request={"name": version})
    deadline = time.monotonic() + 30
    while kms.get_crypto_key_version(request={"name": version}).state != State.DESTROYED:
        assert time.monotonic() < deadline, "the version was not destroyed"
        time.sleep(0.1)
    with pytest.raises((gexc.BadRequest, gexc.FailedPrecondition)):
        kms.delete_crypto_key(request={"name": key.name})
    op = kms.delete_crypto_key_version(request={"name": version})
    op.result(timeout=30)
    assert op.done()
    fetched = kms.get_operation(request={"name": op.operation.name})
    assert fetched.done and fetched.name == op.operation.name
    with pytest.raises(gexc.NotFound):
        kms.get_crypto_key_version(request={"name": version})
    op = kms.delete_crypto_key(request={"name": key.name})
    op.result(timeout=30)
    retired_name = op.metadata.retired_resource
    retired = kms.get_retired_resource(request={"name": retired_name})
    assert retired.original_resource == key.name
    assert retired.resource_type == "cloudkms.googleapis.com/CryptoKey"
    assert retired_name in [r.name for r in kms.list_retired_resources(request={"parent": LOCATION_NAME})]
    with pytest.raises(gexc.NotFound):
        kms.get_crypto_key(request={"name": key.name})
    with pytest.raises((gexc.Conflict, gexc.AlreadyExists)):
        kms.create_crypto_key(
            request={"parent": ring, "crypto_key_id": key_id, "crypto_key": {"purpose": Purpose.ENCRYPT_DECRYPT}}
        )
