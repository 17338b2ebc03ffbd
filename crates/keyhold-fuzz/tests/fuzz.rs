//! Runs every fuzz target of `keyhold_fuzz` on (a) its seed corpus, (b) mutations of the seeds
//! and (c) arbitrary bytes, dictionary-built text and structured JSON (issue 15, "fuzzing of
//! every parser"). A failing case is shrunk by proptest and printed; keep it as
//! `corpus/<target>/regression-<what>` once fixed.
//!
//! Budget: `KEYHOLD_FUZZ_SECONDS=N` runs each target for about N seconds (what
//! `scripts/fuzz.sh N` does); otherwise `PROPTEST_CASES` cases per target (default 256, a
//! second or two each in a debug build). Each target prints the number of inputs it tried and
//! its run time (`cargo test -p keyhold-fuzz -- --nocapture` to see them).

use std::time::{Duration, Instant};

use keyhold_fuzz::{Outcome, TARGETS, corpus, target};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Tokens a parser of this target gives meaning to; mutations insert and repeat them.
fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "filter" => &[
            "(", ")", "NOT ", "-", " AND ", " OR ", ":", "=", "!=", "<", ">=", "\"", "*", ".", "labels.", "name",
            " desc", ",", " ", "\\", "asc",
        ],
        "name" | "route" => &[
            "projects/",
            "locations/",
            "keyRings/",
            "cryptoKeys/",
            "cryptoKeyVersions/",
            "instances/",
            "/",
            ":",
            ":encrypt",
            "0",
            "1",
            "..",
            "%2F",
            "-",
            "_",
            "\u{0}",
            "é",
        ],
        "json_bodies" | "ekm_protocol" | "iam_member" => &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "null",
            "true",
            "1e999",
            "-1",
            "18446744073709551616",
            "\"AQ==\"",
            "\"plaintext\":",
            "\"policy\":",
            "\"bindings\":",
            "\"members\":",
            "\"role\":",
            "\"etag\":",
            "\\u0000",
            "user:",
            "roles/cloudkms.admin",
            "@",
        ],
        "wire_scalars" => {
            &["s", ".", "-", "9", "0", "T", "Z", "+", ":", "=", "\"", "999999999999", "1e3", "==", "/", "_"]
        }
        "hsm_key_ref" => &["pkcs11:", "object=", "id=", "type=secret-key", ";", "%", "%2F", "%zz", "?", "="],
        "ekm_config" => &["\n", "#", " ", "http://127.0.0.1:1", "\t", "\r\n", "=", "kms"],
        "archive" => &[
            "\x00",
            "\x01",
            "\u{ff}",
            "O",
            "C",
            "E",
            "\n",
            "{",
            "}",
            "\"size\":18446744073709551615",
            "\"chunkCount\":0",
            "\"kmsKey\":\"k\"",
            "\"name\":\"../x\"",
            "O\x00\x00\x00\x02{}",
            "C\x00\x00\x00\x00",
            "E\x00\x00\x00\x02{}",
            "\x7f\x7f\x7f\x7f",
        ],
        _ => &["\x00", "\x01", "\x02", "\u{ff}", "\x7f", "\n"],
    }
}

/// Whether a changed input of this target must be refused: its seeds are AES-GCM sealed as a
/// whole, so any change (other than none) must fail authentication.
fn authenticated(target: &str) -> bool {
    matches!(target, "ciphertext" | "sealed_key" | "ekm_blob")
}

