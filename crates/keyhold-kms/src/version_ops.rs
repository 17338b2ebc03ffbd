//! The key operations addressed to one version, for the purposes other than ENCRYPT_DECRYPT:
//! `asymmetricSign`, `asymmetricDecrypt`, `getPublicKey`, `macSign`, `macVerify`, `rawEncrypt`
//! and `rawDecrypt`. Like
//! [`crate::crypto_ops`], no database round trip: the version comes from the key cache and its
//! protection level's [`crate::backend::KeyBackend`] does the cryptography.
//!
//! Checks run in the order Cloud KMS's contract tests fix (kms-integrations,
//! `fakekms/contract/`): the version exists (`NOT_FOUND`), is `ENABLED` (`FAILED_PRECONDITION`),
//! has an algorithm of the method's purpose (`FAILED_PRECONDITION`); then the request's fields
//! and their CRC32C (`INVALID_ARGUMENT`), so a request with no body to a disabled version says
//! "disabled", not "field missing".

use std::sync::Arc;

use keyhold_api::CryptoKeyVersionName;
use keyhold_api::messages::{
    AsymmetricDecryptRequest, AsymmetricDecryptResponse, AsymmetricSignRequest, AsymmetricSignResponse,
    ChecksummedData, DecapsulateRequest, DecapsulateResponse, Digest, MacSignRequest, MacSignResponse,
    MacVerifyRequest, MacVerifyResponse, PublicKey, PublicKeyFormat, RawDecryptRequest, RawDecryptResponse,
    RawEncryptRequest, RawEncryptResponse,
};
use keyhold_api::resources::{Algorithm, ProtectionLevel, Purpose, VersionState};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_crypto::crc32c;
use keyhold_crypto::keys::{AES_BLOCK_LEN, AesMode, GCM_TAG_LEN, Hash, KeySpec, MU_LEN};
use keyhold_iam::{Permission, role};

use crate::algorithm::key_spec;
use crate::backend::{KeyBackend, KeyUse, SignInput};
use crate::cache::{CachedKey, CachedVersion};
use crate::call::Call;
use crate::crypto_ops::{MAX_PLAINTEXT, check_crc, check_justification, check_size, require_enabled};
use crate::error::KmsError;
use crate::keys::Keys;

/// Largest `decapsulate` ciphertext: ML-KEM-1024's is 1,568 bytes.
const MAX_KEM_CIPHERTEXT: usize = 2048;

/// Largest `asymmetricDecrypt` ciphertext: an RSA-4096 block is 512 bytes; anything far longer
/// is refused before it reaches the key.
const MAX_RSA_CIPHERTEXT: usize = 1024;

/// A version found, enabled and of the right purpose, with its key's cache entry.
struct Usable {
    entry: Arc<CachedKey>,
    id: u64,
    algorithm: Algorithm,
    level: ProtectionLevel,
}

impl Usable {
    fn version(&self) -> &CachedVersion {
        // `usable` found it in this very entry.
        &self.entry.versions[&self.id]
    }

    /// The key of a served algorithm (every algorithm its backend let be created).
    fn spec(&self) -> Result<KeySpec, KmsError> {
        key_spec(self.algorithm).ok_or_else(|| {
            KmsError::Unimplemented(format!("Algorithm {} is not served by this server.", self.algorithm))
        })
    }
}

/// `asymmetricSign`, `asymmetricDecrypt`, `getPublicKey`, `macSign`, `macVerify`.
#[derive(Debug)]
pub(crate) struct VersionOps {
    keys: Arc<Keys>,
}

