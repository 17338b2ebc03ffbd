//! The wrapped blob: what `:wrap` returns and `:unwrap` takes back.
//!
//! Format version 1 (`docs/ekm-protocol.md`, "Wrapped blob"):
//!
//! ```text
//!  +--------+-------------+----------------------------------------------+
//!  | 0x01   | nonce (12)  | AES-256-GCM(key, plaintext) || tag (16)      |
//!  +--------+-------------+----------------------------------------------+
//!  associated data: "keyhold-ekm/wrap/v1" || u32be(len(keyId)) || keyId || request AAD
//! ```
//!
//! The key ID is bound into the associated data, so a blob presented to another key of the same
//! manager does not open even if someone copied key material; the caller's AAD is bound too, so
//! unwrap needs the AAD given to wrap. The nonce is fresh and random for every wrap
//! (`keyhold_crypto::AeadKey`); the version byte lets a later format coexist with this one.

use keyhold_crypto::{AeadKey, CryptoError, Secret};

/// Format version of blobs made by [`wrap`].
pub const FORMAT_V1: u8 = 1;
/// Bytes a blob adds to its plaintext: version byte, nonce and tag.
pub const OVERHEAD: usize = 1 + keyhold_crypto::aead::OVERHEAD;
const DOMAIN: &[u8] = b"keyhold-ekm/wrap/v1";

fn associated_data(key_id: &str, aad: &[u8]) -> Vec<u8> {
    let id = key_id.as_bytes();
    // Key IDs are at most 128 bytes, so the length always fits.
    let len = u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut out = Vec::with_capacity(DOMAIN.len() + 4 + id.len() + aad.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&len);
    out.extend_from_slice(id);
    out.extend_from_slice(aad);
    out
}

/// Wraps `plaintext` under `key`, the material of key `key_id`, bound to `aad`.
pub fn wrap(key: &AeadKey, key_id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(FORMAT_V1);
    key.seal_into(plaintext, &associated_data(key_id, aad), &mut out)?;
    Ok(out)
}

/// Opens a blob [`wrap`] made with the same key, key ID and AAD. Every failure (wrong key, wrong
/// AAD, tampering, truncation) is the same [`CryptoError::Open`], except a version byte this
/// build does not know.
pub fn unwrap(key: &AeadKey, key_id: &str, blob: &[u8], aad: &[u8]) -> Result<Secret, CryptoError> {
    match blob.first() {
        Some(&FORMAT_V1) => key.open(&blob[1..], &associated_data(key_id, aad)),
        Some(&v) => Err(CryptoError::UnknownVersion(v)),
        None => Err(CryptoError::Open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_crypto::KeyBytes;

    #[test]
    fn round_trip_and_bindings() {
        let k = AeadKey::new(&KeyBytes::generate().unwrap());
        let b = wrap(&k, "k1", b"data key", b"aad").unwrap();
        assert_eq!(b.len(), 8 + OVERHEAD);
        assert_eq!(b[0], FORMAT_V1);
        assert_eq!(unwrap(&k, "k1", &b, b"aad").unwrap().expose(), b"data key");
        assert_ne!(wrap(&k, "k1", b"data key", b"aad").unwrap(), b, "fresh nonce per wrap");
        assert_eq!(unwrap(&k, "k2", &b, b"aad").unwrap_err(), CryptoError::Open, "key ID is bound");
        assert_eq!(unwrap(&k, "k1", &b, b"aae").unwrap_err(), CryptoError::Open, "AAD is bound");
        assert_eq!(unwrap(&k, "k1", &b, b"").unwrap_err(), CryptoError::Open);
        let other = AeadKey::new(&KeyBytes::generate().unwrap());
        assert_eq!(unwrap(&other, "k1", &b, b"aad").unwrap_err(), CryptoError::Open);
        for i in 1..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x80;
            assert_eq!(unwrap(&k, "k1", &t, b"aad").unwrap_err(), CryptoError::Open, "byte {i}");
        }
        let mut v = b.clone();
        v[0] = 2;
        assert_eq!(unwrap(&k, "k1", &v, b"aad").unwrap_err(), CryptoError::UnknownVersion(2));
        assert_eq!(unwrap(&k, "k1", &[], b"aad").unwrap_err(), CryptoError::Open);
        assert_eq!(unwrap(&k, "k1", &b[..5], b"aad").unwrap_err(), CryptoError::Open);
    }

    #[test]
    fn key_id_and_aad_do_not_run_together() {
        // ("ab", "c...") and ("a", "bc...") must give different associated data.
        assert_ne!(associated_data("ab", b"c"), associated_data("a", b"bc"));
    }
}
