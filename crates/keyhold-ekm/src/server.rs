//! The external key manager: `keyhold ekm serve`.
//!
//! An axum router over the manager's [`KeyStore`], its policy and tokens files (re-read when
//! they change) and its audit file. Every request to a key is authenticated (bearer token),
//! decided, recorded, and only then answered. Checks run in this order, the first failure
//! answering: route (404), token (401), key ID syntax and body (400 `INVALID_ARGUMENT`), key
//! exists (404), policy (403 `PERMISSION_DENIED`), key enabled (400 `FAILED_PRECONDITION`),
//! cryptography (400 `INVALID_ARGUMENT` when a blob does not open).
//!
//! Nothing here panics on input: every malformed request gets Google's error JSON. File and
//! cryptographic work runs on Tokio's blocking pool.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyhold_api::wire::{Bytes, ProtoDuration, SecretBytes};
use keyhold_api::{Code, Status};
use keyhold_crypto::{CryptoError, SecretString};

use crate::audit::{AuditEntry, AuditLog};
use crate::key_store::{KeyStore, KeyStoreError};
use crate::policy::{AccessRequest, Decision, Policy};
use crate::protocol::{
    AdditionalContext, KeyMetadata, KeyState, MAX_AAD_BYTES, MAX_NAME_LEN, MAX_PLAINTEXT_BYTES, MAX_REQUEST_BODY_BYTES,
    RequestMetadata, UnwrapRequest, UnwrapResponse, WrapRequest, WrapResponse, is_valid_key_id,
};
use crate::reload::Reloading;
use crate::tokens::Tokens;

/// Where a manager keeps its state and finds its configuration.
#[derive(Debug, Clone)]
pub struct EkmServerConfig {
    /// The data directory: `keys/`, and by default `root.key` and `audit.jsonl`.
    pub data_dir: PathBuf,
    /// The root key file; default `DATA_DIR/root.key`, created on first start.
    pub root_key_file: Option<PathBuf>,
    /// The policy file (JSON, [`crate::policy`]); must exist.
    pub policy_file: PathBuf,
    /// The tokens file ([`crate::tokens`]); must exist.
    pub tokens_file: PathBuf,
    /// The audit file; default `DATA_DIR/audit.jsonl`.
    pub audit_file: Option<PathBuf>,
}

impl EkmServerConfig {
    /// The defaults for `data_dir`: `policy.json` and `tokens` inside it.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            policy_file: data_dir.join("policy.json"),
            tokens_file: data_dir.join("tokens"),
            data_dir,
            root_key_file: None,
            audit_file: None,
        }
    }
}

/// Why the manager cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EkmServeError {
    /// The key store cannot be opened.
    #[error("key store: {0}")]
    Store(#[from] KeyStoreError),
    /// The policy or tokens file is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// The audit file cannot be opened.
    #[error("audit file {path}: {source}")]
    Audit {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: crate::audit::AuditOpenError,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

struct ManagerState {
    store: KeyStore,
    policy: Reloading<Policy>,
    tokens: Reloading<Tokens>,
    audit: AuditLog,
}

/// An opened manager, ready to serve.
#[derive(Clone)]
pub struct EkmServer {
    state: Arc<ManagerState>,
}

impl std::fmt::Debug for EkmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EkmServer").field("store", &self.state.store).finish_non_exhaustive()
    }
}

fn parse_policy(b: &[u8]) -> Result<Policy, String> {
    Policy::parse(b).map_err(|e| e.to_string())
}

fn parse_tokens(b: &[u8]) -> Result<Tokens, String> {
    Tokens::parse(b).map_err(|e| e.to_string())
}

impl EkmServer {
    /// Opens the store (creating the root key on first start), and loads the policy and tokens
    /// files, which must exist and be valid.
    pub fn open(config: &EkmServerConfig) -> Result<Self, EkmServeError> {
        let store = KeyStore::open(&config.data_dir, config.root_key_file.as_deref())?;
        if store.root_key_created() {
            tracing::warn!(
                path = %store.root_key_file().display(),
                "created a new root key for the external key manager next to its keys; keep a backup of it, and for \
                 anything but a trial keep it elsewhere (--root-key-file)"
            );
        }
        let policy =
            Reloading::load(&config.policy_file, "policy file", parse_policy).map_err(EkmServeError::Config)?;
        let tokens =
            Reloading::load(&config.tokens_file, "tokens file", parse_tokens).map_err(EkmServeError::Config)?;
        if tokens.current().is_empty() {
            tracing::warn!(path = %config.tokens_file.display(), "the tokens file holds no token: every request is refused");
        }
        warn_if_readable_by_others(&config.tokens_file);
        let audit_path = config.audit_file.clone().unwrap_or_else(|| config.data_dir.join("audit.jsonl"));
        let audit = AuditLog::open(&audit_path)
            .map_err(|source| EkmServeError::Audit { path: audit_path.display().to_string(), source })?;
        tracing::info!(
            keys = store.list().map(|l| l.len()).unwrap_or(0),
            policy = %config.policy_file.display(),
            policy_keys = policy.current().key_count(),
            tokens = %config.tokens_file.display(),
            audit = %audit_path.display(),
            "external key manager opened"
        );
        Ok(Self { state: Arc::new(ManagerState { store, policy, tokens, audit }) })
    }

