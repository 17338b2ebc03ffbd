//! Between the generated wire messages and Keyhold's own (`keyhold-api`), which the KMS
//! domain speaks.
//!
//! Most messages cross by their proto3 JSON form: the generated type's JSON (pbjson, Google's
//! JSON mapping) is read by the `keyhold-api` type, which is what the REST surface reads, and
//! the other way round. Neither side ignores a field it does not know, so a message REST and
//! gRPC would understand differently fails here instead of being silently changed; the tests
//! of this module cross every message of every method both ways.
//!
//! The key operations' messages (`Encrypt`, `Decrypt`, `GenerateRandomBytes`) are converted
//! field by field, for speed and so that plaintext goes straight from the decoded message into
//! a wiping buffer ([`keyhold_crypto::Secret`]) without a base64 copy; `Location`, whose metadata
//! is an `Any`, too.

use keyhold_api::Code;
use keyhold_api::messages as api;
use keyhold_api::resources::{Location, ProtectionLevel};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_server::error::ApiError;
use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pb::google::cloud::kms::v1 as pb;
use crate::pb::google::cloud::location as loc;

/// A request message (or part of one) from the wire, as Keyhold's type. A field Keyhold does
/// not take is refused `INVALID_ARGUMENT`, as REST refuses it in JSON.
pub fn from_wire<P: Serialize, A: DeserializeOwned>(message: &P) -> Result<A, ApiError> {
    let json = serde_json::to_value(message)
        .map_err(|e| ApiError::new(Code::Internal, format!("cannot read the request message: {e}")))?;
    serde_json::from_value(json).map_err(|e| ApiError::invalid(format!("Invalid request message: {e}.")))
}

/// An answer of Keyhold's as the wire message. Failing is a bug of Keyhold's (a field the
/// proto does not have): `INTERNAL`.
pub fn to_wire<A: Serialize, P: DeserializeOwned>(message: &A) -> Result<P, ApiError> {
    let json = serde_json::to_value(message)
        .map_err(|e| ApiError::new(Code::Internal, format!("cannot write the answer: {e}")))?;
    serde_json::from_value(json).map_err(|e| ApiError::new(Code::Internal, format!("cannot write the answer: {e}")))
}

fn crc32c(field: &str, v: Option<pbjson_types::Int64Value>) -> Result<Option<Crc32c>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => u32::try_from(v.value)
            .map(|n| Some(Crc32c(n)))
            .map_err(|_| ApiError::invalid(format!("Invalid {field}: {} is not a CRC32C (0 to 4294967295).", v.value))),
    }
}

fn int64(c: Crc32c) -> Option<pbjson_types::Int64Value> {
    Some(pbjson_types::Int64Value::from(i64::from(c.0)))
}

fn optional_bytes(b: Vec<u8>) -> Option<Bytes> {
    (!b.is_empty()).then_some(Bytes(b))
}

/// `EncryptRequest`: the plaintext moves into a wiping buffer, uncopied.
pub fn encrypt_request(message: pb::EncryptRequest) -> Result<api::EncryptRequest, ApiError> {
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
pub fn decrypt_request(message: pb::DecryptRequest) -> Result<api::DecryptRequest, ApiError> {
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

/// `GenerateRandomBytesRequest`.
pub fn generate_random_bytes_request(
    message: pb::GenerateRandomBytesRequest,
) -> Result<api::GenerateRandomBytesRequest, ApiError> {
    let pb::GenerateRandomBytesRequest { location, length_bytes, protection_level } = message;
    let protection_level = match protection_level {
        0 => None,
        n => Some(
            ProtectionLevel::from_number(i64::from(n))
                .ok_or_else(|| ApiError::invalid(format!("Invalid protection_level: {n} is not a ProtectionLevel.")))?,
        ),
    };
    Ok(api::GenerateRandomBytesRequest { location, length_bytes, protection_level })
}

/// `GenerateRandomBytesResponse`.
pub fn generate_random_bytes_response(r: &api::GenerateRandomBytesResponse) -> pb::GenerateRandomBytesResponse {
    pb::GenerateRandomBytesResponse { data: r.data.0.expose().to_vec(), data_crc32c: int64(r.data_crc32c) }
}

/// `google.cloud.location.Location`, its metadata (`{"@type": ...LocationMetadata, ...}` in
/// JSON) packed as an `Any`.
pub fn location(l: Location) -> Result<loc::Location, ApiError> {
    let Location { name, location_id, display_name, labels, metadata } = l;
    let metadata = match metadata {
        None => None,
        Some(serde_json::Value::Object(mut fields)) => {
            let type_url = match fields.remove("@type") {
                Some(serde_json::Value::String(t)) => t,
                _ => return Err(ApiError::new(Code::Internal, "location metadata without its @type")),
            };
            let m: pb::LocationMetadata = to_wire(&fields)?;
            Some(pbjson_types::Any { type_url, value: m.encode_to_vec().into() })
        }
        Some(_) => return Err(ApiError::new(Code::Internal, "location metadata is not an object")),
    };
    Ok(loc::Location { name, location_id, display_name, labels: labels.into_iter().collect(), metadata })
}
