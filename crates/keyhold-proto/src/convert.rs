//! Between the wire messages (generated) and `keyhold-api`'s model, which the KMS domain speaks.
//! Both front ends cross here, REST and gRPC alike, so a request means the same on either.
//!
//! Most messages cross by their proto3 JSON form: the generated type's JSON (pbjson, Google's
//! JSON mapping) is read by the `keyhold-api` type, and the other way round. Neither side
//! ignores a field it does not know, so a field the wire has and the model lacks is refused
//! (`INVALID_ARGUMENT` on the way in; `INTERNAL`, a bug, on the way out) rather than dropped;
//! the tests of this module cross every resource both ways.
//!
//! The key operations' messages (`Encrypt`, `Decrypt`, `AsymmetricSign`, `AsymmetricDecrypt`,
//! `MacSign`, `MacVerify`, `RawEncrypt`, `RawDecrypt`, `PublicKey`, `GenerateRandomBytes`) are
//! converted
//! field by field, for speed and so that plaintext goes straight from the decoded message into
//! a wiping buffer ([`keyhold_crypto::Secret`]) without a base64 copy.

use keyhold_api::messages as api;
use keyhold_api::resources::{Algorithm, Location, ProtectionLevel};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_api::{Code, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::google::cloud::kms::v1 as pb;
use crate::google::cloud::location as loc;

/// `INVALID_ARGUMENT`.
fn invalid(message: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, message)
}

/// A request message (or part of one) from the wire, as Keyhold's type. A field Keyhold does
/// not take is refused `INVALID_ARGUMENT`, as REST refuses it in JSON.
pub fn from_wire<P: Serialize, A: DeserializeOwned>(message: &P) -> Result<A, Status> {
    // Writing the JSON fails on a value the proto does not define (an enum number unknown to
    // it): the client's doing too.
    let json = serde_json::to_value(message).map_err(|e| invalid(format!("Invalid request message: {e}.")))?;
    serde_json::from_value(json).map_err(|e| invalid(format!("Invalid request message: {e}.")))
}

/// An answer of Keyhold's as the wire message. Failing is a bug of Keyhold's (a field the
/// proto does not have): `INTERNAL`.
pub fn to_wire<A: Serialize, P: DeserializeOwned>(message: &A) -> Result<P, Status> {
    let json = serde_json::to_value(message)
        .map_err(|e| Status::new(Code::Internal, format!("cannot write the answer: {e}")))?;
    serde_json::from_value(json).map_err(|e| Status::new(Code::Internal, format!("cannot write the answer: {e}")))
}

/// An `update_mask` as REST's `updateMask` query parameter (`a,b`).
pub fn field_mask(m: Option<crate::wkt::FieldMask>) -> String {
    m.map(|m| m.paths.join(",")).unwrap_or_default()
}

fn crc32c(field: &str, v: Option<pbjson_types::Int64Value>) -> Result<Option<Crc32c>, Status> {
    match v {
        None => Ok(None),
        Some(v) => u32::try_from(v.value)
            .map(|n| Some(Crc32c(n)))
            .map_err(|_| invalid(format!("Invalid {field}: {} is not a CRC32C (0 to 4294967295).", v.value))),
    }
}

fn int64(c: Crc32c) -> Option<pbjson_types::Int64Value> {
    Some(pbjson_types::Int64Value::from(i64::from(c.0)))
}

fn optional_bytes(b: Vec<u8>) -> Option<Bytes> {
    (!b.is_empty()).then_some(Bytes(b))
}

/// `EncryptRequest`: the plaintext moves into a wiping buffer, uncopied.
pub fn encrypt_request(message: pb::EncryptRequest) -> Result<api::EncryptRequest, Status> {
    let pb::EncryptRequest {
        name,
        plaintext,
        additional_authenticated_data,
        plaintext_crc32c,
        additional_authenticated_data_crc32c,
    } = message;
    Ok(api::EncryptRequest {
        name,
        plaintext: SecretBytes(keyhold_crypto::Secret::new(plaintext)),
        additional_authenticated_data: optional_bytes(additional_authenticated_data),
        plaintext_crc32c: crc32c("plaintext_crc32c", plaintext_crc32c)?,
        additional_authenticated_data_crc32c: crc32c(
            "additional_authenticated_data_crc32c",
            additional_authenticated_data_crc32c,
        )?,
    })
}

