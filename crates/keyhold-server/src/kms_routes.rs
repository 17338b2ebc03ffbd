//! Dispatch of Cloud KMS v1 REST calls to the KMS domain.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyhold_api::messages::PublicKeyFormat;
use keyhold_api::wire::{ProtoDuration, Timestamp};
use keyhold_api::{Code, NameError};
use keyhold_kms::audit::AuditLogQuery;
use keyhold_kms::{Caller, KmsError, Principal};
use keyhold_proto::google::cloud::kms::v1 as pb;
use keyhold_proto::google::cloud::location as loc;
use keyhold_proto::google::iam::v1 as iam;
use keyhold_proto::wkt::FieldMask;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroize as _;

use crate::AppState;
use crate::error::ApiError;
use crate::methods;
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
    /// `pageSize`, `pageToken` and `filter`, as a list request message holds them.
    fn page(&self) -> Result<(i32, String, String), ApiError> {
        let page_size = match self.get("pageSize", "page_size") {
            None | Some("") => 0,
            Some(s) => {
                s.parse::<i32>().map_err(|_| ApiError::invalid(format!("Invalid value for pageSize: \"{s}\".")))?
            }
        };
        let token = self.get("pageToken", "page_token").unwrap_or_default().to_string();
        Ok((page_size, token, self.get("filter", "filter").unwrap_or_default().to_string()))
    }
    /// [`Self::page`] and `orderBy`.
    fn list(&self) -> Result<(i32, String, String, String), ApiError> {
        let (page_size, page_token, filter) = self.page()?;
        Ok((page_size, page_token, filter, self.get("orderBy", "order_by").unwrap_or_default().to_string()))
    }
    /// `updateMask` (`a,b`) as the `FieldMask` of an update request; absent or empty: `None`.
    fn update_mask(&self) -> Option<FieldMask> {
        match self.get("updateMask", "update_mask") {
            None | Some("") => None,
            Some(m) => Some(FieldMask { paths: m.split(',').map(str::to_string).collect() }),
        }
    }
    fn pretty(&self) -> bool {
        !matches!(self.get("prettyPrint", "pretty_print"), Some("false") | Some("0"))
    }
}

/// Parses a JSON body; an empty body is `{}` (curl's `-d ""`), and so is the JSON string `""`,
/// which Google's Node.js client (google-gax's REST transport) sends whenever the body message
/// is empty or absent (`createKeyRing` with `keyRing: {}`, `destroyCryptoKeyVersion`, ...) and
/// which Google's front end accepts as the empty message.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if is_empty_body(bytes) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))
}

/// Nothing but whitespace, or the empty JSON string `""` (surrounded by whitespace or not).
fn is_empty_body(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii();
    trimmed.is_empty() || trimmed == b"\"\""
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

/// Which API surface a request came in on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Api {
    /// `/v1/...`: Cloud KMS, Resource Manager, IAM Credentials, audit logs, tokens.
    V1,
    /// `/v1beta1/...`: Service Usage's `generateServiceIdentity`.
    V1Beta1,
}

/// Everything under `/v1/`.
pub(crate) async fn dispatch(
    state: State<AppState>,
    method: Method,
    headers: HeaderMap,
    path: Path<String>,
    query: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    bytes: Bytes,
) -> Response {
    dispatch_api(Api::V1, state, method, headers, path, query, bytes).await
}

/// Everything under `/v1beta1/`.
pub(crate) async fn dispatch_v1beta1(
    state: State<AppState>,
    method: Method,
    headers: HeaderMap,
    path: Path<String>,
    query: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    bytes: Bytes,
) -> Response {
    dispatch_api(Api::V1Beta1, state, method, headers, path, query, bytes).await
}

/// Longest `X-Goog-Request-Reason` recorded.
const MAX_REASON: usize = 512;

