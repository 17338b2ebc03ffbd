//! The KMS side of the protocol: [`EkmClient`] wraps and unwraps through an external key
//! manager, with a bounded timeout and typed errors, and optionally an [`UnwrapCache`].
//!
//! The client never retries: a manager that is slow or down is [`EkmError::Unavailable`] within
//! the timeout, which the KMS answers as `503 UNAVAILABLE` (Google's clients retry that). A
//! manager that answers with an error is [`EkmError::Refused`] with the manager's code and
//! message. Plaintext, AAD and tokens never appear in an error or a log line.
//!
//! Managers are reached over `http://` or `https://`. Over TLS the client trusts the system's
//! roots or only a CA file, and presents a client certificate when one is configured (mutual
//! TLS, as Cloud EKM authenticates to its managers): [`EkmClient::with_tls`]. A handshake that
//! fails over certificates is [`EkmError::Tls`], with a message saying what to fix.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhold_api::resources::{AccessReason, VersionState};
use keyhold_api::status::ErrorBodyKind;
use keyhold_api::wire::{Bytes, SecretBytes};
use keyhold_api::{Code, Status};
use keyhold_crypto::{Secret, SecretString};
use serde::de::DeserializeOwned;

pub use keyhold_tls::{ClientTls, TlsError};

use crate::protocol::{
    AccessReasonContext, AdditionalContext, KeyMetadata, RequestMetadata, UnwrapRequest, UnwrapResponse, WrapRequest,
    WrapResponse, is_valid_key_id,
};

/// How long the client waits for a manager's complete answer unless told otherwise. Cloud
/// KMS's clients wait 60 s for the KMS itself and AWS KMS gives an XKS proxy 250 ms; 5 s lets a
/// manager across a WAN answer, yet fails well before the KMS's own callers give up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a manager.
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024 * 1024;
/// Longest manager error message passed on (longer ones are cut).
const MAX_MESSAGE_LEN: usize = 1024;

/// Why a call to an external key manager failed. No variant holds plaintext, AAD or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EkmError {
    /// The external key URI is not one this client can call.
    #[error("invalid external key URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A client credentials file cannot be parsed.
    #[error("invalid EKM credentials: {detail}")]
    InvalidCredentials {
        /// What is wrong (a line number, never a token).
        detail: String,
    },
    /// No token is configured for the manager at `origin`.
    #[error("no token is configured for the external key manager at {origin}")]
    NoCredentials {
        /// The manager's origin (`http://host:port`).
        origin: String,
    },
    /// The manager answered with an error: it refused (`PERMISSION_DENIED`: policy;
    /// `FAILED_PRECONDITION`: key disabled or destroyed; `UNAUTHENTICATED`: token), does not
    /// know the key (`NOT_FOUND`), or found the request invalid (`INVALID_ARGUMENT`, also when
    /// a blob does not unwrap: wrong AAD, tampered, another key).
    #[error("the external key manager refused the request ({}): {message}", code.as_str())]
    Refused {
        /// The manager's status code.
        code: Code,
        /// The manager's message (names the key, the caller and the reason for a policy
        /// refusal).
        message: String,
        /// The state of the manager's key when it refused because of it (the `KEY_<STATE>`
        /// violation of its `google.rpc.PreconditionFailure`), so that the KMS can pass it on
        /// typed to CMEK services.
        key_state: Option<VersionState>,
    },
    /// The manager could not be reached, did not answer within the timeout, or answered with
    /// a server error (5xx, 429). Retrying later may succeed; the KMS answers 503 UNAVAILABLE.
    #[error("the external key manager is unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// The TLS handshake with the manager failed over certificates: the manager's is not
    /// trusted (a CA file is needed, or the wrong one is configured), or the manager refused
    /// the client's (mutual TLS). A configuration error: trying again unchanged will not help.
    /// The KMS still answers it as unavailable (503), as an outage of the manager.
    #[error("the external key manager cannot be used: {detail}")]
    Tls {
        /// What failed and what to configure.
        detail: String,
    },
    /// The manager answered 2xx with a body that is not the expected message.
    #[error("the external key manager's answer is invalid: {detail}")]
    InvalidResponse {
        /// What is wrong with it.
        detail: String,
    },
}

impl EkmError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EkmError::Unavailable { .. })
    }
}

