//! Which key each Cloud KMS algorithm Keyhold computes itself is: the one table between
//! `keyhold-api`'s [`Algorithm`] (whose purpose is [`Algorithm::purpose`]) and
//! `keyhold-crypto`'s [`KeySpec`].

use keyhold_api::resources::{Algorithm, Purpose};
use keyhold_crypto::Secret;
use keyhold_crypto::keys::{AesBits, AesMode, Hash, KeySpec, LoadedKey, MlDsaLevel, MlKemLevel, RsaBits};

use crate::error::KmsError;

/// The key of an algorithm Keyhold signs, decrypts or MACs with itself; `None` for the
/// symmetric encryption algorithms and those not served yet.
pub(crate) fn key_spec(alg: Algorithm) -> Option<KeySpec> {
    use Algorithm as A;
    use RsaBits::*;
    Some(match alg {
        A::EcSignP256Sha256 => KeySpec::EcdsaP256Sha256,
        A::EcSignP384Sha384 => KeySpec::EcdsaP384Sha384,
        A::EcSignSecp256k1Sha256 => KeySpec::EcdsaSecp256k1Sha256,
        A::EcSignEd25519 => KeySpec::Ed25519,
        A::RsaSignPss2048Sha256 => KeySpec::RsaPss(B2048, Hash::Sha256),
        A::RsaSignPss3072Sha256 => KeySpec::RsaPss(B3072, Hash::Sha256),
        A::RsaSignPss4096Sha256 => KeySpec::RsaPss(B4096, Hash::Sha256),
        A::RsaSignPss4096Sha512 => KeySpec::RsaPss(B4096, Hash::Sha512),
        A::RsaSignPkcs12048Sha256 => KeySpec::RsaPkcs1(B2048, Hash::Sha256),
        A::RsaSignPkcs13072Sha256 => KeySpec::RsaPkcs1(B3072, Hash::Sha256),
        A::RsaSignPkcs14096Sha256 => KeySpec::RsaPkcs1(B4096, Hash::Sha256),
        A::RsaSignPkcs14096Sha512 => KeySpec::RsaPkcs1(B4096, Hash::Sha512),
        A::RsaSignRawPkcs12048 => KeySpec::RsaRawPkcs1(B2048),
        A::RsaSignRawPkcs13072 => KeySpec::RsaRawPkcs1(B3072),
        A::RsaSignRawPkcs14096 => KeySpec::RsaRawPkcs1(B4096),
        A::RsaDecryptOaep2048Sha256 => KeySpec::RsaOaep(B2048, Hash::Sha256),
        A::RsaDecryptOaep3072Sha256 => KeySpec::RsaOaep(B3072, Hash::Sha256),
        A::RsaDecryptOaep4096Sha256 => KeySpec::RsaOaep(B4096, Hash::Sha256),
        A::RsaDecryptOaep4096Sha512 => KeySpec::RsaOaep(B4096, Hash::Sha512),
        A::RsaDecryptOaep2048Sha1 => KeySpec::RsaOaep(B2048, Hash::Sha1),
        A::RsaDecryptOaep3072Sha1 => KeySpec::RsaOaep(B3072, Hash::Sha1),
        A::RsaDecryptOaep4096Sha1 => KeySpec::RsaOaep(B4096, Hash::Sha1),
        A::HmacSha1 => KeySpec::Hmac(Hash::Sha1),
        A::HmacSha224 => KeySpec::Hmac(Hash::Sha224),
        A::HmacSha256 => KeySpec::Hmac(Hash::Sha256),
        A::HmacSha384 => KeySpec::Hmac(Hash::Sha384),
        A::HmacSha512 => KeySpec::Hmac(Hash::Sha512),
        A::Aes128Gcm => KeySpec::Aes(AesBits::B128, AesMode::Gcm),
        A::Aes256Gcm => KeySpec::Aes(AesBits::B256, AesMode::Gcm),
        A::Aes128Cbc => KeySpec::Aes(AesBits::B128, AesMode::Cbc),
        A::Aes256Cbc => KeySpec::Aes(AesBits::B256, AesMode::Cbc),
        A::Aes128Ctr => KeySpec::Aes(AesBits::B128, AesMode::Ctr),
        A::Aes256Ctr => KeySpec::Aes(AesBits::B256, AesMode::Ctr),
        A::MlKem768 => KeySpec::MlKem(MlKemLevel::K768),
        A::MlKem1024 => KeySpec::MlKem(MlKemLevel::K1024),
        A::KemXwing => KeySpec::XWing,
        A::PqSignMlDsa44 => KeySpec::MlDsa(MlDsaLevel::D44),
        A::PqSignMlDsa65 => KeySpec::MlDsa(MlDsaLevel::D65),
        A::PqSignMlDsa87 => KeySpec::MlDsa(MlDsaLevel::D87),
        A::PqSignMlDsa44ExternalMu => KeySpec::MlDsaExternalMu(MlDsaLevel::D44),
        A::PqSignMlDsa65ExternalMu => KeySpec::MlDsaExternalMu(MlDsaLevel::D65),
        A::PqSignMlDsa87ExternalMu => KeySpec::MlDsaExternalMu(MlDsaLevel::D87),
        A::PqSignSlhDsaSha2128s => KeySpec::SlhDsaSha2S128,
        A::PqSignHashSlhDsaSha2128sSha256 => KeySpec::HashSlhDsaSha2S128Sha256,
        _ => return None,
    })
}

