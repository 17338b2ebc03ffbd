//! Test utilities (feature `testing`): a **fake** KMS and a clock that follows tokio's paused
//! time, for unit tests of the key guard's state machine ([C5]–[C7]) without a server.
//!
//! [`FakeKms`] stands in for a Cloud KMS v1 compatible KMS only where the thing under test is
//! the *client's* reaction to the KMS's answers (suspend, grace, resume): each key's behaviour is
//! switched by the test (usable, disabled, destroyed, permission denied, unreachable) and every
//! call is counted. It answers with Cloud KMS's codes and wording, but it is not a KMS: the real
//! one (IAM, key states, audit) is exercised over HTTP by `keyhold-server`'s and
//! `keyhold-store`'s tests, and [`crate::RestKmsClient`] by the CLI's.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use keyhold_api::resources::{Purpose, VersionState};
use keyhold_api::wire::{ProtoDuration, Timestamp};
use keyhold_api::{Code, CryptoKeyName, Status};
use keyhold_crypto::Secret;
use tokio::time::Instant;

use crate::client::{AccessReason, Encrypted, KeyDescription, KmsClient};
use crate::error::KmsClientError;
use crate::guard::GuardClock;

/// What a [`FakeKms`] key does when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBehaviour {
    /// Its primary version is `ENABLED` and the caller holds the encrypter/decrypter role.
    Usable,
    /// Its primary version is `DISABLED`: `FAILED_PRECONDITION`, as Cloud KMS says it.
    Disabled,
    /// Its primary version is `DESTROYED`: `FAILED_PRECONDITION`.
    Destroyed,
    /// The caller's role was revoked: `PERMISSION_DENIED`.
    PermissionDenied,
    /// The KMS cannot be reached: a transport error (`UNAVAILABLE`), no answer at all.
    Unavailable,
}

/// How often each method was called for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `encrypt` calls (answered or not).
    pub encrypt: u64,
    /// `decrypt` calls (answered or not).
    pub decrypt: u64,
    /// `testIamPermissions` calls.
    pub test_permissions: u64,
    /// `describe_key` calls.
    pub describe_key: u64,
}

impl CallCounts {
    /// Every call on the key.
    pub fn total(&self) -> u64 {
        self.encrypt + self.decrypt + self.test_permissions + self.describe_key
    }
}

struct Sealed {
    key: String,
    aad: Vec<u8>,
    plaintext: Secret,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, KeyBehaviour>,
    calls: HashMap<String, CallCounts>,
    // Ciphertexts are handles to what was "encrypted": the fake keeps the plaintext and checks
    // the key and the associated data on decrypt, as a real KMS's AEAD would.
    sealed: HashMap<Vec<u8>, Sealed>,
    next: u64,
}

/// A fake KMS for unit tests: per-key switchable behaviour, counted calls. See the module docs.
pub struct FakeKms {
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKms").field("keys", &self.lock().keys).finish_non_exhaustive()
    }
}