/// A validated external key URI: `http[s]://host[:port][/prefix]/v1/keys/{keyId}`.
///
/// `https` is reached with the client's TLS settings ([`EkmClient::with_tls`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ExternalKeyUri {
    url: String,
    origin: String,
    key_id: String,
}

impl ExternalKeyUri {
    /// Parses and normalizes `uri`.
    pub fn parse(uri: &str) -> Result<Self, EkmError> {
        let invalid = |reason: &str| EkmError::InvalidUri { uri: uri.to_string(), reason: reason.to_string() };
        let url = reqwest::Url::parse(uri).map_err(|e| invalid(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials do not belong in the URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("the URL must have no query and no fragment"));
        }
        let path = url.path();
        let Some(idx) = path.rfind("/v1/keys/") else {
            return Err(invalid("the path must end with /v1/keys/KEY_ID"));
        };
        let key_id = &path[idx + "/v1/keys/".len()..];
        if !is_valid_key_id(key_id) {
            return Err(invalid("the key ID must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'"));
        }
        Ok(Self { origin: url.origin().ascii_serialization(), key_id: key_id.to_string(), url: url.to_string() })
    }

    /// The normalized URI.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The key ID, the last path segment.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `http[s]://host:port` (the port only when it is not the scheme's default).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn verb_url(&self, verb: &str) -> String {
        format!("{}:{verb}", self.url)
    }
}

impl fmt::Display for ExternalKeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for ExternalKeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalKeyUri({})", self.url)
    }
}

/// The bearer tokens a client presents: one per manager origin, and optionally one for every
/// other manager.
#[derive(Clone, Default)]
pub struct EkmCredentials {
    default: Option<SecretString>,
    by_origin: Vec<(String, SecretString)>,
}

impl fmt::Debug for EkmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: Vec<&str> = self.by_origin.iter().map(|(o, _)| o.as_str()).collect();
        f.debug_struct("EkmCredentials").field("default", &self.default.is_some()).field("origins", &origins).finish()
    }
}

impl EkmCredentials {
    /// One token for every manager.
    pub fn single(token: SecretString) -> Self {
        Self { default: Some(token), by_origin: Vec::new() }
    }

    /// Adds (or replaces) the token for the manager at `origin` (`http://host:port`, or any URL
    /// on that origin).
    pub fn with_origin(mut self, origin: &str, token: SecretString) -> Result<Self, EkmError> {
        let url = reqwest::Url::parse(origin)
            .map_err(|e| EkmError::InvalidUri { uri: origin.to_string(), reason: format!("not a URL ({e})") })?;
        let origin = url.origin().ascii_serialization();
        self.by_origin.retain(|(o, _)| *o != origin);
        self.by_origin.push((origin, token));
        Ok(self)
    }

    /// Parses a client credentials file: one `ORIGIN TOKEN` a line (`http://ekm.example:9090
    /// 3f0c...`), or a lone `TOKEN` for every other manager; `#` comments and blank lines are
    /// ignored. Errors name line numbers, never tokens.
    pub fn parse(text: &[u8]) -> Result<Self, EkmError> {
        let bad = |n: usize, what: &str| EkmError::InvalidCredentials { detail: format!("line {n}: {what}") };
        let text = std::str::from_utf8(text)
            .map_err(|_| EkmError::InvalidCredentials { detail: "the file is not UTF-8 text".into() })?;
        let mut creds = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [token] => {
                    if creds.default.is_some() {
                        return Err(bad(i + 1, "a second token for every manager"));
                    }
                    creds.default = Some(SecretString::new((*token).to_string()));
                }
                [origin, token] => {
                    creds = creds
                        .with_origin(origin, SecretString::new((*token).to_string()))
                        .map_err(|_| bad(i + 1, "the first field is not a URL"))?;
                }
                _ => return Err(bad(i + 1, "expected ORIGIN TOKEN or TOKEN")),
            }
        }
        Ok(creds)
    }

    fn token_for(&self, uri: &ExternalKeyUri) -> Option<&SecretString> {
        self.by_origin.iter().find(|(o, _)| o == uri.origin()).map(|(_, t)| t).or(self.default.as_ref())
    }
}

