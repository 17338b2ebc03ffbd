//! How SOFTWARE key material is stored at rest: sealed by the KMS root key.
//!
//! Format version 1 (see `docs/formats.md`):
//!
//! ```text
//!  +--------+-------------+-----------------------------------------+
//!  | 0x01   | nonce (12)  | AES-256-GCM(root key, material) || tag  |
//!  +--------+-------------+-----------------------------------------+
//!  associated data: "keyhold/sealed-key/v1" || context
//! ```
//!
//! `context` is the full resource name of the key version the material belongs to, so a sealed
//! blob copied onto another version's row does not open.

use crate::aead::{AeadKey, CryptoError};
use crate::secret::KeyBytes;

const FORMAT_V1: u8 = 1;
const DOMAIN: &[u8] = b"keyhold/sealed-key/v1";
const FINGERPRINT_LABEL: &[u8] = b"keyhold/root-key-fingerprint/v1";

fn associated_data(context: &str) -> Vec<u8> {
    [DOMAIN, context.as_bytes()].concat()
}

/// Seals `material` under `root` for the key version named `context`.
pub fn seal(root: &AeadKey, material: &KeyBytes, context: &str) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![FORMAT_V1];
    root.seal_into(material.expose(), &associated_data(context), &mut out)?;
    Ok(out)
}

/// Opens what [`seal`] produced for the same `context`.
pub fn unseal(root: &AeadKey, sealed: &[u8], context: &str) -> Result<KeyBytes, CryptoError> {
    match sealed.first() {
        Some(&FORMAT_V1) => {}
        Some(&v) => return Err(CryptoError::UnknownVersion(v)),
        None => return Err(CryptoError::Open),
    }
    let opened = root.open(&sealed[1..], &associated_data(context))?;
    KeyBytes::from_slice(opened.expose()).ok_or(CryptoError::Open)
}

/// A public, stable identifier of a root key (HMAC-SHA256 of a fixed label, first 16 bytes, hex).
/// Stored beside the data so a server started with the wrong root key refuses to run instead of
/// failing on every decrypt.
pub fn fingerprint(root: &KeyBytes) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, root.expose());
    let tag = ring::hmac::sign(&k, FINGERPRINT_LABEL);
    crate::hex(&tag.as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_unseal_bound_to_context() {
        let root_bytes = KeyBytes::generate().unwrap();
        let root = AeadKey::new(&root_bytes);
        let m = KeyBytes::generate().unwrap();
        let s = seal(&root, &m, "v/1").unwrap();
        assert_eq!(s.len(), 1 + 12 + 32 + 16);
        assert!(!s.windows(32).any(|w| w == m.expose()), "material must not appear in the sealed blob");
        assert_eq!(unseal(&root, &s, "v/1").unwrap().expose(), m.expose());
        assert!(unseal(&root, &s, "v/2").is_err());
        let other = AeadKey::new(&KeyBytes::generate().unwrap());
        assert!(unseal(&other, &s, "v/1").is_err());
        let mut future = s.clone();
        future[0] = 9;
        assert_eq!(unseal(&root, &future, "v/1").unwrap_err(), CryptoError::UnknownVersion(9));
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = KeyBytes::from_slice(&[1; 32]).unwrap();
        let b = KeyBytes::from_slice(&[2; 32]).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 32);
    }
}
