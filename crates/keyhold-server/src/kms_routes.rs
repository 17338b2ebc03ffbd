//! Dispatch of Cloud KMS v1 REST calls to the KMS domain.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyhold_api::messages::{
    DecryptRequest, EncryptRequest, ListCryptoKeyVersionsResponse, ListCryptoKeysResponse, ListKeyRingsResponse,
    ListLocationsResponse, NameOnlyRequest, UpdatePrimaryVersionRequest,
};
use keyhold_api::page::PageRequest;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, KeyRing};
use keyhold_api::{Code, NameError};
use keyhold_kms::{EncryptTarget, ListQuery};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::route::{self, RouteError, Target};

/// Query parameters, looked up by either spelling (`keyRingId` or `key_ring_id`).
struct Query(HashMap<String, String>);

impl Query {
    fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }
    fn get(&self, camel: &str, snake: &str) -> Option<&str> {
        self.0.get(camel).or_else(|| self.0.get(snake)).map(String::as_str)
    }
    fn flag(&self, camel: &str, snake: &str) -> Result<bool, ApiError> {
        match self.get(camel, snake) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => {
                Err(ApiError::invalid(format!("Invalid value for {camel}: \"{other}\" (expected true or false).")))
            }
        }
    }
    fn list(&self) -> Result<ListQuery, ApiError> {
        let page_size = match self.get("pageSize", "page_size") {
            None | Some("") => 0,
            Some(s) => {
                s.parse::<i64>().map_err(|_| ApiError::invalid(format!("Invalid value for pageSize: \"{s}\".")))?
            }
        };
        Ok(ListQuery {
            page: PageRequest {
                page_size,
                page_token: self.get("pageToken", "page_token").unwrap_or_default().to_string(),
            },
            filter: self.get("filter", "filter").unwrap_or_default().to_string(),
            order_by: self.get("orderBy", "order_by").unwrap_or_default().to_string(),
        })
    }
    fn pretty(&self) -> bool {
        !matches!(self.get("prettyPrint", "pretty_print"), Some("false") | Some("0"))
    }
}

/// Parses a JSON body; an empty body is `{}` (curl's `-d ""`).
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))
}

fn json<T: Serialize>(value: &T, pretty: bool) -> Response {
    let body = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) };
    match body {
        Ok(b) => {
            let mut r = (StatusCode::OK, b).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
            r
        }
        Err(e) => ApiError::new(Code::Internal, format!("cannot encode response: {e}")).into_response(),
    }
}

fn no_method(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("No Cloud KMS v1 method matches {method} /v1/{path}; see docs/api.md for the methods Keyhold serves."),
    )
}

