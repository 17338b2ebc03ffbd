//! The targets, one per parser. Each takes arbitrary bytes, never panics on its own account,
//! and panics (with the invariant's name) when the parser breaks one.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use keyhold_api::filter::{Filter, MAX_FILTER_LEN, OrderBy};
use keyhold_api::name::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_api::page::{MAX_PAGE_SIZE, PageRequest};
use keyhold_api::wire::{Crc32c, ProtoDuration, Timestamp, decode_base64, encode_base64};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Outcome::{self, Accepted, Rejected};
use crate::corpus;

fn outcome<T, E>(r: &Result<T, E>) -> Outcome {
    if r.is_ok() { Accepted } else { Rejected }
}

/// The input as text, if it is UTF-8 (most parsers take `&str`; the server refuses non-UTF-8
/// before them).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Runs a future that never waits (every reader here reads from memory) to completion.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read waited"),
    }
}

// ------------------------------------------------------------------------------------------
// keyhold-api: filters, names, routes, JSON bodies, scalars, page tokens
// ------------------------------------------------------------------------------------------

/// List `filter` and `orderBy` (keyhold-api `filter.rs`): bounded parse, then evaluation.
pub fn filter(data: &[u8]) -> Outcome {
    let Some(s) = text(data) else { return Rejected };
    let parsed = Filter::parse(s);
    // Whitespace alone is the empty filter at any length (nothing to parse); anything else
    // longer than the limit is refused before tokenizing.
    if s.len() > MAX_FILTER_LEN && !s.trim().is_empty() {
        assert!(parsed.is_err(), "a filter longer than MAX_FILTER_LEN was accepted");
    }
    match &parsed {
        Ok(f) => {
            // Evaluate it on a resource shaped like the ones lists filter.
            let resource = serde_json::json!({
                "name": "projects/p/locations/global/keyRings/r/cryptoKeys/k",
                "purpose": "ENCRYPT_DECRYPT",
                "labels": {"env": "prod", "team": "a"},
                "primary": {"state": "ENABLED", "protectionLevel": "SOFTWARE"},
                "createTime": "2026-01-01T00:00:00Z",
                "rotationPeriod": "86400s",
                "count": 3,
                "destroyed": false,
                "versions": [1, 2]
            });
            let _ = f.matches(&resource);
            let _ = f.matches(&serde_json::Value::Null);
        }
        Err(e) => assert!(!e.0.is_empty(), "a filter error without a message"),
    }
    if let Ok(Some(order)) = OrderBy::parse(s) {
        let mut items: Vec<(serde_json::Value, u8)> = vec![
            (serde_json::json!({"name": "b", "createTime": "2026-01-02T00:00:00Z"}), 0),
            (serde_json::json!({"name": "a"}), 1),
            (serde_json::json!({"name": 3}), 2),
        ];
        order.sort(&mut items);
        assert_eq!(items.len(), 3, "orderBy lost items");
    }
    outcome(&parsed)
}

fn round_trip<T: FromStr + ToString>(s: &str) -> Outcome {
    match s.parse::<T>() {
        Ok(v) => {
            assert_eq!(v.to_string(), s, "a name does not print back as it was parsed");
            Accepted
        }
        Err(_) => Rejected,
    }
}

/// Resource names (keyhold-api `name.rs`, the store's instance names and object names).
pub fn name(data: &[u8]) -> Outcome {
    let Some(s) = text(data) else { return Rejected };
    let results = [
        round_trip::<LocationName>(s),
        round_trip::<KeyRingName>(s),
        round_trip::<CryptoKeyName>(s),
        round_trip::<CryptoKeyVersionName>(s),
        round_trip::<keyhold_store::model::InstanceName>(s),
        outcome(&keyhold_store::model::check_instance_id(s)),
        outcome(&keyhold_store::model::check_object_name(s)),
        outcome(&keyhold_api::name::check_id("keyRing", s)),
    ];
    if let Some(v) = keyhold_api::name::parse_version_id(s) {
        assert_eq!(v.to_string(), s, "a version ID does not print back");
    }
    // A name never parses as two kinds: the kinds have different segment counts.
    let kinds = results[..5].iter().filter(|o| **o == Accepted).count();
    assert!(kinds <= 1, "{s:?} parsed as {kinds} kinds of name");
    if results.contains(&Accepted) { Accepted } else { Rejected }
}