/// `EncryptResponse`.
pub fn encrypt_response(r: api::EncryptResponse) -> pb::EncryptResponse {
    let api::EncryptResponse {
        name,
        ciphertext,
        ciphertext_crc32c,
        verified_plaintext_crc32c,
        verified_additional_authenticated_data_crc32c,
        protection_level,
    } = r;
    pb::EncryptResponse {
        name,
        ciphertext: ciphertext.0,
        ciphertext_crc32c: int64(ciphertext_crc32c),
        verified_plaintext_crc32c,
        verified_additional_authenticated_data_crc32c,
        protection_level: protection_level.number(),
    }
}

/// `DecryptRequest`.
pub fn decrypt_request(message: pb::DecryptRequest) -> Result<api::DecryptRequest, Status> {
    let pb::DecryptRequest {
        name,
        ciphertext,
        additional_authenticated_data,
        ciphertext_crc32c,
        additional_authenticated_data_crc32c,
    } = message;
    Ok(api::DecryptRequest {
        name,
        ciphertext: Bytes(ciphertext),
        additional_authenticated_data: optional_bytes(additional_authenticated_data),
        ciphertext_crc32c: crc32c("ciphertext_crc32c", ciphertext_crc32c)?,
        additional_authenticated_data_crc32c: crc32c(
            "additional_authenticated_data_crc32c",
            additional_authenticated_data_crc32c,
        )?,
    })
}

/// `DecryptResponse`. The plaintext is copied into the message, which tonic encodes and drops
/// (prost's `Vec<u8>` is not wiped: the same holds of the REST answer's buffer).
pub fn decrypt_response(r: &api::DecryptResponse) -> pb::DecryptResponse {
    pb::DecryptResponse {
        plaintext: r.plaintext.0.expose().to_vec(),
        plaintext_crc32c: int64(r.plaintext_crc32c),
        used_primary: r.used_primary,
        protection_level: r.protection_level.number(),
    }
}

/// `AsymmetricSignRequest`.
pub fn asymmetric_sign_request(message: pb::AsymmetricSignRequest) -> Result<api::AsymmetricSignRequest, Status> {
    let pb::AsymmetricSignRequest { name, digest, digest_crc32c, data, data_crc32c } = message;
    let digest = match digest.and_then(|d| d.digest) {
        None => None,
        Some(pb::digest::Digest::Sha256(b)) => Some(api::Digest { sha256: Some(Bytes(b)), ..Default::default() }),
        Some(pb::digest::Digest::Sha384(b)) => Some(api::Digest { sha384: Some(Bytes(b)), ..Default::default() }),
        Some(pb::digest::Digest::Sha512(b)) => Some(api::Digest { sha512: Some(Bytes(b)), ..Default::default() }),
        Some(pb::digest::Digest::ExternalMu(b)) => {
            Some(api::Digest { external_mu: Some(Bytes(b)), ..Default::default() })
        }
    };
    Ok(api::AsymmetricSignRequest {
        name,
        digest,
        digest_crc32c: crc32c("digest_crc32c", digest_crc32c)?,
        data: Bytes(data),
        data_crc32c: crc32c("data_crc32c", data_crc32c)?,
    })
}

/// `AsymmetricSignResponse`.
pub fn asymmetric_sign_response(r: api::AsymmetricSignResponse) -> pb::AsymmetricSignResponse {
    let api::AsymmetricSignResponse {
        signature,
        signature_crc32c,
        verified_digest_crc32c,
        name,
        verified_data_crc32c,
        protection_level,
    } = r;
    pb::AsymmetricSignResponse {
        signature: signature.0,
        signature_crc32c: int64(signature_crc32c),
        verified_digest_crc32c,
        name,
        verified_data_crc32c,
        protection_level: protection_level.number(),
    }
}