impl VersionOps {
    pub(crate) fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }

    /// The version `name`, if it exists, is `ENABLED` and has an algorithm of one of `purposes`
    /// (else `operation` names what it may not be used for).
    async fn usable(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        purposes: &[Purpose],
        operation: &'static str,
    ) -> Result<Usable, KmsError> {
        let key_name = &name.crypto_key;
        let mut entry = self.keys.cached(key_name).await?;
        let stale = |e: &CachedKey| {
            e.versions
                .get(&name.version)
                .is_none_or(|v| v.record.version.state == Some(VersionState::PendingGeneration))
        };
        if stale(&entry) {
            // Perhaps created, or generated, on another node since we cached the key.
            entry = self.keys.refresh_cached(key_name, &entry).await?;
        }
        let version = entry.versions.get(&name.version).ok_or_else(|| KmsError::VersionNotFound(name.clone()))?;
        call.set_key_version(version.record.version.name.clone());
        require_enabled(version)?;
        let algorithm = version.record.version.algorithm.unwrap_or(Algorithm::GoogleSymmetricEncryption);
        if !algorithm.purpose().is_some_and(|p| purposes.contains(&p)) {
            return Err(KmsError::WrongAlgorithm { version: name.clone(), algorithm, operation });
        }
        let level = version.record.version.protection_level.unwrap_or(ProtectionLevel::Software);
        Ok(Usable { entry, id: name.version, algorithm, level })
    }

    fn backend(&self, u: &Usable) -> Result<&dyn KeyBackend, KmsError> {
        self.keys.backends.for_level(Some(u.level))
    }

    /// `cryptoKeyVersions.asymmetricSign`: a digest of the algorithm's hash (or an external-μ ML-DSA
    /// key's μ), or the data (which Ed25519, ML-DSA and pure SLH-DSA sign as it is and the others
    /// hash first).
    pub(crate) async fn asymmetric_sign(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &AsymmetricSignRequest,
    ) -> Result<AsymmetricSignResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::AsymmetricSign], "signing").await?;
        let spec = u.spec()?;
        let data = req.data.0.as_slice();
        // How many of the digest's fields are set: none is no digest, two or more are refused.
        let set = req.digest.as_ref().map_or(0, |d| {
            [d.sha256.is_some(), d.sha384.is_some(), d.sha512.is_some(), d.external_mu.is_some()]
                .into_iter()
                .filter(|s| *s)
                .count()
        });
        if set > 1 {
            return Err(KmsError::InvalidArgument(
                "Only one of digest.sha256, digest.sha384, digest.sha512 and digest.external_mu may be set.".into(),
            ));
        }
        let digest = req.digest.as_ref().filter(|_| set == 1);
        if req.digest_crc32c.is_some() && req.data_crc32c.is_some() {
            return Err(KmsError::InvalidArgument("Only one of digest_crc32c and data_crc32c may be set.".into()));
        }
        let input = match (digest, data.is_empty()) {
            (Some(_), false) => {
                return Err(KmsError::InvalidArgument("Only one of digest and data may be set.".into()));
            }
            (None, true) => return Err(KmsError::InvalidArgument("One of digest or data must be set.".into())),
            (None, false) => {
                if req.digest_crc32c.is_some() {
                    return Err(KmsError::InvalidArgument("digest_crc32c is set but digest is not.".into()));
                }
                check_size("data", data.len(), MAX_PLAINTEXT)?;
                check_crc("data", data, req.data_crc32c)?;
                if let KeySpec::RsaRawPkcs1(bits) = spec
                    && data.len() > bits.modulus_len() - 11
                {
                    return Err(KmsError::InvalidArgument(format!(
                        "For {} the data may be at most {} bytes long (PKCS#1 v1.5 padding needs 11); got {}.",
                        u.algorithm,
                        bits.modulus_len() - 11,
                        data.len()
                    )));
                }
                SignInput::Data(data)
            }
            (Some(d), true) => {
                if req.data_crc32c.is_some() {
                    return Err(KmsError::InvalidArgument("data_crc32c is set but data is not.".into()));
                }
                match (matches!(spec, KeySpec::MlDsaExternalMu(_)), &d.external_mu) {
                    (true, Some(mu)) => {
                        if mu.0.len() != MU_LEN {
                            return Err(KmsError::InvalidArgument(format!(
                                "The external_mu digest must be {MU_LEN} bytes long; got {}.",
                                mu.0.len()
                            )));
                        }
                        check_crc("digest", &mu.0, req.digest_crc32c)?;
                        SignInput::Digest(&mu.0)
                    }
                    (true, None) => {
                        return Err(KmsError::InvalidArgument(format!(
                            "Algorithm {} takes an external mu: set digest.external_mu, or send data.",
                            u.algorithm
                        )));
                    }
                    (false, Some(_)) => {
                        return Err(KmsError::InvalidArgument(format!(
                            "digest.external_mu is for the ML-DSA external-mu algorithms, not {}.",
                            u.algorithm
                        )));
                    }
                    (false, None) => Self::sha_digest(&u, spec, d, req)?,
                }
            }
        };
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let signature = self.backend(&u)?.sign(using, input).await?;
        Ok(AsymmetricSignResponse {
            signature_crc32c: Crc32c(crc32c(&signature)),
            signature: Bytes(signature),
            verified_digest_crc32c: matches!(input, SignInput::Digest(_)) && req.digest_crc32c.is_some(),
            name: name.to_string(),
            verified_data_crc32c: matches!(input, SignInput::Data(_)) && req.data_crc32c.is_some(),
            protection_level: u.level,
        })
    }

    /// The SHA-2 digest of `d` that the key of `spec` signs: in the field of its hash, of that
    /// hash's length.
    fn sha_digest<'r>(
        u: &Usable,
        spec: KeySpec,
        d: &'r Digest,
        req: &AsymmetricSignRequest,
    ) -> Result<SignInput<'r>, KmsError> {
        let Some(hash) = spec.prehash() else {
            return Err(KmsError::InvalidArgument(format!(
                "Algorithm {} signs the data itself, not a digest: send data.",
                u.algorithm
            )));
        };
        let (field, given) = match hash {
            Hash::Sha256 => ("sha256", &d.sha256),
            Hash::Sha384 => ("sha384", &d.sha384),
            _ => ("sha512", &d.sha512),
        };
        let Some(given) = given else {
            return Err(KmsError::InvalidArgument(format!(
                "Algorithm {} takes a {field} digest: set digest.{field}.",
                u.algorithm
            )));
        };
        if given.0.len() != hash.output_len() {
            return Err(KmsError::InvalidArgument(format!(
                "The {field} digest must be {} bytes long; got {}.",
                hash.output_len(),
                given.0.len()
            )));
        }
        check_crc("digest", &given.0, req.digest_crc32c)?;
        Ok(SignInput::Digest(&given.0))
    }

    /// `cryptoKeyVersions.asymmetricDecrypt`: RSA-OAEP with the version's private key.
    pub(crate) async fn asymmetric_decrypt(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &AsymmetricDecryptRequest,
    ) -> Result<AsymmetricDecryptResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::AsymmetricDecrypt], "asymmetric decryption").await?;
        let ct = req.ciphertext.0.as_slice();
        if ct.is_empty() {
            return Err(KmsError::InvalidArgument("ciphertext is required.".into()));
        }
        check_size("ciphertext", ct.len(), MAX_RSA_CIPHERTEXT)?;
        let verified = check_crc("ciphertext", ct, req.ciphertext_crc32c)?;
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let plaintext = self.backend(&u)?.asymmetric_decrypt(using, ct).await?;
        Ok(AsymmetricDecryptResponse {
            plaintext_crc32c: Crc32c(crc32c(plaintext.expose())),
            plaintext: SecretBytes(plaintext),
            verified_ciphertext_crc32c: verified,
            protection_level: u.level,
        })
    }

    /// `cryptoKeyVersions.getPublicKey`: PEM in `pem` when no format is asked for; else the key
    /// in that format in `publicKey` (and, for `PEM`, in `pem` too).
    pub(crate) async fn public_key(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        format: Option<PublicKeyFormat>,
    ) -> Result<PublicKey, KmsError> {
        let purposes = [Purpose::AsymmetricSign, Purpose::AsymmetricDecrypt, Purpose::KeyEncapsulation];
        let u = self.usable(call, name, &purposes, "getPublicKey (it has no public key)").await?;
        let format = format.filter(|f| *f != PublicKeyFormat::Unspecified);
        let spec = u.spec()?;
        let xwing = spec == KeySpec::XWing;
        match (spec.post_quantum(), xwing, format) {
            (false, _, Some(f @ (PublicKeyFormat::NistPqc | PublicKeyFormat::XwingRawBytes))) => {
                return Err(KmsError::InvalidArgument(format!(
                    "Public key format {f} is for post-quantum keys; {} keys give PEM or DER.",
                    u.algorithm
                )));
            }
            // X-Wing has no standard SubjectPublicKeyInfo nor NIST encoding: raw bytes only.
            (_, true, Some(PublicKeyFormat::XwingRawBytes)) => {}
            (_, true, _) => {
                return Err(KmsError::InvalidArgument(format!(
                    "publicKeyFormat XWING_RAW_BYTES is required for {}: the ML-KEM-768 encapsulation key then the \
                     X25519 public key, 1216 bytes.",
                    u.algorithm
                )));
            }
            (true, false, Some(PublicKeyFormat::XwingRawBytes)) => {
                return Err(KmsError::InvalidArgument(format!(
                    "Public key format XWING_RAW_BYTES is for KEM_XWING keys; {} keys give NIST_PQC, PEM or DER.",
                    u.algorithm
                )));
            }
            (true, false, None) => {
                return Err(KmsError::InvalidArgument(format!(
                    "publicKeyFormat is required for {}: NIST_PQC (the raw FIPS 203, 204 or 205 key), PEM or DER.",
                    u.algorithm
                )));
            }
            _ => {}
        }
        // Reading a public key uses no private key: no access reason is checked.
        let reason = keyhold_api::resources::AccessReason::ReasonNotExpected;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let backend = self.backend(&u)?;
        // The raw formats come from the key itself; the others from its SubjectPublicKeyInfo.
        let (data, pem) = match format {
            Some(PublicKeyFormat::NistPqc | PublicKeyFormat::XwingRawBytes) => {
                (Some(backend.public_key_raw(using).await?), String::new())
            }
            _ => {
                let der = backend.public_key(using).await?;
                let pem = keyhold_crypto::keys::public_key_pem(&der);
                let data = match format {
                    None => None,
                    Some(PublicKeyFormat::Der) => Some(der),
                    Some(_) => Some(pem.clone().into_bytes()),
                };
                (data, pem)
            }
        };
        let public_key = data.map(|data| ChecksummedData { crc32c_checksum: Crc32c(crc32c(&data)), data: Bytes(data) });
        let with_pem = matches!(format, None | Some(PublicKeyFormat::Pem));
        Ok(PublicKey {
            pem_crc32c: with_pem.then(|| Crc32c(crc32c(pem.as_bytes()))),
            pem: if with_pem { pem } else { String::new() },
            algorithm: u.algorithm,
            name: name.to_string(),
            protection_level: u.level,
            public_key_format: format,
            public_key,
        })
    }

    /// `cryptoKeyVersions.macSign`.
    pub(crate) async fn mac_sign(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &MacSignRequest,
    ) -> Result<MacSignResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::Mac], "MAC signing").await?;
        let data = req.data.0.expose();
        let verified = check_mac_data(data, req.data_crc32c)?;
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let mac = self.backend(&u)?.mac_sign(using, data).await?;
        Ok(MacSignResponse {
            name: name.to_string(),
            mac_crc32c: Crc32c(crc32c(&mac)),
            mac: Bytes(mac),
            verified_data_crc32c: verified,
            protection_level: u.level,
        })
    }

    /// `cryptoKeyVersions.macVerify`: `success` and `verifiedSuccessIntegrity` both say whether
    /// the tag is right (Cloud KMS's clients compare the two).
    pub(crate) async fn mac_verify(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &MacVerifyRequest,
    ) -> Result<MacVerifyResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::Mac], "MAC verification").await?;
        let data = req.data.0.expose();
        let verified_data = check_mac_data(data, req.data_crc32c)?;
        let mac = req.mac.0.as_slice();
        if mac.is_empty() {
            return Err(KmsError::InvalidArgument("mac is required.".into()));
        }
        let KeySpec::Hmac(hash) = u.spec()? else {
            return Err(KmsError::Internal(format!("{name}: a MAC algorithm without an HMAC key")));
        };
        if mac.len() != hash.output_len() {
            return Err(KmsError::InvalidArgument(format!(
                "The mac must be {} bytes long for algorithm {}; got {}.",
                hash.output_len(),
                u.algorithm,
                mac.len()
            )));
        }
        let verified_mac = check_crc("mac", mac, req.mac_crc32c)?;
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let success = self.backend(&u)?.mac_verify(using, data, mac).await?;
        Ok(MacVerifyResponse {
            name: name.to_string(),
            success,
            verified_data_crc32c: verified_data,
            verified_mac_crc32c: verified_mac,
            verified_success_integrity: success,
            protection_level: u.level,
        })
    }
}

