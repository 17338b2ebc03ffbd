//! Keyhold's cryptographic primitives and byte formats.
//!
//! Everything here is synchronous and does no I/O, so it can be used from any context and tested
//! byte for byte. The AEAD itself is `ring`'s AES-256-GCM: this crate only decides *what* is
//! sealed, with *which* associated data, and how the result is framed — never how a block is
//! encrypted.
//!
//! * [`secret`]: types for key material and plaintext that zeroize on drop and never print.
//! * [`aead`]: AES-256-GCM with a fresh random nonce per seal.
//! * [`keys`]: the keys that never leave the KMS (signing, RSA-OAEP, HMAC, raw AES) with `aws-lc-rs`, public keys as PEM.
//! * [`ciphertext`]: the versioned ciphertext format of `:encrypt` (it names the key version).
//! * [`import`]: key material wrapped for an import job (RSA-OAEP and AES-KWP), both ways.
//! * [`sealed`]: the format in which the root key seals SOFTWARE key material at rest.
//! * [`crc32c()`]: the integrity checksum Cloud KMS uses on every byte field.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aead;
pub mod ciphertext;
pub mod import;
pub mod keys;
pub mod sealed;
pub mod secret;

// Named only for their `zeroize` feature, which wipes x-wing's hash states (see Cargo.toml).
use {sha3 as _, shake as _};

pub use aead::{AeadKey, CryptoError};
pub use secret::{KeyBytes, Secret, SecretString};

/// CRC32C (Castagnoli) of `data`, as Cloud KMS computes it for its `*Crc32c` fields.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Lower-case hex of `bytes` (fingerprints, hashes, IDs: never secrets).
pub fn hex(bytes: &[u8]) -> String {
    // On the hot path (every audit entry's chain hash): one allocation, no formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Fills `out` from the operating system's CSPRNG.
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(out).map_err(|_| CryptoError::Rng)
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&all), expected);
    }
}
