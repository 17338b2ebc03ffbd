//! The store's REST surface (`/v1/projects/P/locations/L/instances/...`) and the Org Policy
//! API v2 (`/v2/projects/P/policies/...`). Object contents stream in both directions.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keyhold_api::orgpolicy::{ListOrgPoliciesResponse, OrgPolicy};
use keyhold_kms::Caller;
use keyhold_store::model::{
    CloneInstanceRequest, CreateBackupRequest, CreateInstanceRequest, EncryptionConfig, ExportInstanceRequest,
    ImportInstanceRequest, RestoreInstanceRequest,
};
use keyhold_store::{ListRequest, OperationRequest, Store, StoreError};

use keyhold_proto::google::cloud::kms::inventory::v1 as inv;

use crate::AppState;
use crate::error::ApiError;

type QueryResult = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// The status and log cause are the store's to decide ([`StoreError::to_status`],
/// [`StoreError::log_cause`]); the store audits every outcome.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_status(e.to_status(), e.log_cause(), true)
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], body).into_response()
}

/// The caller, or the 401 answer (audited) if it has no valid credential.
async fn authenticated(state: &AppState, headers: &HeaderMap, path: &str) -> Result<Caller, Response> {
    crate::front::authenticate(state, headers, path).await.map_err(IntoResponse::into_response)
}

/// Answers an error raised before any method ran, with its audit entry.
async fn refuse(state: &AppState, caller: &Caller, path: &str, e: ApiError) -> Response {
    crate::front::refused(state, caller, path, e).await.into_response()
}

/// Authenticates the caller of `path` (a 401 is answered and audited here), runs `f` for it,
/// and answers with its response or its error (audited if the store did not audit it).
async fn with_caller<F, Fut>(state: &AppState, headers: &HeaderMap, path: &str, f: F) -> Response
where
    F: FnOnce(Caller) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let caller = match authenticated(state, headers, path).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = f(caller.clone()).await;
    answer(state, &caller, path, r).await
}

/// The response, or the error's (with its audit entry if the store did not write one).
async fn answer(state: &AppState, caller: &Caller, path: &str, r: Result<Response, ApiError>) -> Response {
    match r {
        Ok(resp) => resp,
        Err(e) => refuse(state, caller, path, e).await,
    }
}

fn store(state: &AppState) -> Result<&std::sync::Arc<Store>, ApiError> {
    state.store()
}

fn list_request(q: &HashMap<String, String>) -> Result<ListRequest, ApiError> {
    let page_size = match q.get("pageSize").or_else(|| q.get("page_size")) {
        None => None,
        Some(s) => {
            Some(s.parse::<i64>().map_err(|_| ApiError::invalid(format!("pageSize \"{s}\" is not an integer.")))?)
        }
    };
    Ok(ListRequest {
        page_size,
        page_token: q.get("pageToken").or_else(|| q.get("page_token")).cloned().unwrap_or_default(),
        prefix: q.get("prefix").cloned().unwrap_or_default(),
    })
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))
}

/// The body of a call that takes no parameters (`:rewrap`, `:reencrypt`,
/// `exports:reconcile`): empty, or `{}`; anything else is refused, as the docs say of unknown
/// fields (hardening review).
fn empty_body(bytes: &Bytes) -> Result<(), ApiError> {
    let fields: serde_json::Map<String, serde_json::Value> = parse_body(bytes)?;
    match fields.keys().next() {
        None => Ok(()),
        Some(field) => Err(ApiError::invalid(format!(
            "Invalid JSON payload received. Unknown name \"{}\": this call takes an empty body.",
            field.chars().take(80).collect::<String>()
        ))),
    }
}

fn query(q: QueryResult) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| ApiError::invalid(format!("Malformed query string: {e}")))
}

