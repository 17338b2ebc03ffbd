//! AES-256-GCM with a fresh random 96-bit nonce per seal, from `ring`.
//!
//! Output layout of [`AeadKey::seal`]: `nonce (12) || ciphertext || tag (16)`. Random nonces bound
//! the number of seals per key to 2^32 before the collision probability passes 2^-32 (NIST SP
//! 800-38D §8.3); Keyhold keys are rotated long before that in any realistic deployment.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::secret::KeyBytes;

/// Bytes added to a plaintext by [`AeadKey::seal`]: nonce plus tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// Errors of the primitives. Deliberately coarse: an attacker learns nothing from *why* an open
/// failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext is malformed, was tampered with, or was sealed under another key or with
    /// other associated data.
    #[error("authentication failed")]
    Open,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A format header names a version this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
}

/// An AES-256-GCM key ready for use. The expanded key schedule lives inside `ring` (which does
/// not zeroize it); the raw bytes this was made from are wiped by [`KeyBytes`].
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    /// Expands `key` for AES-256-GCM.
    pub fn new(key: &KeyBytes) -> Self {
        // Invariant: KeyBytes is always exactly 32 bytes, the AES-256 key length.
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte AES-256 key");
        Self(LessSafeKey::new(unbound))
    }

    /// Seals `plaintext` with `aad`; returns `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(plaintext, aad, &mut out)?;
        Ok(out)
    }

    /// Appends `nonce || ciphertext || tag` to `out` (lets callers put a header first).
    pub fn seal_into(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random_bytes(&mut nonce)?;
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[start..])
            .map_err(|_| CryptoError::Open)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `nonce || ciphertext || tag` sealed with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<crate::Secret, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut buf = crate::Secret::new(rest.to_vec());
        let len = {
            // The buffer is owned by a Secret, so a failed open still wipes what was decrypted.
            let bytes = secret_vec_mut(&mut buf);
            let pt = self.0.open_in_place(nonce, Aad::from(aad), bytes).map_err(|_| CryptoError::Open)?;
            pt.len()
        };
        truncate_secret(&mut buf, len);
        Ok(buf)
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey([redacted])")
    }
}

fn secret_vec_mut(s: &mut crate::Secret) -> &mut [u8] {
    crate::secret::as_mut_slice(s)
}

fn truncate_secret(s: &mut crate::Secret, len: usize) {
    crate::secret::truncate(s, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AeadKey {
        AeadKey::new(&KeyBytes::generate().unwrap())
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let k = key();
        let a = k.seal(b"hello", b"ad").unwrap();
        let b = k.seal(b"hello", b"ad").unwrap();
        assert_ne!(a, b, "two seals of the same plaintext must differ (fresh nonce)");
        assert_eq!(a.len(), 5 + OVERHEAD);
        assert_eq!(k.open(&a, b"ad").unwrap().expose(), b"hello");
    }

    #[test]
    fn any_flipped_byte_fails() {
        let k = key();
        let ct = k.seal(b"some plaintext", b"ad").unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.open(&bad, b"ad").unwrap_err(), CryptoError::Open, "byte {i}");
        }
        assert!(k.open(&ct, b"other").is_err());
        assert!(key().open(&ct, b"ad").is_err());
        assert!(k.open(&ct[..ct.len() - 1], b"ad").is_err());
        assert!(k.open(&[], b"ad").is_err());
    }
}
