//! The CLI's IAM, token, logging and audit commands against a real `keyhold serve` process:
//! the owner token found in the data directory, gcloud's output for policy changes and service
//! identities, a second principal denied and then allowed by a binding, token revocation, the
//! audit log read back, and its hash chain verified and found broken after tampering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyhold");

/// Environment variables that would change what the CLI or the server does.
const SCRUBBED_ENV: &[&str] = &[
    "KEYHOLD_TOKEN",
    "KEYHOLD_TOKEN_FILE",
    "KEYHOLD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "KEYHOLD_DATABASE",
    "KEYHOLD_DATA_DIR",
    "KEYHOLD_ENDPOINT",
    "KEYHOLD_FORMAT",
    "KEYHOLD_OWNER",
    "KEYHOLD_OWNER_TOKEN_FILE",
    "KEYHOLD_ALLOW_ANONYMOUS",
    "KEYHOLD_LISTEN",
    "KEYHOLD_ROOT_KEY_FILE",
];

/// The port in the server's "Keyhold is serving ... on http://127.0.0.1:PORT" log line: the
/// server binds port 0 itself (a port picked, released and passed on could be taken meanwhile).
fn bound_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("Keyhold is serving"))?;
    let rest = &line[line.find("http://127.0.0.1:")? + "http://127.0.0.1:".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok().filter(|p| *p != 0)
}

