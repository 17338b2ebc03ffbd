//! The keys that never leave the KMS, other than `:encrypt`'s: what `asymmetricSign`,
//! `asymmetricDecrypt`, `getPublicKey`, `macSign`, `macVerify`, `rawEncrypt` and `rawDecrypt`
//! compute.
//!
//! The primitives are `aws-lc-rs`'s (AWS-LC, the library behind AWS KMS's own software paths):
//! unlike `ring` it signs a digest the client computed (`Digest::import_less_safe`), and it has
//! HMAC-SHA224 and RSA-OAEP with SHA-1 and SHA-512. This module only chooses the parameters of
//! each algorithm Cloud KMS names and keeps the private material in zeroizing types; it never
//! pads, hashes or encodes a key by hand.
//!
//! SLH-DSA (FIPS 205), which AWS-LC here lacks, is RustCrypto's `slh-dsa`, whose signing keys
//! wipe themselves on drop.
//!
//! Private material at rest is PKCS#8 v1 DER (RSA, EC, Ed25519, ML-DSA), FIPS 205's 64-byte
//! private key (SLH-DSA), or the raw HMAC or AES key, held in a [`Secret`];
//! [`KeySpec::generate`] makes it and [`LoadedKey::from_material`] reads it back. AWS-LC frees
//! its own copies of key structures with `OPENSSL_free`, which wipes them.

use std::fmt;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA512_MGF1SHA512, OaepAlgorithm,
    OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, PqdsaKeyPair, PqdsaSigningAlgorithm,
    RsaKeyPair,
};
use aws_lc_rs::{aead, cipher, constant_time, hmac, kem};
use base64::Engine as _;
use slh_dsa::Sha2_128s;
use spki::EncodePublicKey as _;
use zeroize::Zeroizing;

use crate::secret::Secret;

mod ml_dsa_mu;
mod parts;
pub use ml_dsa_mu::MU_LEN;
pub use parts::{PrivateParts, RsaParts};

/// A hash function, as an algorithm names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1 (HMAC and OAEP only).
    Sha1,
    /// SHA-224 (HMAC only).
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// The digest's length in bytes.
    pub fn output_len(self) -> usize {
        self.digest().output_len()
    }

    pub(crate) fn oaep(self) -> Option<&'static OaepAlgorithm> {
        match self {
            Hash::Sha1 => Some(&OAEP_SHA1_MGF1SHA1),
            Hash::Sha256 => Some(&OAEP_SHA256_MGF1SHA256),
            Hash::Sha512 => Some(&OAEP_SHA512_MGF1SHA512),
            Hash::Sha224 | Hash::Sha384 => None,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha224 => &digest::SHA224,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    /// The digest of `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// A digest computed piece by piece (of a file too large to hold).
    pub fn hasher(self) -> Hasher {
        Hasher(digest::Context::new(self.digest()))
    }
}

/// A digest being computed: [`Hasher::update`] with each piece, then [`Hasher::finish`].
pub struct Hasher(digest::Context);

impl Hasher {
    /// Adds the next piece.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

/// An RSA modulus size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaBits {
    /// 2048 bits.
    B2048,
    /// 3072 bits.
    B3072,
    /// 4096 bits.
    B4096,
}

impl RsaBits {
    /// The modulus length in bytes: the length of every signature and OAEP ciphertext.
    pub fn modulus_len(self) -> usize {
        self.size().len()
    }

    fn size(self) -> KeySize {
        match self {
            RsaBits::B2048 => KeySize::Rsa2048,
            RsaBits::B3072 => KeySize::Rsa3072,
            RsaBits::B4096 => KeySize::Rsa4096,
        }
    }
}

/// The length of an AES key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AesBits {
    /// AES-128.
    B128,
    /// AES-256.
    B256,
}

impl AesBits {
    /// The key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            AesBits::B128 => 16,
            AesBits::B256 => 32,
        }
    }
}

/// How raw AES encrypts (Cloud KMS's `RAW_ENCRYPT_DECRYPT` algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AesMode {
    /// GCM: a 12-byte nonce chosen here, a 16-byte tag appended, AAD.
    Gcm,
    /// CBC without padding: a 16-byte IV, the plaintext a multiple of 16 bytes.
    Cbc,
    /// CTR: a 16-byte initial counter block.
    Ctr,
}

impl AesMode {
    /// The length of the IV (GCM: its nonce).
    pub fn iv_len(self) -> usize {
        match self {
            AesMode::Gcm => GCM_NONCE_LEN,
            AesMode::Cbc | AesMode::Ctr => AES_BLOCK_LEN,
        }
    }

    /// The length of the tag appended to the ciphertext (GCM: 16; else none).
    pub fn tag_len(self) -> usize {
        match self {
            AesMode::Gcm => GCM_TAG_LEN,
            AesMode::Cbc | AesMode::Ctr => 0,
        }
    }
}

/// AES's block, and the IV of CBC and CTR.
pub const AES_BLOCK_LEN: usize = 16;
/// The nonce of AES-GCM.
pub const GCM_NONCE_LEN: usize = 12;
/// The tag of AES-GCM.
pub const GCM_TAG_LEN: usize = 16;

/// What `rawEncrypt` made: the ciphertext (with the tag for GCM), and the IV it used.
#[derive(Debug)]
pub struct RawCiphertext {
    /// Ciphertext, followed by the tag for GCM.
    pub ciphertext: Vec<u8>,
    /// The IV (GCM: the nonce) used.
    pub iv: Vec<u8>,
}

/// What a key is and does: one per Cloud KMS algorithm served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// ECDSA on NIST P-256 with SHA-256; DER signatures.
    EcdsaP256Sha256,
    /// ECDSA on NIST P-384 with SHA-384; DER signatures.
    EcdsaP384Sha384,
    /// ECDSA on secp256k1 with SHA-256; DER signatures.
    EcdsaSecp256k1Sha256,
    /// Ed25519 in pure mode: signs the data, never a digest.
    Ed25519,
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    RsaPss(RsaBits, Hash),
    /// RSASSA-PKCS1-v1_5 with a DigestInfo.
    RsaPkcs1(RsaBits, Hash),
    /// PKCS#1 v1.5 type-1 padding of the caller's data, no DigestInfo and no hashing
    /// (`RSA_SIGN_RAW_PKCS1_*`): signed by a token's `CKM_RSA_PKCS` only (AWS-LC has no such
    /// signature), so [`LoadedKey`] refuses to sign with it.
    RsaRawPkcs1(RsaBits),
    /// RSAES-OAEP, MGF1 with the same hash, empty label.
    RsaOaep(RsaBits, Hash),
    /// HMAC; the key is as long as the hash's output.
    Hmac(Hash),
    /// Raw AES (`RAW_ENCRYPT_DECRYPT`).
    Aes(AesBits, AesMode),
    /// ML-KEM (FIPS 203) key encapsulation.
    MlKem(MlKemLevel),
    /// X-Wing key encapsulation (ML-KEM-768 and X25519, draft-connolly-cfrg-xwing-kem-06): a
    /// 32-byte decapsulation key, a 1216-byte public key, 1120-byte ciphertexts.
    XWing,
    /// ML-DSA (FIPS 204) in pure mode, randomized, with an empty context: signs the data.
    MlDsa(MlDsaLevel),
    /// ML-DSA over a caller's μ (Cloud KMS's `*_EXTERNAL_MU`), hedged; `data` is signed as by
    /// [`KeySpec::MlDsa`]. The key is FIPS 204's 32-byte seed.
    MlDsaExternalMu(MlDsaLevel),
    /// SLH-DSA-SHA2-128s (FIPS 205) in pure mode, hedged (a fresh random `opt_rand`), with an
    /// empty context: signs the data.
    SlhDsaSha2S128,
    /// HashSLH-DSA-SHA2-128s with SHA-256 (FIPS 205, 10.2.2), hedged, with an empty context:
    /// signs the SHA-256 digest of the data (the caller's, or computed here). The same key as
    /// [`KeySpec::SlhDsaSha2S128`]'s, with its own public key OID.
    HashSlhDsaSha2S128Sha256,
}

/// A fresh `opt_rand` for hedged SLH-DSA signing (FIPS 205, n bytes).
fn slh_dsa_opt_rand() -> Result<[u8; SLH_DSA_128S_N], KeyError> {
    let mut opt_rand = [0u8; SLH_DSA_128S_N];
    crate::random_bytes(&mut opt_rand).map_err(|_| KeyError::Library("random bytes"))?;
    Ok(opt_rand)
}