/// Checks that imported `material` is a key of `algorithm`, in the form Cloud KMS's "Formatting
/// keys for import" asks: 32 bytes for `GOOGLE_SYMMETRIC_ENCRYPTION`, the key's length for raw
/// AES, the hash's output length for HMAC, PKCS#8 DER of a key of the algorithm's curve or size
/// for EC, Ed25519 and RSA. Post-quantum keys cannot be imported. Returns the key's identity: the
/// key itself for symmetric and HMAC keys, the public key (DER) for asymmetric ones, whatever
/// their PKCS#8 encoding.
pub(crate) fn check_imported_material(algorithm: Algorithm, material: &Secret) -> Result<Secret, KmsError> {
    let len = material.expose().len();
    let wrong = |why: String| {
        KmsError::InvalidArgument(format!("The imported key material is not a valid {algorithm} key: {why}."))
    };
    let spec = match (algorithm, key_spec(algorithm)) {
        (Algorithm::GoogleSymmetricEncryption, _) if len == 32 => return Ok(material.clone()),
        (Algorithm::GoogleSymmetricEncryption, _) => {
            return Err(wrong(format!("symmetric keys are 32 bytes of binary data, not {len}")));
        }
        (_, Some(spec)) if spec.post_quantum() => {
            return Err(KmsError::InvalidArgument(format!("Keys of algorithm {algorithm} cannot be imported.")));
        }
        (_, Some(spec)) => spec,
        (a, None) => return Err(KmsError::InvalidArgument(format!("Keys of algorithm {a} cannot be imported."))),
    };
    match spec {
        KeySpec::Hmac(h) if len != h.output_len() => {
            Err(wrong(format!("HMAC keys must be as long as the hash's output, {} bytes, not {len}", h.output_len())))
        }
        KeySpec::Aes(..) | KeySpec::Hmac(_) => LoadedKey::from_material(spec, material)
            .map(|_| material.clone())
            .map_err(|_| wrong(format!("{len} bytes"))),
        _ => {
            let not_pkcs8 =
                || wrong("expected a DER PKCS#8 PrivateKeyInfo (RFC 5208) of the algorithm's key type and size".into());
            let key = LoadedKey::from_material(spec, material).map_err(|_| not_pkcs8())?;
            key.public_key_der().map(Secret::new).map_err(|_| not_pkcs8())
        }
    }
}

/// Whether new versions of `purpose` start `PENDING_GENERATION` and are enabled once their key
/// is generated in the background, as Cloud KMS does for asymmetric keys (its contract tests:
/// `TestCreateCryptoKeyVersionAsync`; KEY_ENCAPSULATION keys are asymmetric too); other purposes
/// are `ENABLED` at once.
pub(crate) fn generated_in_background(purpose: Option<Purpose>) -> bool {
    matches!(purpose, Some(Purpose::AsymmetricSign | Purpose::AsymmetricDecrypt | Purpose::KeyEncapsulation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_but_unspecified_has_a_purpose_and_every_served_key_matches_it() {
        for &alg in Algorithm::ALL {
            let purpose = alg.purpose();
            assert_eq!(purpose.is_none(), alg == Algorithm::Unspecified, "{alg}");
            if let Some(spec) = key_spec(alg) {
                let expected = match spec {
                    KeySpec::RsaOaep(..) => Purpose::AsymmetricDecrypt,
                    KeySpec::Hmac(_) => Purpose::Mac,
                    KeySpec::Aes(..) => Purpose::RawEncryptDecrypt,
                    KeySpec::MlKem(_) | KeySpec::XWing => Purpose::KeyEncapsulation,
                    _ => Purpose::AsymmetricSign,
                };
                assert_eq!(purpose, Some(expected), "{alg}");
                // The name's hash is the key's.
                if let Some(h) = spec.prehash() {
                    assert!(alg.as_str().ends_with(&format!("SHA{}", h.output_len() * 8)), "{alg} {h:?}");
                }
            }
        }
        assert_eq!(key_spec(Algorithm::GoogleSymmetricEncryption), None);
        assert!(generated_in_background(Some(Purpose::AsymmetricSign)));
        assert!(!generated_in_background(Some(Purpose::Mac)));
        assert!(!generated_in_background(Some(Purpose::EncryptDecrypt)));
    }
}