impl VersionOps {
    /// `cryptoKeyVersions.decapsulate`: the shared secret of an ML-KEM or X-Wing ciphertext made
    /// with the version's public key.
    pub(crate) async fn decapsulate(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &DecapsulateRequest,
    ) -> Result<DecapsulateResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::KeyEncapsulation], "decapsulation").await?;
        let ct = req.ciphertext.0.as_slice();
        if ct.is_empty() {
            return Err(KmsError::InvalidArgument("ciphertext is required.".into()));
        }
        check_size("ciphertext", ct.len(), MAX_KEM_CIPHERTEXT)?;
        let verified = check_crc("ciphertext", ct, req.ciphertext_crc32c)?;
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let secret = self.backend(&u)?.decapsulate(using, ct).await?;
        Ok(DecapsulateResponse {
            name: name.to_string(),
            shared_secret_crc32c: Crc32c(crc32c(secret.expose())),
            shared_secret: SecretBytes(secret),
            verified_ciphertext_crc32c: verified,
            protection_level: u.level,
        })
    }

    /// `cryptoKeyVersions.rawEncrypt`: AES-GCM with a nonce drawn here (no caller IV), or
    /// AES-CBC (no padding) / AES-CTR with the caller's 16-byte IV or one drawn here (no AAD).
    pub(crate) async fn raw_encrypt(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &RawEncryptRequest,
    ) -> Result<RawEncryptResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::RawEncryptDecrypt], "raw encryption").await?;
        let mode = aes_mode(&u)?;
        let plaintext = req.plaintext.0.expose();
        if plaintext.is_empty() {
            return Err(KmsError::InvalidArgument("plaintext is required.".into()));
        }
        check_size("plaintext", plaintext.len(), MAX_PLAINTEXT)?;
        let verified_plaintext = check_crc("plaintext", plaintext, req.plaintext_crc32c)?;
        let aad = req.additional_authenticated_data.0.as_slice();
        let iv = req.initialization_vector.0.as_slice();
        check_size("additional_authenticated_data", aad.len(), MAX_PLAINTEXT)?;
        if mode == AesMode::Gcm && !iv.is_empty() {
            return Err(KmsError::InvalidArgument(format!(
                "An initialization_vector cannot be given for {}: its nonce is chosen by the server.",
                u.algorithm
            )));
        }
        check_raw_shape(&u, mode, aad, (!iv.is_empty()).then_some(iv))?;
        if mode == AesMode::Cbc && !plaintext.len().is_multiple_of(AES_BLOCK_LEN) {
            return Err(KmsError::InvalidArgument(format!(
                "For {} the plaintext must be a multiple of {AES_BLOCK_LEN} bytes long (there is no padding); got {}.",
                u.algorithm,
                plaintext.len()
            )));
        }
        let verified_aad = check_crc("additional_authenticated_data", aad, req.additional_authenticated_data_crc32c)?;
        let verified_iv = check_crc("initialization_vector", iv, req.initialization_vector_crc32c)?;
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let sealed = self.backend(&u)?.raw_encrypt(using, plaintext, aad, (!iv.is_empty()).then_some(iv)).await?;
        Ok(RawEncryptResponse {
            ciphertext_crc32c: Crc32c(crc32c(&sealed.ciphertext)),
            initialization_vector_crc32c: Crc32c(crc32c(&sealed.iv)),
            ciphertext: Bytes(sealed.ciphertext),
            initialization_vector: Bytes(sealed.iv),
            tag_length: i32::try_from(mode.tag_len()).unwrap_or_default(),
            verified_plaintext_crc32c: verified_plaintext,
            verified_additional_authenticated_data_crc32c: verified_aad,
            verified_initialization_vector_crc32c: verified_iv,
            name: name.to_string(),
            protection_level: u.level,
        })
    }

    /// `cryptoKeyVersions.rawDecrypt`: the IV `rawEncrypt` answered is required; `tagLength`
    /// is 0 (the default) or 16 for AES-GCM and 0 otherwise.
    pub(crate) async fn raw_decrypt(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        req: &RawDecryptRequest,
    ) -> Result<RawDecryptResponse, KmsError> {
        let u = self.usable(call, name, &[Purpose::RawEncryptDecrypt], "raw decryption").await?;
        let mode = aes_mode(&u)?;
        let ct = req.ciphertext.0.as_slice();
        if ct.is_empty() {
            return Err(KmsError::InvalidArgument("ciphertext is required.".into()));
        }
        check_size("ciphertext", ct.len(), MAX_PLAINTEXT + mode.tag_len())?;
        let verified_ct = check_crc("ciphertext", ct, req.ciphertext_crc32c)?;
        let iv = req.initialization_vector.0.as_slice();
        if iv.is_empty() {
            return Err(KmsError::InvalidArgument(
                "initialization_vector is required: the one rawEncrypt answered with.".into(),
            ));
        }
        let aad = req.additional_authenticated_data.0.as_slice();
        check_size("additional_authenticated_data", aad.len(), MAX_PLAINTEXT)?;
        check_raw_shape(&u, mode, aad, Some(iv))?;
        let verified_iv = check_crc("initialization_vector", iv, req.initialization_vector_crc32c)?;
        let verified_aad = check_crc("additional_authenticated_data", aad, req.additional_authenticated_data_crc32c)?;
        if usize::try_from(req.tag_length).ok().filter(|t| *t == 0 || *t == mode.tag_len()).is_none() {
            return Err(KmsError::InvalidArgument(format!(
                "tag_length must be 0 or {} for {}; got {}.",
                mode.tag_len(),
                u.algorithm,
                req.tag_length
            )));
        }
        let shape_ok = match mode {
            AesMode::Gcm => ct.len() >= GCM_TAG_LEN,
            AesMode::Cbc => ct.len().is_multiple_of(AES_BLOCK_LEN),
            AesMode::Ctr => true,
        };
        if !shape_ok {
            return Err(KmsError::DecryptionFailed);
        }
        let reason = check_justification(call, &u.entry)?;
        let using = KeyUse { key_name: &u.entry.name, version: u.version(), call, reason };
        let plaintext = self.backend(&u)?.raw_decrypt(using, ct, aad, iv).await?;
        Ok(RawDecryptResponse {
            plaintext_crc32c: Crc32c(crc32c(plaintext.expose())),
            plaintext: SecretBytes(plaintext),
            protection_level: u.level,
            verified_ciphertext_crc32c: verified_ct,
            verified_additional_authenticated_data_crc32c: verified_aad,
            verified_initialization_vector_crc32c: verified_iv,
        })
    }
}