/// The DER of SHA-256's OID (2.16.840.1.101.3.4.2.1), as HashSLH-DSA's M' carries it.
const SHA256_OID_DER: [u8; 11] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// The `SubjectPublicKeyInfo` of a HashSLH-DSA-SHA2-128s-with-SHA-256 public key:
/// `id-hash-slh-dsa-sha2-128s-with-sha256` (2.16.840.1.101.3.4.3.35, NIST's registry and
/// RFC 9909), no parameters, the raw 32-byte key.
fn hash_slh_dsa_spki(raw: &[u8]) -> Result<Vec<u8>, der::Error> {
    use der::Encode as _;
    let oid = spki::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.35");
    let info = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifierRef { oid, parameters: None },
        subject_public_key: der::asn1::BitStringRef::from_bytes(raw)?,
    };
    info.to_der()
}

/// The lengths of SLH-DSA-SHA2-128s's private key (`SK.seed || SK.prf || PK.seed || PK.root`)
/// and of each of its seeds (FIPS 205, table 2: n = 16).
const SLH_DSA_128S_KEY_LEN: usize = 64;
const SLH_DSA_128S_N: usize = 16;

/// An ML-DSA parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlDsaLevel {
    /// ML-DSA-44 (security category 2).
    D44,
    /// ML-DSA-65 (security category 3).
    D65,
    /// ML-DSA-87 (security category 5).
    D87,
}

impl MlDsaLevel {
    fn algorithm(self) -> &'static PqdsaSigningAlgorithm {
        match self {
            MlDsaLevel::D44 => &sig::ML_DSA_44_SIGNING,
            MlDsaLevel::D65 => &sig::ML_DSA_65_SIGNING,
            MlDsaLevel::D87 => &sig::ML_DSA_87_SIGNING,
        }
    }
}

/// An ML-KEM parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlKemLevel {
    /// ML-KEM-768.
    K768,
    /// ML-KEM-1024.
    K1024,
}

impl MlKemLevel {
    /// FIPS 203's sizes of the decapsulation key and of the encapsulation (public) key.
    fn key_sizes(self) -> (usize, usize) {
        match self {
            MlKemLevel::K768 => (2400, 1184),
            MlKemLevel::K1024 => (3168, 1568),
        }
    }

    fn algorithm(self) -> &'static kem::Algorithm {
        match self {
            MlKemLevel::K768 => &kem::ML_KEM_768,
            MlKemLevel::K1024 => &kem::ML_KEM_1024,
        }
    }

    /// The DER head of the `SubjectPublicKeyInfo` of a raw ML-KEM public key: SEQUENCE {
    /// SEQUENCE { OID id-alg-ml-kem-768 (2.16.840.1.101.3.4.4.2) or -1024 (.3) }, BIT STRING },
    /// fixed for the key's fixed length (the prefix Google's encapsulation guide shows).
    fn spki_head(self) -> &'static [u8] {
        match self {
            MlKemLevel::K768 => &[
                0x30, 0x82, 0x04, 0xb2, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x02,
                0x03, 0x82, 0x04, 0xa1, 0x00,
            ],
            MlKemLevel::K1024 => &[
                0x30, 0x82, 0x06, 0x32, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x03,
                0x03, 0x82, 0x06, 0x21, 0x00,
            ],
        }
    }
}