/// Authenticates the request: a valid bearer token; without a token, the principal of the
/// connection's verified client certificate (mTLS with `--tls-client-principal`); else the
/// anonymous principal of emulator mode; else an unauthenticated caller (whose every call is
/// refused and audited).
pub(crate) async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = header(crate::REQUEST_ID_HEADER).unwrap_or_default().to_string();
    let token = header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let mut caller = match token {
        Some(t) => match state.kms.authenticate(t).await {
            Ok(p) => Caller::new(p, request_id),
            Err(e @ KmsError::Unavailable(_)) => return Err(e.into()),
            Err(_) => Caller::unauthenticated(false, request_id),
        },
        // No token: the principal of the connection's verified client certificate, when the
        // listener maps certificates to principals (a token, even an invalid one, wins).
        // It may not stand for a principal no token may be created for (a service agent, ...).
        None => match crate::listener::client_certificate_principal().map(|p| Principal::parse(&p)) {
            Some(Ok(p)) => match state.kms.check_external_principal(&p) {
                Ok(()) => Caller::new(p, request_id),
                Err(why) => {
                    tracing::warn!(principal = %p, "a client certificate names a reserved principal, refused: {why}");
                    Caller::unauthenticated(false, request_id)
                }
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the client certificate's identity is not a principal");
                Caller::unauthenticated(false, request_id)
            }
            None => Caller::unauthenticated(true, request_id),
        },
    };
    if caller.principal.is_none()
        && let Some(anon) = &state.kms.config().anonymous_principal
    {
        caller.principal = Some(anon.clone());
        caller.anonymous = true;
    }
    caller.justification = header("x-goog-request-reason").map(|r| r.chars().take(MAX_REASON).collect());
    Ok(caller)
}

/// Reads `X-Keyhold-Access-Reason` into an authenticated caller. Called only once the caller
/// is known (finding 7: a bad header used to be refused before authentication and before its
/// audit entry, so it left no entry and answered 400 where 401 was due). Its error is not yet
/// audited: the dispatcher records it like any refusal before a method ran. A value that is
/// not visible ASCII, or a header sent twice, is refused rather than ignored (finding 6: a
/// non-ASCII value used to be dropped silently, so the call ran as CUSTOMER_INITIATED_ACCESS).
pub(crate) fn read_access_reason(caller: &mut Caller, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(ACCESS_REASON_HEADER).iter();
    let Some(value) = values.next() else { return Ok(()) };
    if values.next().is_some() {
        return Err(ApiError::invalid(
            "X-Keyhold-Access-Reason is sent more than once; send it once, with one AccessReason.",
        ));
    }
    let text = value.to_str().map_err(|_| {
        ApiError::invalid(
            "X-Keyhold-Access-Reason holds characters other than visible ASCII; send an AccessReason name (for example CUSTOMER_INITIATED_ACCESS) or its number.",
        )
    })?;
    caller.access_reason = Some(parse_access_reason(text)?);
    Ok(())
}

/// The header carrying a request's Key Access Justification reason ([K11]): an `AccessReason`
/// name (`CUSTOMER_INITIATED_ACCESS`) or number. Absent: `CUSTOMER_INITIATED_ACCESS`.
pub const ACCESS_REASON_HEADER: &str = "x-keyhold-access-reason";

/// Longest part of a bad `X-Keyhold-Access-Reason` value quoted back (and into the audit log).
const MAX_QUOTED_REASON: usize = 64;

fn parse_access_reason(value: &str) -> Result<keyhold_api::resources::AccessReason, ApiError> {
    let v = match value.trim().parse::<i64>() {
        Ok(n) => serde_json::Value::from(n),
        Err(_) => serde_json::Value::from(value.trim()),
    };
    match serde_json::from_value::<keyhold_api::resources::AccessReason>(v) {
        Ok(r) if r != keyhold_api::resources::AccessReason::Unspecified => Ok(r),
        _ => {
            let quoted: String = value.chars().take(MAX_QUOTED_REASON).collect();
            Err(ApiError::invalid(format!(
                "X-Keyhold-Access-Reason: {quoted:?} is not an AccessReason (for example CUSTOMER_INITIATED_ACCESS)."
            )))
        }
    }
}

