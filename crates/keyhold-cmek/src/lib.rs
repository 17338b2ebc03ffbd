//! Customer-managed encryption keys (CMEK) for any Rust service.
//!
//! A service that keeps customer data adds CMEK in three steps:
//!
//! 1. **Reach the customer's KMS** through a [`KmsClient`]: [`RestKmsClient`] speaks Cloud KMS
//!    v1 REST to Keyhold or any compatible endpoint, with a bearer token ([`StaticToken`], or
//!    [`ImpersonatedToken`] for a service agent's short-lived tokens), over `http://` or
//!    `https://`: [`RestKmsClient::with_tls`] takes a [`rest::ClientTls`] (a CA file to trust
//!    instead of the system's roots, a client certificate for mutual TLS; see [`rest`]). Keyhold's server adds an
//!    in-process client of its own KMS (`keyhold-server`'s `host::LocalKmsClient`: same IAM
//!    checks and audit entries, no network); this crate depends only on `keyhold-api` and
//!    `keyhold-crypto`.
//! 2. **Envelope-encrypt** ([`envelope`]): each chunk of at most [`CHUNK_SIZE`] bytes is sealed
//!    with AES-256-GCM under a fresh DEK, its identity (resource, object, generation, index,
//!    last) bound as associated data; DEKs are sealed by the resource's KEK; the KEK is wrapped
//!    by the customer's key through the KMS, tagged with the key version that wrapped it.
//! 3. **Guard the key** ([`KeyGuard`]): one per resource. It keeps the unwrapped KEK in memory,
//!    re-checks the key on a period and whenever it is woken (key-state and IAM change notices),
//!    refuses access the moment the key is disabled, destroyed or its permission revoked, resumes
//!    by itself when the key is usable again, and rides out a KMS outage for a grace period.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyhold_cmek::{
//!     ChunkId, CmekWrapper, GuardConfig, KekWrapper, KeyGuard, RestKmsClient, StaticToken, open_chunk, seal_chunk,
//! };
//! use keyhold_crypto::SecretString;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // The service agent's token and the customer's key, as the customer configured them.
//! let token = StaticToken(SecretString::new(std::env::var("AGENT_TOKEN")?));
//! let kms = Arc::new(RestKmsClient::new("http://127.0.0.1:8080", Arc::new(token)));
//! let key = "projects/acme/locations/global/keyRings/r/cryptoKeys/k";
//! let resource = "projects/acme/locations/global/databases/orders";
//!
//! // Creating the resource: a KEK, wrapped by the customer's key. Store `wrapped` (and
//! // `wrapped.key_version`, for encryption info) with the resource's metadata.
//! let wrapper: Arc<dyn KekWrapper> = Arc::new(CmekWrapper::new(kms, key));
//! let guard = KeyGuard::new(resource, wrapper.clone(), GuardConfig::default(), []);
//! let (kek, wrapped) = guard.new_kek().await?;
//! guard.insert(1, kek, wrapped.clone());
//! guard.spawn_monitor();
//!
//! // Writing: seal each chunk under the KEK the guard holds. Fails once the key is revoked.
//! let id = ChunkId { resource, object: "row-42", generation: 1, index: 0, last: true };
//! let sealed = seal_chunk(&*guard.kek(1)?, &id, b"customer data")?;
//!
//! // Reading, after a restart: a guard over the stored wrapped KEKs, checked once.
//! let guard = KeyGuard::new(resource, wrapper, GuardConfig::default(), [(1, wrapped)]);
//! guard.check().await;
//! let plaintext = open_chunk(&*guard.kek(1)?, &id, &sealed)?;
//! # let _ = plaintext; Ok(()) }
//! ```
//!
//! Keyhold's own store (`keyhold-store`) is the complete example: instances, objects streamed in
//! chunks, `:rewrap`, `:reencrypt`, encryption info and suspension.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod envelope;
pub mod error;
pub mod guard;
pub mod rest;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{AccessReason, Encrypted, KeyDescription, KmsClient};
pub use envelope::{
    CHUNK_OVERHEAD, CHUNK_SIZE, ChunkId, EnvelopeError, Kek, SealedChunk, WrappedKek, kek_aad, open_chunk, seal_chunk,
};
pub use error::{Failure, KmsClientError};
pub use guard::{
    Access, CmekWrapper, GuardClock, GuardConfig, GuardError, GuardRegistry, GuardStatus, KekWrapper, KeyGuard,
    SuspensionReason, SystemClock,
};
pub use rest::{ACCESS_REASON_HEADER, ImpersonatedToken, RestKmsClient, StaticToken, TokenSource};