/// Why an operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key cannot do this (a MAC key asked to sign, an Ed25519 key given a digest).
    #[error("the key cannot do this")]
    WrongKind,
    /// The digest is not as long as the algorithm's hash.
    #[error("the digest is {actual} bytes; the algorithm's hash makes {expected}")]
    DigestLength {
        /// What the hash makes.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// RSA-OAEP decryption failed: wrong key, wrong length, tampered, other padding.
    #[error("decryption failed")]
    Decrypt,
    /// The input does not fit the algorithm (an IV or a CBC plaintext of the wrong length);
    /// the caller checks these first and says why in Cloud KMS's words.
    #[error("the input does not fit the algorithm: {0}")]
    Input(&'static str),
    /// The stored material does not read as this kind of key.
    #[error("the key material is not a valid {0:?} key")]
    Material(KeySpec),
    /// The library failed to generate, sign or encode.
    #[error("the cryptographic library failed: {0}")]
    Library(&'static str),
}

impl KeySpec {
    /// The hash a digest for this key must come from, or `None` if it signs data only.
    pub fn prehash(self) -> Option<Hash> {
        match self {
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaSecp256k1Sha256 | KeySpec::HashSlhDsaSha2S128Sha256 => {
                Some(Hash::Sha256)
            }
            KeySpec::EcdsaP384Sha384 => Some(Hash::Sha384),
            KeySpec::RsaPss(_, h) | KeySpec::RsaPkcs1(_, h) => Some(h),
            KeySpec::Ed25519
            | KeySpec::MlDsa(_)
            | KeySpec::MlDsaExternalMu(_)
            | KeySpec::SlhDsaSha2S128
            | KeySpec::RsaRawPkcs1(_)
            | KeySpec::RsaOaep(..)
            | KeySpec::Hmac(_)
            | KeySpec::Aes(..)
            | KeySpec::MlKem(_)
            | KeySpec::XWing => None,
        }
    }

    /// Whether this key signs (ECDSA, EdDSA, RSA and ML-DSA signatures).
    pub fn signs(self) -> bool {
        matches!(
            self,
            KeySpec::EcdsaP256Sha256
                | KeySpec::EcdsaP384Sha384
                | KeySpec::EcdsaSecp256k1Sha256
                | KeySpec::Ed25519
                | KeySpec::MlDsa(_)
                | KeySpec::MlDsaExternalMu(_)
                | KeySpec::SlhDsaSha2S128
                | KeySpec::HashSlhDsaSha2S128Sha256
                | KeySpec::RsaPss(..)
                | KeySpec::RsaPkcs1(..)
                | KeySpec::RsaRawPkcs1(_)
        )
    }

    /// Whether this is a post-quantum key, whose public key Cloud KMS gives only in a format the
    /// caller names (`publicKeyFormat`): `NIST_PQC` for the raw FIPS encoding, `XWING_RAW_BYTES`
    /// for X-Wing.
    pub fn post_quantum(self) -> bool {
        matches!(
            self,
            KeySpec::MlKem(_)
                | KeySpec::XWing
                | KeySpec::MlDsa(_)
                | KeySpec::MlDsaExternalMu(_)
                | KeySpec::SlhDsaSha2S128
                | KeySpec::HashSlhDsaSha2S128Sha256
        )
    }

    fn ecdsa(self) -> Option<&'static EcdsaSigningAlgorithm> {
        match self {
            KeySpec::EcdsaP256Sha256 => Some(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
            KeySpec::EcdsaP384Sha384 => Some(&sig::ECDSA_P384_SHA384_ASN1_SIGNING),
            KeySpec::EcdsaSecp256k1Sha256 => Some(&sig::ECDSA_P256K1_SHA256_ASN1_SIGNING),
            _ => None,
        }
    }

    /// New private material for this key: PKCS#8 v1 DER; the raw key of an HMAC or AES key; the
    /// FIPS 205 private key of SLH-DSA; ML-KEM's decapsulation then encapsulation key; X-Wing's
    /// 32-byte seed.
    pub fn generate(self) -> Result<Secret, KeyError> {
        let lib = |what| move |_| KeyError::Library(what);
        let der: Vec<u8> = match self {
            KeySpec::Hmac(h) => return random_key(h.output_len()),
            KeySpec::Aes(bits, _) => return random_key(bits.key_len()),
            // The draft's decapsulation key: 32 random bytes, expanded at each use.
            KeySpec::XWing => return random_key(x_wing::DECAPSULATION_KEY_SIZE),
            // FIPS 204's seed ξ, expanded (ML-DSA.KeyGen_internal) when the key is loaded.
            KeySpec::MlDsaExternalMu(_) => return random_key(ml_dsa_mu::SEED_LEN),
            KeySpec::MlKem(level) => {
                // The decapsulation key, then the encapsulation key: AWS-LC cannot derive the
                // public key of a decapsulation key read back from its bytes.
                let key = kem::DecapsulationKey::generate(level.algorithm()).map_err(lib("ML-KEM generation"))?;
                let private = key.key_bytes().map_err(lib("ML-KEM encoding"))?;
                let public = key.encapsulation_key().and_then(|k| k.key_bytes()).map_err(lib("ML-KEM encoding"))?;
                [private.as_ref(), public.as_ref()].concat()
            }
            KeySpec::MlDsa(level) => {
                let pair = PqdsaKeyPair::generate(level.algorithm()).map_err(lib("ML-DSA generation"))?;
                pair.to_pkcs8v1().map_err(lib("PKCS#8 encoding"))?.as_ref().to_vec()
            }
            KeySpec::SlhDsaSha2S128 | KeySpec::HashSlhDsaSha2S128Sha256 => {
                // FIPS 205's slh_keygen (algorithm 21): three n-byte seeds from the approved
                // generator, then slh_keygen_internal, which computes PK.root.
                let mut seeds = Zeroizing::new([0u8; 3 * SLH_DSA_128S_N]);
                crate::random_bytes(&mut *seeds).map_err(|_| KeyError::Library("random bytes"))?;
                let (sk_seed, rest) = seeds.split_at(SLH_DSA_128S_N);
                let (sk_prf, pk_seed) = rest.split_at(SLH_DSA_128S_N);
                let key = slh_dsa::SigningKey::<Sha2_128s>::slh_keygen_internal(sk_seed, sk_prf, pk_seed);
                let bytes = Zeroizing::new(key.to_bytes());
                return Ok(Secret::new(bytes.to_vec()));
            }
            KeySpec::Ed25519 => {
                let pair = Ed25519KeyPair::generate().map_err(lib("Ed25519 generation"))?;
                let der: Pkcs8V1Der = pair.as_der().map_err(lib("PKCS#8 encoding"))?;
                der.as_ref().to_vec()
            }
            KeySpec::RsaOaep(bits, _) => {
                let key = PrivateDecryptingKey::generate(bits.size()).map_err(lib("RSA generation"))?;
                let der: Pkcs8V1Der = key.as_der().map_err(lib("PKCS#8 encoding"))?;
                der.as_ref().to_vec()
            }
            KeySpec::RsaPss(bits, _) | KeySpec::RsaPkcs1(bits, _) | KeySpec::RsaRawPkcs1(bits) => {
                let pair = RsaKeyPair::generate(bits.size()).map_err(lib("RSA generation"))?;
                let der: Pkcs8V1Der = pair.as_der().map_err(lib("PKCS#8 encoding"))?;
                der.as_ref().to_vec()
            }
            ec => {
                let alg = ec.ecdsa().ok_or(KeyError::WrongKind)?;
                let pair = EcdsaKeyPair::generate(alg).map_err(lib("EC generation"))?;
                pair.to_pkcs8v1().map_err(lib("PKCS#8 encoding"))?.as_ref().to_vec()
            }
        };
        Ok(Secret::new(der))
    }
}

fn random_key(len: usize) -> Result<Secret, KeyError> {
    let mut key = Secret::new(vec![0u8; len]);
    crate::random_bytes(key.expose_mut()).map_err(|_| KeyError::Library("random bytes"))?;
    Ok(key)
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    MlDsa(PqdsaKeyPair),
    /// Wipes its seeds on drop (`slh-dsa`'s `zeroize` feature). Its `Debug` prints the seeds:
    /// never format it (`Inner` has no `Debug`; `LoadedKey`'s prints `[redacted]`).
    SlhDsa(Box<slh_dsa::SigningKey<Sha2_128s>>),
    RsaSign(RsaKeyPair),
    /// The decrypting key, and its public key's DER (the OAEP wrapper does not give it back).
    RsaOaep(OaepPrivateDecryptingKey, Vec<u8>),
    Hmac(Box<hmac::Key>),
    /// The raw AES key: the library's keys are made per call from it.
    Aes(Secret),
    /// An ML-DSA key that signs a caller's μ.
    MlDsaMu(ml_dsa_mu::MuSigningKey),
    /// An ML-KEM decapsulation key, and its encapsulation key's raw bytes.
    MlKem(kem::DecapsulationKey, Vec<u8>),
    /// An X-Wing decapsulation key; wipes its seed on drop (`x-wing`'s `zeroize` feature), and
    /// prints only its public key.
    XWing(Box<x_wing::DecapsulationKey>),
}

/// A private (or MAC) key ready for use, parsed once from its material. Prints as `[redacted]`.
pub struct LoadedKey {
    spec: KeySpec,
    inner: Inner,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedKey({:?}, [redacted])", self.spec)
    }
}

impl LoadedKey {
    /// Reads material made by [`KeySpec::generate`] (or imported in the same form).
    pub fn from_material(spec: KeySpec, material: &Secret) -> Result<Self, KeyError> {
        let bytes = material.expose();
        let bad = |_| KeyError::Material(spec);
        let inner = match spec {
            KeySpec::Hmac(h) => {
                if bytes.is_empty() {
                    return Err(KeyError::Material(spec));
                }
                let alg = match h {
                    Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                    Hash::Sha224 => hmac::HMAC_SHA224,
                    Hash::Sha256 => hmac::HMAC_SHA256,
                    Hash::Sha384 => hmac::HMAC_SHA384,
                    Hash::Sha512 => hmac::HMAC_SHA512,
                };
                Inner::Hmac(Box::new(hmac::Key::new(alg, bytes)))
            }
            KeySpec::Aes(bits, _) => {
                if bytes.len() != bits.key_len() {
                    return Err(KeyError::Material(spec));
                }
                Inner::Aes(Secret::new(bytes.to_vec()))
            }
            KeySpec::MlKem(level) => {
                let (private_len, public_len) = level.key_sizes();
                if bytes.len() != private_len + public_len {
                    return Err(KeyError::Material(spec));
                }
                let (private, public) = bytes.split_at(private_len);
                let key = kem::DecapsulationKey::new(level.algorithm(), private).map_err(bad)?;
                kem::EncapsulationKey::new(level.algorithm(), public).map_err(bad)?;
                Inner::MlKem(key, public.to_vec())
            }
            KeySpec::XWing => {
                // Borrowed in place: no copy of the seed is left behind here.
                let seed: &x_wing::Key<x_wing::DecapsulationKey> =
                    bytes.try_into().map_err(|_| KeyError::Material(spec))?;
                Inner::XWing(Box::new(<x_wing::DecapsulationKey as x_wing::KeyInit>::new(seed)))
            }
            KeySpec::Ed25519 => Inner::Ed25519(Ed25519KeyPair::from_pkcs8(bytes).map_err(bad)?),
            KeySpec::MlDsa(level) => Inner::MlDsa(PqdsaKeyPair::from_pkcs8(level.algorithm(), bytes).map_err(bad)?),
            KeySpec::MlDsaExternalMu(level) => {
                Inner::MlDsaMu(ml_dsa_mu::MuSigningKey::from_seed(level, bytes).ok_or(KeyError::Material(spec))?)
            }
            KeySpec::SlhDsaSha2S128 | KeySpec::HashSlhDsaSha2S128Sha256 => {
                if bytes.len() != SLH_DSA_128S_KEY_LEN {
                    return Err(KeyError::Material(spec));
                }
                Inner::SlhDsa(Box::new(slh_dsa::SigningKey::try_from(bytes).map_err(|_| KeyError::Material(spec))?))
            }
            KeySpec::RsaOaep(bits, _) => {
                let key = PrivateDecryptingKey::from_pkcs8(bytes).map_err(bad)?;
                if key.key_size_bits() != bits.size().len() * 8 {
                    return Err(KeyError::Material(spec));
                }
                let public: PublicKeyX509Der =
                    key.public_key().as_der().map_err(|_| KeyError::Library("public key encoding"))?;
                let public = public.as_ref().to_vec();
                Inner::RsaOaep(OaepPrivateDecryptingKey::new(key).map_err(|_| KeyError::Material(spec))?, public)
            }
            KeySpec::RsaPss(bits, _) | KeySpec::RsaPkcs1(bits, _) | KeySpec::RsaRawPkcs1(bits) => {
                let pair = RsaKeyPair::from_pkcs8(bytes).map_err(bad)?;
                if pair.public_modulus_len() != bits.size().len() {
                    return Err(KeyError::Material(spec));
                }
                Inner::RsaSign(pair)
            }
            ec => {
                let alg = ec.ecdsa().ok_or(KeyError::WrongKind)?;
                Inner::Ecdsa(EcdsaKeyPair::from_pkcs8(alg, bytes).map_err(bad)?)
            }
        };
        Ok(Self { spec, inner })
    }

    /// What this key is.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The public key as DER `SubjectPublicKeyInfo` (RFC 5280; RFC 8410 for Ed25519; the
    /// `id-ml-dsa-*` and `id-alg-ml-kem-*` OIDs of the IETF LAMPS drafts for ML-DSA and ML-KEM).
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        let lib = |_| KeyError::Library("public key encoding");
        let der: PublicKeyX509Der = match &self.inner {
            Inner::Ecdsa(k) => k.public_key().as_der().map_err(lib)?,
            Inner::Ed25519(k) => k.public_key().as_der().map_err(lib)?,
            Inner::MlDsa(k) => k.public_key().as_der().map_err(lib)?,
            Inner::MlDsaMu(k) => return k.public_key_der(),
            Inner::SlhDsa(k) => {
                let public: &slh_dsa::VerifyingKey<Sha2_128s> = k.as_ref().as_ref();
                let encoding = || KeyError::Library("public key encoding");
                return match self.spec {
                    KeySpec::HashSlhDsaSha2S128Sha256 => hash_slh_dsa_spki(&public.to_vec()).map_err(|_| encoding()),
                    _ => public.to_public_key_der().map(|d| d.into_vec()).map_err(|_| encoding()),
                };
            }
            Inner::RsaSign(k) => k.public_key().as_der().map_err(lib)?,
            Inner::RsaOaep(_, public) => return Ok(public.clone()),
            Inner::MlKem(_, raw) => {
                let KeySpec::MlKem(level) = self.spec else { return Err(KeyError::WrongKind) };
                return Ok([level.spki_head(), raw.as_slice()].concat());
            }
            // X-Wing public keys are given raw (`XWING_RAW_BYTES`) only.
            Inner::Hmac(_) | Inner::Aes(_) | Inner::XWing(_) => return Err(KeyError::WrongKind),
        };
        Ok(der.as_ref().to_vec())
    }

    /// Signs a digest the caller computed with [`KeySpec::prehash`]'s hash, or the μ of an
    /// external-μ ML-DSA key.
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, KeyError> {
        if let Inner::MlDsaMu(k) = &self.inner {
            return k.sign_mu(digest);
        }
        let hash = self.spec.prehash().filter(|_| self.spec.signs()).ok_or(KeyError::WrongKind)?;
        let d = Digest::import_less_safe(digest, hash.digest())
            .map_err(|_| KeyError::DigestLength { expected: hash.output_len(), actual: digest.len() })?;
        match &self.inner {
            Inner::Ecdsa(k) => Ok(k.sign_digest(&d).map_err(|_| KeyError::Library("ECDSA signing"))?.as_ref().to_vec()),
            Inner::RsaSign(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign_digest(rsa_encoding(self.spec)?, &d, &mut out).map_err(|_| KeyError::Library("RSA signing"))?;
                Ok(out)
            }
            Inner::SlhDsa(k) => {
                // FIPS 205, algorithm 23 (hash_slh_sign) with an empty context: slh_sign_internal
                // over M' = 1 || |ctx| || ctx || OID(SHA-256) || PH(M), hedged.
                let opt_rand = slh_dsa_opt_rand()?;
                let prefix = [1u8, 0];
                let signature = k.slh_sign_internal(&[&prefix, &SHA256_OID_DER, d.as_ref()], Some(&opt_rand));
                Ok(signature.to_vec())
            }
            _ => Err(KeyError::WrongKind),
        }
    }

    /// Signs `data`: hashed with the algorithm's hash first, except for Ed25519, ML-DSA and
    /// SLH-DSA, which sign it as it is.
    pub fn sign_data(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        match (&self.inner, self.spec.prehash()) {
            (Inner::Ed25519(k), _) => Ok(k.sign(data).as_ref().to_vec()),
            (Inner::MlDsaMu(k), _) => k.sign_data(data),
            (Inner::MlDsa(k), _) => {
                let mut out = vec![0u8; k.algorithm().signature_len()];
                let len = k.sign(data, &mut out).map_err(|_| KeyError::Library("ML-DSA signing"))?;
                out.truncate(len);
                Ok(out)
            }
            (Inner::SlhDsa(k), None) => {
                let opt_rand = slh_dsa_opt_rand()?;
                let signature = k
                    .try_sign_with_context(data, &[], Some(&opt_rand))
                    .map_err(|_| KeyError::Library("SLH-DSA signing"))?;
                Ok(signature.to_vec())
            }
            (Inner::Ecdsa(_) | Inner::RsaSign(_) | Inner::SlhDsa(_), Some(h)) => self.sign_digest(&h.hash(data)),
            _ => Err(KeyError::WrongKind),
        }
    }

    /// RSA-OAEP decryption (empty label).
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Secret, KeyError> {
        let Inner::RsaOaep(k, _) = &self.inner else { return Err(KeyError::WrongKind) };
        let KeySpec::RsaOaep(_, hash) = self.spec else { return Err(KeyError::WrongKind) };
        let alg = hash.oaep().ok_or(KeyError::WrongKind)?;
        if ciphertext.len() != k.key_size_bytes() {
            return Err(KeyError::Decrypt);
        }
        let mut out = Secret::new(vec![0u8; k.min_output_size()]);
        let len = k.decrypt(alg, ciphertext, out.expose_mut(), None).map_err(|_| KeyError::Decrypt)?.len();
        out.truncate(len);
        Ok(out)
    }

    /// The HMAC tag of `data`.
    pub fn mac(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Inner::Hmac(k) = &self.inner else { return Err(KeyError::WrongKind) };
        Ok(hmac::sign(k, data).as_ref().to_vec())
    }

    /// The public key in its raw encoding, for post-quantum keys only: FIPS 203's encapsulation
    /// key, FIPS 204's or 205's public key, X-Wing's `pk_M || pk_X`.
    pub fn public_key_raw(&self) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::MlKem(_, raw) => Ok(raw.clone()),
            Inner::XWing(k) => {
                use x_wing::{Decapsulator as _, KeyExport as _};
                Ok(k.encapsulation_key().to_bytes().to_vec())
            }
            Inner::MlDsa(k) => Ok(k.public_key().as_ref().to_vec()),
            Inner::MlDsaMu(k) => Ok(k.public_key_raw()),
            Inner::SlhDsa(k) => {
                let public: &slh_dsa::VerifyingKey<Sha2_128s> = k.as_ref().as_ref();
                Ok(public.to_vec())
            }
            _ => Err(KeyError::WrongKind),
        }
    }

    /// ML-KEM or X-Wing decapsulation: the shared secret of `ciphertext`. A ciphertext of the
    /// wrong length is [`KeyError::Decrypt`]; a wrong one of the right length gives another
    /// secret (ML-KEM's implicit rejection), never an error.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Secret, KeyError> {
        match &self.inner {
            Inner::MlKem(key, _) => {
                let secret = key.decapsulate(kem::Ciphertext::from(ciphertext)).map_err(|_| KeyError::Decrypt)?;
                Ok(Secret::new(secret.as_ref().to_vec()))
            }
            Inner::XWing(key) => {
                use x_wing::Decapsulate as _;
                let ct = x_wing::Ciphertext::try_from(ciphertext).map_err(|_| KeyError::Decrypt)?;
                let mut secret = key.decapsulate(&ct);
                let out = Secret::new(secret.to_vec());
                zeroize::Zeroize::zeroize(secret.as_mut_slice());
                Ok(out)
            }
            _ => Err(KeyError::WrongKind),
        }
    }

    /// Raw AES encryption. GCM draws a fresh 12-byte nonce and appends its 16-byte tag, binding
    /// `aad`; CBC (no padding: `plaintext` a multiple of 16 bytes) and CTR take `iv` (16 bytes)
    /// or draw one, and take no `aad`.
    pub fn raw_encrypt(&self, plaintext: &[u8], aad: &[u8], iv: Option<&[u8]>) -> Result<RawCiphertext, KeyError> {
        let (Inner::Aes(key), KeySpec::Aes(bits, mode)) = (&self.inner, self.spec) else {
            return Err(KeyError::WrongKind);
        };
        // A wiping buffer with room for the tag: GCM appends its tag in place, so the buffer never
        // moves (a move would leave a copy of the plaintext behind), and an error wipes it.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + mode.tag_len()));
        buf.extend_from_slice(plaintext);
        match mode {
            AesMode::Gcm => {
                if iv.is_some() {
                    return Err(KeyError::Input("AES-GCM chooses its own nonce"));
                }
                let mut nonce = [0u8; GCM_NONCE_LEN];
                crate::random_bytes(&mut nonce).map_err(|_| KeyError::Library("random bytes"))?;
                gcm_key(bits, key)?
                    .seal_in_place_append_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(aad),
                        &mut *buf,
                    )
                    .map_err(|_| KeyError::Library("AES-GCM"))?;
                Ok(RawCiphertext { ciphertext: std::mem::take(&mut *buf), iv: nonce.to_vec() })
            }
            AesMode::Cbc | AesMode::Ctr => {
                if !aad.is_empty() {
                    return Err(KeyError::Input("AES-CBC and AES-CTR take no additional authenticated data"));
                }
                if mode == AesMode::Cbc && !buf.len().is_multiple_of(AES_BLOCK_LEN) {
                    return Err(KeyError::Input("an AES-CBC plaintext is a multiple of 16 bytes"));
                }
                let iv: [u8; AES_BLOCK_LEN] = match iv {
                    Some(given) => given.try_into().map_err(|_| KeyError::Input("the IV is 16 bytes"))?,
                    None => {
                        let mut fresh = [0u8; AES_BLOCK_LEN];
                        crate::random_bytes(&mut fresh).map_err(|_| KeyError::Library("random bytes"))?;
                        fresh
                    }
                };
                let unbound = cipher_key(bits, key)?;
                let encrypting = match mode {
                    AesMode::Cbc => cipher::EncryptingKey::cbc(unbound),
                    _ => cipher::EncryptingKey::ctr(unbound),
                }
                .map_err(|_| KeyError::Library("AES key"))?;
                encrypting
                    .less_safe_encrypt(&mut buf, cipher::EncryptionContext::Iv128(iv.into()))
                    .map_err(|_| KeyError::Library("AES encryption"))?;
                Ok(RawCiphertext { ciphertext: std::mem::take(&mut *buf), iv: iv.to_vec() })
            }
        }
    }

    /// Raw AES decryption of what [`LoadedKey::raw_encrypt`] (or anyone with the key) made with
    /// `iv` and `aad`. A GCM ciphertext that does not authenticate is [`KeyError::Decrypt`];
    /// CBC and CTR authenticate nothing.
    pub fn raw_decrypt(&self, ciphertext: &[u8], aad: &[u8], iv: &[u8]) -> Result<Secret, KeyError> {
        let (Inner::Aes(key), KeySpec::Aes(bits, mode)) = (&self.inner, self.spec) else {
            return Err(KeyError::WrongKind);
        };
        let mut buf = Secret::new(ciphertext.to_vec());
        match mode {
            AesMode::Gcm => {
                let nonce =
                    aead::Nonce::try_assume_unique_for_key(iv).map_err(|_| KeyError::Input("the nonce is 12 bytes"))?;
                let len = gcm_key(bits, key)?
                    .open_in_place(nonce, aead::Aad::from(aad), buf.expose_mut())
                    .map_err(|_| KeyError::Decrypt)?
                    .len();
                buf.truncate(len);
                Ok(buf)
            }
            AesMode::Cbc | AesMode::Ctr => {
                if !aad.is_empty() {
                    return Err(KeyError::Input("AES-CBC and AES-CTR take no additional authenticated data"));
                }
                let iv: [u8; AES_BLOCK_LEN] = iv.try_into().map_err(|_| KeyError::Input("the IV is 16 bytes"))?;
                if mode == AesMode::Cbc && !ciphertext.len().is_multiple_of(AES_BLOCK_LEN) {
                    return Err(KeyError::Input("an AES-CBC ciphertext is a multiple of 16 bytes"));
                }
                let unbound = cipher_key(bits, key)?;
                let decrypting = match mode {
                    AesMode::Cbc => cipher::DecryptingKey::cbc(unbound),
                    _ => cipher::DecryptingKey::ctr(unbound),
                }
                .map_err(|_| KeyError::Library("AES key"))?;
                decrypting
                    .decrypt(buf.expose_mut(), cipher::DecryptionContext::Iv128(iv.into()))
                    .map_err(|_| KeyError::Decrypt)?;
                Ok(buf)
            }
        }
    }

    /// Whether `tag` is the HMAC tag of `data`, compared in constant time.
    pub fn mac_verify(&self, data: &[u8], tag: &[u8]) -> Result<bool, KeyError> {
        let expected = self.mac(data)?;
        Ok(constant_time::verify_slices_are_equal(&expected, tag).is_ok())
    }
}