/// The server's URL router (keyhold-server `route.rs`): every path after `/v1/`.
pub fn route(data: &[u8]) -> Outcome {
    let Some(s) = text(data) else { return Rejected };
    outcome(&keyhold_server::route::parse(s))
}

/// Decodes `data` as `T`, both from bytes and through a `serde_json::Value`; what decodes must
/// encode and decode again to the same JSON.
fn json_round_trip<T: DeserializeOwned + Serialize>(data: &[u8], value: Option<&serde_json::Value>) -> Outcome {
    if let Some(v) = value {
        let _ = serde_json::from_value::<T>(v.clone());
    }
    match serde_json::from_slice::<T>(data) {
        Ok(t) => {
            let once = serde_json::to_vec(&t).expect("a decoded body encodes");
            let again: T = serde_json::from_slice(&once).expect("an encoded body decodes");
            let twice = serde_json::to_vec(&again).expect("a decoded body encodes");
            let (a, b): (serde_json::Value, serde_json::Value) =
                (serde_json::from_slice(&once).expect("JSON"), serde_json::from_slice(&twice).expect("JSON"));
            assert!(same_json(&a, &b), "{} does not round-trip: {a} became {b}", std::any::type_name::<T>());
            Accepted
        }
        Err(_) => Rejected,
    }
}

/// Equal JSON, floats within a relative 1e-12: serde_json parses floats without exact
/// round-tripping (its `float_roundtrip` feature is off), which is not Keyhold's to fix and
/// touches only ignored free-form fields (`options`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Decodes `data` as `T` (request types that are only ever read).
fn json_decode<T: DeserializeOwned>(data: &[u8], value: Option<&serde_json::Value>) -> Outcome {
    if let Some(v) = value {
        let _ = serde_json::from_value::<T>(v.clone());
    }
    outcome(&serde_json::from_slice::<T>(data))
}

