//! Key import (issue 19): import jobs and `cryptoKeyVersions:import`.
//!
//! An import job holds an RSA wrapping key (3072 or 4096 bits, its private half sealed by the
//! root key) for 3 days. A client wraps key material for the job's public key by the job's
//! import method (`keyhold_crypto::import`), and `cryptoKeyVersions:import` unwraps it, checks
//! that it is a key of the algorithm named, and makes it a version: a new one, or an imported
//! version that was destroyed, given the very same material again.
//!
//! A job is `ACTIVE` from its creation (the wrapping key is generated before the answer), and
//! `EXPIRED` from its `expireTime` on, derived when it is read; the scheduler then erases its
//! wrapping key.
//!
//! Each imported version keeps a fingerprint of its material: HMAC-SHA256, under a key the root
//! key seals (kept in the server's metadata), of the material's identity (the raw key of a
//! symmetric or HMAC key, the public key of an asymmetric one, so any encoding of the same
//! private key matches). Only material with the same fingerprint goes back into a destroyed
//! imported version; the fingerprint reveals nothing without the root key.

use std::sync::Arc;

use keyhold_api::messages::ImportCryptoKeyVersionRequest;
use keyhold_api::page::Page;
use keyhold_api::resources::{
    CryptoKeyVersion, ImportJob, ImportJobState, ImportMethod, KeyOperationAttestation, ProtectionLevel, Purpose,
    VersionState, WrappingPublicKey,
};
use keyhold_api::wire::ProtoDuration;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName};
use keyhold_crypto::import::{self as wrapping, MAX_WRAPPED_KEY, Wrapping};
use keyhold_crypto::keys::{self, Hash, KeySpec, LoadedKey, RsaBits};
use keyhold_crypto::{KeyBytes, Secret};
use tokio::sync::OnceCell;

use crate::algorithm;
use crate::backend::{Erasing, run_slow};
use crate::call::Call;
use crate::clock::Clock;
use crate::error::KmsError;
use crate::keys::{Keys, ListQuery};
use crate::listing::{self, Listing};
use crate::repo::{ImportJobRecord, KmsRepository, RepoError, VersionRecord};

/// How long an import job can be used: "An ImportJob expires 3 days after it is created".
pub const IMPORT_JOB_LIFETIME: ProtoDuration = ProtoDuration::from_secs(3 * 24 * 3600);

/// The wrapping key and wrapping of an import method Keyhold serves (`None` for the HPKE
/// methods): what a client wraps key material with, and the server unwraps it with.
pub fn method_parameters(method: ImportMethod) -> Option<(RsaBits, Wrapping)> {
    use ImportMethod as M;
    let (bits, hash, aes_kwp) = match method {
        M::RsaOaep3072Sha1Aes256 => (RsaBits::B3072, Hash::Sha1, true),
        M::RsaOaep4096Sha1Aes256 => (RsaBits::B4096, Hash::Sha1, true),
        M::RsaOaep3072Sha256Aes256 => (RsaBits::B3072, Hash::Sha256, true),
        M::RsaOaep4096Sha256Aes256 => (RsaBits::B4096, Hash::Sha256, true),
        M::RsaOaep3072Sha256 => (RsaBits::B3072, Hash::Sha256, false),
        M::RsaOaep4096Sha256 => (RsaBits::B4096, Hash::Sha256, false),
        _ => return None,
    };
    Some((bits, Wrapping { hash, aes_kwp }))
}

/// The server metadata entry holding the fingerprint key, sealed by the root key.
const FINGERPRINT_KEY: &str = "import_fingerprint_key";
/// The root key's context for it.
const FINGERPRINT_KEY_CONTEXT: &str = "import-fingerprint-key";