/// `AsymmetricDecryptRequest`.
pub fn asymmetric_decrypt_request(
    message: pb::AsymmetricDecryptRequest,
) -> Result<api::AsymmetricDecryptRequest, Status> {
    let pb::AsymmetricDecryptRequest { name, ciphertext, ciphertext_crc32c } = message;
    Ok(api::AsymmetricDecryptRequest {
        name,
        ciphertext: Bytes(ciphertext),
        ciphertext_crc32c: crc32c("ciphertext_crc32c", ciphertext_crc32c)?,
    })
}

/// `AsymmetricDecryptResponse` (the plaintext is copied into the message, as for `Decrypt`).
pub fn asymmetric_decrypt_response(r: &api::AsymmetricDecryptResponse) -> pb::AsymmetricDecryptResponse {
    pb::AsymmetricDecryptResponse {
        plaintext: r.plaintext.0.expose().to_vec(),
        plaintext_crc32c: int64(r.plaintext_crc32c),
        verified_ciphertext_crc32c: r.verified_ciphertext_crc32c,
        protection_level: r.protection_level.number(),
    }
}

/// `MacSignRequest`: the data moves into a wiping buffer, uncopied.
pub fn mac_sign_request(message: pb::MacSignRequest) -> Result<api::MacSignRequest, Status> {
    let pb::MacSignRequest { name, data, data_crc32c } = message;
    Ok(api::MacSignRequest {
        name,
        data: SecretBytes(keyhold_crypto::Secret::new(data)),
        data_crc32c: crc32c("data_crc32c", data_crc32c)?,
    })
}

/// `MacSignResponse`.
pub fn mac_sign_response(r: api::MacSignResponse) -> pb::MacSignResponse {
    let api::MacSignResponse { name, mac, mac_crc32c, verified_data_crc32c, protection_level } = r;
    pb::MacSignResponse {
        name,
        mac: mac.0,
        mac_crc32c: int64(mac_crc32c),
        verified_data_crc32c,
        protection_level: protection_level.number(),
    }
}

/// `MacVerifyRequest`.
pub fn mac_verify_request(message: pb::MacVerifyRequest) -> Result<api::MacVerifyRequest, Status> {
    let pb::MacVerifyRequest { name, data, data_crc32c, mac, mac_crc32c } = message;
    Ok(api::MacVerifyRequest {
        name,
        data: SecretBytes(keyhold_crypto::Secret::new(data)),
        data_crc32c: crc32c("data_crc32c", data_crc32c)?,
        mac: Bytes(mac),
        mac_crc32c: crc32c("mac_crc32c", mac_crc32c)?,
    })
}

/// `MacVerifyResponse`.
pub fn mac_verify_response(r: api::MacVerifyResponse) -> pb::MacVerifyResponse {
    pb::MacVerifyResponse {
        name: r.name,
        success: r.success,
        verified_data_crc32c: r.verified_data_crc32c,
        verified_mac_crc32c: r.verified_mac_crc32c,
        verified_success_integrity: r.verified_success_integrity,
        protection_level: r.protection_level.number(),
    }
}

/// `RawEncryptRequest`: the plaintext moves into a wiping buffer, uncopied.
pub fn raw_encrypt_request(message: pb::RawEncryptRequest) -> Result<api::RawEncryptRequest, Status> {
    let pb::RawEncryptRequest {
        name,
        plaintext,
        additional_authenticated_data,
        plaintext_crc32c,
        additional_authenticated_data_crc32c,
        initialization_vector,
        initialization_vector_crc32c,
    } = message;
    Ok(api::RawEncryptRequest {
        name,
        plaintext: SecretBytes(keyhold_crypto::Secret::new(plaintext)),
        additional_authenticated_data: Bytes(additional_authenticated_data),
        plaintext_crc32c: crc32c("plaintext_crc32c", plaintext_crc32c)?,
        additional_authenticated_data_crc32c: crc32c(
            "additional_authenticated_data_crc32c",
            additional_authenticated_data_crc32c,
        )?,
        initialization_vector: Bytes(initialization_vector),
        initialization_vector_crc32c: crc32c("initialization_vector_crc32c", initialization_vector_crc32c)?,
    })
}

