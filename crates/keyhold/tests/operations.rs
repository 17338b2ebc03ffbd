//! Copies as long-running operations (issue 18, finding 7), on real `keyhold serve` processes:
//! a backup killed with SIGKILL half-way is finished by the next process under the same
//! operation; a clone is cancelled; the CLI waits for an operation, or returns at once with
//! `--async`. `--store-copy-bytes-per-second` makes the copies slow enough to catch half-way.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, owner_token, spawn, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/my-project/locations/global";
const INSTANCE: &str = "projects/my-project/locations/global/instances/db";
const OBJECTS: usize = 40;
const OBJECT_BYTES: usize = 1024;
/// 40 objects of 1 KiB at 16 KiB/s: a copy takes about 2.5 s.
const RATE: &str = "16384";

async fn request(dir: &Path, port: u16, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = common::http_client()
        .request(method, format!("http://127.0.0.1:{port}/v1/{path}"))
        .bearer_auth(owner_token(dir));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

async fn ok(dir: &Path, port: u16, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = request(dir, port, method, path, body).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// An instance `db` in my-project with [`OBJECTS`] objects of [`OBJECT_BYTES`].
async fn instance_with_objects(dir: &Path, port: u16) {
    ok(dir, port, Method::POST, &format!("{LOC}/instances?instanceId=db"), Some(json!({}))).await;
    let http = common::http_client();
    for i in 0..OBJECTS {
        let resp = http
            .put(format!("http://127.0.0.1:{port}/v1/{INSTANCE}/objects/o{i:02}"))
            .bearer_auth(owner_token(dir))
            .header("content-type", "application/octet-stream")
            .body(vec![i as u8; OBJECT_BYTES])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

/// Polls operation `name` until `until` holds of it.
async fn poll(dir: &Path, port: u16, name: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let op = ok(dir, port, Method::GET, name, None).await;
        if until(&op) {
            return op;
        }
        assert!(Instant::now() < deadline, "{name}: {op}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes two finished operations' ends back in the database, as if their node had died
/// before recording them (run on a stopped server's file).
fn take_back_ends(db: &rusqlite::Connection, names: [&String; 2]) {
    let undone = db
        .execute(
            "UPDATE store_operations SET done = 0, result = '', end_nanos = 0, node = 'gone' WHERE name IN (?1, ?2)",
            names,
        )
        .unwrap();
    assert_eq!(undone, 2);
}

fn objects_done(op: &Value) -> u64 {
    op["metadata"]["progress"]["objectsDone"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_backup_killed_half_way_is_finished_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--store-copy-bytes-per-second", RATE];
    let p = spawn(dir.path(), 0, &flags);
    let port = p.port;
    wait_ready(&p).await;
    instance_with_objects(dir.path(), port).await;

    let op = ok(dir.path(), port, Method::POST, &format!("{INSTANCE}/backups?backupId=b1"), Some(json!({}))).await;
    let name = op["name"].as_str().unwrap().to_string();
    assert!(name.starts_with(&format!("{LOC}/operations/")), "{op}");
    assert_eq!(op["done"], false, "{op}");
    assert_eq!(op["metadata"]["@type"], "type.googleapis.com/keyhold.store.v1.OperationMetadata");
    assert_eq!(op["metadata"]["method"], "CreateBackup");
    assert_eq!(op["metadata"]["target"], format!("{INSTANCE}/backups/b1"));
    // Half-way: some objects copied, not all; the backup is CREATING meanwhile.
    let running = poll(dir.path(), port, &name, |op| objects_done(op) >= 5).await;
    assert_eq!(running["done"], false, "{running}");
    assert_eq!(running["metadata"]["progress"]["objectsTotal"], OBJECTS.to_string(), "{running}");
    let percent = running["metadata"]["progress"]["progressPercent"].as_u64().unwrap();
    assert!((1..100).contains(&percent), "{running}");
    let backup = ok(dir.path(), port, Method::GET, &format!("{INSTANCE}/backups/b1"), None).await;
    assert_eq!(backup["state"], "CREATING", "{backup}");

    // SIGKILL: no shutdown at all.
    drop(p);
    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let done = poll(dir.path(), port, &name, |op| op["done"] == true).await;
    assert!(done.get("error").is_none(), "{done}");
    let response = &done["response"];
    assert_eq!(response["@type"], "type.googleapis.com/keyhold.store.v1.Backup", "{done}");
    assert_eq!(response["name"], format!("{INSTANCE}/backups/b1"));
    assert_eq!(response["state"], "READY");
    assert_eq!(response["objectCount"], OBJECTS.to_string());
    assert_eq!(response["sizeBytes"], (OBJECTS * OBJECT_BYTES).to_string());
    assert_eq!(done["metadata"]["progress"]["objectsDone"], OBJECTS.to_string(), "{done}");
    assert_eq!(done["metadata"]["progress"]["progressPercent"], 100, "{done}");
    assert!(done["metadata"]["progress"]["endTime"].is_string(), "{done}");
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("resuming an operation a crash interrupted"), "{log}");

    // The backup restores whole.
    let restore = json!({"instanceId": "restored", "backup": format!("{INSTANCE}/backups/b1")});
    let op = ok(dir.path(), port, Method::POST, &format!("{LOC}/instances:restore"), Some(restore)).await;
    let done = poll(dir.path(), port, op["name"].as_str().unwrap(), |op| op["done"] == true).await;
    assert_eq!(done["response"]["name"], format!("{LOC}/instances/restored"), "{done}");
    let listed =
        ok(dir.path(), port, Method::GET, &format!("{LOC}/instances/restored/objects?pageSize=1000"), None).await;
    assert_eq!(listed["objects"].as_array().unwrap().len(), OBJECTS, "{listed}");

    // The audit log has the backup's first entry (when it was answered) and its last (when it
    // ended, on the second process), under the operation.
    let (_, entries) = request(
        dir.path(),
        port,
        Method::GET,
        "projects/my-project/auditLogs?methodName=CreateBackup&logName=activity&pageSize=100",
        None,
    )
    .await;
    let ops: Vec<&Value> = entries["entries"].as_array().unwrap().iter().map(|e| &e["operation"]).collect();
    assert!(ops.iter().any(|o| o["id"] == name.as_str() && o["first"] == true), "{entries}");
    assert!(ops.iter().any(|o| o["id"] == name.as_str() && o["last"] == true), "{entries}");

    // A crash after a copy committed but before its operation's end was recorded: the next
    // process finds the copy made (not ALREADY_EXISTS in its own way) and ends the operation
    // with it. Emulated by taking the two operations' ends back in the database.
    let restore_op = op["name"].as_str().unwrap().to_string();
    common::terminate(p);
    let db = rusqlite::Connection::open(dir.path().join("data/keyhold.db")).unwrap();
    take_back_ends(&db, [&name, &restore_op]);
    drop(db);
    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let backup_op = poll(dir.path(), port, &name, |op| op["done"] == true).await;
    assert_eq!(backup_op["response"]["name"], format!("{INSTANCE}/backups/b1"), "{backup_op}");
    assert_eq!(backup_op["response"]["objectCount"], OBJECTS.to_string(), "{backup_op}");
    let restored = poll(dir.path(), port, &restore_op, |op| op["done"] == true).await;
    assert_eq!(restored["response"]["name"], format!("{LOC}/instances/restored"), "{restored}");
}

#[tokio::test]
async fn a_clone_is_cancelled_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), 0, &["--store-copy-bytes-per-second", RATE]);
    let port = p.port;
    wait_ready(&p).await;
    instance_with_objects(dir.path(), port).await;

    let body = json!({"destinationInstanceId": "copy"});
    let op = ok(dir.path(), port, Method::POST, &format!("{INSTANCE}:clone"), Some(body)).await;
    let name = op["name"].as_str().unwrap().to_string();
    poll(dir.path(), port, &name, |op| objects_done(op) >= 2).await;
    assert_eq!(ok(dir.path(), port, Method::POST, &format!("{name}:cancel"), Some(json!({}))).await, json!({}));
    let done = poll(dir.path(), port, &name, |op| op["done"] == true).await;
    assert_eq!(done["error"]["code"], 1, "CANCELLED: {done}");
    assert!(done.get("response").is_none(), "{done}");
    assert_eq!(done["metadata"]["cancelRequested"], true);
    assert!(objects_done(&done) < OBJECTS as u64, "{done}");
    // What the clone built is gone, and its name is free again.
    let (status, _) = request(dir.path(), port, Method::GET, &format!("{LOC}/instances/copy"), None).await;
    assert_eq!(status, 404);
    // A finished operation cannot be cancelled; an unknown one is not found.
    let (status, v) = request(dir.path(), port, Method::POST, &format!("{name}:cancel"), Some(json!({}))).await;
    assert_eq!((status, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
    let (status, _) = request(dir.path(), port, Method::GET, &format!("{LOC}/operations/op-0-0"), None).await;
    assert_eq!(status, 404);
    let (status, _) = request(dir.path(), port, Method::GET, &format!("{LOC}/operations/a%2Fb"), None).await;
    assert_eq!(status, 400);

    // The listing pages through the location's operations, oldest first.
    let again = ok(dir.path(), port, Method::POST, &format!("{INSTANCE}/backups?backupId=b"), Some(json!({}))).await;
    let first = ok(dir.path(), port, Method::GET, &format!("{LOC}/operations?pageSize=1"), None).await;
    assert_eq!(first["operations"][0]["name"], name.as_str(), "{first}");
    let token = first["nextPageToken"].as_str().unwrap();
    let second =
        ok(dir.path(), port, Method::GET, &format!("{LOC}/operations?pageSize=1&pageToken={token}"), None).await;
    assert_eq!(second["operations"][0]["name"], again["name"], "{second}");
    assert!(second.get("nextPageToken").is_none(), "{second}");
}

#[tokio::test]
async fn the_cli_waits_for_an_operation_or_returns_at_once_with_async() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), 0, &["--store-copy-bytes-per-second", RATE]);
    let port = p.port;
    wait_ready(&p).await;
    instance_with_objects(dir.path(), port).await;

    // --async: the operation, at once.
    let started = Instant::now();
    let (okay, out, err) = cli(
        dir.path(),
        port,
        &[
            "store",
            "backups",
            "create",
            "b1",
            "--instance",
            "db",
            "--location",
            "global",
            "--async",
            "--format",
            "json",
        ],
    );
    assert!(okay, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "--async waited {:?}", started.elapsed());
    let op: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(op["done"], false, "{op}");
    assert!(err.contains("Started operation ["), "{err}");
    let id = op["name"].as_str().unwrap().rsplit('/').next().unwrap().to_string();

    // `operations wait` shows what it made; `describe` the operation.
    let (okay, out, err) =
        cli(dir.path(), port, &["store", "operations", "wait", &id, "--location", "global", "--format", "json"]);
    assert!(okay, "{err}");
    let backup: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!((backup["state"].as_str(), backup["objectCount"].as_str()), (Some("READY"), Some("40")), "{backup}");
    let (okay, out, _) =
        cli(dir.path(), port, &["store", "operations", "describe", &id, "--location", "global", "--format", "json"]);
    assert!(okay);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["done"], true, "{out}");
    let (okay, out, _) = cli(dir.path(), port, &["store", "operations", "list", "--location", "global"]);
    assert!(okay && out.contains(&id) && out.contains("CreateBackup"), "{out}");

    // Without --async the command waits, and shows the restored instance.
    let started = Instant::now();
    let (okay, out, err) = cli(
        dir.path(),
        port,
        &[
            "store",
            "instances",
            "restore",
            "r",
            "--location",
            "global",
            "--backup",
            "b1",
            "--backup-instance",
            "db",
            "--format",
            "json",
        ],
    );
    assert!(okay, "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the restore did not wait: {:?}", started.elapsed());
    assert!(err.contains("Waiting for operation ["), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], format!("{LOC}/instances/r"), "{out}");

    // An operation's error is the command's: the backup's name is taken (refused before it
    // starts), and a cancelled operation fails `wait`.
    let (okay, _, err) =
        cli(dir.path(), port, &["store", "backups", "create", "b1", "--instance", "db", "--location", "global"]);
    assert!(!okay && err.contains("ALREADY_EXISTS"), "{err}");
    let (okay, out, _) = cli(
        dir.path(),
        port,
        &["store", "instances", "reencrypt", "db", "--location", "global", "--async", "--format", "json"],
    );
    assert!(okay);
    let op: Value = serde_json::from_str(&out).unwrap();
    let name = op["name"].as_str().unwrap();
    let (okay, _, err) = cli(dir.path(), port, &["store", "operations", "cancel", name]);
    assert!(okay, "{err}");
    let (okay, _, err) = cli(dir.path(), port, &["store", "operations", "wait", name]);
    assert!(!okay && err.contains("CANCELLED"), "{err}");
    // A plaintext export started with --async still says it is not encrypted.
    let (okay, out, err) = cli(
        dir.path(),
        port,
        &[
            "store",
            "instances",
            "export",
            "db",
            "--location",
            "global",
            "--destination",
            "p.archive",
            "--allow-plaintext",
            "--async",
            "--format",
            "json",
        ],
    );
    assert!(okay, "{err}");
    assert!(err.contains("WARNING: The archive is not encrypted"), "{err}");
    let op: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(op["metadata"]["method"], "ExportInstance", "{op}");
    let (okay, out, err) =
        cli(dir.path(), port, &["store", "operations", "wait", op["name"].as_str().unwrap(), "--format", "json"]);
    assert!(okay, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["encryptionInfo"]["encryptionType"],
        "NO_ENCRYPTION",
        "{out}"
    );
    // Re-encryption stopped half-way leaves every object readable.
    let obj = common::http_client()
        .get(format!("http://127.0.0.1:{port}/v1/{INSTANCE}/objects/o39?alt=media"))
        .bearer_auth(owner_token(dir.path()))
        .send()
        .await
        .unwrap();
    assert_eq!(obj.bytes().await.unwrap().to_vec(), vec![39u8; OBJECT_BYTES]);
}