/// `/v1/projects/{project}/locations/{location}/instances`: list, create.
pub(crate) async fn instances(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location)): Path<(String, String)>,
    q: QueryResult,
    bytes: Bytes,
) -> Response {
    let parent = format!("projects/{project}/locations/{location}");
    let path = format!("{parent}/instances");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        let q = query(q)?;
        match method {
            Method::GET => Ok(json(&store.list_instances(&caller, &parent, &list_request(&q)?).await?)),
            Method::POST => {
                let req: CreateInstanceRequest = parse_body(&bytes)?;
                let id = q.get("instanceId").or_else(|| q.get("instance_id")).cloned().unwrap_or_default();
                Ok(json(&store.create_instance(&caller, &parent, &id, req).await?))
            }
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v1/projects/{project}/locations/{location}/instances/{instance}[:verb]`.
pub(crate) async fn instance(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, instance)): Path<(String, String, String)>,
    q: QueryResult,
    bytes: Bytes,
) -> Response {
    let (id, verb) = match instance.split_once(':') {
        Some((i, v)) => (i.to_string(), Some(v.to_string())),
        None => (instance.clone(), None),
    };
    let name = format!("projects/{project}/locations/{location}/instances/{id}");
    let (name, state, headers) = (&name, &state, &headers);
    with_caller(state, headers, name, |caller| async move {
        let store = store(state)?;
        query(q)?;
        match (verb.as_deref(), method) {
            (None, Method::GET) => Ok(json(&store.get_instance(&caller, name).await?)),
            (None, Method::DELETE) => {
                store.delete_instance(&caller, name).await?;
                Ok(json(&serde_json::json!({})))
            }
            (Some("rewrap"), Method::POST) => {
                empty_body(&bytes)?;
                Ok(json(&store.rewrap(&caller, name).await?))
            }
            (Some("reencrypt"), Method::POST) => {
                empty_body(&bytes)?;
                let op = OperationRequest::ReencryptInstance { instance: name.clone() };
                Ok(json(&store.start_operation(&caller, op).await?))
            }
            (Some("clone"), Method::POST) => {
                let req: CloneInstanceRequest = parse_body(&bytes)?;
                let op = OperationRequest::CloneInstance { instance: name.clone(), request: req };
                Ok(json(&store.start_operation(&caller, op).await?))
            }
            (Some("export"), Method::POST) => {
                let req: ExportInstanceRequest = parse_body(&bytes)?;
                let op = OperationRequest::ExportInstance { instance: name.clone(), request: req };
                Ok(json(&store.start_operation(&caller, op).await?))
            }
            (v, m) => Err(not_a_method(&m, &format!("{name}{}", v.map(|v| format!(":{v}")).unwrap_or_default()))),
        }
    })
    .await
}

/// `/v1/projects/{project}/locations/{location}/instances/{instance}/objects`: list.
pub(crate) async fn objects(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, instance)): Path<(String, String, String)>,
    q: QueryResult,
) -> Response {
    let name = format!("projects/{project}/locations/{location}/instances/{instance}");
    let path = format!("{name}/objects");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        let q = query(q)?;
        match method {
            Method::GET => Ok(json(&store.list_objects(&caller, &name, &list_request(&q)?).await?)),
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v1/projects/{project}/locations/{location}/instances/{instance}/objects/{*object}`:
/// `PUT` (upload, streamed), `GET` (metadata, or contents with `?alt=media`, streamed),
/// `DELETE`.
pub(crate) async fn object(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, instance, object)): Path<(String, String, String, String)>,
    q: QueryResult,
    body: Body,
) -> Response {
    let name = format!("projects/{project}/locations/{location}/instances/{instance}");
    let path = format!("{name}/objects/{object}");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        let q = query(q)?;
        match method {
            Method::PUT | Method::POST => {
                let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let stream = body.into_data_stream().map(|r| r.map(|b| b.to_vec()));
                Ok(json(&store.put_object(&caller, &name, &object, content_type, Box::pin(stream)).await?))
            }
            Method::GET if q.get("alt").map(String::as_str) == Some("media") => {
                let (meta, contents) = store.read_object(&caller, &name, &object).await?;
                let stream = contents.map(|r| {
                    r.map(Bytes::from).map_err(|e| {
                        // Overwritten under the reader: expected, the client reads again;
                        // not data loss.
                        if matches!(e, StoreError::Aborted(_)) {
                            tracing::warn!(error = %e, "object download cut: the object was overwritten");
                        } else {
                            tracing::error!(error = %e, "object download stopped");
                        }
                        std::io::Error::other(e.to_string())
                    })
                });
                let mut resp = Response::new(Body::from_stream(stream));
                *resp.status_mut() = StatusCode::OK;
                let h = resp.headers_mut();
                if let Ok(v) = meta.content_type.parse() {
                    h.insert(header::CONTENT_TYPE, v);
                }
                if let Ok(v) = meta.size.parse() {
                    h.insert(header::CONTENT_LENGTH, v);
                }
                Ok(resp)
            }
            Method::GET => Ok(json(&store.get_object(&caller, &name, &object).await?)),
            Method::DELETE => {
                store.delete_object(&caller, &name, &object).await?;
                Ok(json(&serde_json::json!({})))
            }
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v2/projects/{project}/policies`: list, create.
pub(crate) async fn org_policies(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(project): Path<String>,
    bytes: Bytes,
) -> Response {
    let path = format!("projects/{project}/policies");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        match method {
            Method::GET => Ok(json(&ListOrgPoliciesResponse {
                policies: state.kms.list_org_policies(&caller, &project).await?,
                next_page_token: String::new(),
            })),
            Method::POST => {
                let policy: OrgPolicy = parse_body(&bytes)?;
                Ok(json(&state.kms.set_org_policy(&caller, &policy).await?))
            }
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v2/projects/{project}/policies/{constraint}`: get, set (PUT or PATCH), delete.
pub(crate) async fn org_policy(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, constraint)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let name = format!("projects/{project}/policies/{constraint}");
    let (name, state, headers) = (&name, &state, &headers);
    with_caller(state, headers, name, |caller| async move {
        match method {
            Method::GET => Ok(json(&state.kms.get_org_policy(&caller, name).await?)),
            Method::PUT | Method::PATCH => {
                let mut policy: OrgPolicy = parse_body(&bytes)?;
                if policy.name.is_empty() {
                    policy.name = name.clone();
                } else if policy.name != *name {
                    return Err(ApiError::invalid(format!(
                        "The policy's name {} differs from the URL's {name}.",
                        policy.name
                    )));
                }
                Ok(json(&state.kms.set_org_policy(&caller, &policy).await?))
            }
            Method::DELETE => {
                state.kms.delete_org_policy(&caller, name).await?;
                Ok(json(&serde_json::json!({})))
            }
            _ => Err(not_a_method(&method, name)),
        }
    })
    .await
}

/// `GET /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K/protectedResourcesSummary` ([K12],
/// the Cloud KMS Inventory API's shape).
pub(crate) async fn protected_resources_summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, location, ring, key)): Path<(String, String, String, String)>,
) -> Response {
    let key = format!("projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}");
    let (key, state, headers) = (&key, &state, &headers);
    with_caller(state, headers, key, |caller| async move {
        let r = inv::GetProtectedResourcesSummaryRequest { name: format!("{key}/protectedResourcesSummary") };
        Ok(json(&crate::methods::get_protected_resources_summary(state, &caller, r).await?))
    })
    .await
}