/// Applies up to eight edits to a seed.
fn mutate(seed: &[u8], other: &[u8], edits: &[(u8, u32, u32)], dict: &[&str]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for &(op, a, b) in edits {
        let pos = if d.is_empty() { 0 } else { a as usize % (d.len() + 1) };
        match op % 9 {
            0 if !d.is_empty() => {
                let i = pos.min(d.len() - 1);
                d[i] ^= 1 << (b % 8);
            }
            1 if !d.is_empty() => {
                let i = pos.min(d.len() - 1);
                d[i] = b as u8;
            }
            2 => d.insert(pos, b as u8),
            3 if !d.is_empty() => {
                d.remove(pos.min(d.len() - 1));
            }
            4 => d.truncate(pos),
            5 => {
                let t = dict[b as usize % dict.len()].as_bytes();
                d.splice(pos..pos, t.iter().copied());
            }
            6 => {
                // A token repeated up to 4,096 times: the deep-nesting and long-input cases.
                let t = dict[b as usize % dict.len()].as_bytes();
                let n = 1 + (b >> 8) as usize % 4096;
                d.splice(pos..pos, t.repeat(n));
            }
            7 if !other.is_empty() => {
                // Splice in a piece of another seed.
                let start = b as usize % other.len();
                let end = (start + 1 + (a as usize % 64)).min(other.len());
                d.splice(pos..pos, other[start..end].iter().copied());
            }
            8 if d.len() > 1 => {
                // Duplicate a slice (repeated records, doubled fields).
                let start = pos.min(d.len() - 1);
                let end = (start + 1 + (b as usize % 256)).min(d.len());
                let piece = d[start..end].to_vec();
                d.splice(end..end, piece);
            }
            _ => {}
        }
    }
    d
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    const KEYS: &[&str] = &[
        "name",
        "plaintext",
        "ciphertext",
        "additionalAuthenticatedData",
        "plaintextCrc32c",
        "ciphertextCrc32c",
        "purpose",
        "versionTemplate",
        "protectionLevel",
        "algorithm",
        "rotationPeriod",
        "nextRotationTime",
        "labels",
        "state",
        "policy",
        "bindings",
        "role",
        "members",
        "etag",
        "version",
        "updateMask",
        "permissions",
        "spec",
        "rules",
        "values",
        "allowedValues",
        "encryptionConfig",
        "kmsKeyName",
        "encryptionType",
        "backup",
        "sourceInstance",
        "allowPlaintext",
        "lengthBytes",
        "cryptoKeyVersionId",
        "wrappedBlob",
        "keyUri",
        "requestMetadata",
        "accessReasonContext",
        "reason",
        "options",
        "requestedPolicyVersion",
        "condition",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[A-Za-z0-9+/=:._@-]{0,24}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "AQ==",
            "aGVsbG8=",
            "86400s",
            "2026-01-01T00:00:00Z",
            "ENCRYPT_DECRYPT",
            "SOFTWARE",
            "HSM",
            "EXTERNAL",
            "ENABLED",
            "DESTROYED",
            "roles/cloudkms.admin",
            "user:a@example.com",
            "4294967296",
            "-1",
            "CUSTOMER_MANAGED_ENCRYPTION",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k",
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// One generated input: where it came from (for the authenticated check) and its bytes.
#[derive(Debug, Clone)]
struct Input {
    mutated_from: Option<usize>,
    bytes: Vec<u8>,
}

fn inputs(name: &'static str, seeds: Vec<Vec<u8>>) -> BoxedStrategy<Input> {
    let dict = dictionary(name);
    let n = seeds.len().max(1);
    let seeds = std::sync::Arc::new(seeds);
    let mutated = (0..n, 0..n, prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..8)).prop_map(
        move |(i, j, edits)| {
            let seed = seeds.get(i).cloned().unwrap_or_default();
            let other = seeds.get(j).cloned().unwrap_or_default();
            Input { mutated_from: Some(i), bytes: mutate(&seed, &other, &edits, dict) }
        },
    );
    let bytes = prop::collection::vec(any::<u8>(), 0..512).prop_map(|bytes| Input { mutated_from: None, bytes });
    let tokens = prop::collection::vec(prop::sample::select(dict), 0..48)
        .prop_map(|t| Input { mutated_from: None, bytes: t.concat().into_bytes() });
    if matches!(name, "json_bodies" | "ekm_protocol") {
        let json = json_value()
            .prop_map(|v| Input { mutated_from: None, bytes: serde_json::to_vec(&v).expect("a Value encodes") });
        prop_oneof![4 => mutated, 1 => bytes, 1 => tokens, 4 => json].boxed()
    } else {
        prop_oneof![6 => mutated, 2 => bytes, 2 => tokens].boxed()
    }
}

/// Runs `name` on its corpus, then on generated inputs for the budget; returns the number of
/// inputs tried.
fn drive(name: &'static str) -> usize {
    let run = target(name).expect("a known target");
    let started = Instant::now();
    let files = corpus::load(name);
    assert!(files.iter().any(|(f, _)| f.starts_with("valid-")), "corpus/{name}/ has no valid-* seed");
    for (file, bytes) in &files {
        let got = run(bytes);
        if file.starts_with("valid-") {
            assert_eq!(got, Outcome::Accepted, "corpus/{name}/{file} is no longer accepted");
        }
    }
    let seeds: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    let valid: Vec<bool> = files.iter().map(|(f, _)| f.starts_with("valid-")).collect();
    let strategy = inputs(name, seeds.clone());
    let budget = std::env::var("KEYHOLD_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok());
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let mut tried = files.len();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    loop {
        let batch = if budget.is_some() { 2000 } else { cases };
        let mut runner = TestRunner::new(Config { cases: batch, failure_persistence: None, ..Config::default() });
        let result = runner.run(&strategy, |input| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let got = run(&input.bytes);
            if authenticated(name)
                && let Some(i) = input.mutated_from
                && valid[i]
                && input.bytes != seeds[i]
            {
                prop_assert_eq!(got, Outcome::Rejected, "a changed {} was accepted", name);
            }
            Ok::<(), TestCaseError>(())
        });
        if let Err(e) = result {
            panic!("fuzz target {name} failed: {e}");
        }
        match budget {
            Some(secs) if started.elapsed() < Duration::from_secs(secs) => continue,
            _ => break,
        }
    }
    tried += counter.into_inner();
    println!("fuzz {name}: {tried} inputs in {:.2} s", started.elapsed().as_secs_f64());
    tried
}

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                drive(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(tested.contains(name), "target {name} has no test in tests/fuzz.rs");
            }
        }
    };
}