fn gcm_key(bits: AesBits, key: &Secret) -> Result<aead::LessSafeKey, KeyError> {
    let alg = match bits {
        AesBits::B128 => &aead::AES_128_GCM,
        AesBits::B256 => &aead::AES_256_GCM,
    };
    Ok(aead::LessSafeKey::new(aead::UnboundKey::new(alg, key.expose()).map_err(|_| KeyError::Library("AES key"))?))
}

fn cipher_key(bits: AesBits, key: &Secret) -> Result<cipher::UnboundCipherKey, KeyError> {
    let alg = match bits {
        AesBits::B128 => &cipher::AES_128,
        AesBits::B256 => &cipher::AES_256,
    };
    cipher::UnboundCipherKey::new(alg, key.expose()).map_err(|_| KeyError::Library("AES key"))
}

fn rsa_encoding(spec: KeySpec) -> Result<&'static sig::RsaSignatureEncoding, KeyError> {
    Ok(match spec {
        KeySpec::RsaPss(_, Hash::Sha256) => &sig::RSA_PSS_SHA256,
        KeySpec::RsaPss(_, Hash::Sha384) => &sig::RSA_PSS_SHA384,
        KeySpec::RsaPss(_, Hash::Sha512) => &sig::RSA_PSS_SHA512,
        KeySpec::RsaPkcs1(_, Hash::Sha256) => &sig::RSA_PKCS1_SHA256,
        KeySpec::RsaPkcs1(_, Hash::Sha384) => &sig::RSA_PKCS1_SHA384,
        KeySpec::RsaPkcs1(_, Hash::Sha512) => &sig::RSA_PKCS1_SHA512,
        _ => return Err(KeyError::WrongKind),
    })
}