    /// The manager's key store.
    pub fn store(&self) -> &KeyStore {
        &self.state.store
    }

    /// The HTTP routes. Serve them with connect info (`into_make_service_with_connect_info`)
    /// to have client addresses in the audit file, as [`EkmServer::serve`] does.
    pub fn router(&self) -> Router {
        Router::new().route("/healthz", get(healthz)).fallback(dispatch).with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EkmServeError> {
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}

/// Opens the manager described by `config` and serves it on `listener` until `shutdown`.
pub async fn serve(
    config: EkmServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EkmServeError> {
    let server = tokio::task::spawn_blocking(move || EkmServer::open(&config))
        .await
        .map_err(|e| EkmServeError::Io(std::io::Error::other(e)))??;
    server.serve(listener, shutdown).await
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the tokens file is readable by other users; restrict it with chmod 600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "SERVING"}), false)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyMethod {
    GetKey,
    Wrap,
    Unwrap,
}

impl KeyMethod {
    fn name(self) -> &'static str {
        match self {
            KeyMethod::GetKey => "getKey",
            KeyMethod::Wrap => "wrap",
            KeyMethod::Unwrap => "unwrap",
        }
    }
}

async fn dispatch(State(state): State<Arc<ManagerState>>, req: Request) -> Response {
    let remote =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.to_string()).unwrap_or_default();
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/v1/keys/") else {
        return error_response(&not_found(req.method(), &path));
    };
    let (key_id, verb) = match rest.split_once(':') {
        Some((id, verb)) => (id.to_string(), Some(verb)),
        None => (rest.to_string(), None),
    };
    let method = match (req.method(), verb) {
        (&Method::GET, None) => KeyMethod::GetKey,
        (&Method::POST, Some("wrap")) => KeyMethod::Wrap,
        (&Method::POST, Some("unwrap")) => KeyMethod::Unwrap,
        _ => return error_response(&not_found(req.method(), &path)),
    };
    let authorization = bearer_token(req.headers());
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&Status::new(
                Code::InvalidArgument,
                format!("The request body could not be read or is larger than {MAX_REQUEST_BODY_BYTES} bytes."),
            ));
        }
    };
    match tokio::task::spawn_blocking(move || state.handle(method, &key_id, authorization, &body, remote)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "an EKM request handler failed");
            error_response(&Status::new(Code::Internal, "Internal error in the external key manager."))
        }
    }
}

fn not_found(method: &Method, path: &str) -> Status {
    Status::new(
        Code::NotFound,
        format!(
            "No method {method} {path} in the external key manager: use GET /v1/keys/KEY_ID, POST \
             /v1/keys/KEY_ID:wrap or POST /v1/keys/KEY_ID:unwrap."
        ),
    )
}

/// The bearer token of the `Authorization` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| SecretString::new(token.trim().to_string()))
}

/// A text field of the request metadata: bounded, and without control characters (they could
/// forge lines in a text log).
fn check_text(field: &str, value: &str, required: bool) -> Result<(), Status> {
    if required && value.is_empty() {
        return Err(Status::new(Code::InvalidArgument, format!("{field} is required.")));
    }
    if value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("{field} must be at most {MAX_NAME_LEN} bytes of printable text."),
        ));
    }
    Ok(())
}

fn check_context(ctx: &AdditionalContext, meta: &RequestMetadata, entry: &mut AuditEntry) -> Result<(), Status> {
    check_text("additionalContext.relativeResourceName", &ctx.relative_resource_name, true)?;
    check_text("requestMetadata.callerPrincipal", &meta.caller_principal, true)?;
    check_text("requestMetadata.requestId", &meta.request_id, false)?;
    check_text("requestMetadata.operation", &meta.operation, false)?;
    check_text("requestMetadata.viaService", &meta.via_service, false)?;
    if !meta.request_id.is_empty() {
        entry.request_id = meta.request_id.clone();
    }
    entry.resource = ctx.relative_resource_name.clone();
    entry.caller_principal = meta.caller_principal.clone();
    entry.reason = ctx.access_reason_context.reason.as_str().to_string();
    entry.operation = meta.operation.clone();
    entry.via_service = meta.via_service.clone();
    Ok(())
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body)
        .map_err(|e| Status::new(Code::InvalidArgument, format!("Invalid JSON payload received: {e}.")))
}