impl VersionOps {
    /// The extra permission Cloud KMS requires to use a raw AES-CBC or AES-CTR version
    /// (`manageRawAesCbcKeys`, `manageRawAesCtrKeys`: with CTR, encryption is decryption, so
    /// `useToEncrypt` alone would decrypt) or a raw PKCS#1 signing version (`manageRawPKCS1Keys`:
    /// it signs whatever bytes it is given, a DigestInfo of any hash or none), or `None`
    /// (another algorithm, or no such key: the operation then answers why).
    ///
    /// The version is looked up as the operation will look it up (the key read again if this
    /// node has not seen the version yet), so a version created on another node cannot slip
    /// past the check; a key that cannot be read is an error, never "no extra permission".
    pub(crate) async fn raw_expert_permission(
        &self,
        name: &CryptoKeyVersionName,
    ) -> Result<Option<Permission>, KmsError> {
        let mut entry = match self.keys.cached(&name.crypto_key).await {
            Ok(entry) => entry,
            // No such key: the operation answers NOT_FOUND after the check of its own permission.
            Err(KmsError::CryptoKeyNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !entry.versions.contains_key(&name.version) {
            entry = self.keys.refresh_cached(&name.crypto_key, &entry).await?;
        }
        // Still unknown: NOT_FOUND now, as the operation would answer (were it to find the
        // version a moment later, it would have skipped this check).
        let version = entry.versions.get(&name.version).ok_or_else(|| KmsError::VersionNotFound(name.clone()))?;
        let Some(algorithm) = version.record.version.algorithm else { return Ok(None) };
        Ok(match key_spec(algorithm) {
            Some(KeySpec::Aes(_, AesMode::Cbc)) => Some(role::VERSIONS_MANAGE_RAW_AES_CBC_KEYS),
            Some(KeySpec::Aes(_, AesMode::Ctr)) => Some(role::VERSIONS_MANAGE_RAW_AES_CTR_KEYS),
            Some(KeySpec::RsaRawPkcs1(_)) => Some(role::VERSIONS_MANAGE_RAW_PKCS1_KEYS),
            _ => None,
        })
    }
}

/// The AES mode of a raw version.
fn aes_mode(u: &Usable) -> Result<AesMode, KmsError> {
    match u.spec()? {
        KeySpec::Aes(_, mode) => Ok(mode),
        _ => Err(KmsError::Internal(format!("{}: a raw algorithm without an AES key", u.algorithm))),
    }
}

/// What CBC and CTR refuse (AAD) and every mode's IV length.
fn check_raw_shape(u: &Usable, mode: AesMode, aad: &[u8], iv: Option<&[u8]>) -> Result<(), KmsError> {
    if mode != AesMode::Gcm && !aad.is_empty() {
        return Err(KmsError::InvalidArgument(format!(
            "additional_authenticated_data cannot be used with {}: only AES-GCM authenticates it.",
            u.algorithm
        )));
    }
    if let Some(iv) = iv.filter(|iv| iv.len() != mode.iv_len()) {
        return Err(KmsError::InvalidArgument(format!(
            "The initialization_vector must be {} bytes long for {}; got {}.",
            mode.iv_len(),
            u.algorithm,
            iv.len()
        )));
    }
    Ok(())
}

/// `data` of `macSign` / `macVerify`: required, at most 64 KiB, its CRC32C if given.
fn check_mac_data(data: &[u8], crc: Option<Crc32c>) -> Result<bool, KmsError> {
    if data.is_empty() {
        return Err(KmsError::InvalidArgument("data is required.".into()));
    }
    check_size("data", data.len(), MAX_PLAINTEXT)?;
    check_crc("data", data, crc)
}