/// The encodings a key held elsewhere (a PKCS#11 token) needs to answer as Cloud KMS does:
/// tokens sign a digest and give back raw values; Cloud KMS answers DER and `SubjectPublicKeyInfo`.
impl KeySpec {
    /// The DER head of the `SubjectPublicKeyInfo` of an uncompressed EC point of this curve:
    /// SEQUENCE { SEQUENCE { id-ecPublicKey, the curve's OID }, BIT STRING }, and the point's
    /// length (fixed per curve).
    fn ec_spki_head(self) -> Option<(&'static [u8], usize)> {
        Some(match self {
            KeySpec::EcdsaP256Sha256 => (
                &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
                    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ],
                65,
            ),
            KeySpec::EcdsaP384Sha384 => (
                &[
                    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
                    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
                ],
                97,
            ),
            KeySpec::EcdsaSecp256k1Sha256 => (
                &[
                    0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
                    0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
                ],
                65,
            ),
            _ => return None,
        })
    }

    /// The curve's OID in DER (PKCS#11's `CKA_EC_PARAMS`), for EC keys.
    pub fn ec_params_der(self) -> Option<&'static [u8]> {
        Some(match self {
            KeySpec::EcdsaP256Sha256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            KeySpec::EcdsaP384Sha384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            KeySpec::EcdsaSecp256k1Sha256 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
            // id-Ed25519 (RFC 8410), as PKCS#11 3.0 names Edwards curves.
            KeySpec::Ed25519 => &[0x06, 0x03, 0x2b, 0x65, 0x70],
            _ => return None,
        })
    }

    /// The `SubjectPublicKeyInfo` (RFC 8410) of a raw 32-byte Ed25519 public key: SEQUENCE {
    /// SEQUENCE { id-Ed25519 }, BIT STRING }, a head fixed for the key's fixed length.
    pub fn ed25519_public_key_der(self, raw: &[u8]) -> Result<Vec<u8>, KeyError> {
        const HEAD: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        if self != KeySpec::Ed25519 {
            return Err(KeyError::WrongKind);
        }
        if raw.len() != 32 {
            return Err(KeyError::Input("an Ed25519 public key is 32 bytes"));
        }
        Ok([HEAD.as_slice(), raw].concat())
    }

    /// The `SubjectPublicKeyInfo` of an EC public key given as its uncompressed point.
    pub fn ec_public_key_der(self, point: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (head, len) = self.ec_spki_head().ok_or(KeyError::WrongKind)?;
        if point.len() != len || point.first() != Some(&0x04) {
            return Err(KeyError::Input("not an uncompressed point of the curve"));
        }
        Ok([head, point].concat())
    }

    /// An ECDSA signature given as r || s (PKCS#11's `CKM_ECDSA` output), as the DER
    /// `ECDSA-Sig-Value` Cloud KMS answers.
    pub fn ecdsa_signature_der(self, fixed: &[u8]) -> Result<Vec<u8>, KeyError> {
        use der::Encode;
        let (_, point_len) = self.ec_spki_head().ok_or(KeyError::WrongKind)?;
        let scalar = (point_len - 1) / 2;
        if fixed.len() != 2 * scalar {
            return Err(KeyError::Input("an ECDSA signature of the wrong length"));
        }
        let (r, s) = fixed.split_at(scalar);
        let bad = |_| KeyError::Library("DER encoding");
        // SEQUENCE { INTEGER r, INTEGER s }: a fixed array encodes as a SEQUENCE OF.
        let seq = [der::asn1::UintRef::new(r).map_err(bad)?, der::asn1::UintRef::new(s).map_err(bad)?];
        seq.to_der().map_err(bad)
    }

    /// The PKCS#1 v1.5 `DigestInfo` of a digest (what `CKM_RSA_PKCS` signs for
    /// `RSA_SIGN_PKCS1_*`): the hash's fixed DER prefix (RFC 8017, 9.2), then the digest.
    pub fn digest_info(hash: Hash, digest: &[u8]) -> Result<Vec<u8>, KeyError> {
        if digest.len() != hash.output_len() {
            return Err(KeyError::DigestLength { expected: hash.output_len(), actual: digest.len() });
        }
        let prefix: &[u8] = match hash {
            Hash::Sha1 => &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14],
            Hash::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00,
                0x04, 0x1c,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
                0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
                0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00,
                0x04, 0x40,
            ],
        };
        Ok([prefix, digest].concat())
    }
}

