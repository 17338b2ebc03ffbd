//! The CLI's copies of store instances against a real `keyhold serve` ([C8]-[C10]): backups
//! taken, listed, described, restored (under the backup's key and under another) and deleted;
//! clones (another key refused with an explanation); export to an archive in the server's
//! export directory and import from it; a read replica that catches up with its primary.
//! Everything goes through `keyhold` commands, as a user would type them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Proc, cli, spawn, wait_ready};
use serde_json::{Value, json};

/// The project `common::cli` sends (`KEYHOLD_PROJECT`).
const PROJECT: &str = "my-project";
const LOC: &[&str] = &["--location", "global"];
const KEY: &str = "projects/my-project/locations/global/keyRings/r/cryptoKeys/k";
const KEY2: &str = "projects/my-project/locations/global/keyRings/r/cryptoKeys/k2";
const DB1: &str = "projects/my-project/locations/global/instances/db1";

/// A running server and its directory.
struct Server {
    dir: tempfile::TempDir,
    proc: Proc,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let proc = spawn(dir.path(), 0, &[]);
        wait_ready(&proc).await;
        Server { dir, proc }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }

    /// Runs `keyhold ARGS` and requires success; returns (stdout, stderr).
    fn ok(&self, args: &[&str]) -> (String, String) {
        let (success, out, err) = cli(self.path(), self.proc.port, args);
        assert!(success, "keyhold {}\nstdout: {out}\nstderr: {err}\nserver log:\n{}", args.join(" "), self.log());
        (out, err)
    }

    /// Runs `keyhold ARGS` and requires failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let (success, out, err) = cli(self.path(), self.proc.port, args);
        assert!(!success, "keyhold {} succeeded\nstdout: {out}\nstderr: {err}", args.join(" "));
        err
    }

    /// Runs `keyhold ARGS --format json` and parses what it prints.
    fn json(&self, args: &[&str]) -> Value {
        let (out, _) = self.ok(&[args, &["--format", "json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("keyhold {}: {e}: {out}", args.join(" ")))
    }

    /// Downloads `object` of `instance` (in `global`) with `store objects get --output-file`;
    /// `Err(stderr)` when the command fails.
    fn get_object(&self, instance: &str, object: &str) -> Result<Vec<u8>, String> {
        let out = self.path().join(format!("got-{instance}-{}", object.replace('/', "_")));
        let _ = std::fs::remove_file(&out);
        let args =
            [&["store", "objects", "get", instance, object, "--output-file", out.to_str().unwrap()], LOC].concat();
        let (success, _, err) = cli(self.path(), self.proc.port, &args);
        if success { Ok(std::fs::read(&out).unwrap()) } else { Err(err) }
    }

    /// Uploads `data` as `object` of `instance` with `store objects put --file`.
    fn put_object(&self, instance: &str, object: &str, data: &[u8]) {
        let file = self.path().join("upload.bin");
        std::fs::write(&file, data).unwrap();
        let args = [
            &["store", "objects", "put", instance, object, "--file", file.to_str().unwrap(), "--content-type"],
            &["text/plain"][..],
            LOC,
        ]
        .concat();
        let (out, _) = self.ok(&args);
        assert!(out.contains(&format!("size: '{}'", data.len())), "{out}");
    }
}

/// Key ring `r` with keys `k` and `k2` in `global`, both usable by the store's service agent,
/// set up as a user would: `kms keyrings create`, `kms keys create`, `beta services identity
/// create` and `kms keys add-iam-policy-binding`.
fn keys_for_the_store(s: &Server) {
    s.ok(&[&["kms", "keyrings", "create", "r"], LOC].concat());
    let (out, _) = s.ok(&["beta", "services", "identity", "create", "--service=store.keyhold.dev"]);
    let email = out.trim().strip_prefix("Service identity created: ").unwrap_or_else(|| panic!("{out}"));
    assert!(email.ends_with("@gcp-sa-store.iam.gserviceaccount.com"), "{email}");
    let member = format!("serviceAccount:{email}");
    for key in ["k", "k2"] {
        s.ok(&[&["kms", "keys", "create", key, "--purpose", "encryption", "--keyring", "r"], LOC].concat());
        let (_, err) = s.ok(&[
            &[
                "kms",
                "keys",
                "add-iam-policy-binding",
                key,
                "--keyring",
                "r",
                "--member",
                &member,
                "--role",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            ],
            LOC,
        ]
        .concat());
        assert_eq!(err, format!("Updated IAM policy for key {key}.\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restores_clones_exports_and_replicas_through_the_cli() {
    let s = Server::start().await;
    keys_for_the_store(&s);

    // The instance, under k, with one object.
    let (out, err) =
        s.ok(&[&["store", "instances", "create", "db1", "--kms-key", "k", "--kms-keyring", "r"], LOC].concat());
    assert_eq!(err, "Created instance [db1].\n");
    assert!(out.contains(&format!("kmsKey: {KEY}")), "{out}");
    let data = b"quarterly numbers\n\x00\x01\xff binary tail".to_vec();
    s.put_object("db1", "reports/q1.txt", &data);
    assert_eq!(s.get_object("db1", "reports/q1.txt").unwrap(), data);

    // ---- backups create / list / describe -------------------------------------------------
    let b1 = s.json(&[&["store", "backups", "create", "b1", "--instance", "db1"], LOC].concat());
    assert_eq!(b1["name"], format!("{DB1}/backups/b1"), "{b1}");
    assert_eq!(b1["instance"], DB1, "{b1}");
    assert_eq!(b1["state"], "READY", "{b1}");
    assert_eq!(b1["kmsKey"], KEY, "the backup inherits the instance's key: {b1}");
    assert_eq!(b1["encryptionInfo"]["encryptionType"], "CUSTOMER_MANAGED_ENCRYPTION", "{b1}");
    assert_eq!(b1["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/1")]), "{b1}");
    assert_eq!(b1["objectCount"], "1", "{b1}");
    assert_eq!(b1["sizeBytes"], data.len().to_string(), "{b1}");

    // The default output: a note on stderr and the backup as YAML; a full name needs no flags.
    let (out, err) = s.ok(&[
        "store",
        "backups",
        "create",
        &format!("{DB1}/backups/b2"),
        "--encryption-type",
        "google-default-encryption",
    ]);
    assert_eq!(waited(&err), "Created backup [b2].\n");
    assert!(out.contains("encryptionType: GOOGLE_DEFAULT_ENCRYPTION") && out.contains("state: READY"), "{out}");
    assert!(!out.contains("kmsKey:"), "a Keyhold-managed backup names no key: {out}");

    // Inconsistent encryption flags are refused before anything is sent.
    let err = s.fails(
        &[
            &["store", "backups", "create", "b3", "--instance", "db1", "--encryption-type"],
            &["use-database-encryption", "--kms-key", "k2", "--kms-keyring", "r"][..],
            LOC,
        ]
        .concat(),
    );
    assert!(
        err.starts_with("ERROR: (keyhold.store.backups.create) --kms-key is only used with --encryption-type=customer-managed-encryption"),
        "{err}"
    );
    let err = s.fails(&["store", "backups", "describe", "b1"]);
    assert!(err.contains("[--instance]"), "{err}");

    let (table, _) = s.ok(&[&["store", "backups", "list", "--instance", "db1"], LOC].concat());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("ENCRYPTION"), "{table}");
    assert!(lines[1].starts_with("b1 ") && lines[1].contains("CUSTOMER_MANAGED_ENCRYPTION") && lines[1].ends_with(KEY));
    assert!(lines[2].starts_with("b2 ") && lines[2].contains("GOOGLE_DEFAULT_ENCRYPTION"), "{table}");
    let listed = s.json(&["store", "backups", "list", "--instance", DB1]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("{DB1}/backups/b1"), format!("{DB1}/backups/b2")]);

    let described = s.json(&[&["store", "backups", "describe", "b1", "--instance", "db1"], LOC].concat());
    assert_eq!(described, b1, "a backup does not change once taken");
    assert_eq!(s.json(&["store", "backups", "describe", &format!("{DB1}/backups/b1")]), b1);

    // ---- restore ---------------------------------------------------------------------------
    let restored =
        s.json(&[&["store", "instances", "restore", "db2", "--backup", &format!("{DB1}/backups/b1")], LOC].concat());
    assert_eq!(restored["name"], format!("projects/{PROJECT}/locations/global/instances/db2"), "{restored}");
    assert_eq!(restored["kmsKey"], KEY, "restored under the backup's key: {restored}");
    assert_eq!(restored["state"], "READY", "{restored}");
    assert_eq!(s.get_object("db2", "reports/q1.txt").unwrap(), data);

    let (out, err) = s.ok(&[
        &["store", "instances", "restore", "db3", "--backup", "b1", "--backup-instance", "db1"],
        &["--kms-key", "k2", "--kms-keyring", "r", "--labels", "from=b1"][..],
        LOC,
    ]
    .concat());
    assert_eq!(waited(&err), format!("Created instance [db3] from backup [{DB1}/backups/b1].\n"));
    assert!(out.contains(&format!("kmsKey: {KEY2}")) && out.contains("from: b1"), "{out}");
    assert_eq!(s.get_object("db3", "reports/q1.txt").unwrap(), data, "re-encrypted under k2 and readable");

    let err = s.fails(&[&["store", "instances", "restore", "db9", "--backup", "b1"], LOC].concat());
    assert!(err.contains("--backup-instance"), "{err}");

    // ---- clone -----------------------------------------------------------------------------
    let (out, err) = s.ok(&[&["store", "instances", "clone", "db1", "db1-clone"], LOC].concat());
    assert_eq!(waited(&err), "Created instance [db1-clone], a clone of [db1].\n");
    assert!(out.contains(&format!("kmsKey: {KEY}")), "a clone keeps its source's key: {out}");
    assert_eq!(s.get_object("db1-clone", "reports/q1.txt").unwrap(), data);

    let err = s.fails(&["store", "instances", "clone", DB1, "db1-clone2", "--kms-key", KEY2]);
    assert!(err.starts_with("ERROR: (keyhold.store.instances.clone) FAILED_PRECONDITION: "), "{err}");
    assert!(err.contains("A clone keeps its source's encryption") && err.contains(KEY2), "{err}");
    assert!(err.contains("take a backup and restore it") && err.contains("export and import"), "{err}");
    let err = s.fails(&[&["store", "instances", "describe", "db1-clone2"], LOC].concat());
    assert!(err.contains("NOT_FOUND"), "the refused clone left nothing behind: {err}");

    // ---- export / import -------------------------------------------------------------------
    let (out, err) = s.ok(&[&["store", "instances", "export", "db1", "--destination", "a.archive"], LOC].concat());
    let archive = s.path().join("data").join("exports").join(PROJECT).join("a.archive");
    assert_eq!(waited(&err), format!("Exported instance [db1] to [{}].\n", archive.display()));
    assert!(out.contains("encryptionType: CUSTOMER_MANAGED_ENCRYPTION") && out.contains("objectCount: '1'"), "{out}");
    assert!(out.contains(&format!("- {KEY}/cryptoKeyVersions/1")), "{out}");
    let bytes = std::fs::read(&archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    assert!(!bytes.windows(data.len()).any(|w| w == data.as_slice()), "the archive holds no plaintext");

    let err = s.fails(&[&["store", "instances", "export", "db1", "--destination", "a.archive"], LOC].concat());
    assert!(err.contains("ALREADY_EXISTS") && err.contains("never overwrite"), "{err}");
    let err = s.fails(&[&["store", "instances", "export", "db1", "--destination", "../escape.archive"], LOC].concat());
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    // Finding 10: the registry against the directory, on demand.
    std::fs::write(archive.with_file_name("stray.bin"), b"x").unwrap();
    let report = s.json(&["store", "exports", "reconcile"]);
    assert_eq!(report["present"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(report["unregistered"], json!([archive.with_file_name("stray.bin").display().to_string()]), "{report}");
    let (_, err) = s.ok(&["store", "exports", "reconcile"]);
    assert!(err.starts_with(&format!("Reconciled the exports of project [{PROJECT}]: 1 present, 0 missing")), "{err}");
    let err =
        s.fails(&["store", "instances", "export", DB1, "--destination", "p", "--allow-plaintext", "--kms-key", KEY]);
    assert!(err.contains("--allow-plaintext") && err.contains("--kms-key"), "{err}");

    let imported = s.json(
        &[
            &["store", "instances", "import", "db4", "--source", "a.archive", "--kms-key", "k2", "--kms-keyring", "r"],
            LOC,
        ]
        .concat(),
    );
    assert_eq!(imported["kmsKey"], KEY2, "{imported}");
    assert_eq!(imported["state"], "READY", "{imported}");
    assert_eq!(s.get_object("db4", "reports/q1.txt").unwrap(), data);

    // ---- read replica ----------------------------------------------------------------------
    let (out, err) = s.ok(&[&["store", "instances", "create", "db1-replica", "--replica-of", "db1"], LOC].concat());
    assert!(err.starts_with(&format!("Created instance [db1-replica], a read replica of [{DB1}]")), "{err}");
    assert!(out.contains(&format!("replicaOf: {DB1}")) && out.contains(&format!("kmsKey: {KEY}")), "{out}");
    let waited = until_replicated(&s, "reports/q1.txt", &data);
    let primary = s.json(&[&["store", "instances", "describe", "db1"], LOC].concat());
    assert_eq!(primary["replicaNames"], json!([format!("projects/{PROJECT}/locations/global/instances/db1-replica")]));
    // It follows later writes too, and refuses its own.
    let later = b"written after the replica was made".to_vec();
    s.put_object("db1", "reports/q2.txt", &later);
    until_replicated(&s, "reports/q2.txt", &later);
    let file = s.path().join("upload.bin");
    let err = s
        .fails(&[&["store", "objects", "put", "db1-replica", "x.txt", "--file", file.to_str().unwrap()], LOC].concat());
    assert!(err.contains("read replica") || err.contains("read-only"), "{err}");
    let err = s.fails(
        &[
            &[
                "store",
                "instances",
                "create",
                "db1-replica2",
                "--replica-of",
                "db1",
                "--kms-key",
                "k2",
                "--kms-keyring",
                "r",
            ],
            LOC,
        ]
        .concat(),
    );
    assert!(err.contains("FAILED_PRECONDITION") && err.contains(KEY2), "{err}");

    // ---- backups delete --------------------------------------------------------------------
    let (out, err) = s.ok(&[&["store", "backups", "delete", "b1", "--instance", "db1"], LOC].concat());
    assert_eq!((out.as_str(), err.as_str()), ("", "Deleted backup [b1].\n"));
    let err = s.fails(&[&["store", "backups", "describe", "b1", "--instance", "db1"], LOC].concat());
    assert!(err.starts_with("ERROR: (keyhold.store.backups.describe) NOT_FOUND: "), "{err}");
    let listed = s.json(&["store", "backups", "list", "--instance", DB1]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], format!("{DB1}/backups/b2"));
    let err =
        s.fails(&[&["store", "instances", "restore", "db5", "--backup", &format!("{DB1}/backups/b1")], LOC].concat());
    assert!(err.contains("NOT_FOUND"), "{err}");
    // What was restored from it stays.
    assert_eq!(s.get_object("db3", "reports/q1.txt").unwrap(), data);

    println!("replica caught up in {waited:?}");
    let (table, _) = s.ok(&[&["store", "instances", "list"], LOC].concat());
    for i in ["db1 ", "db1-clone ", "db1-replica ", "db2 ", "db3 ", "db4 "] {
        assert!(table.lines().any(|l| l.starts_with(i)), "{i} missing:\n{table}");
    }
}

/// Polls `objects get` on `db1-replica` until it returns `want` (at most ~10 s).
fn until_replicated(s: &Server, object: &str, want: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        let got = s.get_object("db1-replica", object);
        if got.as_deref() == Ok(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{object} not replicated in 10 s; last read: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Finding 4: a server started with umask 000 still writes archives 0600 in directories 0700
/// (the export directory, the project's, and any below it). The server listens on port 0 and
/// the test reads the address it bound from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            "umask 000; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_keyhold"),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("KEYHOLD_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc { child, port: 0, log: log.clone() };
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .split("serving the Cloud KMS v1 API on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(dir.path(), port, args);
        assert!(ok, "keyhold {}: {out}{err}", args.join(" "));
    };
    run(&["store", "instances", "create", "i", "--location", "global"]);
    let file = dir.path().join("f");
    std::fs::write(&file, b"contents").unwrap();
    run(&["store", "objects", "put", "i", "o", "--location", "global", "--file", file.to_str().unwrap()]);
    run(&[
        "store",
        "instances",
        "export",
        "i",
        "--location",
        "global",
        "--destination",
        "d/x.archive",
        "--allow-plaintext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let exports = dir.path().join("data").join("exports");
    assert_eq!(mode(&exports.join(PROJECT).join("d").join("x.archive")), 0o600);
    for d in [exports.clone(), exports.join(PROJECT), exports.join(PROJECT).join("d")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    drop(proc);
}

/// What a copy command wrote to stderr after waiting for its operation: the first line says
/// which operation it waited for (as gcloud does).
fn waited(err: &str) -> &str {
    let (first, rest) = err.split_once('\n').unwrap_or((err, ""));
    assert!(
        first.starts_with("Waiting for operation [projects/my-project/locations/")
            && first.ends_with("] to complete..."),
        "{err}"
    );
    assert!(first.contains("/operations/op-"), "{err}");
    rest
}