/// Who asks, why, and for which KMS resource: sent with every wrap and unwrap, logged by the
/// manager and judged by its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The crypto key version the call serves
    /// (`projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`).
    pub key_version_name: String,
    /// The principal who called the KMS (`user:alice@example.com`).
    pub caller_principal: String,
    /// The Key Access Justification reason.
    pub reason: AccessReason,
    /// The KMS's request ID, for correlating the two audit logs.
    pub request_id: String,
    /// The KMS method (`Encrypt`, `Decrypt`, ...).
    pub operation: String,
    /// The service the caller acted through, or empty.
    pub via_service: String,
}

impl RequestContext {
    fn wire(&self) -> (AdditionalContext, RequestMetadata) {
        (
            AdditionalContext {
                relative_resource_name: self.key_version_name.clone(),
                access_reason_context: AccessReasonContext { reason: self.reason },
            },
            RequestMetadata {
                request_id: self.request_id.clone(),
                caller_principal: self.caller_principal.clone(),
                operation: self.operation.clone(),
                via_service: self.via_service.clone(),
            },
        )
    }
}

/// The result of an unwrap.
#[derive(Debug)]
pub struct Unwrapped {
    /// The unwrapped bytes (wiped on drop).
    pub plaintext: Secret,
    /// How long the manager allows this result to be cached (for a cached result: how long
    /// is left). `None`: not at all.
    pub allowed_cache_duration: Option<Duration>,
    /// Whether the result came from the [`UnwrapCache`] rather than the manager.
    pub from_cache: bool,
}

/// A client of external key managers.
#[derive(Clone, Debug)]
pub struct EkmClient {
    http: reqwest::Client,
    credentials: Arc<EkmCredentials>,
    timeout: Duration,
    cache: Option<Arc<UnwrapCache>>,
}

impl EkmClient {
    /// A client with the [`DEFAULT_TIMEOUT`].
    pub fn new(credentials: EkmCredentials) -> Self {
        Self::with_timeout(credentials, DEFAULT_TIMEOUT)
    }