async fn dispatch_api(
    api: Api,
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
    query: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    bytes: Bytes,
) -> Response {
    let mut caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // Authentication comes first, as at Google: no credential, no parsing (not even of the
    // access-reason header); every refusal below is audited.
    let result = if caller.principal.is_none() {
        Err(ApiError::unaudited(KmsError::Unauthenticated { missing: caller.credential_missing }))
    } else if let Err(e) = read_access_reason(&mut caller, &headers) {
        Err(e)
    } else {
        match query {
            Err(e) => Err(ApiError::invalid(format!("Malformed query string: {e}"))),
            Ok(axum::extract::Query(pairs)) => {
                handle(api, &state, &caller, &method, &path, &Query::new(pairs), &bytes).await
            }
        }
    };
    match result {
        Ok(r) => r,
        Err(e) if e.audited => e.into_response(),
        Err(e) => {
            // Refused before any method ran: still one audit entry per request.
            if let Err(audit) = state.kms.record_refused_request(&caller, &path, e.status()).await {
                tracing::error!(error = %audit, "cannot write the audit log; refusing the request");
                return ApiError::from(KmsError::Unavailable(audit)).into_response();
            }
            e.into_response()
        }
    }
}

async fn handle(
    api: Api,
    state: &AppState,
    caller: &Caller,
    method: &Method,
    path: &str,
    q: &Query,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let (target, verb) = match route::parse(path) {
        Ok(t) => t,
        Err(RouteError::Unknown) if is_unimplemented_cloud_kms_path(path) => return Err(unimplemented(path)),
        Err(RouteError::Unknown) => return Err(no_method(method, path)),
        Err(RouteError::BadName(e)) => return Err(name_error(e)),
    };
    let pretty = q.pretty();
    let m = method.clone();
    let beta = matches!(target, Target::Service { .. });
    if beta != (api == Api::V1Beta1) {
        return Err(no_method(method, path));
    }
    if let Some(r) = iam_method(state, caller, (&target, verb), Parts { method, path, q, bytes }).await? {
        return Ok(r);
    }
    // Each method's path, query and body become its request message, as Google's front ends
    // transcode REST by the protos' `google.api.http` rules (the path's name wins over a name
    // in the body); the method is the one gRPC calls (`crate::methods`).
    let s = state;
    Ok(match (target, verb, m) {
        (Target::Locations(project), None, Method::GET) => {
            let (page_size, page_token, filter) = q.page()?;
            let r = loc::ListLocationsRequest { name: format!("projects/{project}"), filter, page_size, page_token };
            json(&methods::list_locations(s, caller, r).await?, pretty)
        }
        (Target::Location(name), None, Method::GET) => {
            json(&methods::get_location(s, caller, loc::GetLocationRequest { name: name.to_string() }).await?, pretty)
        }
        (Target::Location(name), Some("generateRandomBytes"), Method::POST) => {
            let r = pb::GenerateRandomBytesRequest { location: name.to_string(), ..body(bytes)? };
            json(&methods::generate_random_bytes(s, caller, r).await?, pretty)
        }

        (Target::KeyRings(parent), None, Method::POST) => {
            let key_ring: pb::KeyRing = body(bytes)?;
            let id = required_id(q.get("keyRingId", "key_ring_id"), "keyRingId")?;
            let r = pb::CreateKeyRingRequest {
                parent: parent.to_string(),
                key_ring_id: id.into(),
                key_ring: Some(key_ring),
            };
            json(&methods::create_key_ring(s, caller, r).await?, pretty)
        }
        (Target::KeyRings(parent), None, Method::GET) => {
            let (page_size, page_token, filter, order_by) = q.list()?;
            let r = pb::ListKeyRingsRequest { parent: parent.to_string(), page_size, page_token, filter, order_by };
            json(&methods::list_key_rings(s, caller, r).await?, pretty)
        }
        (Target::KeyRing(name), None, Method::GET) => {
            json(&methods::get_key_ring(s, caller, pb::GetKeyRingRequest { name: name.to_string() }).await?, pretty)
        }

        (Target::ImportJobs(parent), None, Method::POST) => {
            let job: pb::ImportJob = body(bytes)?;
            let id = required_id(q.get("importJobId", "import_job_id"), "importJobId")?;
            let r = pb::CreateImportJobRequest {
                parent: parent.to_string(),
                import_job_id: id.into(),
                import_job: Some(job),
            };
            json(&methods::create_import_job(s, caller, r).await?, pretty)
        }
        (Target::ImportJobs(parent), None, Method::GET) => {
            let (page_size, page_token, filter, order_by) = q.list()?;
            let r = pb::ListImportJobsRequest { parent: parent.to_string(), page_size, page_token, filter, order_by };
            json(&methods::list_import_jobs(s, caller, r).await?, pretty)
        }
        (Target::ImportJob(name), None, Method::GET) => {
            let r = pb::GetImportJobRequest { name: name.to_string(), ..Default::default() };
            json(&methods::get_import_job(s, caller, r).await?, pretty)
        }
        (Target::Versions(parent), Some("import"), Method::POST) => {
            let r = pb::ImportCryptoKeyVersionRequest { parent: parent.to_string(), ..body(bytes)? };
            json(&methods::import_crypto_key_version(s, caller, r).await?, pretty)
        }

        (Target::CryptoKeys(parent), None, Method::POST) => {
            let key: pb::CryptoKey = body(bytes)?;
            let id = required_id(q.get("cryptoKeyId", "crypto_key_id"), "cryptoKeyId")?;
            let r = pb::CreateCryptoKeyRequest {
                parent: parent.to_string(),
                crypto_key_id: id.into(),
                crypto_key: Some(key),
                skip_initial_version_creation: q.flag("skipInitialVersionCreation", "skip_initial_version_creation")?,
                trusted_wrapping_enabled: false,
            };
            json(&methods::create_crypto_key(s, caller, r).await?, pretty)
        }
        (Target::CryptoKeys(parent), None, Method::GET) => {
            let (page_size, page_token, filter, order_by) = q.list()?;
            let r = pb::ListCryptoKeysRequest {
                parent: parent.to_string(),
                page_size,
                page_token,
                filter,
                order_by,
                ..Default::default()
            };
            json(&methods::list_crypto_keys(s, caller, r).await?, pretty)
        }
        (Target::CryptoKey(name), None, Method::GET) => {
            let r = pb::GetCryptoKeyRequest { name: name.to_string() };
            json(&methods::get_crypto_key(s, caller, r).await?, pretty)
        }
        (Target::CryptoKey(name), None, Method::PATCH) => {
            let key = pb::CryptoKey { name: name.to_string(), ..body(bytes)? };
            let r = pb::UpdateCryptoKeyRequest { crypto_key: Some(key), update_mask: q.update_mask() };
            json(&methods::update_crypto_key(s, caller, r).await?, pretty)
        }
        (Target::CryptoKey(name), Some("encrypt"), Method::POST) => {
            let r = pb::EncryptRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::encrypt(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("encrypt"), Method::POST) => {
            let r = pb::EncryptRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::encrypt(s, caller, r).await?, pretty)
        }
        (Target::CryptoKey(name), Some("decrypt"), Method::POST) => {
            let r = pb::DecryptRequest { name: name.to_string(), ..body(bytes)? };
            let mut answer = methods::decrypt(s, caller, r).await?;
            let response = json(&answer, pretty);
            answer.plaintext.zeroize();
            response
        }
        (Target::CryptoKey(name), Some("updatePrimaryVersion"), Method::POST) => {
            let r = pb::UpdateCryptoKeyPrimaryVersionRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::update_crypto_key_primary_version(s, caller, r).await?, pretty)
        }

        (Target::Versions(parent), None, Method::POST) => {
            let version: pb::CryptoKeyVersion = body(bytes)?;
            let r = pb::CreateCryptoKeyVersionRequest { parent: parent.to_string(), crypto_key_version: Some(version) };
            json(&methods::create_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::Versions(parent), None, Method::GET) => {
            let (page_size, page_token, filter, order_by) = q.list()?;
            let r = pb::ListCryptoKeyVersionsRequest {
                parent: parent.to_string(),
                page_size,
                page_token,
                filter,
                order_by,
                ..Default::default()
            };
            json(&methods::list_crypto_key_versions(s, caller, r).await?, pretty)
        }
        (Target::Version(name), None, Method::GET) => {
            let r = pb::GetCryptoKeyVersionRequest { name: name.to_string() };
            json(&methods::get_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::Version(name), None, Method::PATCH) => {
            let version = pb::CryptoKeyVersion { name: name.to_string(), ..body(bytes)? };
            let r =
                pb::UpdateCryptoKeyVersionRequest { crypto_key_version: Some(version), update_mask: q.update_mask() };
            json(&methods::update_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("asymmetricSign"), Method::POST) => {
            let r = pb::AsymmetricSignRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::asymmetric_sign(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("asymmetricDecrypt"), Method::POST) => {
            let r = pb::AsymmetricDecryptRequest { name: name.to_string(), ..body(bytes)? };
            let mut answer = methods::asymmetric_decrypt(s, caller, r).await?;
            let response = json(&answer, pretty);
            answer.plaintext.zeroize();
            response
        }
        (Target::Version(name), Some("decapsulate"), Method::POST) => {
            let r = pb::DecapsulateRequest { name: name.to_string(), ..body(bytes)? };
            let mut answer = methods::decapsulate(s, caller, r).await?;
            let response = json(&answer, pretty);
            answer.shared_secret.zeroize();
            response
        }
        (Target::Version(name), Some("rawEncrypt"), Method::POST) => {
            let r = pb::RawEncryptRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::raw_encrypt(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("rawDecrypt"), Method::POST) => {
            let r = pb::RawDecryptRequest { name: name.to_string(), ..body(bytes)? };
            let mut answer = methods::raw_decrypt(s, caller, r).await?;
            let response = json(&answer, pretty);
            answer.plaintext.zeroize();
            response
        }
        (Target::Version(name), Some("macSign"), Method::POST) => {
            let r = pb::MacSignRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::mac_sign(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("macVerify"), Method::POST) => {
            let r = pb::MacVerifyRequest { name: name.to_string(), ..body(bytes)? };
            json(&methods::mac_verify(s, caller, r).await?, pretty)
        }
        (Target::PublicKey(name), None, Method::GET) => {
            let public_key_format = match q.get("publicKeyFormat", "public_key_format") {
                None => 0,
                Some(f) => PublicKeyFormat::from_name(f)
                    .or_else(|| f.parse().ok().and_then(PublicKeyFormat::from_number))
                    .map(|f| f.number())
                    .ok_or_else(|| ApiError::new(Code::InvalidArgument, format!("Invalid publicKeyFormat: {f}.")))?,
            };
            let r = pb::GetPublicKeyRequest { name: name.to_string(), public_key_format };
            json(&methods::get_public_key(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("destroy"), Method::POST) => {
            let mut r: pb::DestroyCryptoKeyVersionRequest = body(bytes)?;
            r.name = name.to_string();
            json(&methods::destroy_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::Version(name), Some("restore"), Method::POST) => {
            let mut r: pb::RestoreCryptoKeyVersionRequest = body(bytes)?;
            r.name = name.to_string();
            json(&methods::restore_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::CryptoKey(name), None, Method::DELETE) => {
            let r = pb::DeleteCryptoKeyRequest { name: name.to_string() };
            json(&methods::delete_crypto_key(s, caller, r).await?, pretty)
        }
        (Target::Version(name), None, Method::DELETE) => {
            let r = pb::DeleteCryptoKeyVersionRequest { name: name.to_string() };
            json(&methods::delete_crypto_key_version(s, caller, r).await?, pretty)
        }
        (Target::RetiredResources(parent), None, Method::GET) => {
            let (page_size, page_token, filter, order_by) = q.list()?;
            if !filter.is_empty() || !order_by.is_empty() {
                // ListRetiredResourcesRequest has neither field.
                return Err(ApiError::invalid("retiredResources.list takes no filter and no orderBy."));
            }
            let r = pb::ListRetiredResourcesRequest { parent: parent.to_string(), page_size, page_token };
            json(&methods::list_retired_resources(s, caller, r).await?, pretty)
        }
        (Target::RetiredResource(name), None, Method::GET) => {
            let r = pb::GetRetiredResourceRequest { name };
            json(&methods::get_retired_resource(s, caller, r).await?, pretty)
        }
        (Target::KeyRing(_), None, Method::DELETE) => {
            return Err(delete_not_served(path));
        }
        (_, Some(v), _) if UNIMPLEMENTED_VERBS.contains(&v) => return Err(unimplemented(path)),
        _ => return Err(no_method(method, path)),
    })
}

/// `DELETE` on a key ring: `501 UNIMPLEMENTED` like the other methods Keyhold does not serve
/// (finding 9: it answered 404, which reads as "no such resource"), saying what to do instead.
fn delete_not_served(path: &str) -> ApiError {
    let name = path.split(':').next().unwrap_or(path);
    ApiError::new(
        Code::Unimplemented,
        format!(
            "DeleteKeyRing is not implemented by Keyhold: {name} and its name stay. Delete its keys (once their \
             versions are destroyed and deleted) to retire them; see docs/api.md."
        ),
    )
}

/// Cloud KMS v1 methods Keyhold does not implement yet: they answer `501 UNIMPLEMENTED` (which
/// Google's clients surface as "not implemented"), not `404`.
const UNIMPLEMENTED_VERBS: &[&str] =
    &["importTrustedKeyWrappedCryptoKeyVersion", "exportTrustedKeyWrappedCryptoKeyVersion", "verifyConnectivity"];

fn is_unimplemented_cloud_kms_path(path: &str) -> bool {
    let path = path.split(':').next().unwrap_or(path);
    path.starts_with("projects/")
        && ["/ekmConnections", "/ekmConfig", "/keyHandles", "/operations"].iter().any(|p| path.contains(p))
}

fn unimplemented(path: &str) -> ApiError {
    ApiError::new(
        Code::Unimplemented,
        format!("The Cloud KMS method addressed by /v1/{path} is not implemented by Keyhold yet; see docs/api.md."),
    )
}

/// What a request brings besides its caller and route.
struct Parts<'a> {
    method: &'a Method,
    path: &'a str,
    q: &'a Query,
    bytes: &'a Bytes,
}

/// IAM, projects, service identities, agent tokens, bearer tokens and the audit log.
/// `Ok(None)`: not one of these; the KMS methods handle the request.
async fn iam_method(
    state: &AppState,
    caller: &Caller,
    (target, verb): (&Target, Option<&str>),
    Parts { method, path, q, bytes }: Parts<'_>,
) -> Result<Option<Response>, ApiError> {
    let kms = &state.kms;
    let pretty = q.pretty();
    if let (Some(_), Some(v)) = (target.iam_resource(), verb) {
        // The resource is the path before the verb; methods::iam_resource reads it again.
        let resource = path.rsplit_once(':').map_or(path, |(r, _)| r).to_string();
        let r = match (v, method) {
            ("getIamPolicy", &Method::GET) => {
                let r = iam::GetIamPolicyRequest { resource, options: None };
                json(&methods::get_iam_policy(state, caller, r).await?, pretty)
            }
            ("getIamPolicy", &Method::POST) => {
                let r = iam::GetIamPolicyRequest { resource, ..body(bytes)? };
                json(&methods::get_iam_policy(state, caller, r).await?, pretty)
            }
            ("setIamPolicy", &Method::POST) => {
                let r = iam::SetIamPolicyRequest { resource, ..body(bytes)? };
                json(&methods::set_iam_policy(state, caller, r).await?, pretty)
            }
            ("testIamPermissions", &Method::POST) => {
                let r = iam::TestIamPermissionsRequest { resource, ..body(bytes)? };
                json(&methods::test_iam_permissions(state, caller, r).await?, pretty)
            }
            _ => return Ok(None),
        };
        return Ok(Some(r));
    }
    Ok(Some(match (target, verb, method) {
        (Target::Project(p), None, &Method::GET) => {
            let project = kms.project(caller, p).await?;
            json(
                &serde_json::json!({
                    "projectNumber": project.project_number.to_string(),
                    "projectId": project.project_id,
                    "lifecycleState": "ACTIVE",
                    "name": project.project_id,
                    "createTime": project.create_time,
                }),
                pretty,
            )
        }
        (Target::AuditLogs(project), None, &Method::GET) => {
            let parse_time = |camel: &str, snake: &str| -> Result<Option<Timestamp>, ApiError> {
                match q.get(camel, snake) {
                    None | Some("") => Ok(None),
                    Some(t) => Timestamp::parse(t).map(Some).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "Invalid value for {camel}: \"{t}\" (expected RFC 3339, e.g. 2026-01-02T03:04:05Z)."
                        ))
                    }),
                }
            };
            let descending = match q.get("orderBy", "order_by").unwrap_or("timestamp asc").trim() {
                "timestamp asc" | "timestamp" | "" => false,
                "timestamp desc" => true,
                other => {
                    return Err(ApiError::invalid(format!(
                        "Invalid orderBy \"{other}\": use \"timestamp asc\" or \"timestamp desc\"."
                    )));
                }
            };
            let (page_size, page_token, _) = q.page()?;
            let query = AuditLogQuery {
                start_time: parse_time("startTime", "start_time")?,
                end_time: parse_time("endTime", "end_time")?,
                method: q.get("methodName", "method_name").unwrap_or_default().to_string(),
                resource_prefix: q.get("resourcePrefix", "resource_prefix").unwrap_or_default().to_string(),
                principal: q.get("principal", "principal").unwrap_or_default().to_string(),
                log: q.get("logName", "log_name").unwrap_or_default().to_string(),
                descending,
                page_size: i64::from(page_size),
                page_token,
            };
            json(&kms.read_audit_log(caller, project, &query).await?, pretty)
        }
        (Target::Service { project, service }, Some("generateServiceIdentity"), &Method::POST) => {
            // Its request has no fields: any is refused (hardening review).
            let fields: serde_json::Map<String, serde_json::Value> = body(bytes)?;
            if let Some(field) = fields.keys().next() {
                let field: String = field.chars().take(80).collect();
                return Err(ApiError::invalid(format!(
                    "Invalid JSON payload received. Unknown name \"{field}\": generateServiceIdentity takes an empty body."
                )));
            }
            let identity = kms.generate_service_identity(caller, project, service).await?;
            json(
                &serde_json::json!({
                    "name": "operations/finished.DONE_OPERATION",
                    "done": true,
                    "response": {
                        "@type": "type.googleapis.com/google.api.serviceusage.v1beta1.ServiceIdentity",
                        "email": identity.email,
                        "uniqueId": identity.unique_id,
                    }
                }),
                pretty,
            )
        }
        (Target::ServiceAccount(email), Some("generateAccessToken"), &Method::POST) => {
            let req: GenerateAccessTokenRequest = body(bytes)?;
            if !req.delegates.is_empty() {
                return Err(ApiError::invalid(
                    "delegates are not supported: call generateAccessToken as the service itself.",
                ));
            }
            let lifetime = duration_field("lifetime", req.lifetime.as_deref(), "3600s")?;
            let minted = kms.generate_agent_token(caller, email, lifetime).await?;
            json(
                &serde_json::json!({"accessToken": minted.token.expose(), "expireTime": minted.record.expire_time}),
                pretty,
            )
        }
        (Target::Tokens, None, &Method::POST) => {
            let req: CreateTokenRequest = body(bytes)?;
            let ttl = duration_field("ttl", req.ttl.as_deref(), "86400s")?;
            let minted = kms.create_token(caller, &req.principal, ttl, &req.description).await?;
            let mut v = token_json(&minted.record);
            v["token"] = minted.token.expose().into();
            json(&v, pretty)
        }
        (Target::Tokens, None, &Method::GET) => {
            let tokens: Vec<_> = kms.list_tokens(caller).await?.iter().map(token_json).collect();
            json(&serde_json::json!({ "tokens": tokens }), pretty)
        }
        (Target::Token(id), None, &Method::DELETE) | (Target::Token(id), Some("revoke"), &Method::POST) => {
            kms.revoke_token(caller, id).await?;
            json(&serde_json::json!({}), pretty)
        }
        _ => return Ok(None),
    }))
}

/// An optional duration field of a request body (`"3600s"`); absent or empty is `None`.
fn duration_field(field: &str, value: Option<&str>, example: &str) -> Result<Option<ProtoDuration>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => ProtoDuration::parse(v)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("Invalid {field} \"{v}\": use seconds, e.g. \"{example}\"."))),
    }
}

/// Body of IAM Credentials' `generateAccessToken`.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GenerateAccessTokenRequest {
    #[serde(default)]
    lifetime: Option<String>,
    /// Accepted and ignored: Keyhold tokens are not scoped.
    #[serde(default)]
    #[allow(dead_code)]
    scope: Vec<String>,
    /// Delegation chains are not supported; accepted only when empty.
    #[serde(default)]
    delegates: Vec<String>,
}

/// Body of `POST /v1/tokens`.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTokenRequest {
    principal: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    description: String,
}

fn token_json(t: &keyhold_kms::repo::TokenRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": format!("tokens/{}", t.id),
        "principal": t.principal,
        "createTime": t.create_time,
        "expireTime": t.expire_time,
    });
    if !t.description.is_empty() {
        v["description"] = t.description.clone().into();
    }
    if let Some(r) = t.revoke_time {
        v["revokeTime"] = serde_json::to_value(r).unwrap_or_default();
    }
    v
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