/// `GET /v1/projects/P/protectedResources:search?cryptoKey=KEY` ([K12]): the resources of
/// project P protected by KEY (`pageSize`, `pageToken`).
pub(crate) async fn search_protected_resources(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    q: QueryResult,
) -> Response {
    let scope = format!("projects/{project}");
    let (scope, state, headers) = (&scope, &state, &headers);
    with_caller(state, headers, scope, |caller| async move {
        let q = query(q)?;
        let key = q.get("cryptoKey").or_else(|| q.get("crypto_key")).ok_or_else(|| {
            ApiError::new(keyhold_api::Code::InvalidArgument, "The cryptoKey query parameter is required.")
        })?;
        let page = list_request(&q)?;
        let page_size = match page.page_size.map(i32::try_from) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(ApiError::invalid("pageSize is out of range.")),
        };
        let r = inv::SearchProtectedResourcesRequest {
            scope: scope.clone(),
            crypto_key: key.clone(),
            page_size,
            page_token: page.page_token,
            resource_types: Vec::new(),
        };
        Ok(json(&crate::methods::search_protected_resources(state, &caller, r).await?))
    })
    .await
}

/// `POST /v1/projects/P/exports:reconcile` (finding 10): the project's export registry
/// against the files in its export directory.
pub(crate) async fn reconcile_exports(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(project): Path<String>,
    bytes: Bytes,
) -> Response {
    let path = format!("projects/{project}/exports:reconcile");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        if method != Method::POST {
            return Err(not_a_method(&method, path));
        }
        empty_body(&bytes)?;
        Ok(json(&store.reconcile_exports(&caller, &project).await?))
    })
    .await
}

