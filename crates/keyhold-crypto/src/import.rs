//! Key import: key material wrapped for an import job's RSA key, as Cloud KMS's import methods
//! define it (and `gcloud kms keys versions import`, OpenSSL and PKCS#11 make it).
//!
//! * The `RSA_OAEP_*_AES_256` methods (PKCS#11's `CKM_RSA_AES_KEY_WRAP`): RSA-OAEP (the
//!   method's hash, MGF1 with the same hash, empty label) of a fresh AES-256 key, followed by
//!   AES key wrap with padding (RFC 5649) of the material under that key.
//! * The `RSA_OAEP_*_SHA256` methods: RSA-OAEP of the material itself (so only material shorter
//!   than the modulus: symmetric and HMAC keys, never an RSA key).
//!
//! The material is the raw key for symmetric and HMAC keys, PKCS#8 DER for asymmetric ones.
//! Both directions are AWS-LC's (`aws-lc-rs`): RSA-OAEP and `key_wrap`'s AES-KWP.

use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
use zeroize::Zeroizing;

use crate::keys::{Hash, KeyError, KeySpec, LoadedKey};
use crate::secret::{KeyBytes, Secret};

/// The largest wrapped key accepted: an RSA-4096 key in PKCS#8 (about 2.4 KB) wrapped for a
/// 4096-bit job is under 3 KB.
pub const MAX_WRAPPED_KEY: usize = 16 * 1024;

/// How material is wrapped: an import method's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrapping {
    /// The OAEP hash (SHA-1 or SHA-256).
    pub hash: Hash,
    /// Whether the RSA-OAEP wraps an AES-256 key that wraps the material (AES-KWP), or wraps
    /// the material itself.
    pub aes_kwp: bool,
}

/// Wraps `material` for the import job whose wrapping key is `public_der` (its
/// `SubjectPublicKeyInfo`), as a client does before `cryptoKeyVersions:import`.
pub fn wrap(public_der: &[u8], how: Wrapping, material: &[u8]) -> Result<Vec<u8>, KeyError> {
    let oaep = how.hash.oaep().ok_or(KeyError::WrongKind)?;
    let public = PublicEncryptingKey::from_der(public_der).map_err(|_| KeyError::Input("not an RSA public key"))?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|_| KeyError::Input("not an RSA public key"))?;
    let encrypt = |plaintext: &[u8]| -> Result<Vec<u8>, KeyError> {
        if plaintext.len() > public.max_plaintext_size(oaep) {
            return Err(KeyError::Input("the material is too long for RSA-OAEP with this key: use an _AES_256 method"));
        }
        let mut out = vec![0u8; public.ciphertext_size()];
        let len = public.encrypt(oaep, plaintext, &mut out, None).map_err(|_| KeyError::Library("RSA-OAEP"))?.len();
        out.truncate(len);
        Ok(out)
    };
    if !how.aes_kwp {
        return encrypt(material);
    }
    let kek = KeyBytes::generate().map_err(|_| KeyError::Library("random bytes"))?;
    let mut wrapped = encrypt(kek.expose())?;
    let mut out = vec![0u8; material.len() + 16];
    let kwp = AesKek::new(&AES_256, kek.expose()).map_err(|_| KeyError::Library("AES-KWP"))?;
    let len = kwp.wrap_with_padding(material, &mut out).map_err(|_| KeyError::Library("AES-KWP"))?.len();
    wrapped.extend_from_slice(&out[..len]);
    Ok(wrapped)
}

/// Unwraps what [`wrap`] made, with the import job's private key (an RSA-OAEP key of the
/// method's size and hash). Any failure (wrong key, wrong method, tampered or truncated bytes) is
/// [`KeyError::Decrypt`].
pub fn unwrap(job_key: &LoadedKey, how: Wrapping, wrapped: &[u8]) -> Result<Secret, KeyError> {
    let KeySpec::RsaOaep(bits, hash) = job_key.spec() else { return Err(KeyError::WrongKind) };
    if hash != how.hash {
        return Err(KeyError::WrongKind);
    }
    if wrapped.len() > MAX_WRAPPED_KEY {
        return Err(KeyError::Decrypt);
    }
    if !how.aes_kwp {
        return job_key.decrypt(wrapped);
    }
    let n = bits.modulus_len();
    // RFC 5649: at least one 64-bit block of material after the 64-bit integrity block.
    if wrapped.len() < n + 16 {
        return Err(KeyError::Decrypt);
    }
    let (head, body) = wrapped.split_at(n);
    let kek = job_key.decrypt(head)?;
    if kek.expose().len() != 32 {
        return Err(KeyError::Decrypt);
    }
    let kwp = AesKek::new(&AES_256, kek.expose()).map_err(|_| KeyError::Decrypt)?;
    let mut out = Zeroizing::new(vec![0u8; body.len()]);
    let len = kwp.unwrap_with_padding(body, &mut out).map_err(|_| KeyError::Decrypt)?.len();
    Ok(Secret::new(out[..len].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaBits;

    fn job(bits: RsaBits, hash: Hash) -> LoadedKey {
        let spec = KeySpec::RsaOaep(bits, hash);
        LoadedKey::from_material(spec, &spec.generate().unwrap()).unwrap()
    }

    #[test]
    fn what_is_wrapped_for_a_job_unwraps_with_its_key_and_nothing_else() {
        let sha1 = job(RsaBits::B3072, Hash::Sha1);
        let sha256 = job(RsaBits::B3072, Hash::Sha256);
        let ec = KeySpec::EcdsaP256Sha256.generate().unwrap();
        for (key, hash) in [(&sha1, Hash::Sha1), (&sha256, Hash::Sha256)] {
            let public = key.public_key_der().unwrap();
            for (material, aes_kwp) in [(ec.expose(), true), (&[7u8; 32][..], true), (&[9u8; 32][..], false)] {
                let how = Wrapping { hash, aes_kwp };
                let wrapped = wrap(&public, how, material).unwrap();
                assert_eq!(unwrap(key, how, &wrapped).unwrap().expose(), material);
                // Another job's key, the other method, or a flipped bit: refused, never garbage.
                let other = if hash == Hash::Sha1 { &sha256 } else { &sha1 };
                assert!(unwrap(other, Wrapping { hash: other_hash(hash), aes_kwp }, &wrapped).is_err());
                assert!(unwrap(key, Wrapping { hash, aes_kwp: !aes_kwp }, &wrapped).is_err());
                let mut bad = wrapped.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert_eq!(unwrap(key, how, &bad).unwrap_err(), KeyError::Decrypt);
                assert_eq!(unwrap(key, how, &wrapped[..wrapped.len() - 8]).unwrap_err(), KeyError::Decrypt);
            }
        }
        // An RSA key does not fit in one RSA-OAEP block.
        let rsa = KeySpec::RsaPkcs1(RsaBits::B2048, Hash::Sha256).generate().unwrap();
        let how = Wrapping { hash: Hash::Sha256, aes_kwp: false };
        assert!(matches!(wrap(&sha256.public_key_der().unwrap(), how, rsa.expose()), Err(KeyError::Input(_))));
        assert_eq!(
            unwrap(&sha256, Wrapping { hash: Hash::Sha1, aes_kwp: true }, &[0; 400]).unwrap_err(),
            KeyError::WrongKind
        );
    }

    fn other_hash(h: Hash) -> Hash {
        if h == Hash::Sha1 { Hash::Sha256 } else { Hash::Sha1 }
    }
}
