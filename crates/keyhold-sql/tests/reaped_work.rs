//! Work another node took for orphaned cannot be committed afterwards (review of the
//! hardening work). On PostgreSQL a node whose heartbeat looks stale to another (a slow
//! connection pool, a clock behind) has its upload or backup cleaned up while it still runs;
//! when it then commits, the upload's earlier chunks or the backup's rows are gone. The commit
//! must be refused (`Conflict`), never acknowledged as a torn object or a READY backup that does
//! not exist. Run on a SQLite file here, and on PostgreSQL when KEYHOLD_TEST_POSTGRES_URL is set
//! (`scripts/test.sh` always sets it).

use keyhold_api::wire::Timestamp;
use keyhold_cmek::envelope::{SealedChunk, WrappedKek};
use keyhold_sql::Database;
use keyhold_store::StoreRepository;
use keyhold_store::model::{BackupRecord, InstanceRecord, KekRecord, ObjectRecord};
use keyhold_store::repo::RepoError;

const INSTANCE: &str = "projects/p/locations/global/instances/i";

fn chunk(i: u8) -> SealedChunk {
    SealedChunk { wrapped_dek: vec![i; 40], ciphertext: vec![i; 64] }
}

fn kek() -> KekRecord {
    KekRecord {
        id: 1,
        wrapped: WrappedKek { ciphertext: vec![7; 60], key_version: None },
        create_time: Timestamp::now(),
    }
}

fn object(generation: u64, chunk_count: u64) -> ObjectRecord {
    ObjectRecord {
        name: "o".into(),
        generation,
        size: 64 * chunk_count,
        chunk_count,
        kek_id: 1,
        content_type: "application/octet-stream".into(),
        create_time: Timestamp::now(),
        update_time: Timestamp::now(),
    }
}

async fn repo_with_instance(db: &Database) -> std::sync::Arc<dyn StoreRepository> {
    let repo = keyhold_sql::open_all(db).await.unwrap().objects;
    let instance = InstanceRecord {
        name: INSTANCE.parse().unwrap(),
        kms_key: None,
        labels: Default::default(),
        create_time: Timestamp::now(),
        replica_of: None,
    };
    repo.insert_instance(&instance, &kek(), &[]).await.unwrap();
    repo
}

async fn reaped_work_cannot_be_committed(db: Database) {
    let repo = repo_with_instance(&db).await;

    // An upload of three chunks: the first two written under its upload record ...
    repo.begin_upload(INSTANCE, "o", 11, "node-a", Timestamp::now()).await.unwrap();
    repo.put_chunks(INSTANCE, "o", 11, 0, &[chunk(0), chunk(1)]).await.unwrap();
    // ... another node takes it for orphaned and cleans it up ...
    repo.abort_upload(INSTANCE, "o", 11).await.unwrap();
    // ... and its commit is refused: no object with chunks 0 and 1 missing.
    let refused = repo.commit_upload(INSTANCE, &object(11, 3), 2, &[chunk(2)], None, &[]).await;
    assert!(matches!(refused, Err(RepoError::Conflict)), "{refused:?}");
    assert_eq!(repo.object(INSTANCE, "o").await.unwrap(), None, "a torn object became visible");

    // An upload that fits in its commit has no record, and commits as before.
    repo.commit_upload(INSTANCE, &object(12, 1), 0, &[chunk(9)], None, &[]).await.unwrap();
    assert_eq!(repo.object(INSTANCE, "o").await.unwrap().map(|o| o.generation), Some(12));
    // And a recorded upload that was not cleaned up commits too.
    repo.begin_upload(INSTANCE, "o", 13, "node-a", Timestamp::now()).await.unwrap();
    repo.put_chunks(INSTANCE, "o", 13, 0, &[chunk(0)]).await.unwrap();
    repo.commit_upload(INSTANCE, &object(13, 2), 1, &[chunk(1)], None, &[]).await.unwrap();
    assert_eq!(repo.object(INSTANCE, "o").await.unwrap().map(|o| o.generation), Some(13));

    // A backup discarded as orphaned cannot be finished READY.
    let backup = BackupRecord {
        name: format!("{INSTANCE}/backups/b"),
        instance: INSTANCE.into(),
        kms_key: None,
        state: "CREATING".into(),
        size_bytes: 0,
        object_count: 0,
        version_time: Timestamp::now(),
        create_time: Timestamp::now(),
    };
    repo.insert_backup(&backup, &kek(), "node-a").await.unwrap();
    repo.discard(&backup.name, &[]).await.unwrap();
    let refused = repo.finish_backup(&backup.name, 64, 1, &[]).await;
    assert!(matches!(refused, Err(RepoError::Conflict)), "{refused:?}");
    assert_eq!(repo.backup(&backup.name).await.unwrap(), None);
    // One that was not discarded finishes.
    let kept = BackupRecord { name: format!("{INSTANCE}/backups/c"), ..backup };
    repo.insert_backup(&kept, &kek(), "node-a").await.unwrap();
    repo.finish_backup(&kept.name, 64, 1, &[]).await.unwrap();
    assert_eq!(repo.backup(&kept.name).await.unwrap().map(|b| b.state), Some("READY".to_string()));
}

#[tokio::test]
async fn reaped_work_cannot_be_committed_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    reaped_work_cannot_be_committed(Database::SqliteFile(dir.path().join("keyhold.db"))).await;
}

#[tokio::test]
async fn reaped_work_cannot_be_committed_postgres() {
    let Ok(base) = std::env::var("KEYHOLD_TEST_POSTGRES_URL") else {
        panic!("KEYHOLD_TEST_POSTGRES_URL is not set: run through scripts/test.sh, which starts PostgreSQL");
    };
    // A fresh database of our own on that server.
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let name = format!("keyhold_reaped_{}", std::process::id());
    admin.execute(&format!("DROP DATABASE IF EXISTS {name}"), &[]).await.unwrap();
    admin.execute(&format!("CREATE DATABASE {name}"), &[]).await.unwrap();
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => panic!("KEYHOLD_TEST_POSTGRES_URL has no database name: {base}"),
    };
    reaped_work_cannot_be_committed(Database::Postgres(url)).await;
}