    /// A client that gives up on a manager after `timeout` (connecting, sending and reading
    /// the whole answer).
    ///
    /// `https` managers are trusted through the system's roots; if there are none, only plain
    /// `http` managers can be reached (use [`EkmClient::with_tls`] and a CA file).
    pub fn with_timeout(credentials: EkmCredentials, timeout: Duration) -> Self {
        let http = http_client(&ClientTls::default(), timeout).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no system root certificates: https managers need a CA file");
            http_client_for_plain_http(timeout)
        });
        Self { http, credentials: Arc::new(credentials), timeout, cache: None }
    }

    /// A client that reaches `https` managers with `tls`: trust only the certificates of its CA
    /// file (else the system's roots) and present its client certificate (mutual TLS, as Cloud
    /// EKM does). Plain `http` managers keep working. Fails if a file cannot be read or the
    /// key does not match the certificate.
    pub fn with_tls(credentials: EkmCredentials, timeout: Duration, tls: &ClientTls) -> Result<Self, TlsError> {
        let http = http_client(tls, timeout)?;
        Ok(Self { http, credentials: Arc::new(credentials), timeout, cache: None })
    }

    /// Serves repeated unwraps from `cache` for as long as the manager allowed
    /// (`allowedCacheDuration`). The KMS must still apply its own checks (IAM, key state, Key
    /// Access Justifications policy) before each call, cached or not.
    pub fn with_unwrap_cache(mut self, cache: Arc<UnwrapCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Wraps `plaintext` (bound to `aad`) with the key at `key_uri`; returns the wrapped blob.
    pub async fn wrap(
        &self,
        key_uri: &str,
        plaintext: &[u8],
        aad: &[u8],
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, EkmError> {
        let uri = ExternalKeyUri::parse(key_uri)?;
        let (additional_context, request_metadata) = ctx.wire();
        let body = WrapRequest {
            plaintext: Some(SecretBytes(Secret::new(plaintext.to_vec()))),
            additional_authenticated_data: (!aad.is_empty()).then(|| Bytes(aad.to_vec())),
            additional_context,
            request_metadata,
        };
        let resp: WrapResponse = self.post(&uri, "wrap", &body).await?;
        if resp.wrapped_blob.0.is_empty() {
            return Err(EkmError::InvalidResponse { detail: "empty wrappedBlob".into() });
        }
        Ok(resp.wrapped_blob.0)
    }

    /// Unwraps `wrapped_blob` (made with the same `aad`) with the key at `key_uri`, from the
    /// cache if one is configured and holds this exact request.
    pub async fn unwrap(
        &self,
        key_uri: &str,
        wrapped_blob: &[u8],
        aad: &[u8],
        ctx: &RequestContext,
    ) -> Result<Unwrapped, EkmError> {
        let uri = ExternalKeyUri::parse(key_uri)?;
        let cache_key = self.cache.as_ref().map(|_| UnwrapCache::key(&uri, wrapped_blob, aad, ctx));
        if let (Some(cache), Some(k)) = (&self.cache, &cache_key)
            && let Some((plaintext, left)) = cache.get(k)
        {
            return Ok(Unwrapped { plaintext, allowed_cache_duration: Some(left), from_cache: true });
        }
        let (additional_context, request_metadata) = ctx.wire();
        let body = UnwrapRequest {
            wrapped_blob: Some(Bytes(wrapped_blob.to_vec())),
            additional_authenticated_data: (!aad.is_empty()).then(|| Bytes(aad.to_vec())),
            additional_context,
            request_metadata,
        };
        let resp: UnwrapResponse = self.post(&uri, "unwrap", &body).await?;
        let allowed = resp
            .allowed_cache_duration
            .filter(|d| d.as_nanos() > 0)
            .map(|d| d.to_std().min(crate::protocol::MAX_ALLOWED_CACHE_DURATION));
        if let (Some(cache), Some(k), Some(ttl)) = (&self.cache, cache_key, allowed) {
            cache.insert(k, &uri, &resp.plaintext.0, ttl);
        }
        Ok(Unwrapped { plaintext: resp.plaintext.0, allowed_cache_duration: allowed, from_cache: false })
    }

    /// The key's metadata (`GET {keyUri}`): checks that the URI names a key the manager holds,
    /// that the token is accepted, and the key's state.
    pub async fn key_metadata(&self, key_uri: &str) -> Result<KeyMetadata, EkmError> {
        let uri = ExternalKeyUri::parse(key_uri)?;
        let req = self.http.get(uri.as_str()).bearer_auth(self.token(&uri)?.expose());
        self.exchange(req).await
    }

    fn token(&self, uri: &ExternalKeyUri) -> Result<&SecretString, EkmError> {
        self.credentials.token_for(uri).ok_or_else(|| EkmError::NoCredentials { origin: uri.origin().to_string() })
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        uri: &ExternalKeyUri,
        verb: &str,
        body: &B,
    ) -> Result<T, EkmError> {
        let token = self.token(uri)?;
        // The encoded body holds the plaintext in base64; it is handed to the HTTP stack as is.
        // Cannot fail in practice: the messages hold only strings, bytes and enums.
        let json = serde_json::to_vec(body)
            .map_err(|e| EkmError::InvalidResponse { detail: format!("the request cannot be encoded: {e}") })?;
        let req = self
            .http
            .post(uri.verb_url(verb))
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json);
        self.exchange(req).await
    }

    /// Sends `req` and decodes the answer, all within the timeout.
    async fn exchange<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, EkmError> {
        let started = Instant::now();
        let exchange = async {
            let resp = req.send().await.map_err(|e| unavailable(&e))?;
            let status = resp.status();
            let body = read_capped(resp).await?;
            Ok::<_, EkmError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| EkmError::Unavailable { detail: format!("no answer within {:?}", self.timeout) })??;
        tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "EKM call");
        if status.is_success() {
            return serde_json::from_slice(body.expose())
                .map_err(|e| EkmError::InvalidResponse { detail: format!("HTTP {status}: {e}") });
        }
        Err(error_of(status.as_u16(), body.expose()))
    }
}

/// The HTTP client: Keyhold's TLS stack (`keyhold-tls`) with `tls`, ALPN for HTTP/2 and 1.1.
fn http_client(tls: &ClientTls, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    let mut config = tls.config()?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    build(reqwest::Client::builder().tls_backend_preconfigured(config), timeout)
}

/// A client for `http` managers only (every TLS handshake fails: no root is trusted).
fn http_client_for_plain_http(timeout: Duration) -> reqwest::Client {
    let config = ClientTls::default().config_for("http://").expect("a configuration without roots always builds");
    build(reqwest::Client::builder().tls_backend_preconfigured(config), timeout)
        .expect("an HTTP client without TLS settings always builds")
}