/// `RawEncryptResponse`.
pub fn raw_encrypt_response(r: api::RawEncryptResponse) -> pb::RawEncryptResponse {
    pb::RawEncryptResponse {
        ciphertext: r.ciphertext.0,
        initialization_vector: r.initialization_vector.0,
        tag_length: r.tag_length,
        ciphertext_crc32c: int64(r.ciphertext_crc32c),
        initialization_vector_crc32c: int64(r.initialization_vector_crc32c),
        verified_plaintext_crc32c: r.verified_plaintext_crc32c,
        verified_additional_authenticated_data_crc32c: r.verified_additional_authenticated_data_crc32c,
        verified_initialization_vector_crc32c: r.verified_initialization_vector_crc32c,
        name: r.name,
        protection_level: r.protection_level.number(),
    }
}

/// `RawDecryptRequest`.
pub fn raw_decrypt_request(message: pb::RawDecryptRequest) -> Result<api::RawDecryptRequest, Status> {
    let pb::RawDecryptRequest {
        name,
        ciphertext,
        additional_authenticated_data,
        initialization_vector,
        tag_length,
        ciphertext_crc32c,
        additional_authenticated_data_crc32c,
        initialization_vector_crc32c,
    } = message;
    Ok(api::RawDecryptRequest {
        name,
        ciphertext: Bytes(ciphertext),
        additional_authenticated_data: Bytes(additional_authenticated_data),
        initialization_vector: Bytes(initialization_vector),
        tag_length,
        ciphertext_crc32c: crc32c("ciphertext_crc32c", ciphertext_crc32c)?,
        additional_authenticated_data_crc32c: crc32c(
            "additional_authenticated_data_crc32c",
            additional_authenticated_data_crc32c,
        )?,
        initialization_vector_crc32c: crc32c("initialization_vector_crc32c", initialization_vector_crc32c)?,
    })
}

/// `RawDecryptResponse` (the plaintext is copied into the message, as for `Decrypt`).
pub fn raw_decrypt_response(r: &api::RawDecryptResponse) -> pb::RawDecryptResponse {
    pb::RawDecryptResponse {
        plaintext: r.plaintext.0.expose().to_vec(),
        plaintext_crc32c: int64(r.plaintext_crc32c),
        protection_level: r.protection_level.number(),
        verified_ciphertext_crc32c: r.verified_ciphertext_crc32c,
        verified_additional_authenticated_data_crc32c: r.verified_additional_authenticated_data_crc32c,
        verified_initialization_vector_crc32c: r.verified_initialization_vector_crc32c,
    }
}

/// `DecapsulateRequest`.
pub fn decapsulate_request(message: pb::DecapsulateRequest) -> Result<api::DecapsulateRequest, Status> {
    let pb::DecapsulateRequest { name, ciphertext, ciphertext_crc32c } = message;
    Ok(api::DecapsulateRequest {
        name,
        ciphertext: Bytes(ciphertext),
        ciphertext_crc32c: crc32c("ciphertext_crc32c", ciphertext_crc32c)?,
    })
}

/// `DecapsulateResponse` (the shared secret is copied into the message, as for `Decrypt`; its
/// CRC32C is a plain int64 in this message, not a wrapper).
pub fn decapsulate_response(r: &api::DecapsulateResponse) -> pb::DecapsulateResponse {
    pb::DecapsulateResponse {
        name: r.name.clone(),
        shared_secret: r.shared_secret.0.expose().to_vec(),
        shared_secret_crc32c: Some(i64::from(r.shared_secret_crc32c.0)),
        verified_ciphertext_crc32c: r.verified_ciphertext_crc32c,
        protection_level: r.protection_level.number(),
    }
}

