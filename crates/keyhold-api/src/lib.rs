//! The model of Keyhold's API: the vocabulary every other crate and the CLI share. (The wire
//! messages themselves are `keyhold-proto`'s, generated from Google's protos; it converts them
//! to and from these types.)
//!
//! No I/O happens here. This crate knows how Cloud KMS v1 spells things in JSON (camelCase
//! fields, enums as names, durations as `"86400s"`, bytes as base64, int64 values as decimal
//! strings, RFC 3339 timestamps with nanoseconds), how resource names are built and validated
//! ([K1]), and how errors look on the wire (`google.rpc.Status` inside `{"error": ...}`).
//!
//! It depends on no Keyhold crate but `keyhold-crypto` (for the secret types plaintext lives in).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod filter;
pub mod iam;
pub mod messages;
pub mod name;
pub mod orgpolicy;
pub mod page;
pub mod resources;
pub mod status;
pub mod wire;

pub use name::{
    CryptoKeyName, CryptoKeyVersionName, ImportJobName, InstanceName, KeyRingName, LocationName, NameError,
};
pub use status::{Code, ErrorBodyKind, Status};