/// The JSON body of every method: each request message of the KMS and IAM APIs as REST reads
/// it (`keyhold-proto`'s generated messages, proto3 JSON by pbjson) and as it then crosses to
/// `keyhold-api`'s model, the model's own serde (which the conversions and Keyhold's clients
/// read), and the org-policy and store request types, from arbitrary bytes and arbitrary JSON
/// values.
pub fn json_bodies(data: &[u8]) -> Outcome {
    use keyhold_api::{iam, messages as m, orgpolicy, resources as r};
    use keyhold_proto::convert::from_wire;
    use keyhold_proto::google::cloud::kms::v1 as pb;
    use keyhold_proto::google::iam::v1 as pbiam;
    use keyhold_store::model as s;
    let value: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let v = value.as_ref();
    let wire = [
        json_round_trip::<pb::KeyRing>(data, v),
        json_round_trip::<pb::CryptoKey>(data, v),
        json_round_trip::<pb::CryptoKeyVersion>(data, v),
        json_round_trip::<pb::EncryptRequest>(data, v),
        json_round_trip::<pb::DecryptRequest>(data, v),
        json_round_trip::<pb::GenerateRandomBytesRequest>(data, v),
        json_round_trip::<pb::UpdateCryptoKeyPrimaryVersionRequest>(data, v),
        json_round_trip::<pb::DestroyCryptoKeyVersionRequest>(data, v),
        json_round_trip::<pbiam::SetIamPolicyRequest>(data, v),
        json_round_trip::<pbiam::GetIamPolicyRequest>(data, v),
        json_round_trip::<pbiam::TestIamPermissionsRequest>(data, v),
    ];
    // What REST reads goes on to the model, as each method does.
    if let Ok(k) = serde_json::from_slice::<pb::CryptoKey>(data) {
        let _ = from_wire::<_, r::CryptoKey>(&k);
    }
    if let Ok(k) = serde_json::from_slice::<pb::CryptoKeyVersion>(data) {
        let _ = from_wire::<_, r::CryptoKeyVersion>(&k);
    }
    if let Ok(k) = serde_json::from_slice::<pb::EncryptRequest>(data) {
        let _ = keyhold_proto::convert::encrypt_request(k);
    }
    if let Ok(p) = serde_json::from_slice::<pbiam::Policy>(data)
        && let Ok(p) = from_wire::<_, iam::Policy>(&p)
    {
        let _ = keyhold_iam::normalize("projects/p/locations/global/keyRings/r", &p);
    }
    let results = [
        json_round_trip::<r::KeyRing>(data, v),
        json_round_trip::<r::CryptoKey>(data, v),
        json_round_trip::<r::CryptoKeyVersion>(data, v),
        json_round_trip::<r::Location>(data, v),
        json_round_trip::<m::EncryptRequest>(data, v),
        json_round_trip::<m::DecryptRequest>(data, v),
        json_round_trip::<m::GenerateRandomBytesRequest>(data, v),
        json_round_trip::<iam::Policy>(data, v),
        json_round_trip::<iam::SetIamPolicyRequest>(data, v),
        json_round_trip::<orgpolicy::OrgPolicy>(data, v),
        json_decode::<s::CreateInstanceRequest>(data, v),
        json_round_trip::<s::EncryptionConfig>(data, v),
        json_decode::<s::CreateBackupRequest>(data, v),
        json_decode::<s::RestoreInstanceRequest>(data, v),
        json_decode::<s::CloneInstanceRequest>(data, v),
        json_decode::<s::ExportInstanceRequest>(data, v),
        json_decode::<s::ImportInstanceRequest>(data, v),
    ];
    // A policy that decodes goes on to validation, as `:setIamPolicy` does.
    if let Ok(p) = serde_json::from_slice::<iam::Policy>(data) {
        let _ = keyhold_iam::normalize("projects/p/locations/global/keyRings/r", &p);
    }
    if results.contains(&Accepted) || wire.contains(&Accepted) { Accepted } else { Rejected }
}

/// Timestamps, durations, CRC32C fields, base64 and version IDs (keyhold-api `wire.rs`), as
/// they arrive in JSON fields and query parameters.
pub fn wire_scalars(data: &[u8]) -> Outcome {
    let mut any = Rejected;
    if let Some(s) = text(data) {
        if let Some(t) = Timestamp::parse(s) {
            any = Accepted;
            let printed = t.to_string();
            let again = Timestamp::parse(&printed).expect("a printed timestamp parses");
            assert_eq!(again.unix_nanos(), t.unix_nanos(), "a timestamp does not round-trip");
        }
        if let Some(d) = ProtoDuration::parse(s) {
            any = Accepted;
            let printed = d.to_string();
            let again = ProtoDuration::parse(&printed).expect("a printed duration parses");
            assert_eq!(again.as_nanos(), d.as_nanos(), "a duration does not round-trip");
            let _ = d.to_std();
            let _ = Timestamp::now().add(d);
        }
        if let Ok(bytes) = decode_base64(s) {
            any = Accepted;
            assert_eq!(decode_base64(&encode_base64(&bytes)).expect("re-decode"), bytes, "base64 round trip");
        }
    }
    // CRC32C fields come as JSON strings ("123") or numbers.
    if let Ok(c) = serde_json::from_slice::<Crc32c>(data) {
        any = Accepted;
        let again: Crc32c = serde_json::from_slice(&serde_json::to_vec(&c).expect("encodes")).expect("decodes");
        assert_eq!(again.0, c.0, "a CRC32C does not round-trip");
    }
    for json in
        [serde_json::from_slice::<Timestamp>(data).is_ok(), serde_json::from_slice::<ProtoDuration>(data).is_ok()]
    {
        if json {
            any = Accepted;
        }
    }
    any
}