/// `ImportCryptoKeyVersionRequest` (its `parent` is taken by the caller).
pub fn import_request(
    message: pb::ImportCryptoKeyVersionRequest,
) -> Result<api::ImportCryptoKeyVersionRequest, Status> {
    use pb::import_crypto_key_version_request::WrappedKeyMaterial;
    let pb::ImportCryptoKeyVersionRequest {
        parent: _,
        crypto_key_version,
        algorithm,
        import_job,
        wrapped_key,
        trusted_wrapping_enabled,
        wrapped_key_material,
    } = message;
    if trusted_wrapping_enabled {
        return Err(invalid("trusted_wrapping_enabled is not supported by Keyhold."));
    }
    let Some(WrappedKeyMaterial::RsaAesWrappedKey(legacy)) = wrapped_key_material else {
        return Ok(api::ImportCryptoKeyVersionRequest {
            crypto_key_version,
            algorithm: algorithm_field(algorithm)?,
            import_job,
            wrapped_key: Bytes(wrapped_key),
        });
    };
    if !wrapped_key.is_empty() {
        return Err(invalid("Only one of wrapped_key and rsa_aes_wrapped_key may be set."));
    }
    Ok(api::ImportCryptoKeyVersionRequest {
        crypto_key_version,
        algorithm: algorithm_field(algorithm)?,
        import_job,
        wrapped_key: Bytes(legacy),
    })
}

fn algorithm_field(n: i32) -> Result<Option<Algorithm>, Status> {
    match n {
        0 => Ok(None),
        n => Algorithm::from_number(i64::from(n))
            .map(Some)
            .ok_or_else(|| invalid(format!("Invalid algorithm: {n} is not a CryptoKeyVersionAlgorithm."))),
    }
}

/// `GetPublicKeyRequest`'s format (0: none asked for).
pub fn public_key_format(n: i32) -> Result<Option<api::PublicKeyFormat>, Status> {
    match n {
        0 => Ok(None),
        n => api::PublicKeyFormat::from_number(i64::from(n))
            .map(Some)
            .ok_or_else(|| invalid(format!("Invalid public_key_format: {n} is not a PublicKeyFormat."))),
    }
}

/// `PublicKey`.
pub fn public_key(r: api::PublicKey) -> pb::PublicKey {
    let api::PublicKey { pem, algorithm, pem_crc32c, name, protection_level, public_key_format, public_key } = r;
    pb::PublicKey {
        pem,
        algorithm: algorithm.number(),
        pem_crc32c: pem_crc32c.and_then(int64),
        name,
        protection_level: protection_level.number(),
        public_key_format: public_key_format.map_or(0, |f| f.number()),
        public_key: public_key
            .map(|c| pb::ChecksummedData { data: c.data.0, crc32c_checksum: int64(c.crc32c_checksum) }),
    }
}

/// `GenerateRandomBytesRequest`.
pub fn generate_random_bytes_request(
    message: pb::GenerateRandomBytesRequest,
) -> Result<api::GenerateRandomBytesRequest, Status> {
    let pb::GenerateRandomBytesRequest { location, length_bytes, protection_level } = message;
    let protection_level = match protection_level {
        0 => None,
        n => Some(
            ProtectionLevel::from_number(i64::from(n))
                .ok_or_else(|| invalid(format!("Invalid protection_level: {n} is not a ProtectionLevel.")))?,
        ),
    };
    Ok(api::GenerateRandomBytesRequest { location, length_bytes, protection_level })
}

/// `GenerateRandomBytesResponse`.
pub fn generate_random_bytes_response(r: &api::GenerateRandomBytesResponse) -> pb::GenerateRandomBytesResponse {
    pb::GenerateRandomBytesResponse { data: r.data.0.expose().to_vec(), data_crc32c: int64(r.data_crc32c) }
}

/// `google.cloud.location.Location`: its metadata (`{"@type": ...LocationMetadata, ...}` in
/// JSON) is packed as an `Any` ([`crate::wkt::Any`] reads the JSON form).
pub fn location(l: &Location) -> Result<loc::Location, Status> {
    to_wire(l)
}

#[cfg(test)]
mod tests {
    //! Every message crosses both ways with every field Keyhold sets: a field one side has and
    //! the other lacks, or writes differently, fails here.
    use super::*;
    use keyhold_api::iam::{AuditConfig, AuditLogConfig, Binding, LogType, Policy};
    use keyhold_api::resources::*;
    use keyhold_api::wire::{ProtoDuration, Timestamp};
    use prost::Message as _;

