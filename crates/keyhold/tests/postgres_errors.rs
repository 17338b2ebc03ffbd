//! Finding 8 with a real PostgreSQL (started by `scripts/test.sh`): the errors an operator meets
//! first name their real cause. A role without CREATE on schema `public` used to stop the
//! server with "stored data is corrupt: db error", and a refused login read "Error occurred
//! while creating a new object: db error".
//!
//! The throwaway cluster of `scripts/test.sh` uses `trust` authentication, so a wrong password
//! cannot be provoked there without editing its pg_hba.conf (shared by every test running at the
//! same time); a role that does not exist is refused at the same step, with the same SQLSTATE
//! class (28) and through the same code path, and is what these tests use.

mod common;

use keyhold_sql::Database;

/// A random suffix for names of roles.
fn suffix() -> String {
    let mut id = [0u8; 6];
    keyhold_crypto::random_bytes(&mut id).unwrap();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `url` with its user replaced by `user` (the trust cluster's URLs carry no password).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn open_error(url: &str) -> String {
    match keyhold_sql::open(&Database::Postgres(url.to_string())).await {
        Ok(_) => panic!("opened {url}"),
        Err(e) => e.to_string(),
    }
}

/// The server refuses to start, saying what PostgreSQL said and how to fix it; once the role
/// is granted CREATE on schema public, the same command starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_create_tables_is_told_so_not_corrupt() {
    let url = common::fresh_postgres().await;
    let role = format!("kh_nocreate_{}", suffix());
    let db = admin(&url).await;
    // PostgreSQL 15 and later: only the database's owner may create in schema public.
    db.batch_execute(&format!("CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC")).await.unwrap();
    let role_url = as_user(&url, &role);

    let err = open_error(&role_url).await;
    assert!(err.contains("permission denied for schema public"), "{err}");
    assert!(err.contains("SQLSTATE 42501"), "{err}");
    assert!(err.contains("GRANT CREATE ON SCHEMA public"), "{err}");
    assert!(!err.contains("corrupt") && !err.contains("db error"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    std::fs::write(&key, keyhold_api::wire::encode_base64(&[3u8; 32])).unwrap();
    let flags = ["--database", role_url.as_str(), "--root-key-file", key.to_str().unwrap()];
    let stderr = common::serve_refused(dir.path(), &flags);
    assert!(stderr.contains("permission denied for schema public"), "{stderr}");
    assert!(stderr.contains("cannot create or check Keyhold's tables"), "{stderr}");
    assert!(!stderr.contains("corrupt"), "{stderr}");

    db.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {role}")).await.unwrap();
    let p = common::spawn_bound(dir.path(), &flags, None);
    common::wait_ready(&p).await;
    common::terminate(p);
}

/// A refused login, a missing database and an unreachable server each name their cause
/// (deadpool's own message hid it behind "creating a new object: db error").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_name_their_cause() {
    let url = common::fresh_postgres().await;

    let nobody = format!("kh_nobody_{}", suffix());
    let err = open_error(&as_user(&url, &nobody)).await;
    assert!(err.contains(&format!("role \"{nobody}\" does not exist")), "{err}");
    assert!(err.contains("SQLSTATE 28000"), "{err}");
    assert!(err.contains("check the user and password"), "{err}");
    assert!(!err.contains("db error") && !err.contains("corrupt"), "{err}");

    let (base, _) = url.rsplit_once('/').unwrap();
    let missing = format!("kh_missing_{}", suffix());
    let err = open_error(&format!("{base}/{missing}")).await;
    assert!(err.contains(&format!("database \"{missing}\" does not exist")), "{err}");
    assert!(err.contains("SQLSTATE 3D000"), "{err}");
    assert!(!err.contains("db error") && !err.contains("corrupt"), "{err}");

    // A Unix socket directory that does not exist: the OS's words reach the message.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no-such-dir");
    let err = open_error(&format!("postgresql://postgres@localhost/x?host={}", gone.display())).await;
    assert!(err.contains("error connecting to server") && err.contains("No such file or directory"), "{err}");

    // The same through `keyhold audit verify`'s read-only open, which connects at its first read.
    let store = keyhold_sql::open_read_only(&Database::Postgres(as_user(&url, &nobody))).await.unwrap();
    let err = store.audit_head().await.unwrap_err().to_string();
    assert!(err.contains(&format!("role \"{nobody}\" does not exist")), "{err}");
}