fn build(builder: reqwest::ClientBuilder, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    builder
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| TlsError::Config(format!("the HTTP client cannot be set up: {e}")))
}

fn unavailable(e: &reqwest::Error) -> EkmError {
    if let Some(tls) = keyhold_tls::diagnose(e)
        && tls.is_configuration()
    {
        let hint = match tls {
            keyhold_tls::TlsFailure::ServerNotTrusted(_) => {
                "give the manager's CA certificate (--ekm-ca-file) or check the manager's certificate"
            }
            _ => {
                "give the client certificate and key the manager trusts (--ekm-client-cert-file, --ekm-client-key-file)"
            }
        };
        return EkmError::Tls { detail: format!("{tls}; {hint}") };
    }
    // TLS 1.3: a manager that refuses the client's certificate does so after the client's
    // handshake, and its alert may be lost in the race with sending the request.
    let closed_after_handshake =
        e.url().is_some_and(|u| u.scheme() == "https") && e.is_request() && !e.is_connect() && !e.is_timeout();
    // The whole chain: "error sending request ... : client error (Connect): ... Connection refused".
    let mut detail = if e.is_timeout() { format!("timed out: {e}") } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if closed_after_handshake {
        detail.push_str(
            "; the manager closed the TLS connection without answering: if it requires mutual TLS, give the client \
             certificate and key it trusts (--ekm-client-cert-file, --ekm-client-key-file)",
        );
    }
    EkmError::Unavailable { detail }
}

/// Reads the body, at most [`MAX_RESPONSE_BODY_BYTES`], into memory that is wiped on drop.
async fn read_capped(mut resp: reqwest::Response) -> Result<Secret, EkmError> {
    let hint = resp.content_length().unwrap_or(0).min(MAX_RESPONSE_BODY_BYTES as u64) as usize;
    let mut buf = Vec::with_capacity(hint);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_RESPONSE_BODY_BYTES {
                    let _ = Secret::new(buf);
                    return Err(EkmError::InvalidResponse {
                        detail: format!("answer larger than {MAX_RESPONSE_BODY_BYTES} bytes"),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Secret::new(buf)),
            Err(e) => {
                let _ = Secret::new(buf);
                return Err(unavailable(&e));
            }
        }
    }
}

/// The error an error answer stands for.
fn error_of(http: u16, body: &[u8]) -> EkmError {
    // The one decoder of error answers (`keyhold-api`). Only a message the manager put in an
    // error JSON is shown; a foreign body (a proxy's page) is not quoted.
    let (decoded, kind) = Status::decode_http(http, body);
    let code = decoded.code;
    let message = match kind {
        ErrorBodyKind::Google | ErrorBodyKind::MessageOnly => decoded.message.clone(),
        ErrorBodyKind::Foreign => String::new(),
    };
    // The manager is another party: its text is bounded and stripped of control characters.
    let mut message: String = message.chars().filter(|c| !c.is_control()).take(MAX_MESSAGE_LEN).collect();
    if message.is_empty() {
        message = format!("the manager answered HTTP {http}");
    }
    let transient = http >= 500
        || http == 429
        || matches!(
            code,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal | Code::Unknown
        );
    if transient {
        EkmError::Unavailable { detail: format!("HTTP {http} {}: {message}", code.as_str()) }
    } else {
        let key_state = decoded
            .precondition_failure_types()
            .into_iter()
            .find_map(|t| t.strip_prefix("KEY_").and_then(VersionState::from_name));
        EkmError::Refused { code, message, key_state }
    }
}

/// Unwrapped results the manager allowed to be cached (`allowedCacheDuration`), opt-in via
/// [`EkmClient::with_unwrap_cache`].
///
/// An entry is found only for the very request the manager approved: same key URI, wrapped
/// blob, AAD, caller principal, reason and KMS resource (the key is a SHA-256 over all of
/// them). It lives for the manager's allowance capped by the cache's own `max_ttl`. The cache
/// holds at most `max_entries` plaintexts (the soonest to expire are evicted first); they sit
/// in memory that is wiped when evicted, expired or cleared. Drop a key's entries with
/// [`UnwrapCache::invalidate_key`] when its version is disabled or destroyed in the KMS.
pub struct UnwrapCache {
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
    max_entries: usize,
    max_ttl: Duration,
}