/// `POST /v1/projects/P/locations/L/instances:restore` ([C8]).
pub(crate) async fn restore(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let parent = format!("projects/{project}/locations/{location}");
    collection_verb(&state, &method, &headers, &parent, "restore", |store, caller, parent| async move {
        let req: RestoreInstanceRequest = parse_body(&bytes)?;
        let op = OperationRequest::RestoreInstance { parent, request: req };
        Ok(json(&store.start_operation(&caller, op).await?))
    })
    .await
}

/// `POST /v1/projects/P/locations/L/instances:import` ([C9]).
pub(crate) async fn import(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let parent = format!("projects/{project}/locations/{location}");
    collection_verb(&state, &method, &headers, &parent, "import", |store, caller, parent| async move {
        let req: ImportInstanceRequest = parse_body(&bytes)?;
        let op = OperationRequest::ImportInstance { parent, request: req };
        Ok(json(&store.start_operation(&caller, op).await?))
    })
    .await
}

/// `POST PARENT/instances:VERB`: authenticated, run by `f(store, caller, parent)`, answered
/// (and audited if refused).
async fn collection_verb<F, Fut>(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    parent: &str,
    verb: &str,
    f: F,
) -> Response
where
    F: FnOnce(std::sync::Arc<Store>, Caller, String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let path = &format!("{parent}/instances:{verb}");
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?.clone();
        if *method != Method::POST {
            return Err(not_a_method(method, path));
        }
        f(store, caller, parent.to_string()).await
    })
    .await
}

/// A known path with a method it does not have: `404 NOT_FOUND`, as the KMS paths answer
/// (finding 6; Google's front end answers an unknown method on a known path the same way),
/// so that a client sees one behaviour whichever API it calls.
fn not_a_method(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        keyhold_api::Code::NotFound,
        format!("No method {method} {path}; see docs/api.md for the methods Keyhold serves."),
    )
}

