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

/// The first byte of an envelope (format 2): private material of any length.
pub const ENVELOPE_V2: u8 = 2;
const ENVELOPE_DOMAIN: &[u8] = b"keyhold/sealed-private-key/v1";

/// The root key's context for the data key of an envelope: never the version's own name, so a
/// data key lifted out of an envelope does not open as a version's symmetric material.
pub fn envelope_key_context(context: &str) -> String {
    format!("{context}#private-key")
}

/// Seals private material of any length (a PKCS#8 key, an HMAC key) as an envelope, format 2:
/// `0x02 | u16 len(S) | S | nonce | AES-256-GCM(data key, material) || tag`, where `S` is the
/// data key sealed by the root key for [`envelope_key_context`] (any [`seal`]-like format the
/// root key makes: a local root key's format 1, or an HSM's blob). The associated data of the
/// material is `"keyhold/sealed-private-key/v1" || context`.
pub fn seal_envelope(
    data_key: &KeyBytes,
    sealed_data_key: &[u8],
    material: &[u8],
    context: &str,
) -> Result<Vec<u8>, CryptoError> {
    let len = u16::try_from(sealed_data_key.len()).map_err(|_| CryptoError::Open)?;
    let mut out = Vec::with_capacity(3 + sealed_data_key.len() + material.len() + crate::aead::OVERHEAD);
    out.push(ENVELOPE_V2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(sealed_data_key);
    AeadKey::new(data_key).seal_into(material, &[ENVELOPE_DOMAIN, context.as_bytes()].concat(), &mut out)?;
    Ok(out)
}

/// The sealed data key of an envelope, for the root key to open; the rest goes to
/// [`open_envelope`].
pub fn envelope_data_key(envelope: &[u8]) -> Result<&[u8], CryptoError> {
    match envelope.first() {
        Some(&ENVELOPE_V2) => {}
        Some(&v) => return Err(CryptoError::UnknownVersion(v)),
        None => return Err(CryptoError::Open),
    }
    let len = envelope.get(1..3).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or(CryptoError::Open)?;
    envelope.get(3..3 + len).ok_or(CryptoError::Open)
}

/// Opens the material of an envelope with its data key (opened by the root key).
pub fn open_envelope(data_key: &KeyBytes, envelope: &[u8], context: &str) -> Result<crate::Secret, CryptoError> {
    let sealed_key = envelope_data_key(envelope)?;
    let body = &envelope[3 + sealed_key.len()..];
    AeadKey::new(data_key).open(body, &[ENVELOPE_DOMAIN, context.as_bytes()].concat())
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
    fn envelopes_open_with_their_data_key_and_context_only() {
        let root = AeadKey::new(&KeyBytes::generate().unwrap());
        let dek = KeyBytes::generate().unwrap();
        let ctx = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
        let sealed_dek = seal(&root, &dek, &envelope_key_context(ctx)).unwrap();
        let material = vec![0x5a; 1217];
        let env = seal_envelope(&dek, &sealed_dek, &material, ctx).unwrap();
        assert_eq!(env[0], 2);
        assert!(!env.windows(32).any(|w| w == &material[..32]), "material must not appear in the envelope");
        let inner = envelope_data_key(&env).unwrap();
        assert_eq!(inner, sealed_dek.as_slice());
        let opened_dek = unseal(&root, inner, &envelope_key_context(ctx)).unwrap();
        assert_eq!(open_envelope(&opened_dek, &env, ctx).unwrap().expose(), material.as_slice());
        assert!(open_envelope(&opened_dek, &env, "another/version").is_err());
        assert!(unseal(&root, inner, ctx).is_err(), "the data key is not the version's symmetric material");
        let mut bad = env.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open_envelope(&opened_dek, &bad, ctx).is_err());
        for truncated in [&env[..0], &env[..2], &env[..10]] {
            assert!(envelope_data_key(truncated).is_err() || open_envelope(&opened_dek, truncated, ctx).is_err());
        }
        assert_eq!(envelope_data_key(&[1, 0, 0]).unwrap_err(), CryptoError::UnknownVersion(1));
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