/// HMAC-SHA256 under `key` of the version, the algorithm and the material's identity.
fn fingerprint(key: &LoadedKey, version: &CryptoKeyVersionName, algorithm: &str, identity: &Secret) -> String {
    let message = [
        b"keyhold/import-fingerprint/v1\0".as_slice(),
        version.to_string().as_bytes(),
        b"\0",
        algorithm.as_bytes(),
        b"\0",
        identity.expose(),
    ]
    .concat();
    let tag = key.mac(&message).unwrap_or_default();
    keyhold_crypto::hex(&tag)
}

/// Import jobs and imports.
#[derive(Debug)]
pub(crate) struct Imports {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    keys: Arc<Keys>,
    /// The fingerprint key, unsealed once.
    fingerprint_key: OnceCell<LoadedKey>,
}

impl Imports {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, clock: Arc<dyn Clock>, keys: Arc<Keys>) -> Self {
        Self { repo, clock, keys, fingerprint_key: OnceCell::new() }
    }

    /// The fingerprint key: made and sealed by the first node that needs it (the first write
    /// wins; the others read it back), unsealed once per process.
    async fn fingerprint_key(&self) -> Result<&LoadedKey, KmsError> {
        self.fingerprint_key
            .get_or_try_init(|| async {
                let software = self.keys.backends.software();
                let fresh = KeyBytes::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
                let sealed = software.seal_service_key(&fresh, FINGERPRINT_KEY_CONTEXT).await?;
                let stored = self.repo.meta_set_if_absent(FINGERPRINT_KEY, &keyhold_crypto::hex(&sealed)).await?;
                let sealed = unhex(&stored)
                    .ok_or_else(|| KmsError::Internal("the stored import fingerprint key is not hex".into()))?;
                let key = software.unseal_service_key(&sealed, FINGERPRINT_KEY_CONTEXT).await?;
                LoadedKey::from_material(KeySpec::Hmac(Hash::Sha256), &Secret::new(key.expose().to_vec()))
                    .map_err(|e| KmsError::Internal(format!("the import fingerprint key: {e}")))
            })
            .await
    }

    /// `importJobs.create`: generates the wrapping key and answers the job `ACTIVE`.
    pub(crate) async fn create_job(
        &self,
        call: &Call<'_>,
        parent: &KeyRingName,
        import_job_id: &str,
        request: ImportJob,
    ) -> Result<ImportJob, KmsError> {
        let name = ImportJobName::new(parent, import_job_id)?;
        self.keys.key_ring(parent).await?;
        let method = match request.import_method {
            None | Some(ImportMethod::Unspecified) => {
                return Err(KmsError::InvalidArgument(
                    "import_method is required: one of RSA_OAEP_3072_SHA1_AES_256, RSA_OAEP_4096_SHA1_AES_256, \
                     RSA_OAEP_3072_SHA256_AES_256, RSA_OAEP_4096_SHA256_AES_256, RSA_OAEP_3072_SHA256, \
                     RSA_OAEP_4096_SHA256."
                        .into(),
                ));
            }
            Some(m) => m,
        };
        let Some((bits, how)) = method_parameters(method) else {
            return Err(KmsError::Unimplemented(format!(
                "ImportMethod {method} is not served by Keyhold; use one of the RSA_OAEP methods (docs/api.md)."
            )));
        };
        let level = match request.protection_level {
            Some(ProtectionLevel::Software) => ProtectionLevel::Software,
            // Refused (501) on a server without a token.
            Some(ProtectionLevel::Hsm) => {
                self.keys.backends.hsm()?;
                ProtectionLevel::Hsm
            }
            None | Some(ProtectionLevel::Unspecified) => {
                return Err(KmsError::InvalidArgument(
                    "protection_level is required: the protection level of the keys the job imports into.".into(),
                ));
            }
            Some(level) => {
                return Err(KmsError::InvalidArgument(format!(
                    "Import jobs are for SOFTWARE and HSM keys; keys of protection level {level} cannot be imported."
                )));
            }
        };
        if !request.crypto_key_backend.is_empty() {
            return Err(KmsError::Unimplemented("cryptoKeyBackend (EKM connections) is not supported.".into()));
        }
        // Before the generation, so that creating a taken name again costs no RSA key (the
        // insert still refuses a name taken meanwhile).
        if self.repo.import_job(&name).await?.is_some() {
            return Err(KmsError::ImportJobExists(name));
        }
        let spec = KeySpec::RsaOaep(bits, how.hash);
        // RSA generation takes up to a second at 4096 bits: off the async workers.
        let (material, public) = run_slow(move || {
            let material = spec.generate()?;
            let public = LoadedKey::from_material(spec, &material)?.public_key_der()?;
            Ok::<_, keys::KeyError>((material, public))
        })
        .await?
        .map_err(|e| KmsError::Internal(format!("{name}: {e}")))?;
        let wrapping_key = self.keys.backends.software().seal_wrapping_key(&name.to_string(), &material).await?;
        let now = self.clock.now();
        let job = ImportJob {
            name: name.to_string(),
            import_method: Some(method),
            protection_level: Some(level),
            attestation: (level == ProtectionLevel::Hsm).then(hsm_job_statement),
            create_time: Some(now),
            generate_time: Some(now),
            expire_time: Some(now.add(IMPORT_JOB_LIFETIME)),
            state: Some(ImportJobState::Active),
            public_key: Some(WrappingPublicKey { pem: keys::public_key_pem(&public), data: None }),
            ..Default::default()
        };
        let record = ImportJobRecord { name: name.clone(), job, wrapping_key: Some(wrapping_key) };
        match self.repo.insert_import_job(&record, &call.success_entry()).await {
            Ok(()) => Ok(self.render(&record)),
            Err(RepoError::AlreadyExists) => Err(KmsError::ImportJobExists(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// The job as clients see it now: `EXPIRED`, with its `expireEventTime` and without its
    /// public key, from its `expireTime` on.
    fn render(&self, record: &ImportJobRecord) -> ImportJob {
        let mut job = record.job.clone();
        if job.expire_time.is_some_and(|t| self.clock.now() >= t) {
            job.state = Some(ImportJobState::Expired);
            job.expire_event_time = job.expire_time;
            job.public_key = None;
        }
        job
    }

    async fn record(&self, name: &ImportJobName) -> Result<ImportJobRecord, KmsError> {
        self.repo.import_job(name).await?.ok_or_else(|| KmsError::ImportJobNotFound(name.clone()))
    }

    /// `importJobs.get`.
    pub(crate) async fn job(&self, name: &ImportJobName) -> Result<ImportJob, KmsError> {
        Ok(self.render(&self.record(name).await?))
    }

    /// `importJobs.list`.
    pub(crate) async fn list_jobs(&self, parent: &KeyRingName, q: &ListQuery) -> Result<Page<ImportJob>, KmsError> {
        self.keys.key_ring(parent).await?;
        listing::page(&ImportJobs { imports: self, parent }, q, &parent.to_string()).await
    }

    /// `cryptoKeyVersions.import`: the material wrapped for `request.import_job`, as a new
    /// version of `parent` or into the imported version `target`. The caller has been
    /// authorized to create (or update) versions and to use the job.
    pub(crate) async fn import_version(
        &self,
        call: &Call<'_>,
        parent: &CryptoKeyName,
        job_name: &ImportJobName,
        target: Option<&CryptoKeyVersionName>,
        request: &ImportCryptoKeyVersionRequest,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let key = self.repo.crypto_key(parent).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(parent.clone()))?;
        let purpose = key.key.purpose.unwrap_or(Purpose::Unspecified);
        let algorithm = match request.algorithm {
            None | Some(keyhold_api::resources::Algorithm::Unspecified) => {
                return Err(KmsError::InvalidArgument(
                    "algorithm is required: the algorithm of the key material.".into(),
                ));
            }
            Some(a) if a.purpose() != Some(purpose) => {
                return Err(KmsError::InvalidArgument(format!("Algorithm {a} is not valid for purpose {purpose}.")));
            }
            Some(a) => a,
        };
        // The version imported into again: everything about it is checked before the job's
        // private key is used (and again in the compare-and-set).
        if let Some(name) = target {
            let existing = self.repo.version(name).await?.ok_or_else(|| KmsError::VersionNotFound(name.clone()))?;
            check_reimport(name, &existing.version, algorithm)?;
        }
        let job = self.record(job_name).await?;
        if job_name.key_ring.location != parent.key_ring.location {
            return Err(KmsError::InvalidArgument(format!(
                "ImportJob {job_name} is not in the project and location of CryptoKey {parent}; create an import job there."
            )));
        }
        let rendered = self.render(&job);
        let sealed_job_key = match (&job.wrapping_key, rendered.state) {
            (Some(k), Some(ImportJobState::Active)) => k,
            _ => {
                return Err(KmsError::FailedPrecondition(format!(
                    "ImportJob {job_name} is {}; only ACTIVE import jobs can be used: create a new one.",
                    if rendered.state == Some(ImportJobState::Active) {
                        ImportJobState::Expired
                    } else {
                        rendered.state.unwrap_or(ImportJobState::Unspecified)
                    }
                )));
            }
        };
        let template = key.key.version_template.clone().unwrap_or_default();
        let level = template.protection_level.unwrap_or(ProtectionLevel::Software);
        if job.job.protection_level != Some(level) {
            return Err(KmsError::FailedPrecondition(format!(
                "ImportJob {job_name} has protection level {}, but CryptoKey {parent} makes {level} versions.",
                job.job.protection_level.unwrap_or(ProtectionLevel::Unspecified)
            )));
        }
        let backend = self.keys.backends.for_level(Some(level))?;
        backend.check_algorithm(algorithm)?;
        let wrapped = request.wrapped_key.0.as_slice();
        if wrapped.is_empty() {
            return Err(KmsError::InvalidArgument("wrapped_key is required.".into()));
        }
        if wrapped.len() > MAX_WRAPPED_KEY {
            return Err(KmsError::TooLarge { field: "wrapped_key", max: MAX_WRAPPED_KEY, actual: wrapped.len() });
        }
        let method = job.job.import_method.unwrap_or(ImportMethod::Unspecified);
        let (bits, how) = method_parameters(method)
            .ok_or_else(|| KmsError::Internal(format!("{job_name} has import method {method}")))?;
        let job_key = self
            .keys
            .backends
            .software()
            .open_wrapping_key(&job_name.to_string(), KeySpec::RsaOaep(bits, how.hash), sealed_job_key)
            .await?;
        let wrapped = wrapped.to_vec();
        // RSA private-key operations and RSA key parsing take milliseconds: off the async
        // workers. The material's identity comes back with it, for the fingerprint.
        let (material, identity) = run_slow(move || {
            let material = wrapping::unwrap(&job_key, how, &wrapped).map_err(|_| None)?;
            let identity = algorithm::check_imported_material(algorithm, &material).map_err(Some)?;
            Ok::<_, Option<KmsError>>((material, identity))
        })
        .await?
        .map_err(|e| {
            e.unwrap_or_else(|| {
                KmsError::InvalidArgument(format!(
                    "wrapped_key cannot be unwrapped with ImportJob {job_name}: wrap the key material for this job's \
                     public key with import method {method}."
                ))
            })
        })?;
        let fingerprint_key = self.fingerprint_key().await?;
        let now = self.clock.now();
        let version = match target {
            None => {
                let id = self.repo.allocate_version_id(parent).await?;
                let name = parent.version(id);
                let print = fingerprint(fingerprint_key, &name, algorithm.as_str(), &identity);
                let made = backend.import(&name, algorithm, &material).await?;
                let record = VersionRecord {
                    name: name.clone(),
                    version: CryptoKeyVersion {
                        name: name.to_string(),
                        state: Some(VersionState::Enabled),
                        protection_level: Some(level),
                        algorithm: Some(algorithm),
                        create_time: Some(now),
                        generate_time: Some(now),
                        import_job: job_name.to_string(),
                        import_time: Some(now),
                        reimport_eligible: true,
                        attestation: made.attestation,
                        ..Default::default()
                    },
                    material: made.material,
                    revision: 0,
                };
                call.set_key_version(name.to_string());
                if let Err(e) = self.repo.insert_imported_version(&record, &print, &call.success_entry()).await {
                    self.keys.discard_unrecorded_material(&record, &e).await;
                    return Err(match e {
                        // The key was deleted while this request ran.
                        RepoError::Conflict => KmsError::CryptoKeyNotFound(parent.clone()),
                        e => e.into(),
                    });
                }
                self.keys.key_changed(parent);
                record.version
            }
            Some(name) => {
                let print = fingerprint(fingerprint_key, name, algorithm.as_str(), &identity);
                if self.repo.import_fingerprint(name).await?.as_deref() != Some(print.as_str()) {
                    return Err(KmsError::InvalidArgument(format!(
                        "The key material does not match the material previously imported into {name}; a version \
                         can only be imported into again with the same key material."
                    )));
                }
                let made = backend.import(name, algorithm, &material).await?;
                call.set_key_version(name.to_string());
                let job = job_name.to_string();
                // Whether the last attempt's update was tried: only then may it have committed.
                let mut written = false;
                let updated = self
                    .keys
                    .modify_version(call, name, |v, _| {
                        written = false;
                        check_reimport(name, &v.version, algorithm)?;
                        written = true;
                        v.version.state = Some(VersionState::Enabled);
                        v.version.import_job = job.clone();
                        v.version.import_time = Some(now);
                        v.version.generate_time = Some(now);
                        v.version.destroy_time = None;
                        v.version.destroy_event_time = None;
                        v.version.import_failure_reason.clear();
                        v.material = made.material.clone();
                        v.version.attestation = made.attestation.clone();
                        Ok(())
                    })
                    .await;
                match updated {
                    Ok(v) => v.version,
                    Err(e) => {
                        // New material no version uses (an HSM object) goes at once, unless
                        // the update may have committed: then `keyhold hsm reconcile` decides.
                        if !written || matches!(e, KmsError::Contention(_)) {
                            backend.erase(name, &made.material, Erasing::NotCreated).await;
                        } else {
                            tracing::warn!(
                                version = %name, material = ?made.material, error = %e,
                                "a re-import's update failed in a way that may still have committed; its new key \
                                 material is left: `keyhold hsm reconcile` removes it if no version uses it"
                            );
                        }
                        return Err(e);
                    }
                }
            }
        };
        Ok(version)
    }
}

/// What an HSM import job's `attestation` says. Cloud KMS generates an HSM job's wrapping key in
/// its HSM and attests it with the HSM vendor's signature; Keyhold's wrapping key is a SOFTWARE
/// key, and the statement says so rather than pretend.
fn hsm_job_statement() -> KeyOperationAttestation {
    let statement = serde_json::json!({
        "statement": "This import job's wrapping key is not held in the HSM: Keyhold generated it and keeps its private \
                      half sealed by the root key. Key material wrapped for it is unwrapped in Keyhold's memory and \
                      created in the PKCS#11 token as a key with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false; the \
                      imported version's own attestation describes the token.",
        "wrappingKeyProtectionLevel": "SOFTWARE",
    });
    KeyOperationAttestation {
        format: "ATTESTATION_FORMAT_UNSPECIFIED".into(),
        content: Some(keyhold_api::wire::Bytes(statement.to_string().into_bytes())),
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `version` may be imported into again with material of `algorithm`: it was imported,
/// it is `DESTROYED` or `IMPORT_FAILED`, and the algorithm is its own.
fn check_reimport(
    name: &CryptoKeyVersionName,
    version: &CryptoKeyVersion,
    algorithm: keyhold_api::resources::Algorithm,
) -> Result<(), KmsError> {
    if !version.reimport_eligible {
        return Err(KmsError::FailedPrecondition(format!(
            "{name} was not imported: only imported versions can be imported into again (omit crypto_key_version \
             to import a new version)."
        )));
    }
    let state = version.state.unwrap_or(VersionState::Unspecified);
    if !matches!(state, VersionState::Destroyed | VersionState::ImportFailed) {
        return Err(KmsError::IllegalTransition {
            version: name.clone(),
            state,
            action: "import into it again",
            allowed: "DESTROYED or IMPORT_FAILED",
        });
    }
    if version.algorithm != Some(algorithm) {
        return Err(KmsError::InvalidArgument(format!(
            "{name} holds a key of algorithm {}; it can only be imported into again with the same algorithm.",
            version.algorithm.map_or("unspecified", |a| a.as_str())
        )));
    }
    Ok(())
}

/// A key ring's import jobs, by name.
struct ImportJobs<'a> {
    imports: &'a Imports,
    parent: &'a KeyRingName,
}

impl Listing for ImportJobs<'_> {
    type Item = ImportJob;
    async fn fetch(&self, after: &str, n: usize) -> Result<Vec<(String, ImportJob)>, KmsError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let jobs = self.imports.repo.list_import_jobs(self.parent, after, limit).await?;
        Ok(jobs.iter().map(|r| (r.job.name.clone(), self.imports.render(r))).collect())
    }
    async fn count(&self) -> Result<i64, KmsError> {
        Ok(self.imports.repo.count_import_jobs(self.parent).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rsa_method_is_served_and_the_hpke_ones_are_not() {
        for &m in ImportMethod::ALL {
            let served = method_parameters(m);
            let name = m.as_str();
            assert_eq!(served.is_some(), name.starts_with("RSA_OAEP_"), "{name}");
            if let Some((bits, how)) = served {
                assert!(name.contains(&format!("{}", bits.modulus_len() * 8)), "{name}");
                assert_eq!(how.aes_kwp, name.ends_with("_AES_256"), "{name}");
                assert_eq!(how.hash == Hash::Sha1, name.contains("SHA1"), "{name}");
            }
        }
    }

    #[test]
    fn fingerprints_bind_the_material_the_algorithm_and_the_version_under_a_key() {
        let key = |b: u8| LoadedKey::from_material(KeySpec::Hmac(Hash::Sha256), &Secret::new(vec![b; 32])).unwrap();
        let v1: CryptoKeyVersionName =
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".parse().unwrap();
        let v2 = v1.crypto_key.version(2);
        let m = Secret::new(vec![1; 32]);
        let f = fingerprint(&key(9), &v1, "GOOGLE_SYMMETRIC_ENCRYPTION", &m);
        assert_eq!(f.len(), 64);
        assert_eq!(f, fingerprint(&key(9), &v1, "GOOGLE_SYMMETRIC_ENCRYPTION", &Secret::new(vec![1; 32])));
        assert_ne!(f, fingerprint(&key(8), &v1, "GOOGLE_SYMMETRIC_ENCRYPTION", &m), "keyed");
        assert_ne!(f, fingerprint(&key(9), &v2, "GOOGLE_SYMMETRIC_ENCRYPTION", &m));
        assert_ne!(f, fingerprint(&key(9), &v1, "AES_256_GCM", &m));
        assert_ne!(f, fingerprint(&key(9), &v1, "GOOGLE_SYMMETRIC_ENCRYPTION", &Secret::new(vec![2; 32])));
        assert_eq!(unhex(&f).map(|b| keyhold_crypto::hex(&b)), Some(f.clone()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