/// A running `keyhold serve`, killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    /// Holds the data directory (`data/`) and the server's log.
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET /healthz` over a plain socket: whether the server answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut cmd = Command::new(BIN);
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        let child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            // The address line is at info level.
            .env("KEYHOLD_LOG", "info")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server { child: Some(child), port: 0, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.port == 0 || !healthy(server.port) {
            server.port = bound_port(&server.log()).unwrap_or(0);
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("keyhold serve exited with {status}: {}", server.log());
            }
            assert!(Instant::now() < deadline, "keyhold serve did not start: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(server.data_dir().join("owner.token").is_file(), "the owner token is written on first start");
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CLI as the server's owner: run in the data directory, which holds owner.token.
    fn cli(&self) -> Cli {
        let mut cmd = Command::new(BIN);
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        cmd.current_dir(self.data_dir())
            .env("KEYHOLD_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("KEYHOLD_DATA_DIR", self.data_dir())
            .env("KEYHOLD_PROJECT", "p");
        Cli(cmd)
    }

    /// The CLI with someone else's token (and no owner token to fall back on).
    fn cli_with_token(&self, token: &str) -> Cli {
        let mut c = self.cli();
        c.0.env("KEYHOLD_TOKEN", token);
        c
    }
}

/// One CLI invocation being built.
struct Cli(Command);

/// What a CLI invocation did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.env(k, v);
        self
    }

    fn current_dir(mut self, dir: &Path) -> Self {
        self.0.current_dir(dir);
        self
    }

    fn run(mut self, args: &[&str]) -> Run {
        let Output { status, stdout, stderr } = self.0.args(args).stdin(Stdio::null()).output().unwrap();
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    /// Runs and requires success.
    fn ok(self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "keyhold {}\nstdout: {}\nstderr: {}", args.join(" "), r.stdout, r.stderr);
        r
    }

    /// Runs and requires failure (exit status 1).
    fn fails(self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, Some(1), "keyhold {}\nstdout: {}\nstderr: {}", args.join(" "), r.stdout, r.stderr);
        r
    }
}

const RING_FLAGS: &[&str] = &["--location", "global"];
const KEY_FLAGS: &[&str] = &["--keyring", "r", "--location", "global"];

fn args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

/// Creates key ring `r` and key `k` in project `p` through the CLI.
fn create_ring_and_key(s: &Server) {
    let r = s.cli().ok(&args(&["kms", "keyrings", "create", "r"], RING_FLAGS));
    assert_eq!(r.stdout, "", "create commands are silent without --format");
    s.cli().ok(&args(&["kms", "keys", "create", "k", "--purpose", "encryption"], KEY_FLAGS));
    let described = s.cli().ok(&args(&["kms", "keys", "describe", "k", "--format", "json"], KEY_FLAGS));
    let key: Value = serde_json::from_str(&described.stdout).unwrap();
    assert_eq!(key["name"], "projects/p/locations/global/keyRings/r/cryptoKeys/k");
    assert_eq!(key["primary"]["state"], "ENABLED");
}

/// Whether `email` is `service-<12 digits>@gcp-sa-store.iam.gserviceaccount.com`.
fn is_store_agent(email: &str) -> bool {
    let Some(rest) = email.strip_prefix("service-") else { return false };
    let Some((number, domain)) = rest.split_once('@') else { return false };
    number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()) && domain == "gcp-sa-store.iam.gserviceaccount.com"
}

#[test]
fn owner_grants_a_service_agent_as_the_aml_ai_page_shows() {
    let s = Server::start();
    create_ring_and_key(&s);

    let r = s.cli().ok(&["beta", "services", "identity", "create", "--service=store.keyhold.dev", "--project=p"]);
    let line = r.stdout.trim_end();
    let email = line.strip_prefix("Service identity created: ").unwrap_or_else(|| panic!("{line}"));
    assert!(is_store_agent(email), "{email}");
    assert_eq!(r.stdout.lines().count(), 1);

    // The agent's number is the project's number.
    let project = s.cli().ok(&["projects", "describe", "p"]);
    let number = email.trim_start_matches("service-").split('@').next().unwrap();
    let lines: Vec<&str> = project.stdout.lines().collect();
    assert!(lines[0].starts_with("createTime: '") && lines[0].ends_with("Z'"), "{}", project.stdout);
    assert_eq!(
        lines[1..],
        ["lifecycleState: ACTIVE", "name: p", "projectId: p", &format!("projectNumber: '{number}'")],
        "{}",
        project.stdout
    );

    let member = format!("serviceAccount:{email}");
    let r = s.cli().ok(&args(
        &[
            "kms",
            "keys",
            "add-iam-policy-binding",
            "k",
            "--member",
            &member,
            "--role",
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        ],
        KEY_FLAGS,
    ));
    assert_eq!(r.stderr, "Updated IAM policy for key k.\n");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    assert_eq!(lines[0], "bindings:");
    assert_eq!(lines[1], "- members:");
    assert_eq!(lines[2], format!("  - {member}"));
    assert_eq!(lines[3], "  role: roles/cloudkms.cryptoKeyEncrypterDecrypter");
    let etag = lines[4].strip_prefix("etag: ").unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(!etag.is_empty() && etag != "ACAB", "{etag}");
    assert_eq!(lines[5], "version: 1");

    // Granting again changes nothing but still answers the policy; a full key name works too.
    let full = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
    let again = s.cli().ok(&[
        "kms",
        "keys",
        "add-iam-policy-binding",
        full,
        "--member",
        &member,
        "--role",
        "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        "--format",
        "json",
    ]);
    let policy: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(policy["bindings"].as_array().unwrap().len(), 1);
    assert_eq!(policy["bindings"][0]["members"], serde_json::json!([member]));

    let got = s.cli().ok(&args(&["kms", "keys", "get-iam-policy", "k"], KEY_FLAGS));
    assert!(got.stdout.starts_with("bindings:\n- members:\n"), "{}", got.stdout);
    assert_eq!(got.stderr, "");
}

#[test]
fn bindings_and_tokens_decide_what_another_principal_may_do() {
    let s = Server::start();
    create_ring_and_key(&s);

    let created = s.cli().ok(&[
        "auth",
        "tokens",
        "create",
        "--principal",
        "user:bob@example.com",
        "--ttl",
        "30d",
        "--description",
        "bob's laptop",
    ]);
    let token = created.stdout.trim_end().to_string();
    assert_eq!(created.stdout, format!("{token}\n"), "only the token, on one line");
    assert!(token.starts_with("kh1.") && !token.contains(char::is_whitespace), "{token}");
    assert!(
        created.stderr.starts_with("Created token tokens/")
            && created.stderr.contains(" for user:bob@example.com, expires ")
            && created.stderr.trim_end().ends_with("it is shown only once."),
        "{}",
        created.stderr
    );
    assert!(!created.stderr.contains(&token), "the note does not repeat the token");
    let token_id = created.stderr["Created token tokens/".len()..].split(' ').next().unwrap().to_string();

    let list = args(&["kms", "keys", "list"], KEY_FLAGS);
    let denied = s.cli_with_token(&token).fails(&list);
    assert!(denied.stderr.starts_with("ERROR: (keyhold.kms.keys.list) PERMISSION_DENIED: "), "{}", denied.stderr);
    assert!(denied.stderr.contains("cloudkms.cryptoKeys.list"), "{}", denied.stderr);

    // Bob may not manage tokens or policies either.
    let r = s.cli_with_token(&token).fails(&["auth", "tokens", "list"]);
    assert!(r.stderr.starts_with("ERROR: (keyhold.auth.tokens.list) PERMISSION_DENIED: "), "{}", r.stderr);
    let r = s.cli_with_token(&token).fails(&args(
        &[
            "kms",
            "keyrings",
            "add-iam-policy-binding",
            "r",
            "--member",
            "user:bob@example.com",
            "--role",
            "roles/cloudkms.admin",
        ],
        RING_FLAGS,
    ));
    assert!(
        r.stderr.starts_with("ERROR: (keyhold.kms.keyrings.add-iam-policy-binding) PERMISSION_DENIED: "),
        "{}",
        r.stderr
    );

    let granted = s.cli().ok(&args(
        &[
            "kms",
            "keyrings",
            "add-iam-policy-binding",
            "r",
            "--member",
            "user:bob@example.com",
            "--role",
            "roles/cloudkms.viewer",
        ],
        RING_FLAGS,
    ));
    assert_eq!(granted.stderr, "Updated IAM policy for keyring r.\n");
    assert!(granted.stdout.contains("  - user:bob@example.com\n  role: roles/cloudkms.viewer\n"), "{}", granted.stdout);

    let allowed = s.cli_with_token(&token).ok(&list);
    let rows: Vec<&str> = allowed.stdout.lines().collect();
    assert!(rows[0].starts_with("NAME ") && rows[0].contains("PRIMARY_STATE"), "{}", allowed.stdout);
    assert_eq!(rows.len(), 2, "{}", allowed.stdout);
    assert!(rows[1].starts_with("projects/p/locations/global/keyRings/r/cryptoKeys/k "), "{}", allowed.stdout);

    // A viewer still may not encrypt.
    let plain = s.dir.path().join("plain.txt");
    std::fs::write(&plain, b"hello").unwrap();
    let r = s.cli_with_token(&token).fails(&args(
        &["kms", "encrypt", "--key", "k", "--plaintext-file", plain.to_str().unwrap(), "--ciphertext-file", "-"],
        KEY_FLAGS,
    ));
    assert!(r.stderr.contains("PERMISSION_DENIED"), "{}", r.stderr);

    // The tokens table lists bob's token (never the token itself).
    let table = s.cli().ok(&["auth", "tokens", "list"]);
    let header: Vec<&str> = table.stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PRINCIPAL", "EXPIRE_TIME", "REVOKED"]);
    let bob_row =
        table.stdout.lines().find(|l| l.contains("user:bob@example.com")).unwrap_or_else(|| panic!("{}", table.stdout));
    assert_eq!(bob_row.split_whitespace().next(), Some(token_id.as_str()));
    assert_eq!(bob_row.split_whitespace().last(), Some("False"));
    assert!(!table.stdout.contains(&token));

    let revoked = s.cli().ok(&["auth", "tokens", "revoke", &token_id]);
    assert_eq!(revoked.stderr, format!("Revoked token [tokens/{token_id}].\n"));
    let after = s.cli_with_token(&token).fails(&list);
    assert!(after.stderr.starts_with("ERROR: (keyhold.kms.keys.list) UNAUTHENTICATED: "), "{}", after.stderr);
    assert!(after.stderr.contains("The token in KEYHOLD_TOKEN was not accepted"), "{}", after.stderr);
    assert!(!after.stderr.contains(&token), "errors never show the token");
    let table = s.cli().ok(&["auth", "tokens", "list", "--format", "json"]);
    let tokens: Value = serde_json::from_str(&table.stdout).unwrap();
    let bob = tokens.as_array().unwrap().iter().find(|t| t["principal"] == "user:bob@example.com").unwrap();
    assert!(bob["revokeTime"].is_string(), "{bob}");

    // The binding can be removed once, and then gcloud's error.
    let ring_remove = args(
        &[
            "kms",
            "keyrings",
            "remove-iam-policy-binding",
            "r",
            "--member",
            "user:bob@example.com",
            "--role",
            "roles/cloudkms.viewer",
        ],
        RING_FLAGS,
    );
    let removed = s.cli().ok(&ring_remove);
    assert_eq!(removed.stderr, "Updated IAM policy for keyring r.\n");
    assert!(!removed.stdout.contains("bob"), "{}", removed.stdout);
    let again = s.cli().fails(&ring_remove);
    assert_eq!(
        again.stderr,
        "ERROR: (keyhold.kms.keyrings.remove-iam-policy-binding) Policy binding with the specified principal and role not found!\n"
    );
}

#[test]
fn without_a_token_the_error_says_how_to_pass_one() {
    let s = Server::start();
    let elsewhere = tempfile::tempdir().unwrap();
    // No KEYHOLD_TOKEN, no --token-file, and no owner token in this data directory.
    let r = s
        .cli()
        .env("KEYHOLD_DATA_DIR", elsewhere.path())
        .current_dir(elsewhere.path())
        .fails(&args(&["kms", "keyrings", "list"], RING_FLAGS));
    assert!(r.stderr.starts_with("ERROR: (keyhold.kms.keyrings.list) UNAUTHENTICATED: "), "{}", r.stderr);
    assert!(r.stderr.contains("KEYHOLD_TOKEN") && r.stderr.contains("--token-file"), "{}", r.stderr);
    assert!(r.stderr.contains(&elsewhere.path().join("owner.token").display().to_string()), "{}", r.stderr);

    // --token-file with the owner token works from anywhere.
    let r = s.cli().env("KEYHOLD_DATA_DIR", elsewhere.path()).current_dir(elsewhere.path()).ok(&args(
        &["kms", "keyrings", "list", "--token-file", s.data_dir().join("owner.token").to_str().unwrap()],
        RING_FLAGS,
    ));
    assert_eq!(r.stderr, "Listed 0 items.\n");
}

#[test]
fn policies_round_trip_through_files_and_projects_and_the_organization() {
    let s = Server::start();
    create_ring_and_key(&s);
    let work = s.dir.path();

    // A YAML file as get-iam-policy prints it, edited, then set.
    s.cli().ok(&args(
        &[
            "kms",
            "keys",
            "add-iam-policy-binding",
            "k",
            "--member",
            "user:ann@example.com",
            "--role",
            "roles/cloudkms.viewer",
        ],
        KEY_FLAGS,
    ));
    let yaml = s.cli().ok(&args(&["kms", "keys", "get-iam-policy", "k"], KEY_FLAGS)).stdout;
    let file = work.join("policy.yaml");
    std::fs::write(&file, yaml.replace("user:ann@example.com", "user:ann@example.com\n  - user:cy@example.com"))
        .unwrap();
    let set = s.cli().ok(&args(&["kms", "keys", "set-iam-policy", "k", file.to_str().unwrap()], KEY_FLAGS));
    assert_eq!(set.stderr, "Updated IAM policy for key k.\n");
    assert!(
        set.stdout.contains("  - user:ann@example.com\n  - user:cy@example.com\n  role: roles/cloudkms.viewer\n"),
        "{}",
        set.stdout
    );
    // The file's etag is stale now: the server refuses it.
    let stale = s.cli().fails(&args(&["kms", "keys", "set-iam-policy", "k", file.to_str().unwrap()], KEY_FLAGS));
    assert!(stale.stderr.starts_with("ERROR: (keyhold.kms.keys.set-iam-policy) ABORTED: "), "{}", stale.stderr);

    // JSON, without an etag: replaces unconditionally (here: a key ring's policy).
    let json_file = work.join("ring.json");
    std::fs::write(
        &json_file,
        r#"{"bindings": [{"role": "roles/cloudkms.cryptoKeyDecrypter", "members": ["user:dee@example.com"]}]}"#,
    )
    .unwrap();
    let set = s.cli().ok(&args(
        &["kms", "keyrings", "set-iam-policy", "r", json_file.to_str().unwrap(), "--format", "json"],
        RING_FLAGS,
    ));
    assert_eq!(set.stderr, "Updated IAM policy for keyring r.\n");
    let policy: Value = serde_json::from_str(&set.stdout).unwrap();
    assert_eq!(policy["bindings"][0]["members"][0], "user:dee@example.com");
    assert_eq!(policy["version"], 1);
    let got: Value = serde_json::from_str(
        &s.cli().ok(&args(&["kms", "keyrings", "get-iam-policy", "r", "--format", "json"], RING_FLAGS)).stdout,
    )
    .unwrap();
    assert_eq!(got, policy);

    // Projects: gcloud's bracketed message.
    let r = s.cli().ok(&[
        "projects",
        "add-iam-policy-binding",
        "p",
        "--member",
        "user:eve@example.com",
        "--role",
        "roles/cloudkms.viewer",
    ]);
    assert_eq!(r.stderr, "Updated IAM policy for project [p].\n");
    assert!(r.stdout.contains("- user:eve@example.com"), "{}", r.stdout);
    let r = s.cli().ok(&[
        "projects",
        "remove-iam-policy-binding",
        "p",
        "--member",
        "user:eve@example.com",
        "--role",
        "roles/cloudkms.viewer",
    ]);
    assert!(!r.stdout.contains("eve"), "{}", r.stdout);
    let r = s.cli().ok(&["projects", "get-iam-policy", "p", "--format", "json"]);
    let _: Value = serde_json::from_str(&r.stdout).unwrap();

    // The organization is the whole server; the owner is bound there.
    let org = s.cli().ok(&["organizations", "get-iam-policy", "keyhold"]);
    assert!(org.stdout.contains("- user:owner@keyhold.local"), "{}", org.stdout);
    let r = s.cli().ok(&[
        "organizations",
        "add-iam-policy-binding",
        "keyhold",
        "--member",
        "user:ops@example.com",
        "--role",
        "roles/cloudkms.viewer",
    ]);
    assert_eq!(r.stderr, "Updated IAM policy for organization [keyhold].\n");
    let r = s.cli().fails(&["organizations", "get-iam-policy", "123"]);
    assert!(r.stderr.starts_with("ERROR: (keyhold.organizations.get-iam-policy) Unknown organization"), "{}", r.stderr);

    // Client-side checks, before anything is sent.
    let r = s.cli().fails(&args(
        &[
            "kms",
            "keys",
            "add-iam-policy-binding",
            "k",
            "--member",
            "ann@example.com",
            "--role",
            "roles/cloudkms.viewer",
        ],
        KEY_FLAGS,
    ));
    assert!(r.stderr.contains("<type>:<value>"), "{}", r.stderr);
}

#[test]
fn logging_read_shows_what_happened() {
    let s = Server::start();
    create_ring_and_key(&s);

    let r = s.cli().ok(&["logging", "read", "--project", "p", "--method", "CreateKeyRing"]);
    assert!(r.stdout.starts_with("---\n"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("---\n").count(), 1, "one entry: {}", r.stdout);
    assert!(r.stdout.contains("  methodName: CreateKeyRing\n"), "{}", r.stdout);
    assert!(r.stdout.contains("  resourceName: projects/p/locations/global/keyRings/r\n"), "{}", r.stdout);
    assert!(r.stdout.contains("    principalEmail: owner@keyhold.local\n"), "{}", r.stdout);

    // JSON, newest first by default, and --limit.
    let r = s.cli().ok(&["logging", "read", "--log", "activity", "--format", "json"]);
    let entries: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let methods: Vec<&str> = entries.iter().map(|e| e["protoPayload"]["methodName"].as_str().unwrap()).collect();
    let (ring, key) = (
        methods.iter().position(|m| *m == "CreateKeyRing").unwrap(),
        methods.iter().position(|m| *m == "CreateCryptoKey").unwrap(),
    );
    assert!(key < ring, "newest first: {methods:?}");
    let times: Vec<&str> = entries.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let r = s.cli().ok(&["logging", "read", "--log", "activity", "--limit", "1", "--order", "asc", "--format", "json"]);
    let first: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["timestamp"].as_str(), times.last().copied());

    // A principal filter that matches nothing prints nothing.
    let r = s.cli().ok(&["logging", "read", "--principal", "user:nobody@example.com"]);
    assert_eq!(r.stdout, "");
}

#[test]
fn audit_verify_reads_the_database_and_detects_tampering() {
    let mut s = Server::start();
    create_ring_and_key(&s);
    let data = s.data_dir();
    let data_arg = data.to_str().unwrap().to_string();

    // While the server runs (SQLite WAL allows a concurrent reader).
    let r = s.cli().ok(&["audit", "verify", "--data-dir", &data_arg]);
    let line = r.stdout.trim_end();
    let rest = line.strip_prefix("Audit log intact: ").unwrap_or_else(|| panic!("{line}"));
    let (count, head) = rest.split_once(" entries; head hash ").unwrap_or_else(|| panic!("{line}"));
    assert!(count.parse::<u64>().unwrap() >= 3, "{line}");
    assert!(!head.is_empty(), "{line}");

    s.stop();
    // KEYHOLD_DATA_DIR is the default, as for `keyhold serve`.
    let r = s.cli().ok(&["audit", "verify"]);
    assert!(r.stdout.starts_with("Audit log intact: "), "{}", r.stdout);

    {
        let db = rusqlite::Connection::open(data.join("keyhold.db")).unwrap();
        db.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
        // Rewrite who did it in entry 2 (the owner's bootstrap token, recorded as done by
        // `service:bootstrap.keyhold.local`), whatever that entry's exact text is.
        let before: String = db.query_row("SELECT entry FROM audit_log WHERE seq = 2", [], |r| r.get(0)).unwrap();
        let changed = db
            .execute(
                "UPDATE audit_log SET entry = json_set(entry, '$.principal', 'user:mallory@evil.example') WHERE seq = 2",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let after: String = db.query_row("SELECT entry FROM audit_log WHERE seq = 2", [], |r| r.get(0)).unwrap();
        assert!(after.contains("user:mallory@evil.example") && after != before, "the tampering took: {after}");
    }
    let r = s.cli().fails(&["audit", "verify", "--data-dir", &data_arg]);
    assert!(r.stderr.starts_with("Audit log BROKEN at entry 2: "), "{}", r.stderr);
    assert!(r.stderr.contains("modified"), "{}", r.stderr);
    assert_eq!(r.stdout, "");

    let missing = tempfile::tempdir().unwrap();
    let r = s.cli().fails(&["audit", "verify", "--data-dir", missing.path().to_str().unwrap()]);
    assert!(r.stderr.starts_with("ERROR: (keyhold.audit.verify) There is no Keyhold database at "), "{}", r.stderr);
    assert!(!missing.path().join("keyhold.db").exists(), "verify creates nothing");
}
