//! Fuzz targets for every parser that reads bytes from outside the process (issue 15).
//!
//! Each target is a plain function `fn(&[u8]) -> Outcome` that feeds the bytes to one parser
//! and checks its documented invariants, panicking (the fuzzer's "crash") when one breaks:
//!
//! - it never panics, whatever the input (a panic in a handler is a 500 or an aborted worker);
//! - input it accepts round-trips where the format has an encoder (names, timestamps, durations,
//!   HSM key references, JSON bodies: decode → encode → decode gives the same value);
//! - authenticated formats (ciphertexts, sealed keys, EKM blobs, sealed archives) open only
//!   what the key's holder made: a mutation that opens must yield exactly the plaintext of
//!   the seed it came from, which for AES-GCM means it was the unmodified seed.
//!
//! The same functions are driven three ways (see `tests/fuzz.rs` and `docs/operations.md`,
//! "Fuzzing and the crash test"): the seed corpus in `corpus/<target>/`, mutations of it, and
//! arbitrary bytes and structured JSON, for a bounded number of cases in `cargo test` and for
//! as long as asked with `scripts/fuzz.sh SECONDS`; and coverage-guided by AFL++ with
//! `scripts/fuzz.sh --afl TARGET` (the `keyhold-fuzz-afl` example, feature `afl`). Crypto targets use fixed test keys so the
//! corpus's ciphertexts stay valid; they are test keys, never a deployment's.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod corpus;
pub mod targets;

/// What a target made of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The parser accepted the input (and its invariants held).
    Accepted,
    /// The parser refused it with a typed error.
    Rejected,
}

/// A fuzz target: feeds bytes to one parser and panics if an invariant breaks.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("filter", targets::filter),
    ("name", targets::name),
    ("route", targets::route),
    ("json_bodies", targets::json_bodies),
    ("wire_scalars", targets::wire_scalars),
    ("page_token", targets::page_token),
    ("iam_member", targets::iam_member),
    ("ciphertext", targets::ciphertext),
    ("sealed_key", targets::sealed_key),
    ("archive", targets::archive),
    ("ekm_protocol", targets::ekm_protocol),
    ("ekm_blob", targets::ekm_blob),
    ("ekm_config", targets::ekm_config),
    ("hsm_key_ref", targets::hsm_key_ref),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