struct CacheEntry {
    plaintext: Secret,
    expires_at: Instant,
    key_uri: String,
}

impl fmt::Debug for UnwrapCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapCache")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl UnwrapCache {
    /// A cache of at most `max_entries` results, each kept at most `max_ttl`.
    pub fn new(max_entries: usize, max_ttl: Duration) -> Self {
        Self { entries: Mutex::new(HashMap::new()), max_entries, max_ttl }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CacheEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries not yet expired.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let mut m = self.lock();
        m.retain(|_, e| e.expires_at > now);
        m.len()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Drops the entries of the key at `key_uri`.
    pub fn invalidate_key(&self, key_uri: &str) {
        let uri = ExternalKeyUri::parse(key_uri).map(|u| u.url).unwrap_or_else(|_| key_uri.to_string());
        self.lock().retain(|_, e| e.key_uri != uri);
    }

    fn key(uri: &ExternalKeyUri, blob: &[u8], aad: &[u8], ctx: &RequestContext) -> [u8; 32] {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"keyhold-ekm/unwrap-cache/v1");
        for part in [
            uri.as_str().as_bytes(),
            blob,
            aad,
            ctx.caller_principal.as_bytes(),
            ctx.reason.as_str().as_bytes(),
            ctx.key_version_name.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        out
    }

    fn get(&self, k: &[u8; 32]) -> Option<(Secret, Duration)> {
        let now = Instant::now();
        let mut m = self.lock();
        match m.get(k) {
            Some(e) if e.expires_at > now => Some((e.plaintext.clone(), e.expires_at - now)),
            Some(_) => {
                m.remove(k);
                None
            }
            None => None,
        }
    }

    fn insert(&self, k: [u8; 32], uri: &ExternalKeyUri, plaintext: &Secret, ttl: Duration) {
        let ttl = ttl.min(self.max_ttl);
        if self.max_entries == 0 || ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= self.max_entries && !m.contains_key(&k) {
            m.retain(|_, e| e.expires_at > now);
            while m.len() >= self.max_entries {
                let Some(soonest) = m.iter().min_by_key(|(_, e)| e.expires_at).map(|(k, _)| *k) else { break };
                m.remove(&soonest);
            }
        }
        m.insert(k, CacheEntry { plaintext: plaintext.clone(), expires_at: now + ttl, key_uri: uri.url.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = ExternalKeyUri::parse("http://127.0.0.1:9090/v1/keys/k-1").unwrap();
        assert_eq!((u.key_id(), u.origin()), ("k-1", "http://127.0.0.1:9090"));
        assert_eq!(u.verb_url("wrap"), "http://127.0.0.1:9090/v1/keys/k-1:wrap");
        let u = ExternalKeyUri::parse("http://EKM.example:80/tenant-a/v1/keys/abc").unwrap();
        assert_eq!(u.as_str(), "http://ekm.example/tenant-a/v1/keys/abc");
        assert_eq!(u.origin(), "http://ekm.example");
        let u = ExternalKeyUri::parse("https://ekm.example:443/v1/keys/k").unwrap();
        assert_eq!((u.as_str(), u.origin()), ("https://ekm.example/v1/keys/k", "https://ekm.example"));
        for bad in [
            "",
            "not a url",
            "ftp://ekm.example/v1/keys/k",
            "http://ekm.example/v1/keys/",
            "http://ekm.example/v1/keys/a:b",
            "http://ekm.example/v1/key/k",
            "http://ekm.example/v1/keys/k?x=1",
            "http://ekm.example/v1/keys/k#f",
            "http://user:pw@ekm.example/v1/keys/k",
            "http://ekm.example/v1/keys/k/extra",
        ] {
            assert!(matches!(ExternalKeyUri::parse(bad), Err(EkmError::InvalidUri { .. })), "{bad}");
        }
    }

    #[test]
    fn credentials() {
        let c =
            EkmCredentials::parse(b"# c\nhttp://a.example:9090 tokenA-0123456789abcdef\ndefault-token-0123456789\n")
                .unwrap();
        let a = ExternalKeyUri::parse("http://a.example:9090/v1/keys/k").unwrap();
        let b = ExternalKeyUri::parse("http://b.example:9090/v1/keys/k").unwrap();
        assert_eq!(c.token_for(&a).unwrap().expose(), "tokenA-0123456789abcdef");
        assert_eq!(c.token_for(&b).unwrap().expose(), "default-token-0123456789");
        assert!(!format!("{c:?}").contains("token-0123"));
        let only_a =
            EkmCredentials::default().with_origin("http://a.example:9090", SecretString::new("t".into())).unwrap();
        assert!(only_a.token_for(&b).is_none());
        let e = EkmCredentials::parse(b"a b c-secret-secret").err().unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn error_mapping() {
        let body = br#"{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}"#;
        assert_eq!(
            error_of(403, body),
            EkmError::Refused { code: Code::PermissionDenied, message: "denied".into(), key_state: None }
        );
        let disabled = Status::new(Code::FailedPrecondition, "Key k is not enabled.")
            .with_precondition_failure("KEY_DISABLED", "k", "")
            .to_body();
        let EkmError::Refused { key_state, .. } = error_of(400, &serde_json::to_vec(&disabled).unwrap()) else {
            panic!()
        };
        assert_eq!(key_state, Some(VersionState::Disabled), "the state comes from the details, typed");
        assert!(matches!(error_of(503, b"<html>"), EkmError::Unavailable { .. }));
        assert!(matches!(error_of(500, b""), EkmError::Unavailable { .. }));
        assert!(matches!(error_of(429, b""), EkmError::Unavailable { .. }));
        assert_eq!(
            error_of(404, b"nope"),
            EkmError::Refused {
                code: Code::NotFound,
                message: "the manager answered HTTP 404".into(),
                key_state: None
            }
        );
        let evil = format!(r#"{{"error": {{"message": "a\nb{}", "status": "INVALID_ARGUMENT"}}}}"#, "x".repeat(5000));
        let EkmError::Refused { message, .. } = error_of(400, evil.as_bytes()) else { panic!() };
        assert!(message.len() <= MAX_MESSAGE_LEN && !message.contains('\n'));
    }

    fn ctx(caller: &str) -> RequestContext {
        RequestContext {
            key_version_name: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into(),
            caller_principal: caller.into(),
            reason: AccessReason::CustomerInitiatedAccess,
            request_id: "r".into(),
            operation: "Decrypt".into(),
            via_service: String::new(),
        }
    }

    #[test]
    fn cache_bounds_and_keys() {
        let uri = ExternalKeyUri::parse("http://h/v1/keys/k").unwrap();
        let cache = UnwrapCache::new(2, Duration::from_secs(60));
        let k1 = UnwrapCache::key(&uri, b"blob1", b"", &ctx("user:a"));
        assert_ne!(k1, UnwrapCache::key(&uri, b"blob1", b"", &ctx("user:b")), "the caller is part of the key");
        assert_ne!(k1, UnwrapCache::key(&uri, b"blob1", b"x", &ctx("user:a")), "the AAD is part of the key");
        cache.insert(k1, &uri, &Secret::new(b"one".to_vec()), Duration::from_secs(30));
        let (pt, left) = cache.get(&k1).unwrap();
        assert_eq!(pt.expose(), b"one");
        assert!(left <= Duration::from_secs(30));
        let k2 = UnwrapCache::key(&uri, b"blob2", b"", &ctx("user:a"));
        let k3 = UnwrapCache::key(&uri, b"blob3", b"", &ctx("user:a"));
        cache.insert(k2, &uri, &Secret::new(b"two".to_vec()), Duration::from_secs(10));
        cache.insert(k3, &uri, &Secret::new(b"three".to_vec()), Duration::from_secs(3600));
        assert_eq!(cache.len(), 2, "bounded");
        assert!(cache.get(&k2).is_none(), "the soonest to expire was evicted");
        let left = cache.get(&k3).unwrap().1;
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50), "capped by max_ttl: {left:?}");
        cache.invalidate_key("http://h/v1/keys/k");
        assert!(cache.is_empty());
        let k4 = UnwrapCache::key(&uri, b"blob4", b"", &ctx("user:a"));
        cache.insert(k4, &uri, &Secret::new(b"4".to_vec()), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&k4).is_none(), "expired");
    }
}