fuzz_tests!(
    filter,
    name,
    route,
    json_bodies,
    wire_scalars,
    page_token,
    iam_member,
    ciphertext,
    sealed_key,
    archive,
    ekm_protocol,
    ekm_blob,
    ekm_config,
    hsm_key_ref,
);

/// The committed seeds are what the real encoders make: regenerated with
/// `KEYHOLD_FUZZ_WRITE_CORPUS=1 cargo test -p keyhold-fuzz --test fuzz corpus_is_generated`,
/// and every freshly generated seed is accepted by its target either way.
#[test]
fn corpus_is_generated() {
    let write = std::env::var_os("KEYHOLD_FUZZ_WRITE_CORPUS").is_some();
    let mut refused = Vec::new();
    for (name, run) in TARGETS {
        for (file, bytes) in corpus::generate(name) {
            if file.starts_with("valid-") && run(&bytes) != Outcome::Accepted {
                refused.push(format!("{name}/{file} {:?}", String::from_utf8_lossy(&bytes)));
            } else if write {
                let dir = corpus::dir().join(name);
                std::fs::create_dir_all(&dir).expect("create the corpus directory");
                std::fs::write(dir.join(&file), &bytes).expect("write a seed");
            }
        }
    }
    assert!(refused.is_empty(), "generated seeds refused by their targets: {refused:#?}");
}

/// The seal of each authenticated format covers every byte: every single-byte change of every
/// valid seed is refused (exhaustive over positions, one bit each).
#[test]
fn every_bit_of_a_sealed_seed_is_covered() {
    for name in ["ciphertext", "sealed_key", "ekm_blob", "archive"] {
        let run = target(name).expect("a known target");
        for (file, seed) in corpus::load(name) {
            if !file.starts_with("valid-") || (name == "archive" && file != "valid-sealed") {
                continue;
            }
            // For an archive, only the records are sealed; the header line is checked by binding.
            let from = if name == "archive" {
                let first = seed.iter().position(|b| *b == b'\n').expect("magic line") + 1;
                first + seed[first..].iter().position(|b| *b == b'\n').expect("header line") + 1
            } else {
                0
            };
            for i in from..seed.len() {
                let mut t = seed.clone();
                t[i] ^= 0x01;
                assert_eq!(run(&t), Outcome::Rejected, "{name}/{file}: a flipped bit at byte {i} was accepted");
            }
        }
    }
}