/// A crash after an export's archive was linked at its destination but before the export was
/// registered (emulated: a finished export's registration and end taken back in the database).
/// Run again, the export used to fail with ALREADY_EXISTS in its own way; now the unregistered
/// archive of this operation is written again and the operation ends with its export. A file
/// at the destination that is not such an archive is left alone.
#[tokio::test]
async fn an_export_linked_but_not_registered_before_a_crash_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), 0, &[]);
    let port = p.port;
    wait_ready(&p).await;
    instance_with_objects(dir.path(), port).await;
    let body = json!({"destination": "linked.archive", "allowPlaintext": true});
    let op = ok(dir.path(), port, Method::POST, &format!("{INSTANCE}:export"), Some(body)).await;
    let name = op["name"].as_str().unwrap().to_string();
    let done = poll(dir.path(), port, &name, |op| op["done"] == true).await;
    assert!(done.get("error").is_none(), "{done}");
    let destination = done["response"]["destination"].as_str().unwrap().to_string();
    let first = std::fs::metadata(&destination).unwrap().modified().unwrap();

    // A second export to another file, whose destination then holds something else: not an
    // archive of this instance, so it is never removed (the run again fails as before).
    let body = json!({"destination": "other.archive", "allowPlaintext": true});
    let other = ok(dir.path(), port, Method::POST, &format!("{INSTANCE}:export"), Some(body)).await;
    let other_name = other["name"].as_str().unwrap().to_string();
    let other_done = poll(dir.path(), port, &other_name, |op| op["done"] == true).await;
    let other_destination = other_done["response"]["destination"].as_str().unwrap().to_string();

    common::terminate(p);
    let db = rusqlite::Connection::open(dir.path().join("data/keyhold.db")).unwrap();
    let unregistered = db
        .execute("DELETE FROM store_exports WHERE destination IN (?1, ?2)", [&destination, &other_destination])
        .unwrap();
    assert_eq!(unregistered, 2);
    take_back_ends(&db, [&name, &other_name]);
    drop(db);
    std::fs::write(&other_destination, b"not an archive").unwrap();

    let p = spawn(dir.path(), port, &[]);
    wait_ready(&p).await;
    let again = poll(dir.path(), port, &name, |op| op["done"] == true).await;
    assert!(again.get("error").is_none(), "{again}");
    assert_eq!(again["response"]["destination"], destination.as_str(), "{again}");
    assert_eq!(again["response"]["objectCount"], OBJECTS.to_string(), "{again}");
    assert!(std::fs::metadata(&destination).unwrap().modified().unwrap() >= first);
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("had written its archive but not registered it"), "{log}");
    // The stranger at the other destination is untouched; that run fails as it did.
    let other_again = poll(dir.path(), port, &other_name, |op| op["done"] == true).await;
    assert_eq!(other_again["error"]["code"], 6, "{other_again}");
    assert_eq!(std::fs::read(&other_destination).unwrap(), b"not an archive");
}
