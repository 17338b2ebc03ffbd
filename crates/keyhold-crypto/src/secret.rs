//! Secret-holding types. They zeroize their bytes on drop, have no `PartialEq` (compare with
//! [`Secret::ct_eq`]), and their `Debug` prints `[redacted]`, so a secret cannot reach a log line
//! through `{:?}` by accident.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A variable-length secret: plaintext handed to or returned by the KMS, an unwrapped key, a
/// token. The bytes are wiped when the value is dropped.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Zeroize for Secret {
    fn zeroize(&mut self) {
        wipe_allocation(&mut self.0);
        self.0.clear();
    }
}

/// Wipes every byte of `v`'s allocation, spare capacity included (what a `truncate` or an
/// in-place decryption left past the end), and leaves the wiped bytes in view: afterwards
/// `v.len()` is its capacity and every byte is zero. Bytes past `len` cannot be read without
/// `unsafe`, so the spare capacity is first brought inside `len` (no reallocation: the length
/// only grows up to the capacity); that is what lets a test see the wipe, where one checking
/// `is_empty()` after `clear()` passed even if nothing was wiped (hardening, issue 15).
///
/// Through the slice impl, which writes and then fences the compiler. `Vec<u8>`'s own impl
/// wipes byte by byte with volatile writes: on a 1 MiB chunk that cost more than the AES-GCM
/// that decrypted it (docs/benchmarks.md).
fn wipe_allocation(v: &mut Vec<u8>) {
    v.resize(v.capacity(), 0);
    v.as_mut_slice().zeroize();
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Secret {}

impl Secret {
    /// Takes ownership of `bytes`; they are wiped when the `Secret` is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes. Callers must not copy them into types that outlive the request.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, to be filled in place (a buffer a library decrypts into).
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Shortens the secret to `len` bytes, wiping the bytes cut off first.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality, for tokens and tags.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret text: a bearer token, a PIN. Wiped on drop; prints as `[redacted]`.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of `s`; it is wiped when the value is dropped.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A 256-bit symmetric key (AES-256). Wiped on drop; prints as `[redacted]`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyBytes([u8; 32]);

impl KeyBytes {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, crate::CryptoError> {
        let mut k = [0u8; 32];
        crate::random_bytes(&mut k)?;
        Ok(Self(k))
    }

    /// Wraps existing key bytes; `None` unless exactly 32 bytes are given.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Mutable access for in-place decryption inside this crate only.
pub(crate) fn as_mut_slice(s: &mut Secret) -> &mut [u8] {
    &mut s.0
}

/// Shortens a secret in place, wiping the cut-off tail first.
pub(crate) fn truncate(s: &mut Secret, len: usize) {
    if len < s.0.len() {
        s.0[len..].zeroize();
        s.0.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails if the wipe skips the live bytes (they stay 0x41) or the spare capacity (the
    /// length stays short of the capacity), or reallocates.
    #[test]
    fn wipe_zeroes_every_byte_of_the_allocation() {
        let mut v = vec![0x41u8; 64];
        v.truncate(14); // bytes 14..64 still hold 0x41, past the end
        let before = v.as_ptr();
        wipe_allocation(&mut v);
        assert_eq!(v.as_ptr(), before, "the same allocation was wiped, not a new one");
        assert_eq!(v.len(), 64, "the spare capacity was wiped too");
        assert!(v.iter().all(|b| *b == 0), "{v:?}");
    }

    #[test]
    fn zeroize_empties_in_place() {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(b"attack at dawn");
        let mut s = Secret::new(bytes);
        s.zeroize();
        assert!(s.is_empty());
        // The allocation is kept, so nothing was freed (and left behind) before being wiped.
        assert_eq!(s.0.capacity(), 64);
    }

    #[test]
    fn debug_never_shows_bytes() {
        let s = Secret::new(b"attack at dawn".to_vec());
        let k = KeyBytes::from_slice(&[0x41; 32]).unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert!(!format!("{s:?} {k:?}").contains("attack"));
        assert!(!format!("{k:?}").contains("AAAA"));
    }

    #[test]
    fn key_from_slice_checks_length() {
        assert!(KeyBytes::from_slice(&[0; 31]).is_none());
        assert!(KeyBytes::from_slice(&[0; 33]).is_none());
        assert!(KeyBytes::from_slice(&[0; 32]).is_some());
    }

    #[test]
    fn ct_eq_compares() {
        let s = Secret::new(b"token".to_vec());
        assert!(s.ct_eq(b"token"));
        assert!(!s.ct_eq(b"tokem"));
        assert!(!s.ct_eq(b"toke"));
    }
}