fn aad_of(b: Option<Bytes>) -> Result<Vec<u8>, Status> {
    let aad = b.map(|b| b.0).unwrap_or_default();
    if aad.len() > MAX_AAD_BYTES {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("additionalAuthenticatedData must be at most {MAX_AAD_BYTES} bytes."),
        ));
    }
    Ok(aad)
}

fn store_status(e: KeyStoreError) -> Status {
    match e {
        KeyStoreError::NotFound(id) => Status::new(Code::NotFound, format!("Key {id} not found.")),
        KeyStoreError::InvalidKeyId(_) => Status::new(Code::InvalidArgument, e.to_string()),
        KeyStoreError::Io { .. } => {
            tracing::error!(error = %e, "the key store cannot be read");
            Status::new(Code::Unavailable, "The external key manager cannot read its key store.")
        }
        other => {
            tracing::error!(error = %other, "a key cannot be used");
            Status::new(Code::Internal, "The external key manager cannot use this key; see its log.")
        }
    }
}

fn random_request_id() -> String {
    let mut b = [0u8; 12];
    match keyhold_crypto::random_bytes(&mut b) {
        Ok(()) => format!("ekm-{}", keyhold_crypto::hex(&b)),
        Err(_) => "ekm-unknown".into(),
    }
}

impl ManagerState {
    /// Decides, records and answers one request to a key.
    fn handle(
        &self,
        method: KeyMethod,
        key_id: &str,
        authorization: Option<SecretString>,
        body: &[u8],
        remote: String,
    ) -> Response {
        let mut entry = AuditEntry {
            time: keyhold_api::wire::Timestamp::now(),
            request_id: String::new(),
            method: method.name().to_string(),
            // An invalid ID is recorded shortened, and only its printable part.
            key_id: key_id.chars().filter(|c| !c.is_control()).take(crate::protocol::KEY_ID_MAX_LEN).collect(),
            client: String::new(),
            caller_principal: String::new(),
            reason: String::new(),
            resource: String::new(),
            operation: String::new(),
            via_service: String::new(),
            remote_addr: remote,
            decision: "",
            code: "",
            message: String::new(),
        };
        let result = self.decide(method, key_id, authorization, body, &mut entry);
        if entry.request_id.is_empty() {
            entry.request_id = random_request_id();
        }
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code,
        };
        entry.code = code.as_str();
        entry.decision = AuditEntry::decision_of(code);
        if let Err(s) = &result {
            entry.message = s.message.clone();
        }
        if let Err(e) = self.audit.record(&entry) {
            tracing::error!(error = %e, path = %self.audit.path().display(), "cannot write the audit file");
            return error_response(&Status::new(
                Code::Unavailable,
                "The external key manager cannot write its audit file, so it answers nothing.",
            ));
        }
        match result {
            Ok(resp) => resp,
            Err(status) => error_response(&status),
        }
    }

    fn decide(
        &self,
        method: KeyMethod,
        key_id: &str,
        authorization: Option<SecretString>,
        body: &[u8],
        entry: &mut AuditEntry,
    ) -> Result<Response, Status> {
        let tokens = self.tokens.current();
        let client = authorization.as_ref().and_then(|t| tokens.authenticate(t.expose())).ok_or_else(|| {
            Status::new(
                Code::Unauthenticated,
                "Request had invalid authentication credentials: expected the bearer token of a client this external \
                 key manager accepts.",
            )
        })?;
        entry.client = client.to_string();
        if !is_valid_key_id(key_id) {
            return Err(Status::new(
                Code::InvalidArgument,
                "Invalid key ID: use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'.",
            ));
        }
        match method {
            KeyMethod::GetKey => {
                let record = self.store.get(key_id).map_err(store_status)?;
                let meta = KeyMetadata {
                    key_id: record.key_id,
                    key_spec: "AES_256".into(),
                    key_usage: vec!["WRAP".into(), "UNWRAP".into()],
                    state: record.state,
                    create_time: record.create_time,
                };
                Ok(json_response(StatusCode::OK, &meta, false))
            }
            KeyMethod::Wrap => {
                let req: WrapRequest = parse_body(body)?;
                check_context(&req.additional_context, &req.request_metadata, entry)?;
                let plaintext =
                    req.plaintext.ok_or_else(|| Status::new(Code::InvalidArgument, "plaintext is required."))?;
                if plaintext.0.len() > MAX_PLAINTEXT_BYTES {
                    return Err(Status::new(
                        Code::InvalidArgument,
                        format!("plaintext must be at most {MAX_PLAINTEXT_BYTES} bytes."),
                    ));
                }
                let aad = aad_of(req.additional_authenticated_data)?;
                let (aead, _) = self.authorize(key_id, client, &req.additional_context, &req.request_metadata)?;
                let blob = crate::blob::wrap(&aead, key_id, plaintext.0.expose(), &aad).map_err(|e| {
                    tracing::error!(error = %e, "wrap failed");
                    Status::new(Code::Internal, "Wrap failed inside the external key manager.")
                })?;
                Ok(json_response(StatusCode::OK, &WrapResponse { wrapped_blob: Bytes(blob) }, false))
            }
            KeyMethod::Unwrap => {
                let req: UnwrapRequest = parse_body(body)?;
                check_context(&req.additional_context, &req.request_metadata, entry)?;
                let blob = req
                    .wrapped_blob
                    .filter(|b| !b.0.is_empty())
                    .ok_or_else(|| Status::new(Code::InvalidArgument, "wrappedBlob is required."))?;
                if blob.0.len() > MAX_PLAINTEXT_BYTES + crate::blob::OVERHEAD {
                    return Err(unwrap_failed());
                }
                let aad = aad_of(req.additional_authenticated_data)?;
                let (aead, cache) = self.authorize(key_id, client, &req.additional_context, &req.request_metadata)?;
                let plaintext = crate::blob::unwrap(&aead, key_id, &blob.0, &aad).map_err(|e| match e {
                    CryptoError::UnknownVersion(v) => Status::new(
                        Code::InvalidArgument,
                        format!("Unwrap failed: wrapped blob format version {v} is unknown to this key manager."),
                    ),
                    _ => unwrap_failed(),
                })?;
                let resp = UnwrapResponse {
                    plaintext: SecretBytes(plaintext),
                    allowed_cache_duration: cache
                        .map(|d| ProtoDuration::from_nanos(i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))),
                };
                Ok(json_response(StatusCode::OK, &resp, true))
            }
        }
    }

    /// The key's AEAD key if the policy allows the request and the key is enabled, with the
    /// policy's cache allowance.
    fn authorize(
        &self,
        key_id: &str,
        client: &str,
        ctx: &AdditionalContext,
        meta: &RequestMetadata,
    ) -> Result<(Arc<keyhold_crypto::AeadKey>, Option<std::time::Duration>), Status> {
        let (record, aead) = self.store.key_for_use(key_id).map_err(store_status)?;
        let reason = ctx.access_reason_context.reason;
        let decision = self.policy.current().evaluate(&AccessRequest {
            key_id,
            caller: &meta.caller_principal,
            reason,
            resource: &ctx.relative_resource_name,
            client,
        });
        let cache = match decision {
            Decision::Allow { allowed_cache_duration } => allowed_cache_duration,
            Decision::Deny { why } => {
                return Err(Status::new(
                    Code::PermissionDenied,
                    format!(
                        "The external key manager denied access to key {key_id} for caller {} with reason {reason}: \
                         {why}.",
                        meta.caller_principal
                    ),
                ));
            }
        };
        match (record.state, aead) {
            (KeyState::Enabled, Some(aead)) => Ok((aead, cache)),
            (state, _) => {
                let kind = if state == KeyState::Destroyed { "KEY_DESTROYED" } else { "KEY_DISABLED" };
                Err(Status::new(
                    Code::FailedPrecondition,
                    format!("Key {key_id} is not enabled, current state is: {state}."),
                )
                .with_precondition_failure(kind, key_id, ""))
            }
        }
    }
}

fn unwrap_failed() -> Status {
    Status::new(
        Code::InvalidArgument,
        "Unwrap failed: the wrapped blob is corrupt, was wrapped by another key, or the additional authenticated data \
         differs.",
    )
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T, secret: bool) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = (status, Body::from(body)).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
            if secret {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            resp
        }
        Err(_) => error_response(&Status::new(Code::Internal, "The answer could not be encoded.")),
    }
}

/// Google's error JSON for `status`.
fn error_response(status: &Status) -> Response {
    let http = StatusCode::from_u16(status.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&status.to_body()).unwrap_or_default();
    let mut resp = (http, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    if status.code == Code::Unauthenticated {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"keyhold-ekm\""));
    }
    resp
}