impl Default for FakeKms {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKms {
    /// A fake KMS with no keys (using an unknown key answers `NOT_FOUND`).
    pub fn new() -> Self {
        Self { state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `key` or switches what it does from the next call on.
    pub fn set(&self, key: &str, behaviour: KeyBehaviour) {
        self.lock().keys.insert(key.to_string(), behaviour);
    }

    /// The calls made so far for `key`.
    pub fn calls(&self, key: &str) -> CallCounts {
        self.lock().calls.get(key).copied().unwrap_or_default()
    }

    /// Counts a call and returns the key's behaviour (`None`: no such key).
    fn enter(&self, key: &str, count: impl FnOnce(&mut CallCounts)) -> Option<KeyBehaviour> {
        let mut state = self.lock();
        count(state.calls.entry(key.to_string()).or_default());
        state.keys.get(key).copied()
    }

    /// Cloud KMS's answer when `key` cannot be used for `permission`, or `None` when it can.
    fn refusal(key: &str, behaviour: Option<KeyBehaviour>, permission: &str) -> Option<KmsClientError> {
        let version = primary(key);
        match behaviour {
            None => Some(KmsClientError::new(Code::NotFound, format!("CryptoKey {key} not found."))),
            Some(KeyBehaviour::Usable) => None,
            Some(KeyBehaviour::Disabled) => Some(KmsClientError::from_status(
                Status::new(Code::FailedPrecondition, format!("{version} is not enabled, current state is: DISABLED."))
                    .with_precondition_failure("KEY_DISABLED", &version, ""),
            )),
            Some(KeyBehaviour::Destroyed) => Some(KmsClientError::from_status(
                Status::new(
                    Code::FailedPrecondition,
                    format!("{version} is not enabled, current state is: DESTROYED."),
                )
                .with_precondition_failure("KEY_DESTROYED", &version, ""),
            )),
            Some(KeyBehaviour::PermissionDenied) => Some(KmsClientError::new(
                Code::PermissionDenied,
                format!("Permission '{permission}' denied on resource '{key}' (or it may not exist)."),
            )),
            Some(KeyBehaviour::Unavailable) => {
                Some(KmsClientError::unreachable("fake KMS: connection refused (switched off by the test)"))
            }
        }
    }
}

fn primary(key: &str) -> String {
    format!("{key}/cryptoKeyVersions/1")
}

#[async_trait]
impl KmsClient for FakeKms {
    async fn encrypt(
        &self,
        name: &CryptoKeyName,
        plaintext: &[u8],
        aad: &[u8],
        _reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError> {
        let key = &name.to_string();
        let behaviour = self.enter(key, |c| c.encrypt += 1);
        if let Some(e) = Self::refusal(key, behaviour, "cloudkms.cryptoKeyVersions.useToEncrypt") {
            return Err(e);
        }
        let mut state = self.lock();
        state.next += 1;
        let ciphertext = format!("fake-kms-ciphertext-{}", state.next).into_bytes();
        state.sealed.insert(
            ciphertext.clone(),
            Sealed { key: key.to_string(), aad: aad.to_vec(), plaintext: Secret::new(plaintext.to_vec()) },
        );
        Ok(Encrypted { ciphertext, key_version: name.version(1) })
    }

    async fn decrypt(
        &self,
        name: &CryptoKeyName,
        ciphertext: &[u8],
        aad: &[u8],
        _reason: AccessReason,
    ) -> Result<Secret, KmsClientError> {
        let key = &name.to_string();
        let behaviour = self.enter(key, |c| c.decrypt += 1);
        if let Some(e) = Self::refusal(key, behaviour, "cloudkms.cryptoKeyVersions.useToDecrypt") {
            return Err(e);
        }
        let state = self.lock();
        match state.sealed.get(ciphertext) {
            Some(s) if s.key == *key && s.aad == aad => Ok(Secret::new(s.plaintext.expose().to_vec())),
            _ => Err(KmsClientError::new(
                Code::InvalidArgument,
                "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
            )),
        }
    }

    async fn test_permissions(&self, key: &CryptoKeyName, permissions: &[&str]) -> Result<Vec<String>, KmsClientError> {
        match self.enter(&key.to_string(), |c| c.test_permissions += 1) {
            Some(KeyBehaviour::Unavailable) => {
                Err(KmsClientError::unreachable("fake KMS: connection refused (switched off by the test)"))
            }
            Some(KeyBehaviour::PermissionDenied) | None => Ok(Vec::new()),
            Some(_) => Ok(permissions.iter().map(|p| p.to_string()).collect()),
        }
    }

    async fn describe_key(&self, key: &CryptoKeyName) -> Result<Option<KeyDescription>, KmsClientError> {
        let state = match self.enter(&key.to_string(), |c| c.describe_key += 1) {
            Some(KeyBehaviour::Unavailable) => {
                return Err(KmsClientError::unreachable("fake KMS: connection refused (switched off by the test)"));
            }
            Some(KeyBehaviour::PermissionDenied) | None => return Ok(None),
            Some(KeyBehaviour::Usable) => VersionState::Enabled,
            Some(KeyBehaviour::Disabled) => VersionState::Disabled,
            Some(KeyBehaviour::Destroyed) => VersionState::Destroyed,
        };
        Ok(Some(KeyDescription { purpose: Purpose::EncryptDecrypt, primary: Some((key.version(1), state)) }))
    }
}

/// A [`GuardClock`] that follows tokio's clock: the wall-clock time at creation plus the tokio
/// time elapsed since. Under `tokio::time::pause` (`#[tokio::test(start_paused = true)]`),
/// `tokio::time::advance` moves it and the guard's durations together, so a one-hour grace
/// period runs out in no real time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Timestamp,
    at: Instant,
}

impl TokioClock {
    /// Starts at the current wall-clock time.
    pub fn new() -> Self {
        Self { start: Timestamp::now(), at: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl GuardClock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start.add(ProtoDuration::from_nanos(self.at.elapsed().as_nanos() as i128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
    const OTHER: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/other";
    const MISSING: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/missing";

    fn name(key: &str) -> CryptoKeyName {
        key.parse().unwrap()
    }

    #[tokio::test]
    async fn ciphertext_is_bound_to_key_and_aad_and_refusals_use_cloud_kms_wording() {
        let kms = FakeKms::new();
        kms.set(KEY, KeyBehaviour::Usable);
        kms.set(OTHER, KeyBehaviour::Usable);
        let e = kms.encrypt(&name(KEY), b"kek", b"aad", AccessReason::CustomerInitiatedAccess).await.unwrap();
        assert_eq!(e.key_version.to_string(), format!("{KEY}/cryptoKeyVersions/1"));
        let p = kms.decrypt(&name(KEY), &e.ciphertext, b"aad", AccessReason::CustomerInitiatedAccess).await.unwrap();
        assert_eq!(p.expose(), b"kek");
        for (key, aad) in [(KEY, &b"other aad"[..]), (OTHER, &b"aad"[..])] {
            let err =
                kms.decrypt(&name(key), &e.ciphertext, aad, AccessReason::CustomerInitiatedAccess).await.unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument);
        }

        kms.set(KEY, KeyBehaviour::Destroyed);
        let err =
            kms.decrypt(&name(KEY), &e.ciphertext, b"aad", AccessReason::CustomerInitiatedAccess).await.unwrap_err();
        assert_eq!(err.code, Code::FailedPrecondition);
        assert_eq!(err.observed_key_state().as_deref(), Some("DESTROYED"));
        kms.set(KEY, KeyBehaviour::Unavailable);
        let err =
            kms.decrypt(&name(KEY), &e.ciphertext, b"aad", AccessReason::CustomerInitiatedAccess).await.unwrap_err();
        assert_eq!(err.code, Code::Unavailable);
        let err = kms
            .decrypt(&name(MISSING), &e.ciphertext, b"aad", AccessReason::CustomerInitiatedAccess)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::NotFound);

        assert_eq!(kms.calls(KEY), CallCounts { encrypt: 1, decrypt: 4, test_permissions: 0, describe_key: 0 });
        assert_eq!(kms.calls(MISSING).decrypt, 1);
    }
}
