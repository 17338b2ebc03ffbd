//! The KMS domain: key rings, crypto keys, crypto key versions, their state machine, rotation
//! and scheduled destruction, and the key operations of Cloud KMS v1: `:encrypt` / `:decrypt`,
//! and on one version `:asymmetricSign`, `:asymmetricDecrypt`, `publicKey`, `:macSign` and
//! `:macVerify`.
//!
//! This crate knows nothing of HTTP or SQL. It speaks the Cloud KMS resource model of
//! `keyhold-api` and reaches its database through the [`repo::KmsRepository`] trait, which the
//! `keyhold-sql` crate implements for SQLite and PostgreSQL (dependencies point *toward*
//! this crate). SOFTWARE key material is sealed by a [`root_key::RootKey`] before it reaches the
//! store, so the database never holds a usable key.
//!
//! The cryptographic hot path does not touch the database: [`cache`] keeps each crypto key's
//! versions and unsealed material in memory, invalidated on every local change and, when several
//! nodes share one database, by polling the store's change counter (see [`Kms::run_background`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod algorithm;
pub mod audit;
pub mod audit_journal;
mod authz;
pub mod backend;
mod bounded_cache;
pub mod cache;
pub mod call;
pub mod clock;
pub mod config;
mod crypto_ops;
mod deletion;
pub mod error;
pub mod events;
pub mod iam;
pub mod identity;
mod import;
mod keys;
mod kms;
mod listing;
pub mod material;
pub mod org_policy;
pub mod private_files;
pub mod quota;
pub mod repo;
pub mod root_key;
pub mod scheduler;
mod validate;
mod version_ops;

pub use backend::{BackendError, ExternalKeyManager, ExternalRequest, HsmBackend, KeyBackends, KeyOrigin};
pub use call::{Caller, ServiceCall};
pub use config::KmsConfig;
pub use crypto_ops::{EncryptTarget, MAX_CIPHERTEXT, MAX_PLAINTEXT};
pub use deletion::OPERATION_PREFIX as KMS_OPERATION_PREFIX;
pub use error::KmsError;
pub use iam::IamResource;
pub use identity::NewToken;
pub use import::method_parameters as import_wrapping;
/// A principal, as the front ends build one from a credential (a client certificate's identity).
pub use keyhold_iam::Principal;
pub use keys::{KeyFacts, ListQuery};
pub use kms::{Kms, StartupError};
pub use material::{HsmObjectRef, VersionMaterial};