/// The `SubjectPublicKeyInfo` of an RSA public key given as its modulus and public exponent
/// (PKCS#11's `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, big-endian).
pub fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, KeyError> {
    let components = aws_lc_rs::rsa::PublicKeyComponents { n: modulus, e: exponent };
    let der: PublicKeyX509Der = components.as_der().map_err(|_| KeyError::Input("not an RSA public key"))?;
    Ok(der.as_ref().to_vec())
}

/// Whether two MACs are equal, in constant time.
pub fn mac_equal(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// A DER `SubjectPublicKeyInfo` as RFC 7468 PEM: `-----BEGIN PUBLIC KEY-----`, base64 in lines
/// of 64, and a final newline, as Cloud KMS writes it.
pub fn public_key_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
    use aws_lc_rs::signature::UnparsedPublicKey;

    use super::*;

    fn verify(alg: &'static dyn sig::VerificationAlgorithm, key: &LoadedKey, msg: &[u8], signature: &[u8]) {
        // Verification from the SPKI: the way a client holding only getPublicKey's answer does.
        let raw = spki_key_bits(&key.public_key_der().unwrap());
        UnparsedPublicKey::new(alg, raw).verify(msg, signature).unwrap_or_else(|_| panic!("{:?}", key.spec()));
    }

    /// The BIT STRING of a SubjectPublicKeyInfo (what ring-style verifiers take).
    fn spki_key_bits(der: &[u8]) -> Vec<u8> {
        // SEQUENCE { SEQUENCE alg, BIT STRING key }: skip the outer header, the algorithm
        // sequence, the bit string's header and its unused-bits byte.
        fn header(b: &[u8]) -> (usize, usize) {
            let first = b[1];
            if first < 0x80 {
                (2, first as usize)
            } else {
                let n = (first & 0x7f) as usize;
                let len = b[2..2 + n].iter().fold(0usize, |a, x| a << 8 | *x as usize);
                (2 + n, len)
            }
        }
        let (h, _) = header(der);
        let rest = &der[h..];
        let (ah, alen) = header(rest);
        let bits = &rest[ah + alen..];
        let (bh, blen) = header(bits);
        bits[bh + 1..bh + blen].to_vec()
    }

    #[test]
    fn each_signing_key_signs_digests_and_data_that_verify_with_its_public_key() {
        let cases: [(KeySpec, &'static dyn sig::VerificationAlgorithm); 6] = [
            (KeySpec::EcdsaP256Sha256, &sig::ECDSA_P256_SHA256_ASN1),
            (KeySpec::EcdsaP384Sha384, &sig::ECDSA_P384_SHA384_ASN1),
            (KeySpec::EcdsaSecp256k1Sha256, &sig::ECDSA_P256K1_SHA256_ASN1),
            (KeySpec::Ed25519, &sig::ED25519),
            (KeySpec::RsaPss(RsaBits::B2048, Hash::Sha256), &sig::RSA_PSS_2048_8192_SHA256),
            (KeySpec::RsaPkcs1(RsaBits::B2048, Hash::Sha256), &sig::RSA_PKCS1_2048_8192_SHA256),
        ];
        let msg = b"release v1.2.3";
        for (spec, alg) in cases {
            let material = spec.generate().unwrap();
            let key = LoadedKey::from_material(spec, &material).unwrap();
            verify(alg, &key, msg, &key.sign_data(msg).unwrap());
            match spec.prehash() {
                Some(h) => {
                    verify(alg, &key, msg, &key.sign_digest(&h.hash(msg)).unwrap());
                    let short = key.sign_digest(&h.hash(msg)[1..]).unwrap_err();
                    assert!(matches!(short, KeyError::DigestLength { .. }), "{spec:?}");
                    // A signature over another message does not verify.
                    let other = key.sign_digest(&h.hash(b"other")).unwrap();
                    let der = key.public_key_der().unwrap();
                    assert!(UnparsedPublicKey::new(alg, spki_key_bits(&der)).verify(msg, &other).is_err());
                }
                None => assert_eq!(key.sign_digest(&[0; 32]).unwrap_err(), KeyError::WrongKind),
            }
            assert_eq!(key.decrypt(&[0; 256]).unwrap_err(), KeyError::WrongKind);
            assert_eq!(key.mac(msg).unwrap_err(), KeyError::WrongKind);
        }
    }

    #[test]
    fn oaep_decrypts_what_the_public_key_encrypted_and_nothing_else() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha512] {
            let spec = KeySpec::RsaOaep(RsaBits::B2048, hash);
            let key = LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap();
            let public = PublicEncryptingKey::from_der(&key.public_key_der().unwrap()).unwrap();
            let public = OaepPublicEncryptingKey::new(public).unwrap();
            let alg: &'static OaepAlgorithm = match hash {
                Hash::Sha1 => &OAEP_SHA1_MGF1SHA1,
                Hash::Sha256 => &OAEP_SHA256_MGF1SHA256,
                _ => &OAEP_SHA512_MGF1SHA512,
            };
            let mut ct = vec![0u8; public.ciphertext_size()];
            let ct = public.encrypt(alg, b"a data key", &mut ct, None).unwrap().to_vec();
            assert_eq!(key.decrypt(&ct).unwrap().expose(), b"a data key");
            let mut bad = ct.clone();
            bad[10] ^= 1;
            assert_eq!(key.decrypt(&bad).unwrap_err(), KeyError::Decrypt);
            assert_eq!(key.decrypt(&ct[1..]).unwrap_err(), KeyError::Decrypt);
            assert_eq!(key.sign_data(b"x").unwrap_err(), KeyError::WrongKind);
        }
    }

    #[test]
    fn hmac_tags_verify_and_a_changed_tag_or_message_does_not() {
        for hash in [Hash::Sha1, Hash::Sha224, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let spec = KeySpec::Hmac(hash);
            let material = spec.generate().unwrap();
            assert_eq!(material.len(), hash.output_len());
            let key = LoadedKey::from_material(spec, &material).unwrap();
            let tag = key.mac(b"token").unwrap();
            assert_eq!(tag.len(), hash.output_len());
            let expected = hmac::sign(
                &hmac::Key::new(
                    match hash {
                        Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                        Hash::Sha224 => hmac::HMAC_SHA224,
                        Hash::Sha256 => hmac::HMAC_SHA256,
                        Hash::Sha384 => hmac::HMAC_SHA384,
                        Hash::Sha512 => hmac::HMAC_SHA512,
                    },
                    material.expose(),
                ),
                b"token",
            );
            assert_eq!(tag, expected.as_ref());
            assert!(key.mac_verify(b"token", &tag).unwrap());
            assert!(!key.mac_verify(b"tokeN", &tag).unwrap());
            let mut bad = tag.clone();
            bad[0] ^= 1;
            assert!(!key.mac_verify(b"token", &bad).unwrap());
            assert!(!key.mac_verify(b"token", &tag[1..]).unwrap());
            assert_eq!(key.public_key_der().unwrap_err(), KeyError::WrongKind);
        }
    }

    #[test]
    fn material_of_another_kind_or_size_is_refused_and_keys_never_print() {
        let p256 = KeySpec::EcdsaP256Sha256.generate().unwrap();
        assert!(LoadedKey::from_material(KeySpec::EcdsaP384Sha384, &p256).is_err());
        assert!(LoadedKey::from_material(KeySpec::RsaPss(RsaBits::B2048, Hash::Sha256), &p256).is_err());
        let rsa = KeySpec::RsaPss(RsaBits::B2048, Hash::Sha256).generate().unwrap();
        assert!(LoadedKey::from_material(KeySpec::RsaPss(RsaBits::B3072, Hash::Sha256), &rsa).is_err());
        assert!(LoadedKey::from_material(KeySpec::Hmac(Hash::Sha256), &Secret::new(vec![])).is_err());
        let key = LoadedKey::from_material(KeySpec::EcdsaP256Sha256, &p256).unwrap();
        assert_eq!(format!("{key:?}"), "LoadedKey(EcdsaP256Sha256, [redacted])");
    }

    #[test]
    fn raw_aes_round_trips_and_interoperates_with_the_standard_modes() {
        for bits in [AesBits::B128, AesBits::B256] {
            for mode in [AesMode::Gcm, AesMode::Cbc, AesMode::Ctr] {
                let spec = KeySpec::Aes(bits, mode);
                let material = spec.generate().unwrap();
                assert_eq!(material.len(), bits.key_len());
                let key = LoadedKey::from_material(spec, &material).unwrap();
                let plaintext = [7u8; 48];
                let aad: &[u8] = if mode == AesMode::Gcm { b"context" } else { b"" };
                let sealed = key.raw_encrypt(&plaintext, aad, None).unwrap();
                assert_eq!(sealed.iv.len(), mode.iv_len());
                assert_eq!(sealed.ciphertext.len(), plaintext.len() + mode.tag_len());
                assert_ne!(&sealed.ciphertext[..48], &plaintext[..]);
                assert_eq!(key.raw_decrypt(&sealed.ciphertext, aad, &sealed.iv).unwrap().expose(), &plaintext[..]);
                // Fresh IVs: the same plaintext encrypts differently.
                assert_ne!(key.raw_encrypt(&plaintext, aad, None).unwrap().ciphertext, sealed.ciphertext);
                let mut bad = sealed.ciphertext.clone();
                bad[0] ^= 1;
                match mode {
                    // GCM authenticates: a flipped bit, or other AAD, fails.
                    AesMode::Gcm => {
                        assert_eq!(key.raw_decrypt(&bad, aad, &sealed.iv).unwrap_err(), KeyError::Decrypt);
                        assert_eq!(
                            key.raw_decrypt(&sealed.ciphertext, b"other", &sealed.iv).unwrap_err(),
                            KeyError::Decrypt
                        );
                        assert!(key.raw_encrypt(&plaintext, aad, Some(&[0; 16])).is_err());
                    }
                    // CBC and CTR do not, and take a caller's IV: the same IV, the same ciphertext.
                    _ => {
                        assert_ne!(key.raw_decrypt(&bad, b"", &sealed.iv).unwrap().expose(), &plaintext[..]);
                        let iv = [9u8; 16];
                        let a = key.raw_encrypt(&plaintext, b"", Some(&iv)).unwrap();
                        assert_eq!(a.iv, iv);
                        assert_eq!(a.ciphertext, key.raw_encrypt(&plaintext, b"", Some(&iv)).unwrap().ciphertext);
                        assert!(key.raw_encrypt(&plaintext, b"aad", None).is_err());
                        assert!(key.raw_encrypt(&plaintext, b"", Some(&[0; 12])).is_err());
                    }
                }
                if mode == AesMode::Cbc {
                    assert!(matches!(key.raw_encrypt(&[1; 15], b"", None), Err(KeyError::Input(_))));
                }
            }
        }
        // CBC against the standard: NIST SP 800-38A F.2.1 (AES-128-CBC), first block.
        let key = hex_bytes("2b7e151628aed2a6abf7158809cf4f3c");
        let cbc = LoadedKey::from_material(KeySpec::Aes(AesBits::B128, AesMode::Cbc), &Secret::new(key)).unwrap();
        let iv = hex_bytes("000102030405060708090a0b0c0d0e0f");
        let out = cbc.raw_encrypt(&hex_bytes("6bc1bee22e409f96e93d7e117393172a"), b"", Some(&iv)).unwrap();
        assert_eq!(out.ciphertext, hex_bytes("7649abac8119b246cee98e9b12e9197d"));
        // GCM against the standard: McGrew and Viega's test case 2 (AES-128, zero key and IV):
        // the ciphertext followed by its tag opens to 16 zero bytes.
        let gcm =
            LoadedKey::from_material(KeySpec::Aes(AesBits::B128, AesMode::Gcm), &Secret::new(vec![0; 16])).unwrap();
        let sealed = hex_bytes("0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf");
        assert_eq!(gcm.raw_decrypt(&sealed, b"", &[0; 12]).unwrap().expose(), &[0u8; 16][..]);
        // CTR against the standard: NIST SP 800-38A F.5.1 (AES-128-CTR), first block.
        let key = hex_bytes("2b7e151628aed2a6abf7158809cf4f3c");
        let ctr = LoadedKey::from_material(KeySpec::Aes(AesBits::B128, AesMode::Ctr), &Secret::new(key)).unwrap();
        let iv = hex_bytes("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let out = ctr.raw_encrypt(&hex_bytes("6bc1bee22e409f96e93d7e117393172a"), b"", Some(&iv)).unwrap();
        assert_eq!(out.ciphertext, hex_bytes("874d6191b620e3261bef6864990db6ce"));
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn ml_kem_decapsulates_what_its_public_key_encapsulated() {
        for (level, public_len) in [(MlKemLevel::K768, 1184), (MlKemLevel::K1024, 1568)] {
            let spec = KeySpec::MlKem(level);
            let key = LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap();
            let raw = key.public_key_raw().unwrap();
            assert_eq!(raw.len(), public_len);
            let der = key.public_key_der().unwrap();
            assert_eq!(&der[der.len() - raw.len()..], raw.as_slice());
            // The DER lengths in the head are the key's: the whole, and the BIT STRING's.
            assert_eq!(usize::from(der[2]) << 8 | usize::from(der[3]), der.len() - 4);
            let sender = kem::EncapsulationKey::new(level.algorithm(), &raw).unwrap();
            let (ct, shared) = sender.encapsulate().unwrap();
            assert_eq!(key.decapsulate(ct.as_ref()).unwrap().expose(), shared.as_ref());
            let mut other = ct.as_ref().to_vec();
            other[0] ^= 1;
            assert_ne!(key.decapsulate(&other).unwrap().expose(), shared.as_ref(), "implicit rejection");
            assert_eq!(key.decapsulate(&other[1..]).unwrap_err(), KeyError::Decrypt);
        }
    }

    #[test]
    fn x_wing_keys_are_a_seed_that_decapsulates_what_their_public_key_encapsulated() {
        use x_wing::KeyExport as _;
        let spec = KeySpec::XWing;
        assert!(spec.post_quantum() && !spec.signs() && spec.prehash().is_none());
        let material = spec.generate().unwrap();
        assert_eq!(material.expose().len(), 32, "the draft's decapsulation key is a 32-byte seed");
        let key = LoadedKey::from_material(spec, &material).unwrap();
        let raw = key.public_key_raw().unwrap();
        assert_eq!(raw.len(), 1216);
        // The same seed makes the same key; another seed another.
        let again = LoadedKey::from_material(spec, &material).unwrap().public_key_raw().unwrap();
        assert_eq!(again, raw);
        let other = LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap();
        assert_ne!(other.public_key_raw().unwrap(), raw);
        assert_eq!(key.public_key_der().unwrap_err(), KeyError::WrongKind, "no standard SPKI");
        let sender = x_wing::EncapsulationKey::try_from(raw.as_slice()).unwrap();
        assert_eq!(sender.to_bytes().as_slice(), raw.as_slice());
        // The sender's randomness, drawn here (the crate's own generator needs `rand_core`).
        let mut randomness = [0u8; 64];
        crate::random_bytes(&mut randomness).unwrap();
        let (ct, shared) = sender.encapsulate_deterministic(&randomness.into());
        assert_eq!(key.decapsulate(&ct).unwrap().expose(), shared.as_slice());
        assert_ne!(other.decapsulate(&ct).unwrap().expose(), shared.as_slice());
        assert_eq!(key.decapsulate(&ct[1..]).unwrap_err(), KeyError::Decrypt);
        assert!(LoadedKey::from_material(spec, &Secret::new(vec![1; 31])).is_err());
    }

    #[test]
    fn ml_dsa_signs_data_that_verifies_with_its_raw_and_its_spki_public_key() {
        let cases: [(MlDsaLevel, &'static dyn sig::VerificationAlgorithm, usize, usize); 3] = [
            (MlDsaLevel::D44, &sig::ML_DSA_44, 1312, 2420),
            (MlDsaLevel::D65, &sig::ML_DSA_65, 1952, 3309),
            (MlDsaLevel::D87, &sig::ML_DSA_87, 2592, 4627),
        ];
        let msg = b"release v1.2.3";
        for (level, alg, public_len, sig_len) in cases {
            let spec = KeySpec::MlDsa(level);
            assert!(spec.signs() && spec.post_quantum() && spec.prehash().is_none());
            let key = LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap();
            let raw = key.public_key_raw().unwrap();
            assert_eq!(raw.len(), public_len, "{level:?}");
            let der = key.public_key_der().unwrap();
            assert_eq!(spki_key_bits(&der), raw, "the SPKI wraps the raw key");
            let signature = key.sign_data(msg).unwrap();
            assert_eq!(signature.len(), sig_len, "{level:?}");
            verify(alg, &key, msg, &signature);
            assert!(UnparsedPublicKey::new(alg, &raw).verify(b"other", &signature).is_err());
            // Randomized signing: two signatures of one message differ, and both verify.
            let again = key.sign_data(msg).unwrap();
            assert_ne!(again, signature);
            verify(alg, &key, msg, &again);
            assert_eq!(key.sign_digest(&[0; 32]).unwrap_err(), KeyError::WrongKind);
            // Material of another level is refused.
            let other = KeySpec::MlDsa(if level == MlDsaLevel::D65 { MlDsaLevel::D44 } else { MlDsaLevel::D65 });
            assert!(LoadedKey::from_material(other, &spec.generate().unwrap()).is_err());
        }
    }

    #[test]
    fn slh_dsa_signs_data_that_verifies_with_its_raw_and_its_spki_public_key() {
        use slh_dsa::signature::Verifier as _;
        let spec = KeySpec::SlhDsaSha2S128;
        assert!(spec.signs() && spec.post_quantum() && spec.prehash().is_none());
        let material = spec.generate().unwrap();
        assert_eq!(material.expose().len(), 64);
        let key = LoadedKey::from_material(spec, &material).unwrap();
        let raw = key.public_key_raw().unwrap();
        assert_eq!(raw, material.expose()[32..], "PK.seed || PK.root ends the private key");
        let der = key.public_key_der().unwrap();
        // SEQUENCE { SEQUENCE { id-slh-dsa-sha2-128s (2.16.840.1.101.3.4.3.20) }, BIT STRING }.
        assert_eq!(
            der[..18],
            [
                0x30, 0x30, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x14, 0x03, 0x21,
                0x00
            ]
        );
        assert_eq!(der[18..], raw[..]);
        let msg = b"release v1.2.3";
        let signature = key.sign_data(msg).unwrap();
        assert_eq!(signature.len(), 7856, "FIPS 205, table 2");
        let public = slh_dsa::VerifyingKey::<Sha2_128s>::try_from(raw.as_slice()).unwrap();
        let parsed = slh_dsa::Signature::<Sha2_128s>::try_from(signature.as_slice()).unwrap();
        public.verify(msg, &parsed).unwrap();
        assert!(public.verify(b"other", &parsed).is_err());
        // Hedged: two signatures of one message differ.
        assert_ne!(key.sign_data(msg).unwrap(), signature);
        assert_eq!(key.sign_digest(&[0; 32]).unwrap_err(), KeyError::WrongKind);
        assert!(LoadedKey::from_material(spec, &Secret::new(vec![7; 63])).is_err());
    }

    #[test]
    fn hash_slh_dsa_signs_the_sha256_digest_as_fips_205_prescribes() {
        let spec = KeySpec::HashSlhDsaSha2S128Sha256;
        assert!(spec.signs() && spec.post_quantum() && spec.prehash() == Some(Hash::Sha256));
        let material = spec.generate().unwrap();
        let key = LoadedKey::from_material(spec, &material).unwrap();
        let raw = key.public_key_raw().unwrap();
        // The same key as pure SLH-DSA's, under id-hash-slh-dsa-sha2-128s-with-sha256 (….3.35).
        let pure = LoadedKey::from_material(KeySpec::SlhDsaSha2S128, &material).unwrap();
        assert_eq!(pure.public_key_raw().unwrap(), raw);
        let der = key.public_key_der().unwrap();
        let head = [
            0x30, 0x30, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x23, 0x03, 0x21, 0x00,
        ];
        assert_eq!((&der[..18], &der[18..]), (&head[..], &raw[..]));
        let msg = b"release v1.2.3";
        let digest = Hash::Sha256.hash(msg);
        let public = slh_dsa::VerifyingKey::<Sha2_128s>::try_from(raw.as_slice()).unwrap();
        // M' = 0x01 || 0x00 (empty context) || DER(OID of SHA-256) || SHA-256(M) (FIPS 205, 10.2.2).
        let oid = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
        for signature in [key.sign_data(msg).unwrap(), key.sign_digest(&digest).unwrap()] {
            assert_eq!(signature.len(), 7856);
            let parsed = slh_dsa::Signature::<Sha2_128s>::try_from(signature.as_slice()).unwrap();
            public.slh_verify_internal(&[&[1, 0], &oid, &digest], &parsed).unwrap();
            // Not a pure signature of the message, nor of the digest.
            assert!(public.try_verify_with_context(msg, &[], &parsed).is_err());
            assert!(public.try_verify_with_context(&digest, &[], &parsed).is_err());
        }
        assert!(matches!(key.sign_digest(&digest[..31]), Err(KeyError::DigestLength { expected: 32, actual: 31 })));
    }

    #[test]
    fn encodings_for_keys_held_elsewhere_match_the_library() {
        // EC: the SPKI of the raw point is the library's own; r || s becomes a DER signature
        // that verifies.
        for (spec, alg) in [
            (KeySpec::EcdsaP256Sha256, &sig::ECDSA_P256_SHA256_ASN1),
            (KeySpec::EcdsaP384Sha384, &sig::ECDSA_P384_SHA384_ASN1),
            (KeySpec::EcdsaSecp256k1Sha256, &sig::ECDSA_P256K1_SHA256_ASN1),
        ] {
            let key = LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap();
            let der = key.public_key_der().unwrap();
            let point = spki_key_bits(&der);
            assert_eq!(spec.ec_public_key_der(&point).unwrap(), der, "{spec:?}");
            assert!(spec.ec_public_key_der(&point[1..]).is_err());
            let signature = key.sign_data(b"m").unwrap();
            // The DER signature back to r || s (each scalar left-padded), and again to DER.
            let (_, point_len) = spec.ec_spki_head().unwrap();
            let scalar = (point_len - 1) / 2;
            let fixed = fixed_of(&signature, scalar);
            let again = spec.ecdsa_signature_der(&fixed).unwrap();
            UnparsedPublicKey::new(alg, &point).verify(b"m", &again).unwrap();
            assert!(spec.ecdsa_signature_der(&fixed[1..]).is_err());
        }
        // Ed25519: the SPKI of the raw key is the library's own.
        let key = LoadedKey::from_material(KeySpec::Ed25519, &KeySpec::Ed25519.generate().unwrap()).unwrap();
        let der = key.public_key_der().unwrap();
        let raw = spki_key_bits(&der);
        assert_eq!(KeySpec::Ed25519.ed25519_public_key_der(&raw).unwrap(), der);
        assert!(KeySpec::Ed25519.ed25519_public_key_der(&raw[1..]).is_err());
        assert_eq!(KeySpec::EcdsaP256Sha256.ed25519_public_key_der(&raw).unwrap_err(), KeyError::WrongKind);
        // RSA: modulus and exponent give the library's SPKI; a DigestInfo signed raw verifies.
        let spec = KeySpec::RsaPkcs1(RsaBits::B2048, Hash::Sha256);
        let pair = RsaKeyPair::from_pkcs8(spec.generate().unwrap().expose()).unwrap();
        let der: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        // The SPKI's RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
        let rsa_key = spki_key_bits(der.as_ref());
        let parts: Vec<der::asn1::UintRef<'_>> = der::Decode::from_der(&rsa_key).unwrap();
        assert_eq!(parts.len(), 2);
        let [n, e] = [parts[0].as_bytes(), parts[1].as_bytes()];
        assert_eq!(rsa_public_key_der(n, e).unwrap(), der.as_ref());
        for h in [Hash::Sha1, Hash::Sha224, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let info = KeySpec::digest_info(h, &h.hash(b"m")).unwrap();
            assert_eq!(usize::from(info[1]) + 2, info.len(), "{h:?}: the DER length covers it all");
            assert!(KeySpec::digest_info(h, &[0; 3]).is_err());
        }
        assert!(mac_equal(b"abc", b"abc") && !mac_equal(b"abc", b"abd") && !mac_equal(b"abc", b"ab"));
    }

    /// r || s of a DER `ECDSA-Sig-Value`, each `scalar` bytes.
    fn fixed_of(der: &[u8], scalar: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 2;
        for _ in 0..2 {
            let len = usize::from(der[i + 1]);
            let mut v = der[i + 2..i + 2 + len].to_vec();
            while v.len() > scalar {
                v.remove(0);
            }
            let mut padded = vec![0u8; scalar - v.len()];
            padded.extend(v);
            out.extend(padded);
            i += 2 + len;
        }
        out
    }

    #[test]
    fn a_digest_in_pieces_is_the_digest_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for h in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let mut hasher = h.hasher();
            for piece in data.chunks(4096) {
                hasher.update(piece);
            }
            assert_eq!(hasher.finish(), h.hash(&data));
            assert_ne!(h.hash(&data), h.hash(&data[1..]));
        }
    }

    #[test]
    fn pem_is_rfc_7468_with_64_character_lines() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = public_key_pem(&der);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        let body: Vec<&str> = pem.lines().skip(1).take_while(|l| !l.starts_with("-----")).collect();
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        let joined: String = body.concat();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(joined).unwrap(), der);
    }
}