/// `/v1/projects/P/locations/L/instances/I/backups`: list, create ([C8]). The encryption
/// config is the body's `encryptionConfig`, or Spanner's query parameters
/// `encryptionConfig.encryptionType` and `encryptionConfig.kmsKeyName`.
pub(crate) async fn backups(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, instance)): Path<(String, String, String)>,
    q: QueryResult,
    bytes: Bytes,
) -> Response {
    let name = format!("projects/{project}/locations/{location}/instances/{instance}");
    let path = format!("{name}/backups");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        let q = query(q)?;
        match method {
            Method::GET => Ok(json(&store.list_backups(&caller, &name, &list_request(&q)?).await?)),
            Method::POST => {
                let mut req: CreateBackupRequest = parse_body(&bytes)?;
                let t = q.get("encryptionConfig.encryptionType");
                let k = q.get("encryptionConfig.kmsKeyName");
                if t.is_some() || k.is_some() {
                    if req.encryption_config.is_some() {
                        return Err(ApiError::invalid(
                            "Give encryptionConfig in the body or in the query string, not both.",
                        ));
                    }
                    req.encryption_config = Some(EncryptionConfig {
                        encryption_type: t.cloned().unwrap_or_default(),
                        kms_key_name: k.cloned().unwrap_or_default(),
                    });
                }
                let id = q.get("backupId").or_else(|| q.get("backup_id")).cloned().unwrap_or_default();
                let op = OperationRequest::CreateBackup { instance: name.clone(), backup_id: id, request: req };
                Ok(json(&store.start_operation(&caller, op).await?))
            }
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v1/projects/P/locations/L/instances/I/backups/B`: get, delete.
pub(crate) async fn backup(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, instance, backup)): Path<(String, String, String, String)>,
) -> Response {
    let name = format!("projects/{project}/locations/{location}/instances/{instance}/backups/{backup}");
    let (name, state, headers) = (&name, &state, &headers);
    with_caller(state, headers, name, |caller| async move {
        let store = store(state)?;
        match method {
            Method::GET => Ok(json(&store.get_backup(&caller, name).await?)),
            Method::DELETE => {
                store.delete_backup(&caller, name).await?;
                Ok(json(&serde_json::json!({})))
            }
            _ => Err(not_a_method(&method, name)),
        }
    })
    .await
}

/// `/v1/projects/P/locations/L/operations`: list (issue 18, finding 7).
pub(crate) async fn operations(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location)): Path<(String, String)>,
    q: QueryResult,
) -> Response {
    let parent = format!("projects/{project}/locations/{location}");
    let path = format!("{parent}/operations");
    let (path, state, headers) = (&path, &state, &headers);
    with_caller(state, headers, path, |caller| async move {
        let store = store(state)?;
        let q = query(q)?;
        match method {
            Method::GET => Ok(json(&store.list_operations(&caller, &parent, &list_request(&q)?).await?)),
            _ => Err(not_a_method(&method, path)),
        }
    })
    .await
}

/// `/v1/projects/P/locations/L/operations/ID[:cancel]`: get, cancel.
pub(crate) async fn operation(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((project, location, operation)): Path<(String, String, String)>,
    q: QueryResult,
    bytes: Bytes,
) -> Response {
    let (id, verb) = match operation.split_once(':') {
        Some((i, v)) => (i.to_string(), Some(v.to_string())),
        None => (operation.clone(), None),
    };
    let name = format!("projects/{project}/locations/{location}/operations/{id}");
    let (name, state, headers) = (&name, &state, &headers);
    let kms_operation = id.starts_with(keyhold_kms::KMS_OPERATION_PREFIX);
    with_caller(state, headers, name, |caller| async move {
        query(q)?;
        if kms_operation {
            // The KMS's own operations (its deletions), whether or not the store runs.
            return match (verb.as_deref(), method) {
                (None, Method::GET) => Ok(json(&state.kms.operation(&caller, name).await?)),
                (v, m) => Err(not_a_method(&m, &format!("{name}{}", v.map(|v| format!(":{v}")).unwrap_or_default()))),
            };
        }
        let store = store(state)?;
        match (verb.as_deref(), method) {
            (None, Method::GET) => Ok(json(&store.get_operation(&caller, name).await?)),
            (Some("cancel"), Method::POST) => {
                empty_body(&bytes)?;
                store.cancel_operation(&caller, name).await?;
                Ok(json(&serde_json::json!({})))
            }
            (v, m) => Err(not_a_method(&m, &format!("{name}{}", v.map(|v| format!(":{v}")).unwrap_or_default()))),
        }
    })
    .await
}
