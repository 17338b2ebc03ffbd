//! Envelope encryption ([C3]): chunk DEK → resource KEK → customer key.
//!
//! Formats (version 1, documented in `docs/formats.md`):
//!
//! * **Chunk identity** (associated data of both seals below), length-prefixed so no two
//!   identities encode alike: `"keyhold-chunk-v1" || u32be(len) resource || u32be(len) object ||
//!   u64be generation || u64be index || u8 last`. A chunk sealed for one place opens nowhere
//!   else: not in another resource, object, upload (generation) or position, and a chunk that
//!   was not the last cannot pass for the last one (so truncation is detected).
//! * **Sealed chunk**: `0x01 || nonce(12) || AES-256-GCM(DEK, data, aad = identity) || tag(16)`,
//!   with a fresh random DEK per chunk.
//! * **Wrapped DEK**: `0x01 || nonce(12) || AES-256-GCM(KEK, DEK, aad = "dek" || identity) ||
//!   tag(16)` (61 bytes).
//! * **Wrapped KEK**: whatever the KMS's `:encrypt` returned for the 32 KEK bytes, with
//!   associated data `"keyhold-kek-v1" || u32be(len) resource`, stored beside the name of the key
//!   version that wrapped it.

use keyhold_crypto::{AeadKey, CryptoError, KeyBytes, Secret};

/// Largest chunk of customer data sealed under one DEK.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Bytes a sealed chunk adds to its data.
pub const CHUNK_OVERHEAD: usize = 1 + keyhold_crypto::aead::OVERHEAD;
const FORMAT_V1: u8 = 1;

/// Why a chunk or key cannot be opened. Deliberately coarse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Tampered with, truncated, moved, or sealed under another key.
    #[error("a stored chunk failed authentication (tampered with, moved or truncated)")]
    Corrupt,
    /// A format version this build does not know.
    #[error("unknown envelope format version {0}")]
    UnknownVersion(u8),
    /// The system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

impl From<CryptoError> for EnvelopeError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Rng => EnvelopeError::Rng,
            CryptoError::UnknownVersion(v) => EnvelopeError::UnknownVersion(v),
            _ => EnvelopeError::Corrupt,
        }
    }
}

/// A resource's key-encryption key, unwrapped. Wiped on drop; prints `[redacted]`.
pub struct Kek {
    bytes: KeyBytes,
    aead: AeadKey,
}

impl Kek {
    /// A fresh random KEK.
    pub fn generate() -> Result<Self, EnvelopeError> {
        Ok(Self::from_bytes(KeyBytes::generate()?))
    }

    /// A KEK from its 32 bytes (as unwrapped by the KMS).
    pub fn from_bytes(bytes: KeyBytes) -> Self {
        let aead = AeadKey::new(&bytes);
        Self { bytes, aead }
    }

    /// A KEK from an unwrapped secret; fails unless it is exactly 32 bytes.
    pub fn from_secret(secret: &Secret) -> Result<Self, EnvelopeError> {
        KeyBytes::from_slice(secret.expose()).map(Self::from_bytes).ok_or(EnvelopeError::Corrupt)
    }

    /// The raw bytes, to hand to the KMS for wrapping.
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose()
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

/// A KEK as stored: wrapped by the customer's key (or, for service-managed encryption, by the
/// service's own key), with the key version that wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKek {
    /// The wrapped bytes.
    pub ciphertext: Vec<u8>,
    /// `.../cryptoKeyVersions/N` for CMEK; `None` for service-managed encryption.
    pub key_version: Option<String>,
}

impl std::fmt::Debug for WrappedKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedKek({} bytes, {:?})", self.ciphertext.len(), self.key_version)
    }
}

/// The associated data binding a wrapped KEK to its resource.
pub fn kek_aad(resource: &str) -> Vec<u8> {
    let mut aad = b"keyhold-kek-v1".to_vec();
    push_str(&mut aad, resource);
    aad
}

/// Where a chunk belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkId<'a> {
    /// The protected resource (`projects/P/locations/L/instances/I`).
    pub resource: &'a str,
    /// The object within it.
    pub object: &'a str,
    /// The upload the chunk belongs to: a fresh number for every write of the object.
    pub generation: u64,
    /// Position from 0.
    pub index: u64,
    /// Whether this is the object's last chunk.
    pub last: bool,
}

impl ChunkId<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(48 + self.resource.len() + self.object.len());
        aad.extend_from_slice(b"keyhold-chunk-v1");
        push_str(&mut aad, self.resource);
        push_str(&mut aad, self.object);
        aad.extend_from_slice(&self.generation.to_be_bytes());
        aad.extend_from_slice(&self.index.to_be_bytes());
        aad.push(u8::from(self.last));
        aad
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Names are far below 4 GiB; saturate rather than panic on absurd input.
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A chunk as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedChunk {
    /// The chunk's DEK, sealed by the KEK.
    pub wrapped_dek: Vec<u8>,
    /// The chunk's data, sealed by the DEK.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedChunk({} bytes)", self.ciphertext.len())
    }
}