    use crate::google::iam::v1 as iam;

    fn t(s: &str) -> Option<Timestamp> {
        Some(Timestamp::parse(s).unwrap())
    }

    fn version() -> CryptoKeyVersion {
        CryptoKeyVersion {
            name: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into(),
            state: Some(VersionState::DestroyScheduled),
            create_time: t("2026-01-02T03:04:05.123456789Z"),
            protection_level: Some(ProtectionLevel::External),
            algorithm: Some(Algorithm::GoogleSymmetricEncryption),
            attestation: Some(KeyOperationAttestation {
                format: "CAVIUM_V2_COMPRESSED".into(),
                content: Some(Bytes(vec![1, 2])),
            }),
            generate_time: t("2026-01-02T03:04:06Z"),
            destroy_time: t("2026-02-02T03:04:06Z"),
            destroy_event_time: t("2026-02-03T03:04:06Z"),
            import_job: "projects/p/locations/l/keyRings/r/importJobs/j".into(),
            import_time: t("2026-01-02T03:04:07Z"),
            import_failure_reason: "bad".into(),
            generation_failure_reason: "worse".into(),
            external_destruction_failure_reason: "worst".into(),
            external_protection_level_options: Some(ExternalProtectionLevelOptions {
                external_key_uri: "https://ekm.example/keys/1".into(),
                ekm_connection_key_path: "path".into(),
            }),
            reimport_eligible: true,
        }
    }

    fn key() -> CryptoKey {
        CryptoKey {
            name: "projects/p/locations/l/keyRings/r/cryptoKeys/k".into(),
            primary: Some(Box::new(version())),
            purpose: Some(Purpose::EncryptDecrypt),
            create_time: t("2026-01-02T03:04:05Z"),
            next_rotation_time: t("2026-03-02T03:04:05Z"),
            rotation_period: ProtoDuration::parse("7776000s"),
            version_template: Some(VersionTemplate {
                protection_level: Some(ProtectionLevel::Hsm),
                algorithm: Some(Algorithm::GoogleSymmetricEncryption),
            }),
            labels: [("team".to_string(), "blue".to_string())].into(),
            import_only: true,
            destroy_scheduled_duration: ProtoDuration::parse("86400s"),
            crypto_key_backend: "projects/p/locations/l/ekmConnections/c".into(),
            key_access_justifications_policy: Some(KeyAccessJustificationsPolicy {
                allowed_access_reasons: vec![
                    AccessReason::CustomerInitiatedAccess,
                    AccessReason::CustomerInitiatedSupport,
                ],
            }),
        }
    }

    fn round_trip<A, P>(a: &A) -> A
    where
        A: Serialize + DeserializeOwned,
        P: Serialize + DeserializeOwned + prost::Message + Default,
    {
        let wire: P = to_wire(a).unwrap_or_else(|e| panic!("{}", e.message));
        // Through the binary form too, as gRPC sends it.
        let wire = P::decode(wire.encode_to_vec().as_slice()).unwrap();
        from_wire(&wire).unwrap_or_else(|e| panic!("{}", e.message))
    }

    #[test]
    fn resources_cross_both_ways_unchanged() {
        let k = key();
        assert_eq!(round_trip::<_, pb::CryptoKey>(&k), k);
        let v = version();
        assert_eq!(round_trip::<_, pb::CryptoKeyVersion>(&v), v);
        let r = KeyRing { name: "projects/p/locations/l/keyRings/r".into(), create_time: t("2026-01-02T03:04:05Z") };
        assert_eq!(round_trip::<_, pb::KeyRing>(&r), r);
        let policy = Policy {
            version: 3,
            bindings: vec![Binding {
                role: "roles/cloudkms.cryptoKeyEncrypterDecrypter".into(),
                members: vec!["user:a@example.com".into(), "serviceAccount:s@p.iam.gserviceaccount.com".into()],
                condition: Some(
                    serde_json::json!({"title": "t", "expression": "request.time < timestamp(\"2030-01-01T00:00:00Z\")"}),
                ),
            }],
            audit_configs: vec![AuditConfig {
                service: "allServices".into(),
                audit_log_configs: vec![
                    AuditLogConfig { log_type: LogType::DataRead, exempted_members: vec!["user:j@example.com".into()] },
                    AuditLogConfig { log_type: LogType::AdminRead, exempted_members: vec![] },
                ],
            }],
            etag: "BwYCq0Sq4Ho=".into(),
        };
        assert_eq!(round_trip::<_, iam::Policy>(&policy), policy);
    }

