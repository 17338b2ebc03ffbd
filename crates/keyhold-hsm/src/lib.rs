//! PKCS#11 tokens (HSMs) for Keyhold: the key material of `HSM` protection-level key versions
//! is generated inside a token and never leaves it.
//!
//! # What lives where
//!
//! * **In the token**: one AES-256 secret-key object per key version, generated there
//!   (`C_GenerateKey`) as a token object that is `CKA_SENSITIVE`, not `CKA_EXTRACTABLE` and
//!   not `CKA_MODIFIABLE`, allowed only to encrypt and decrypt. Every encryption and
//!   decryption runs in the token (`CKM_AES_GCM`). The KMS root key may be such an object too
//!   ([`HsmToken::find_or_generate_key`]). Versions of the other purposes are an EC, Ed25519 or
//!   RSA key pair (a private and a public object with one label and `CKA_ID`), an HMAC secret
//!   key or a raw AES key, made the same way and limited to their one mechanism
//!   ([`HsmToken::generate_key_of`]): signatures, RSA-OAEP decryptions, MACs and raw AES
//!   encryptions run in the token.
//! * **In the database**: only an [`HsmKeyRef`], the object's label and random `CKA_ID`,
//!   written as a PKCS#11 URI (`pkcs11:object=...;type=secret-key;id=...`). Never material,
//!   never an object handle (handles are per process and change after a restart).
//! * **In the server settings**: the module path, the token label and the PIN
//!   ([`Pkcs11Config`]); the PIN is read from a file or an environment variable
//!   ([`PinSource`]), never from the command line, and never printed (`Debug` shows
//!   `[redacted]`, errors and logs never include it).
//!
//! # Ciphertext format
//!
//! `0x01 || IV (12 bytes, from C_GenerateRandom) || ciphertext || tag (16 bytes)`, with the
//! AAD given to the token prefixed by a fixed domain string; see [`format`].
//!
//! # Sessions, threads and the async runtime
//!
//! PKCS#11 calls block (a network HSM answers in milliseconds), so every call runs in
//! `tokio::task::spawn_blocking`. An [`HsmToken`] keeps a small pool of read/write sessions,
//! logged in as the user; a semaphore bounds the calls in flight to the pool size
//! ([`HsmOptions::max_sessions`]), so the token never sees more sessions than that. A session
//! is used by one call at a time (PKCS#11 sessions are not thread-safe); the module is
//! initialized with `CKF_OS_LOCKING_OK` so sessions may run in parallel.
//!
//! `C_Initialize` may be called once per module per process, so loaded modules live in a
//! process-wide registry shared by every `HsmToken` (two servers in one test process share
//! one module). Calls that name a slot (`C_GetSlotList`, `C_GetTokenInfo`, `C_OpenSession`,
//! ...) are serialized per module: SoftHSM 2.6 changes its slot table inside
//! `C_GetSlotList` without a lock and aborts the process when two threads do it at once.
//!
//! # Outages and reconnection
//!
//! [`HsmToken::new`] does nothing but store the settings: the module is loaded, the token
//! found (by label, since slot IDs change) and the PIN checked on first use. A failure there or
//! later — module missing, token not present, `CKR_DEVICE_REMOVED`,
//! `CKR_SESSION_HANDLE_INVALID`, `CKR_TOKEN_NOT_PRESENT`, a token that stops answering — is
//! [`HsmError::Unavailable`] (the server's 503) and marks the connection broken; the next call
//! finds the token and logs in again, re-initializing the module (`C_Finalize` +
//! `C_Initialize`) if the token cannot be found, because some modules (SoftHSM) only discover
//! tokens then. After a failed attempt, calls fail at once for
//! [`HsmOptions::reconnect_backoff`] instead of hammering a dead HSM. So an outage gives
//! errors, and recovery needs no restart.
//!
//! A refused PIN is the exception: it is [`HsmError::Login`] and is never tried again by the
//! same `HsmToken`, because HSMs lock the PIN after a few failures.
//!
//! A "key not found" answer is only believed if the token then answers normally: a removed
//! SoftHSM token reports its objects as missing, which must be a 503, not a destroyed key.
//!
//! # Tests
//!
//! The `softhsm` feature adds [`testing::SoftHsm`], throwaway SoftHSM2 tokens for the tests of
//! this and other crates.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
pub mod format;
mod info;
mod key_ref;
mod module;
mod token;

#[cfg(feature = "softhsm")]
pub mod testing;

pub use config::{HsmOptions, PinSource, Pkcs11Config};
pub use error::HsmError;
pub use info::TokenInfo;
pub use key_ref::{HsmKeyRef, MAX_LABEL_LEN};
pub use token::{HsmToken, KEY_ID_LEN, MAX_RANDOM_BYTES, MIN_RANDOM_BYTES, supports};