/// Page tokens and sizes (keyhold-api `page.rs`): the first 8 bytes are `pageSize`, the rest
/// the token.
pub fn page_token(data: &[u8]) -> Outcome {
    let (size, token) = if data.len() >= 8 { data.split_at(8) } else { (&[][..], data) };
    let mut raw = [0u8; 8];
    raw[..size.len()].copy_from_slice(size);
    let Some(token) = text(token) else { return Rejected };
    let req = PageRequest { page_size: i64::from_le_bytes(raw), page_token: token.to_string() };
    let all: Vec<u32> = (0..2500).collect();
    match req.apply(all, "parent=p filter= orderBy=") {
        Ok(page) => {
            assert!(page.items.len() <= MAX_PAGE_SIZE, "a page larger than MAX_PAGE_SIZE");
            assert_eq!(page.total_size, 2500, "totalSize is not the list's size");
            Accepted
        }
        Err(_) => Rejected,
    }
}

/// IAM members, permissions and roles (keyhold-iam), one per line as bindings list them.
pub fn iam_member(data: &[u8]) -> Outcome {
    let Some(s) = text(data) else { return Rejected };
    let mut any = Rejected;
    for line in s.lines() {
        if keyhold_iam::Principal::parse(line).is_ok() {
            any = Accepted;
        }
        if keyhold_iam::member::validate_member(line).is_ok() {
            any = Accepted;
        }
        if keyhold_iam::Permission::parse(line).is_some() || keyhold_iam::role::role(line).is_some() {
            any = Accepted;
        }
    }
    any
}

// ------------------------------------------------------------------------------------------
// keyhold-crypto: ciphertexts and sealed key material
// ------------------------------------------------------------------------------------------

/// A Cloud KMS ciphertext (keyhold-crypto `ciphertext.rs`), both frames. Only a seed opens,
/// to its own plaintext.
pub fn ciphertext(data: &[u8]) -> Outcome {
    use keyhold_crypto::ciphertext as c;
    let version = c::version_of(data);
    if let Ok((v, blob)) = c::backend_blob(data) {
        assert_eq!(c::frame_backend(v, blob), data, "a backend frame does not round-trip");
    }
    match c::decrypt(&corpus::kms_key(), corpus::CRYPTO_KEY, data, corpus::AAD) {
        Ok(plaintext) => {
            assert_eq!(version.ok(), Some(corpus::CIPHERTEXT_VERSION), "opened under another version");
            assert!(
                corpus::PLAINTEXTS.iter().any(|p| plaintext.expose() == *p),
                "a ciphertext the key's holder never made opened"
            );
            Accepted
        }
        Err(_) => Rejected,
    }
}

/// Sealed key material (keyhold-crypto `sealed.rs`) as read from the database.
pub fn sealed_key(data: &[u8]) -> Outcome {
    match keyhold_crypto::sealed::unseal(&corpus::root_key(), data, corpus::SEALED_CONTEXT) {
        Ok(material) => {
            assert_eq!(material.expose(), &corpus::SEALED_MATERIAL, "sealed material opened to something else");
            Accepted
        }
        Err(_) => Rejected,
    }
}

// ------------------------------------------------------------------------------------------
// keyhold-store: export archives
// ------------------------------------------------------------------------------------------

/// An export archive (keyhold-store `archive.rs`), read to its end as `:import` does. A sealed
/// archive (its header names a key) is opened with the test KEK and must hold exactly the
/// corpus's objects when it reads to the end.
pub fn archive(data: &[u8]) -> Outcome {
    use keyhold_store::archive::{ArchiveItem, ArchiveReader, read_header};
    run(async {
        let mut input = data;
        let Ok(header) = read_header(&mut input).await else { return Rejected };
        let sealed = header.kms_key.is_some();
        let kek = sealed.then(|| Arc::new(corpus::archive_kek()));
        let mut reader = ArchiveReader::new(input, &header, kek);
        let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            match reader.next().await {
                Ok(ArchiveItem::Object(o)) => objects.push((o.name, Vec::new())),
                Ok(ArchiveItem::Chunk(c)) => {
                    let last = objects.last_mut().expect("a chunk is read only after its object");
                    last.1.extend_from_slice(c.expose());
                }
                Ok(ArchiveItem::End(_)) => break,
                Err(_) => return Rejected,
            }
        }
        if sealed {
            let expected: Vec<(String, Vec<u8>)> =
                corpus::ARCHIVE_OBJECTS.iter().map(|(n, c)| (n.to_string(), c.concat())).collect();
            assert!(objects == expected, "a sealed archive read to its end with objects its writer never sealed");
        }
        Accepted
    })
}