/// Everything under `/v1/`.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    Path(path): Path<String>,
    query: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    bytes: Bytes,
) -> Response {
    let q = match query {
        Ok(axum::extract::Query(pairs)) => Query::new(pairs),
        Err(e) => return ApiError::invalid(format!("Malformed query string: {e}")).into_response(),
    };
    match handle(&state, &method, &path, &q, &bytes).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, method: &Method, path: &str, q: &Query, bytes: &Bytes) -> Result<Response, ApiError> {
    let (target, verb) = match route::parse(path) {
        Ok(t) => t,
        Err(RouteError::Unknown) if is_unimplemented_cloud_kms_path(path) => return Err(unimplemented(path)),
        Err(RouteError::Unknown) => return Err(no_method(method, path)),
        Err(RouteError::BadName(e)) => return Err(name_error(e)),
    };
    let pretty = q.pretty();
    let kms = &state.kms;
    let m = method.clone();
    Ok(match (target, verb, m) {
        (Target::Locations(project), None, Method::GET) => {
            let page = kms.list_locations(&project, &q.list()?)?;
            json(&ListLocationsResponse { locations: page.items, next_page_token: page.next_page_token }, pretty)
        }
        (Target::Location(name), None, Method::GET) => json(&kms.location(&name)?, pretty),

        (Target::KeyRings(parent), None, Method::POST) => {
            let _: KeyRing = body(bytes)?;
            let id = required_id(q.get("keyRingId", "key_ring_id"), "keyRingId")?;
            json(&kms.create_key_ring(&parent, id).await?, pretty)
        }
        (Target::KeyRings(parent), None, Method::GET) => {
            let page = kms.list_key_rings(&parent, &q.list()?).await?;
            json(
                &ListKeyRingsResponse {
                    key_rings: page.items,
                    next_page_token: page.next_page_token,
                    total_size: page.total_size,
                },
                pretty,
            )
        }
        (Target::KeyRing(name), None, Method::GET) => json(&kms.key_ring(&name).await?, pretty),

        (Target::CryptoKeys(parent), None, Method::POST) => {
            let key: CryptoKey = body(bytes)?;
            let id = required_id(q.get("cryptoKeyId", "crypto_key_id"), "cryptoKeyId")?;
            let skip = q.flag("skipInitialVersionCreation", "skip_initial_version_creation")?;
            json(&kms.create_crypto_key(&parent, id, key, skip).await?, pretty)
        }
        (Target::CryptoKeys(parent), None, Method::GET) => {
            let page = kms.list_crypto_keys(&parent, &q.list()?).await?;
            json(
                &ListCryptoKeysResponse {
                    crypto_keys: page.items,
                    next_page_token: page.next_page_token,
                    total_size: page.total_size,
                },
                pretty,
            )
        }
        (Target::CryptoKey(name), None, Method::GET) => json(&kms.crypto_key(&name).await?, pretty),
        (Target::CryptoKey(name), None, Method::PATCH) => {
            let patch: CryptoKey = body(bytes)?;
            let mask = q.get("updateMask", "update_mask").unwrap_or_default();
            json(&kms.update_crypto_key(&name, patch, mask).await?, pretty)
        }
        (Target::CryptoKey(name), Some("encrypt"), Method::POST) => {
            let req: EncryptRequest = body(bytes)?;
            json(&kms.encrypt(&EncryptTarget::Key(name), &req).await?, pretty)
        }
        (Target::Version(name), Some("encrypt"), Method::POST) => {
            let req: EncryptRequest = body(bytes)?;
            json(&kms.encrypt(&EncryptTarget::Version(name), &req).await?, pretty)
        }
        (Target::CryptoKey(name), Some("decrypt"), Method::POST) => {
            let req: DecryptRequest = body(bytes)?;
            json(&kms.decrypt(&name, &req).await?, pretty)
        }
        (Target::CryptoKey(name), Some("updatePrimaryVersion"), Method::POST) => {
            let req: UpdatePrimaryVersionRequest = body(bytes)?;
            json(&kms.update_primary_version(&name, &req.crypto_key_version_id).await?, pretty)
        }

        (Target::Versions(parent), None, Method::POST) => {
            let v: CryptoKeyVersion = body(bytes)?;
            json(&kms.create_version(&parent, v).await?, pretty)
        }
        (Target::Versions(parent), None, Method::GET) => {
            let page = kms.list_versions(&parent, &q.list()?).await?;
            json(
                &ListCryptoKeyVersionsResponse {
                    crypto_key_versions: page.items,
                    next_page_token: page.next_page_token,
                    total_size: page.total_size,
                },
                pretty,
            )
        }
        (Target::Version(name), None, Method::GET) => json(&kms.version(&name).await?, pretty),
        (Target::Version(name), None, Method::PATCH) => {
            let patch: CryptoKeyVersion = body(bytes)?;
            let mask = q.get("updateMask", "update_mask").unwrap_or_default();
            json(&kms.update_version(&name, patch, mask).await?, pretty)
        }
        (Target::Version(name), Some("destroy"), Method::POST) => {
            let _: NameOnlyRequest = body(bytes)?;
            json(&kms.destroy_version(&name).await?, pretty)
        }
        (Target::Version(name), Some("restore"), Method::POST) => {
            let _: NameOnlyRequest = body(bytes)?;
            json(&kms.restore_version(&name).await?, pretty)
        }
        (_, Some(v), _) if UNIMPLEMENTED_VERBS.contains(&v) => return Err(unimplemented(path)),
        _ => return Err(no_method(method, path)),
    })
}

/// Cloud KMS v1 methods Keyhold does not implement yet: they answer `501 UNIMPLEMENTED` (which
/// Google's clients surface as "not implemented"), not `404`.
const UNIMPLEMENTED_VERBS: &[&str] = &[
    "getIamPolicy",
    "setIamPolicy",
    "testIamPermissions",
    "rawEncrypt",
    "rawDecrypt",
    "asymmetricSign",
    "asymmetricDecrypt",
    "macSign",
    "macVerify",
    "decapsulate",
    "generateRandomBytes",
    "import",
    "importTrustedKeyWrappedCryptoKeyVersion",
    "exportTrustedKeyWrappedCryptoKeyVersion",
    "verifyConnectivity",
];

fn is_unimplemented_cloud_kms_path(path: &str) -> bool {
    let path = path.split(':').next().unwrap_or(path);
    path.starts_with("projects/")
        && [
            "/publicKey",
            "/importJobs",
            "/ekmConnections",
            "/ekmConfig",
            "/keyHandles",
            "/retiredResources",
            "/operations",
        ]
        .iter()
        .any(|p| path.contains(p))
}

fn unimplemented(path: &str) -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        format!("The Cloud KMS method addressed by /v1/{path} is not implemented by Keyhold yet; see docs/api.md."),
    )
}

fn required_id<'a>(value: Option<&'a str>, param: &str) -> Result<&'a str, ApiError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::invalid(format!("The {param} query parameter is required."))),
    }
}

fn name_error(e: NameError) -> ApiError {
    ApiError::invalid(e.to_string())
}

/// Unknown paths outside `/v1/`.
pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(Code::NotFound, format!("No method {method} {}; see docs/api.md.", uri.path())).into_response()
}

/// One log line per request: method, path (never the query or body), status, latency, and the
/// request ID. At `debug` so that a busy server does not spend its time logging; 5xx answers
/// are also logged at `error` by [`ApiError`].
pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let id = req.headers().get(crate::REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let resp = next.run(req).await;
    tracing::debug!(request_id = %id, %method, %path, status = resp.status().as_u16(), micros = start.elapsed().as_micros() as u64, "request");
    resp
}
