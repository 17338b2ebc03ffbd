//! Coverage-guided fuzzing of one target with AFL++ (issue 15): built by `scripts/fuzz.sh --afl`
//! with `cargo afl build --features afl --example keyhold-fuzz-afl`, run as `keyhold-fuzz-afl TARGET` under `afl-fuzz`, fed
//! from the target's seed corpus. Uses the same target functions as the proptest runs.

#![forbid(unsafe_code)]

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = keyhold_fuzz::target(&name) else {
        let names: Vec<&str> = keyhold_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: keyhold-fuzz-afl TARGET, one of: {}", names.join(" "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        let _ = target(data);
    });
}