// ------------------------------------------------------------------------------------------
// keyhold-ekm: wire messages, wrapped blobs, configuration files
// ------------------------------------------------------------------------------------------

/// The external key manager's JSON messages (keyhold-ekm `protocol.rs`), its key IDs and key
/// URIs.
pub fn ekm_protocol(data: &[u8]) -> Outcome {
    use keyhold_ekm::protocol as p;
    let value: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let v = value.as_ref();
    let mut results = vec![
        json_round_trip::<p::WrapRequest>(data, v),
        json_round_trip::<p::UnwrapRequest>(data, v),
        json_round_trip::<p::WrapResponse>(data, v),
        json_round_trip::<p::UnwrapResponse>(data, v),
        json_round_trip::<p::KeyMetadata>(data, v),
        json_round_trip::<p::RequestMetadata>(data, v),
    ];
    if let Some(s) = text(data) {
        let valid = p::is_valid_key_id(s);
        if valid {
            assert!(s.len() <= p::KEY_ID_MAX_LEN, "a key ID longer than KEY_ID_MAX_LEN is valid");
        }
        results.push(if valid { Accepted } else { Rejected });
        if let Ok(uri) = keyhold_ekm::client::ExternalKeyUri::parse(s) {
            let printed = uri.to_string();
            let again = keyhold_ekm::client::ExternalKeyUri::parse(&printed).expect("a printed key URI parses");
            assert_eq!(again.to_string(), printed, "a key URI does not round-trip");
            results.push(Accepted);
        }
    }
    if results.contains(&Accepted) { Accepted } else { Rejected }
}

/// A wrapped blob (keyhold-ekm `blob.rs`), as `:unwrap` receives it. Only a seed opens.
pub fn ekm_blob(data: &[u8]) -> Outcome {
    match keyhold_ekm::blob::unwrap(&corpus::ekm_key(), corpus::EKM_KEY_ID, data, corpus::AAD) {
        Ok(plaintext) => {
            assert!(
                corpus::PLAINTEXTS.iter().any(|p| plaintext.expose() == *p),
                "a blob the key manager never wrapped opened"
            );
            Accepted
        }
        Err(_) => Rejected,
    }
}

/// The key manager's operator files: its tokens file, its policy file, and the KMS's
/// credentials file for it (client-side, read at start and on reload).
pub fn ekm_config(data: &[u8]) -> Outcome {
    let results = [
        outcome(&keyhold_ekm::tokens::Tokens::parse(data)),
        outcome(&keyhold_ekm::policy::Policy::parse(data)),
        outcome(&keyhold_ekm::client::EkmCredentials::parse(data)),
    ];
    if results.contains(&Accepted) { Accepted } else { Rejected }
}

// ------------------------------------------------------------------------------------------
// keyhold-hsm: key references stored beside HSM-backed versions
// ------------------------------------------------------------------------------------------

/// An HSM key reference (keyhold-hsm `key_ref.rs`, a PKCS#11 URI), as read from the database.
pub fn hsm_key_ref(data: &[u8]) -> Outcome {
    let Some(s) = text(data) else { return Rejected };
    match keyhold_hsm::HsmKeyRef::from_str(s) {
        Ok(r) => {
            let printed = r.to_string();
            let again = keyhold_hsm::HsmKeyRef::from_str(&printed).expect("a printed key reference parses");
            assert!(again == r, "a key reference does not round-trip");
            Accepted
        }
        Err(_) => Rejected,
    }
}
