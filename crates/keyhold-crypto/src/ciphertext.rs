//! The ciphertext format of `:encrypt` for `GOOGLE_SYMMETRIC_ENCRYPTION` keys.
//!
//! Cloud KMS ciphertexts are opaque but name the key version that made them, so `:decrypt` needs
//! only the key. Ours, format version 1 (see `docs/formats.md`):
//!
//! ```text
//!  0        1                     9                 21
//!  +--------+---------------------+-----------------+---------------------------+
//!  | 0x01   | key version id, u64 | nonce (12)      | AES-256-GCM ct || tag(16) |
//!  |        | big-endian          |                 |                           |
//!  +--------+---------------------+-----------------+---------------------------+
//! ```
//!
//! The GCM associated data binds the crypto key's full resource name, the version id, and the
//! caller's additional authenticated data, each length-prefixed:
//! `"keyhold/ciphertext/v1" || u32(len(key)) || key || u64(version) || u32(len(aad)) || aad`.
//! A ciphertext moved to another key, relabelled with another version, or opened with other AAD
//! fails to authenticate.
//!
//! Format version 2 is for versions whose material lives elsewhere (HSM, external key manager):
//! `0x02 || u64 version || backend blob`, where the blob is what the HSM or the manager returned
//! for the plaintext under the same associated data as above; its inner format is the backend's
//! (`keyhold-hsm`'s token format, or the manager's wrapped blob, `docs/ekm-protocol.md`).

use crate::Secret;
use crate::aead::{AeadKey, CryptoError, OVERHEAD};

/// Format version byte of ciphertexts of SOFTWARE versions.
pub const FORMAT_V1: u8 = 1;
/// Format version byte of ciphertexts of HSM and EXTERNAL versions (a backend's blob).
pub const FORMAT_BACKEND: u8 = 2;
/// Header bytes before the AEAD output.
pub const HEADER_LEN: usize = 1 + 8;
/// Total bytes a ciphertext adds to its plaintext.
pub const CIPHERTEXT_OVERHEAD: usize = HEADER_LEN + OVERHEAD;

const DOMAIN: &[u8] = b"keyhold/ciphertext/v1";

/// The associated data binding a ciphertext to its crypto key, version and the caller's AAD.
pub fn associated_data(crypto_key: &str, version: u64, aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(DOMAIN.len() + 16 + crypto_key.len() + aad.len());
    ad.extend_from_slice(DOMAIN);
    ad.extend_from_slice(&(crypto_key.len() as u32).to_be_bytes());
    ad.extend_from_slice(crypto_key.as_bytes());
    ad.extend_from_slice(&version.to_be_bytes());
    ad.extend_from_slice(&(aad.len() as u32).to_be_bytes());
    ad.extend_from_slice(aad);
    ad
}

/// Encrypts `plaintext` under `key`, the material of version `version` of `crypto_key` (the
/// crypto key's full resource name).
pub fn encrypt(
    key: &AeadKey,
    crypto_key: &str,
    version: u64,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(CIPHERTEXT_OVERHEAD + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&version.to_be_bytes());
    key.seal_into(plaintext, &associated_data(crypto_key, version, aad), &mut out)?;
    Ok(out)
}

/// The key version id a ciphertext names, read without any key. Malformed input is
/// [`CryptoError::Open`], so callers answer it exactly like a failed decryption.
pub fn version_of(ciphertext: &[u8]) -> Result<u64, CryptoError> {
    let min = match ciphertext.first() {
        Some(&FORMAT_V1) => CIPHERTEXT_OVERHEAD,
        Some(&FORMAT_BACKEND) => HEADER_LEN + 1,
        _ => return Err(CryptoError::Open),
    };
    if ciphertext.len() < min {
        return Err(CryptoError::Open);
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&ciphertext[1..HEADER_LEN]);
    Ok(u64::from_be_bytes(v))
}

/// Decrypts a ciphertext made by [`encrypt`] with the same crypto key name and AAD.
pub fn decrypt(key: &AeadKey, crypto_key: &str, ciphertext: &[u8], aad: &[u8]) -> Result<Secret, CryptoError> {
    let version = version_of(ciphertext)?;
    if ciphertext[0] != FORMAT_V1 {
        return Err(CryptoError::Open);
    }
    key.open(&ciphertext[HEADER_LEN..], &associated_data(crypto_key, version, aad))
}

/// Frames a backend's blob as a format-2 ciphertext of `version`.
pub fn frame_backend(version: u64, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + blob.len());
    out.push(FORMAT_BACKEND);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(blob);
    out
}

/// The backend blob of a format-2 ciphertext, and the version it names.
pub fn backend_blob(ciphertext: &[u8]) -> Result<(u64, &[u8]), CryptoError> {
    let version = version_of(ciphertext)?;
    if ciphertext[0] != FORMAT_BACKEND {
        return Err(CryptoError::Open);
    }
    Ok((version, &ciphertext[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBytes;

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

    #[test]
    fn round_trip_names_version() {
        let k = AeadKey::new(&KeyBytes::generate().unwrap());
        let ct = encrypt(&k, KEY, 7, b"secret", b"aad").unwrap();
        assert_eq!(ct.len(), 6 + CIPHERTEXT_OVERHEAD);
        assert_eq!(version_of(&ct).unwrap(), 7);
        assert_eq!(decrypt(&k, KEY, &ct, b"aad").unwrap().expose(), b"secret");
    }

    #[test]
    fn backend_frames_are_told_apart() {
        let ct = frame_backend(9, b"blob");
        assert_eq!(version_of(&ct).unwrap(), 9);
        assert_eq!(backend_blob(&ct).unwrap(), (9, &b"blob"[..]));
        let k = AeadKey::new(&KeyBytes::generate().unwrap());
        assert!(decrypt(&k, KEY, &ct, b"").is_err(), "a backend frame is not a SOFTWARE ciphertext");
        let sw = encrypt(&k, KEY, 9, b"secret", b"").unwrap();
        assert!(backend_blob(&sw).is_err(), "a SOFTWARE ciphertext is not a backend frame");
        assert!(backend_blob(&frame_backend(9, b"")).is_err(), "an empty blob is malformed");
        assert!(version_of(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 1]).is_err(), "unknown format");
    }

    #[test]
    fn binding_is_checked() {
        let k = AeadKey::new(&KeyBytes::generate().unwrap());
        let ct = encrypt(&k, KEY, 7, b"secret", b"aad").unwrap();
        assert!(decrypt(&k, KEY, &ct, b"aae").is_err(), "other AAD");
        assert!(decrypt(&k, &format!("{KEY}2"), &ct, b"aad").is_err(), "other key name");
        let mut relabelled = ct.clone();
        relabelled[8] = 8;
        assert!(decrypt(&k, KEY, &relabelled, b"aad").is_err(), "other version id");
        let mut bad_format = ct.clone();
        bad_format[0] = 2;
        assert!(decrypt(&k, KEY, &bad_format, b"aad").is_err());
        assert!(version_of(&ct[..CIPHERTEXT_OVERHEAD - 1]).is_err());
    }

    #[test]
    fn empty_plaintext_and_aad() {
        let k = AeadKey::new(&KeyBytes::generate().unwrap());
        let ct = encrypt(&k, KEY, 1, b"", b"").unwrap();
        assert_eq!(ct.len(), CIPHERTEXT_OVERHEAD);
        assert!(decrypt(&k, KEY, &ct, b"").unwrap().is_empty());
    }
}
