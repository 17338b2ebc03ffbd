//! ML-DSA keys that sign a caller's μ (Cloud KMS's `PQ_SIGN_ML_DSA_*_EXTERNAL_MU`): FIPS 204's
//! ML-DSA.Sign with a pre-computed μ (algorithm 7, line 6 skipped), from RustCrypto's `ml-dsa`,
//! hedged with randomness from the OS. The key is FIPS 204's 32-byte seed ξ; `data` is signed in
//! pure mode with an empty context, so a caller may sign either way and verify as pure ML-DSA.

use ml_dsa::common::array::Array;
use ml_dsa::common::getrandom::SysRng;
use ml_dsa::signature::Keypair as _;
use ml_dsa::{EncodedVerifyingKey, MlDsa44, MlDsa65, MlDsa87, MlDsaParams, Seed, SigningKey};
use spki::EncodePublicKey as _;

use super::{KeyError, MlDsaLevel};

/// FIPS 204's μ: 64 bytes.
pub const MU_LEN: usize = 64;
/// The seed ξ the key is made from.
pub const SEED_LEN: usize = 32;

/// A signing key of one ML-DSA parameter set. Its seed and expanded key are wiped on drop
/// (`ml-dsa`'s `zeroize`); it has no `Debug`. Some of `ml-dsa`'s intermediate values while it
/// expands a seed or signs (ρ′, the per-signature ρ″) stay on the stack unwiped: nothing on this
/// side can reach them.
pub(super) enum MuSigningKey {
    D44(Box<SigningKey<MlDsa44>>),
    D65(Box<SigningKey<MlDsa65>>),
    D87(Box<SigningKey<MlDsa87>>),
}

fn sign_mu<P: MlDsaParams>(key: &SigningKey<P>, mu: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mu: &Array<u8, _> = mu.try_into().map_err(|_| KeyError::DigestLength { expected: MU_LEN, actual: mu.len() })?;
    let signature =
        key.expanded_key().sign_mu_randomized(mu, &mut SysRng).map_err(|_| KeyError::Library("ML-DSA signing"))?;
    Ok(signature.encode().to_vec())
}

fn sign_data<P: MlDsaParams>(key: &SigningKey<P>, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let signature =
        key.expanded_key().sign_randomized(data, &[], &mut SysRng).map_err(|_| KeyError::Library("ML-DSA signing"))?;
    Ok(signature.encode().to_vec())
}

fn raw<P: MlDsaParams>(key: &SigningKey<P>) -> Vec<u8> {
    let encoded: EncodedVerifyingKey<P> = key.verifying_key().encode();
    encoded.to_vec()
}

fn spki<P: MlDsaParams>(key: &SigningKey<P>) -> Result<Vec<u8>, KeyError>
where
    ml_dsa::VerifyingKey<P>: spki::EncodePublicKey,
{
    key.verifying_key().to_public_key_der().map(|d| d.into_vec()).map_err(|_| KeyError::Library("public key encoding"))
}

impl MuSigningKey {
    /// The key of `level` made from the seed ξ (FIPS 204's ML-DSA.KeyGen_internal).
    pub(super) fn from_seed(level: MlDsaLevel, seed: &[u8]) -> Option<Self> {
        let seed = <&Seed>::try_from(seed).ok()?;
        Some(match level {
            MlDsaLevel::D44 => Self::D44(Box::new(SigningKey::from_seed(seed))),
            MlDsaLevel::D65 => Self::D65(Box::new(SigningKey::from_seed(seed))),
            MlDsaLevel::D87 => Self::D87(Box::new(SigningKey::from_seed(seed))),
        })
    }