fn versioned(body: &[u8]) -> Result<&[u8], EnvelopeError> {
    match body.split_first() {
        Some((&FORMAT_V1, rest)) => Ok(rest),
        Some((&v, _)) => Err(EnvelopeError::UnknownVersion(v)),
        None => Err(EnvelopeError::Corrupt),
    }
}

/// Seals `data` (at most [`CHUNK_SIZE`] bytes) under a fresh DEK, itself sealed by `kek`.
pub fn seal_chunk(kek: &Kek, id: &ChunkId<'_>, data: &[u8]) -> Result<SealedChunk, EnvelopeError> {
    let aad = id.aad();
    let dek = KeyBytes::generate()?;
    let mut ciphertext = Vec::with_capacity(data.len() + CHUNK_OVERHEAD);
    ciphertext.push(FORMAT_V1);
    AeadKey::new(&dek).seal_into(data, &aad, &mut ciphertext)?;
    let mut dek_aad = b"dek".to_vec();
    dek_aad.extend_from_slice(&aad);
    let mut wrapped_dek = vec![FORMAT_V1];
    kek.aead.seal_into(dek.expose(), &dek_aad, &mut wrapped_dek)?;
    Ok(SealedChunk { wrapped_dek, ciphertext })
}

/// Opens a chunk sealed by [`seal_chunk`] for exactly this identity.
pub fn open_chunk(kek: &Kek, id: &ChunkId<'_>, chunk: &SealedChunk) -> Result<Secret, EnvelopeError> {
    let aad = id.aad();
    let mut dek_aad = b"dek".to_vec();
    dek_aad.extend_from_slice(&aad);
    let dek = kek.aead.open(versioned(&chunk.wrapped_dek)?, &dek_aad)?;
    let dek = KeyBytes::from_slice(dek.expose()).ok_or(EnvelopeError::Corrupt)?;
    Ok(AeadKey::new(&dek).open(versioned(&chunk.ciphertext)?, &aad)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64, last: bool) -> ChunkId<'static> {
        ChunkId { resource: "projects/p/locations/l/instances/i", object: "a/b", generation: 7, index, last }
    }

    #[test]
    fn round_trip() {
        let kek = Kek::generate().unwrap();
        let c = seal_chunk(&kek, &id(0, true), b"customer data").unwrap();
        assert_eq!(c.ciphertext.len(), 13 + CHUNK_OVERHEAD);
        assert_eq!(c.wrapped_dek.len(), 61);
        assert!(!c.ciphertext.windows(8).any(|w| w == b"customer"));
        assert_eq!(open_chunk(&kek, &id(0, true), &c).unwrap().expose(), b"customer data");
    }

    #[test]
    fn tampering_moving_and_truncation_are_detected() {
        let kek = Kek::generate().unwrap();
        let c = seal_chunk(&kek, &id(1, false), b"chunk one").unwrap();
        for i in 0..c.ciphertext.len() {
            let mut bad = c.clone();
            bad.ciphertext[i] ^= 1;
            assert!(open_chunk(&kek, &id(1, false), &bad).is_err(), "flipped byte {i}");
        }
        let mut bad = c.clone();
        bad.wrapped_dek[20] ^= 1;
        assert_eq!(open_chunk(&kek, &id(1, false), &bad).unwrap_err(), EnvelopeError::Corrupt);
        // Another position, another upload, another object, another resource, or "last".
        assert!(open_chunk(&kek, &id(2, false), &c).is_err());
        assert!(open_chunk(&kek, &id(1, true), &c).is_err());
        assert!(open_chunk(&kek, &ChunkId { generation: 8, ..id(1, false) }, &c).is_err());
        assert!(open_chunk(&kek, &ChunkId { object: "a/c", ..id(1, false) }, &c).is_err());
        assert!(
            open_chunk(&kek, &ChunkId { resource: "projects/p/locations/l/instances/j", ..id(1, false) }, &c).is_err()
        );
        assert!(open_chunk(&Kek::generate().unwrap(), &id(1, false), &c).is_err());
        // Length prefixes: ("ab","c") and ("a","bc") differ.
        let a = ChunkId { resource: "ab", object: "c", generation: 0, index: 0, last: true };
        let b = ChunkId { resource: "a", object: "bc", generation: 0, index: 0, last: true };
        assert_ne!(a.aad(), b.aad());
        let mut v2 = c.clone();
        v2.ciphertext[0] = 2;
        assert_eq!(open_chunk(&kek, &id(1, false), &v2).unwrap_err(), EnvelopeError::UnknownVersion(2));
    }

    #[test]
    fn secrets_do_not_print() {
        let kek = Kek::generate().unwrap();
        assert_eq!(format!("{kek:?}"), "Kek([redacted])");
    }
}
