//! The store's long-running operations (`store_operations`) over every SQL driver: the half of
//! [`keyhold_store::StoreRepository`] that records copies running in the background, kept
//! apart from the copies' own data in `store_repo.rs`.

use keyhold_api::wire::Timestamp;
use keyhold_store::model::OperationRecord;

use crate::schema::*;
use crate::sql::{Row, SqlBackend, SqlError, Value};

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn int(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn ts(nanos: i64) -> Result<Timestamp, SqlError> {
    Timestamp::from_unix_nanos(nanos.into()).ok_or_else(|| SqlError::Corrupt(format!("bad timestamp {nanos}")))
}

/// A row of `operation_columns!()`.
fn operation_record(row: &Row) -> Result<OperationRecord, SqlError> {
    let end = row[12].int()?;
    Ok(OperationRecord {
        name: row[0].text()?.to_string(),
        target: row[1].text()?.to_string(),
        request: row[2].text()?.to_string(),
        caller: row[3].text()?.to_string(),
        node: row[4].text()?.to_string(),
        done: row[5].int()? != 0,
        cancel_requested: row[6].int()? != 0,
        objects_done: row[7].int()?.max(0) as u64,
        objects_total: u64::try_from(row[8].int()?).ok(),
        bytes_done: row[9].int()?.max(0) as u64,
        result: row[10].text()?.to_string(),
        create_time: ts(row[11].int()?)?,
        end_time: if end == 0 { None } else { Some(ts(end)?) },
    })
}

/// `projects/P/locations/L` of an operation name.
fn parent(name: &str) -> Result<&str, SqlError> {
    name.rsplit_once("/operations/")
        .map(|(p, _)| p)
        .ok_or_else(|| SqlError::Corrupt(format!("\"{name}\" is not an operation name")))
}

pub(crate) async fn insert<B: SqlBackend>(db: &B, r: &OperationRecord) -> Result<(), SqlError> {
    let params = vec![
        text(&r.name),
        text(parent(&r.name)?),
        text(&r.target),
        text(&r.request),
        text(&r.caller),
        text(&r.node),
        Value::Int(i64::from(r.done)),
        Value::Int(i64::from(r.cancel_requested)),
        int(r.objects_done),
        r.objects_total.map_or(Value::Int(-1), int),
        int(r.bytes_done),
        text(&r.result),
        Value::Int(r.create_time.unix_nanos_i64()),
        Value::Int(r.end_time.map_or(0, Timestamp::unix_nanos_i64)),
    ];
    db.begin().await?.execute_many_and_commit(vec![(INSERT_OPERATION, params)]).await
}

pub(crate) async fn get<B: SqlBackend>(db: &B, name: &str) -> Result<Option<OperationRecord>, SqlError> {
    db.read().await?.query(GET_OPERATION, vec![text(name)]).await?.first().map(operation_record).transpose()
}

pub(crate) async fn list<B: SqlBackend>(
    db: &B,
    parent: &str,
    after: &str,
    limit: u64,
) -> Result<Vec<OperationRecord>, SqlError> {
    db.read()
        .await?
        .query(LIST_OPERATIONS, vec![text(parent), text(after), int(limit)])
        .await?
        .iter()
        .map(operation_record)
        .collect()
}

/// Saves progress; `Conflict` if the operation is finished or not `node`'s. Returns whether
/// it was cancelled.
pub(crate) async fn progress<B: SqlBackend>(
    db: &B,
    name: &str,
    node: &str,
    done: u64,
    total: Option<u64>,
    bytes: u64,
) -> Result<bool, SqlError> {
    let mut tx = db.begin().await?;
    let params = vec![text(name), text(node), int(done), total.map_or(Value::Int(-1), int), int(bytes)];
    if tx.execute(OPERATION_PROGRESS, params).await? == 0 {
        return Err(SqlError::Conflict);
    }
    let rows = tx.query(OPERATION_CANCEL_REQUESTED, vec![text(name)]).await?;
    tx.commit().await?;
    Ok(rows.first().map(|r| r[0].int()).transpose()?.unwrap_or(0) != 0)
}

pub(crate) async fn finish<B: SqlBackend>(
    db: &B,
    name: &str,
    node: &str,
    result: &str,
    end: Timestamp,
) -> Result<(), SqlError> {
    let mut tx = db.begin().await?;
    let changed = tx
        .execute(FINISH_OPERATION, vec![text(name), text(node), text(result), Value::Int(end.unix_nanos_i64())])
        .await?;
    tx.commit().await?;
    if changed == 0 { Err(SqlError::Conflict) } else { Ok(()) }
}

pub(crate) async fn claim<B: SqlBackend>(
    db: &B,
    node: &str,
    dead_before: Timestamp,
) -> Result<Vec<OperationRecord>, SqlError> {
    let mut tx = db.begin().await?;
    let rows = tx.query(CLAIM_OPERATIONS, vec![text(node), Value::Int(dead_before.unix_nanos_i64())]).await?;
    tx.commit().await?;
    rows.iter().map(operation_record).collect()
}

pub(crate) async fn prune<B: SqlBackend>(db: &B, before: Timestamp) -> Result<u64, SqlError> {
    let mut tx = db.begin().await?;
    let n = tx.execute(PRUNE_OPERATIONS, vec![Value::Int(before.unix_nanos_i64())]).await?;
    tx.commit().await?;
    Ok(n)
}
