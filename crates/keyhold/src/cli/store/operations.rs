//! `keyhold store operations ...`, and the waiting every copy command does: backups, restores,
//! clones, exports, imports and re-encryptions answer with a long-running operation, which the
//! command follows until it is done, as gcloud does (`--async` returns at once).

use std::time::Duration;

use keyhold_api::Code;
use serde_json::Value;

use super::super::output::{Column, Kind, list_all, show_list, text_at};
use super::super::{CliError, Ctx, print_stderr};
use super::args::*;
use super::basename;
use super::names::operation_name;

pub(super) const OPERATION_COLUMNS: &[Column] = &[
    ("NAME", |v| basename(&text_at(v, "name")).to_string()),
    ("METHOD", |v| text_at(v, "metadata.method")),
    ("TARGET", |v| text_at(v, "metadata.target")),
    ("DONE", |v| text_at(v, "done")),
    ("PROGRESS", |v| match text_at(v, "metadata.progress.progressPercent").as_str() {
        "" => String::new(),
        p => format!("{p}%"),
    }),
    ("ERROR", |v| text_at(v, "error.message")),
];

/// Whether `answer` is a long-running operation (rather than the resource a server before
/// operations answered with).
fn is_operation(answer: &Value) -> bool {
    answer["name"].as_str().is_some_and(|n| n.contains("/operations/")) && answer.get("done").is_some()
}

/// What a copy command answered, followed to its end: the operation's response, or its error
/// as the command's; `None` with `--async`, after printing the operation.
pub(super) async fn complete(ctx: &Ctx, answer: Value, wait: &AsyncFlag) -> Result<Option<Value>, CliError> {
    if !is_operation(&answer) {
        return Ok(Some(answer));
    }
    let name = text_at(&answer, "name");
    if wait.run_async {
        print_stderr(&format!(
            "Started operation [{name}]. Follow it with `keyhold store operations describe {name}`."
        ));
        ctx.show(Kind::Other, &answer)?;
        return Ok(None);
    }
    print_stderr(&format!("Waiting for operation [{name}] to complete..."));
    let done = wait_for(ctx, answer).await?;
    result_of(done).map(Some)
}

/// Polls an operation until it is done (every 100 ms at first, then at most every 2 s).
async fn wait_for(ctx: &Ctx, mut op: Value) -> Result<Value, CliError> {
    let name = text_at(&op, "name");
    let mut pause = Duration::from_millis(100);
    while op["done"] != Value::Bool(true) {
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(2));
        op = ctx.client.get(&name).await?;
    }
    Ok(op)
}

/// The response of a finished operation, without its `@type`; its error as the command's.
fn result_of(op: Value) -> Result<Value, CliError> {
    if let Some(error) = op.get("error") {
        let code = error["code"].as_i64().and_then(|n| i32::try_from(n).ok()).and_then(Code::from_number);
        return Err(CliError::Api {
            code: code.unwrap_or(Code::Unknown),
            foreign_http_status: None,
            message: text_at(error, "message"),
        });
    }
    let mut response = op.get("response").cloned().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut response {
        m.remove("@type");
    }
    Ok(response)
}

pub(super) async fn operations_describe(ctx: &Ctx, c: &OperationTarget) -> Result<(), CliError> {
    let name = operation_name(ctx, c)?;
    let op = ctx.client.get(&name).await?;
    ctx.show(Kind::Other, &op)
}

pub(super) async fn operations_list(ctx: &Ctx, c: &OperationList) -> Result<(), CliError> {
    let parent = super::names::location_path(ctx, &c.location)?;
    let items = list_all(ctx, "v1", &format!("{parent}/operations"), "operations", &[], &c.paging).await?;
    show_list(ctx, &items, OPERATION_COLUMNS)
}

pub(super) async fn operations_cancel(ctx: &Ctx, c: &OperationTarget) -> Result<(), CliError> {
    let name = operation_name(ctx, c)?;
    ctx.client.post(&format!("{name}:cancel"), &[], &serde_json::json!({})).await?;
    print_stderr(&format!("Cancellation of operation [{name}] requested."));
    Ok(())
}

pub(super) async fn operations_wait(ctx: &Ctx, c: &OperationTarget) -> Result<(), CliError> {
    let name = operation_name(ctx, c)?;
    let op = ctx.client.get(&name).await?;
    print_stderr(&format!("Waiting for operation [{name}] to complete..."));
    let response = result_of(wait_for(ctx, op).await?)?;
    ctx.show(Kind::Other, &response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finished_operation_answers_its_response_or_its_error() {
        let done = json!({"name": "projects/p/locations/l/operations/op-1", "done": true,
            "response": {"@type": "type.googleapis.com/keyhold.store.v1.Backup", "name": "b"}});
        assert!(is_operation(&done));
        assert_eq!(result_of(done).unwrap(), json!({"name": "b"}));
        let failed = json!({"name": "projects/p/locations/l/operations/op-2", "done": true,
            "error": {"code": 1, "message": "The operation was cancelled."}});
        match result_of(failed) {
            Err(CliError::Api { code: Code::Cancelled, message, .. }) => {
                assert_eq!(message, "The operation was cancelled.")
            }
            other => panic!("{other:?}"),
        }
        // A server from before operations answered with the resource itself.
        assert!(!is_operation(&json!({"name": "projects/p/locations/l/instances/i"})));
    }
}