    #[test]
    fn lists_and_requests_cross() {
        let wire: iam::Policy = to_wire(&Policy { version: 1, ..Default::default() }).unwrap();
        let back: Policy = from_wire(&wire).unwrap();
        assert_eq!(back.version, 1);
        let mask = Some(crate::wkt::FieldMask { paths: vec!["bindings".into(), "etag".into()] });
        assert_eq!(field_mask(mask), "bindings,etag");
        assert_eq!(field_mask(None), "");
    }

    #[test]
    fn a_field_keyhold_does_not_take_is_refused() {
        // Set on the wire, unknown to Keyhold's CryptoKeyVersion: refused, as REST refuses it.
        let wire = pb::CryptoKeyVersion { name: "n".into(), ..Default::default() };
        let mut json = serde_json::to_value(&wire).unwrap();
        json["futureField"] = serde_json::json!(1);
        assert!(serde_json::from_value::<pb::CryptoKeyVersion>(json).is_err(), "pbjson refuses unknown fields too");
        let key = pb::CryptoKey { purpose: 99, ..Default::default() };
        let e = from_wire::<_, CryptoKey>(&key).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }

    #[test]
    fn key_operations_convert_field_by_field() {
        let req = encrypt_request(pb::EncryptRequest {
            name: "k".into(),
            plaintext: b"secret".to_vec(),
            additional_authenticated_data: vec![],
            plaintext_crc32c: Some(pbjson_types::Int64Value::from(5)),
            additional_authenticated_data_crc32c: None,
        })
        .unwrap();
        assert_eq!(req.plaintext.0.expose(), b"secret");
        assert!(req.additional_authenticated_data.is_none());
        assert_eq!(req.plaintext_crc32c, Some(Crc32c(5)));
        assert!(format!("{req:?}").contains("[redacted]") && !format!("{req:?}").contains("secret"));
        let e = encrypt_request(pb::EncryptRequest {
            plaintext_crc32c: Some(pbjson_types::Int64Value::from(-1)),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        let resp = encrypt_response(api::EncryptResponse {
            name: "v".into(),
            ciphertext: Bytes(vec![9]),
            ciphertext_crc32c: Crc32c(u32::MAX),
            verified_plaintext_crc32c: true,
            verified_additional_authenticated_data_crc32c: false,
            protection_level: ProtectionLevel::Hsm,
        });
        assert_eq!(resp.ciphertext_crc32c.unwrap().value, i64::from(u32::MAX));
        assert_eq!(resp.protection_level, 2);
        let r = generate_random_bytes_request(pb::GenerateRandomBytesRequest {
            location: "l".into(),
            length_bytes: 8,
            protection_level: 2,
        })
        .unwrap();
        assert_eq!(r.protection_level, Some(ProtectionLevel::Hsm));
        assert!(
            generate_random_bytes_request(pb::GenerateRandomBytesRequest {
                protection_level: 77,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn location_metadata_is_packed() {
        let l = Location {
            name: "projects/p/locations/l".into(),
            location_id: "l".into(),
            display_name: "L".into(),
            labels: Default::default(),
            metadata: Some(
                serde_json::json!({"@type": "type.googleapis.com/google.cloud.kms.v1.LocationMetadata", "hsmAvailable": true, "ekmAvailable": false}),
            ),
        };
        let wire = location(&l).unwrap();
        let any = wire.metadata.unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.cloud.kms.v1.LocationMetadata");
        let m = pb::LocationMetadata::decode(any.value.as_ref()).unwrap();
        assert!(m.hsm_available && !m.ekm_available);
    }
}