    /// Signs μ (64 bytes).
    pub(super) fn sign_mu(&self, mu: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::D44(k) => sign_mu(k, mu),
            Self::D65(k) => sign_mu(k, mu),
            Self::D87(k) => sign_mu(k, mu),
        }
    }

    /// Signs `data` in pure mode with an empty context.
    pub(super) fn sign_data(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::D44(k) => sign_data(k, data),
            Self::D65(k) => sign_data(k, data),
            Self::D87(k) => sign_data(k, data),
        }
    }

    /// The raw FIPS 204 public key.
    pub(super) fn public_key_raw(&self) -> Vec<u8> {
        match self {
            Self::D44(k) => raw(k),
            Self::D65(k) => raw(k),
            Self::D87(k) => raw(k),
        }
    }

    /// The `SubjectPublicKeyInfo` (the `id-ml-dsa-*` OIDs, as for pure ML-DSA keys).
    pub(super) fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::D44(k) => spki(k),
            Self::D65(k) => spki(k),
            Self::D87(k) => spki(k),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{self as sig, KeyPair as _, UnparsedPublicKey};
    use sha3::digest::Update as _;
    use shake::{ExtendableOutput as _, Shake256, XofReader as _};

    use super::super::{KeySpec, LoadedKey};
    use super::*;

    /// FIPS 204's μ of `message` for the public key `pk` (pure mode, empty context):
    /// SHAKE256(SHAKE256(pk, 64) || 0 || 0 || M, 64).
    fn mu(pk: &[u8], message: &[u8]) -> [u8; MU_LEN] {
        let mut tr = [0u8; 64];
        Shake256::default().chain(pk).finalize_xof().read(&mut tr);
        let mut mu = [0u8; MU_LEN];
        Shake256::default().chain(tr).chain([0u8, 0]).chain(message).finalize_xof().read(&mut mu);
        mu
    }

    fn aws_lc_signing(level: MlDsaLevel) -> &'static aws_lc_rs::signature::PqdsaSigningAlgorithm {
        match level {
            MlDsaLevel::D44 => &aws_lc_rs::signature::ML_DSA_44_SIGNING,
            MlDsaLevel::D65 => &aws_lc_rs::signature::ML_DSA_65_SIGNING,
            MlDsaLevel::D87 => &aws_lc_rs::signature::ML_DSA_87_SIGNING,
        }
    }

    #[test]
    fn a_callers_mu_and_the_data_both_sign_what_aws_lc_verifies_as_pure_ml_dsa() {
        let cases: [(MlDsaLevel, &'static dyn sig::VerificationAlgorithm, usize, usize); 3] = [
            (MlDsaLevel::D44, &sig::ML_DSA_44, 1312, 2420),
            (MlDsaLevel::D65, &sig::ML_DSA_65, 1952, 3309),
            (MlDsaLevel::D87, &sig::ML_DSA_87, 2592, 4627),
        ];
        let message = b"release v1.2.3";
        for (level, verifier, public_len, signature_len) in cases {
            let spec = KeySpec::MlDsaExternalMu(level);
            assert!(spec.signs() && spec.post_quantum() && spec.prehash().is_none());
            let material = spec.generate().unwrap();
            assert_eq!(material.expose().len(), SEED_LEN);
            let key = LoadedKey::from_material(spec, &material).unwrap();
            let pk = key.public_key_raw().unwrap();
            assert_eq!(pk.len(), public_len);
            // AWS-LC expands the same seed into the same key, and encodes the same SPKI.
            let aws_lc =
                aws_lc_rs::signature::PqdsaKeyPair::from_seed(aws_lc_signing(level), material.expose()).unwrap();
            assert_eq!(aws_lc.public_key().as_ref(), pk.as_slice(), "{level:?}");
            let der = key.public_key_der().unwrap();
            assert_eq!(der.as_slice(), aws_lc_rs::encoding::AsDer::as_der(aws_lc.public_key()).unwrap().as_ref());
            let verify =
                |signature: &[u8], message: &[u8]| UnparsedPublicKey::new(verifier, &pk).verify(message, signature);
            let by_mu = key.sign_digest(&mu(&pk, message)).unwrap();
            let by_data = key.sign_data(message).unwrap();
            for signature in [&by_mu, &by_data] {
                assert_eq!(signature.len(), signature_len);
                verify(signature, message).unwrap();
                assert!(verify(signature, b"another release").is_err());
            }
            // Hedged: the same μ signed twice gives two signatures.
            assert_ne!(key.sign_digest(&mu(&pk, message)).unwrap(), by_mu);
            assert!(matches!(key.sign_digest(&[0; 63]), Err(KeyError::DigestLength { expected: 64, actual: 63 })));
            // The seed is the key: loading it again gives the same public key.
            assert_eq!(LoadedKey::from_material(spec, &material).unwrap().public_key_raw().unwrap(), pk);
            assert!(LoadedKey::from_material(spec, &crate::Secret::new(vec![1; 31])).is_err());
        }
    }
}
