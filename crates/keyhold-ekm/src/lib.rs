//! External key manager (EKM) protocol, client and server.
//!
//! An EXTERNAL key version of the KMS holds no key material: its
//! `externalProtectionLevelOptions.externalKeyUri` names a key in an external key manager, and
//! every encrypt and decrypt becomes a `:wrap` or `:unwrap` call to that manager. The manager
//! sees who asks (the caller's principal), why (the Key Access Justification reason) and for
//! which KMS resource, and may refuse. The protocol is documented in `docs/ekm-protocol.md`;
//! it follows Google's EKM wrap/unwrap messages and borrows the request metadata of the AWS XKS
//! proxy specification.
//!
//! * [`protocol`]: the JSON messages, limits and key ID syntax shared by both sides.
//! * [`client`]: [`EkmClient`], used by the KMS (bounded timeout, typed errors) and the
//!   opt-in [`UnwrapCache`] that honours the manager's `allowedCacheDuration`.
//! * [`kms`]: [`EkmClient`] as the KMS domain's `ExternalKeyManager`.
//! * [`server`]: the manager itself (`keyhold ekm serve`): an axum router over its own
//!   [`key_store`], a reloadable [`policy`] file and bearer [`tokens`] file, and an [`audit`] file.
//! * [`blob`]: the format of wrapped blobs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod blob;
pub mod client;
pub mod key_store;
pub mod kms;
pub mod policy;
pub mod protocol;
mod reload;
pub mod server;
pub mod tokens;

pub use client::{
    DEFAULT_TIMEOUT, EkmClient, EkmCredentials, EkmError, ExternalKeyUri, RequestContext, UnwrapCache, Unwrapped,
};
pub use key_store::{KeyRecord, KeyStore, KeyStoreError};
pub use server::{EkmServeError, EkmServer, EkmServerConfig, serve};
