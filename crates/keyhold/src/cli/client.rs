//! A thin HTTP client for the Cloud KMS v1 REST API a Keyhold server serves.
//!
//! Responses are read whole and, because a `:decrypt` answer carries plaintext, kept in a
//! [`Secret`] (wiped when dropped) until they are parsed. Nothing from a successful response
//! body ever appears in an error message.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use keyhold_api::Status;
use keyhold_api::status::ErrorBodyKind;
use keyhold_crypto::Secret;

use super::CliError;
use super::credentials::Credentials;

/// What a list request asks for, beyond its parent.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `pageSize` sent with each request (the server's default if unset).
    pub page_size: Option<u32>,
    /// Cloud KMS `filter`.
    pub filter: Option<String>,
    /// Cloud KMS `orderBy`.
    pub order_by: Option<String>,
    /// Stop after this many resources.
    pub limit: Option<usize>,
}

/// The client: an endpoint, a connection pool and the bearer token, if one was found.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    /// The TLS configuration of `http` (for the streaming client of object data).
    tls: keyhold_tls::rustls::ClientConfig,
    /// The endpoint as given, without a trailing `/`.
    endpoint: String,
    /// The token sent with every request and where it came from (its `Debug` is redacted).
    credentials: Credentials,
}

/// Parses and checks `--endpoint`.
pub fn endpoint_url(endpoint: &str) -> Result<Url, CliError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let url = Url::parse(endpoint).map_err(|e| {
        CliError::Usage(format!("invalid --endpoint \"{endpoint}\": {e}; expected e.g. http://127.0.0.1:8080"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(CliError::Usage(format!(
            "invalid --endpoint \"{endpoint}\": expected an http:// or https:// URL such as http://127.0.0.1:8080"
        )));
    }
    Ok(url)
}

impl ApiClient {
    /// A client for the server at `endpoint` (`http://127.0.0.1:8080`) that sends no token.
    #[cfg(test)]
    pub fn new(endpoint: &str) -> Result<Self, CliError> {
        Self::with_credentials(endpoint, Credentials::none())
    }

    /// A client for the server at `endpoint` that authenticates with `credentials`.
    #[cfg(test)]
    pub fn with_credentials(endpoint: &str, credentials: Credentials) -> Result<Self, CliError> {
        Self::with_tls(endpoint, credentials, &keyhold_tls::ClientTls::default())
    }

    /// A client for the server at `endpoint` that authenticates with `credentials` and, for an
    /// `https://` endpoint, trusts and presents what `tls` says.
    pub fn with_tls(endpoint: &str, credentials: Credentials, tls: &keyhold_tls::ClientTls) -> Result<Self, CliError> {
        endpoint_url(endpoint)?;
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        let config = keyhold_tls_config(&endpoint, tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config.clone())
            .user_agent(concat!("keyhold-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, tls: config, endpoint, credentials })
    }

    /// The TLS configuration of the client.
    pub fn tls(&self) -> &keyhold_tls::rustls::ClientConfig {
        &self.tls
    }

    /// The URL of `/v1/{path}`: what `--uri` prints.
    pub fn resource_url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.endpoint, path)
    }

    #[cfg(test)]
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, CliError> {
        self.versioned_url("v1", path, query)
    }

    fn versioned_url(&self, version: &str, path: &str, query: &[(&str, String)]) -> Result<Url, CliError> {
        let mut url = Url::parse(&format!("{}/{version}/{path}", self.endpoint))
            .map_err(|e| CliError::Usage(format!("invalid request URL for {path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one request to `/v1/{path}` and parses the JSON answer as `T`; non-2xx answers
    /// become [`CliError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, CliError> {
        self.call_versioned("v1", method, path, query, body).await
    }

    /// Sends one request to `/{version}/{path}` (`v1beta1` for Service Usage).
    pub async fn call_versioned<T: DeserializeOwned>(
        &self,
        version: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, CliError> {
        let mut req =
            self.http.request(method, self.versioned_url(version, path, query)?).header(ACCEPT, "application/json");
        if let Some(token) = self.credentials.token() {
            // reqwest marks the header sensitive: it is left out of its debug output.
            req = req.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        let bytes = Secret::new(Vec::from(bytes));
        if !status.is_success() {
            return Err(api_error(status, bytes.expose(), &self.credentials));
        }
        serde_json::from_slice(bytes.expose()).map_err(|e| {
            // The serde message could quote the body, which may hold plaintext: report only
            // where parsing failed.
            CliError::Other(format!(
                "the server at {} sent a response that could not be parsed ({:?} error at line {}, column {})",
                self.endpoint,
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// `GET /v1/{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, &[], None).await
    }

    /// `POST /v1/{path}` with a JSON body.
    pub async fn post(&self, path: &str, query: &[(&str, String)], body: &Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, query, Some(body.to_string().into_bytes())).await
    }

    /// `DELETE /v1/{path}`.
    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, &[], None).await
    }

    /// `PATCH /v1/{path}` with a JSON body.
    pub async fn patch(&self, path: &str, query: &[(&str, String)], body: &Value) -> Result<Value, CliError> {
        self.call(Method::PATCH, path, query, Some(body.to_string().into_bytes())).await
    }

    /// Lists a collection (`projects/p/locations/l/keyRings`), following `nextPageToken` until
    /// the last page or `limit`; `field` names the array in each page (`keyRings`).
    pub async fn list(&self, collection: &str, field: &str, opts: &ListOptions) -> Result<Vec<Value>, CliError> {
        self.list_versioned("v1", collection, field, &[], opts).await
    }

    /// [`ApiClient::list`] below `/{version}/`, sending `extra` with every page.
    pub async fn list_versioned(
        &self,
        version: &str,
        collection: &str,
        field: &str,
        extra: &[(&'static str, String)],
        opts: &ListOptions,
    ) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let mut query: Vec<(&str, String)> = extra.to_vec();
            if let Some(n) = opts.page_size {
                query.push(("pageSize", n.to_string()));
            }
            if let Some(f) = opts.filter.as_deref().filter(|f| !f.is_empty()) {
                query.push(("filter", f.to_string()));
            }
            if let Some(o) = &opts.order_by {
                query.push(("orderBy", o.clone()));
            }
            if !token.is_empty() {
                query.push(("pageToken", token.clone()));
            }
            let page: Value = self.call_versioned(version, Method::GET, collection, &query, None).await?;
            if let Some(Value::Array(a)) = page.get(field) {
                items.extend(a.iter().cloned());
            }
            if let Some(limit) = opts.limit
                && items.len() >= limit
            {
                items.truncate(limit);
                break;
            }
            let next = page.get("nextPageToken").and_then(Value::as_str).unwrap_or_default();
            if next.is_empty() || next == token {
                break;
            }
            token = next.to_string();
        }
        Ok(items)
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        // The innermost cause is the useful part ("Connection refused (os error 111)").
        let mut source: &dyn std::error::Error = e;
        while let Some(next) = source.source() {
            source = next;
        }
        if let Some(failure) = tls_failure(e) {
            return CliError::Tls { endpoint: self.endpoint.clone(), failure };
        }
        let detail = if e.is_timeout() { "the request timed out".to_string() } else { source.to_string() };
        CliError::Connect { endpoint: self.endpoint.clone(), detail }
    }
}

/// The TLS failure behind a request's error, if it was one: a certificate the CLI does not
/// trust, or the server refusing the handshake. With TLS 1.3 a server refuses a client
/// certificate (or its absence) after the client's handshake, and its alert may be lost in the
/// race with sending the request: an https connection closed without an answer counts as that.
pub(super) fn tls_failure(e: &reqwest::Error) -> Option<keyhold_tls::TlsFailure> {
    match keyhold_tls::diagnose(e) {
        Some(f) if f.is_configuration() => Some(f),
        Some(_) => None,
        None => keyhold_cmek::rest::closed_after_tls_handshake(e).then(|| {
            keyhold_tls::TlsFailure::Refused("the server closed the connection right after the handshake".into())
        }),
    }
}

/// The TLS configuration of the CLI's clients of `endpoint` (ALPN: HTTP/2, else HTTP/1.1).
fn keyhold_tls_config(
    endpoint: &str,
    tls: &keyhold_tls::ClientTls,
) -> Result<keyhold_tls::rustls::ClientConfig, CliError> {
    let mut config = tls.config_for(endpoint).map_err(|e| match e {
        keyhold_tls::TlsError::NoRoots => CliError::Usage(format!(
            "cannot reach {endpoint}: this system has no trusted root certificates; give the server's CA certificate with \
             --ca-file PATH (or KEYHOLD_CA_FILE)"
        )),
        other => CliError::Usage(format!("TLS settings (--ca-file, --client-cert-file, --client-key-file): {other}")),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The error for a non-2xx answer, for every request of the CLI (JSON calls and object data):
/// the `google.rpc.Status` in the body, or the HTTP status and the start of the body when it is
/// not one, both decoded by `keyhold-api`'s one decoder. A 401 adds where the token came from.
pub(super) fn api_error(status: StatusCode, body: &[u8], credentials: &Credentials) -> CliError {
    let (decoded, kind) = Status::decode_http(status.as_u16(), body);
    let foreign_http_status = (kind != ErrorBodyKind::Google).then_some(status.as_u16());
    let mut message = decoded.message;
    if status == StatusCode::UNAUTHORIZED {
        message.push('\n');
        message.push_str(&credentials.unauthenticated_hint());
    }
    CliError::Api { code: decoded.code, foreign_http_status, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_api::Code;

    #[test]
    fn google_errors_are_parsed() {
        let body = br#"{"error":{"code":409,"message":"KeyRing r already exists.","status":"ALREADY_EXISTS"}}"#;
        let none = Credentials::none();
        assert_eq!(
            api_error(StatusCode::CONFLICT, body, &none).to_string(),
            "ALREADY_EXISTS: KeyRing r already exists."
        );
        assert!(matches!(
            api_error(StatusCode::CONFLICT, body, &none),
            CliError::Api { code: Code::AlreadyExists, .. }
        ));
        assert_eq!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>\n bad   gateway</html>", &none).to_string(),
            "HTTP 502: <html> bad gateway</html>"
        );
        assert!(matches!(
            api_error(StatusCode::BAD_GATEWAY, b"<html></html>", &none),
            CliError::Api { code: Code::Unavailable, foreign_http_status: Some(502), .. }
        ));
        assert_eq!(api_error(StatusCode::NOT_FOUND, b"", &none).to_string(), "HTTP 404: Not Found");
        let no_status = br#"{"error":{"code":409,"message":"busy","status":""}}"#;
        assert_eq!(api_error(StatusCode::CONFLICT, no_status, &none).to_string(), "HTTP 409: busy");
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(ApiClient::new("http://127.0.0.1:8080/").is_ok());
        assert_eq!(
            ApiClient::new("http://h:1/").map(|c| c.resource_url("projects/p")).ok().as_deref(),
            Some("http://h:1/v1/projects/p")
        );
        assert!(ApiClient::new("127.0.0.1:8080").is_err());
        assert!(ApiClient::new("ftp://x").is_err());
        let c = ApiClient::new("http://h:1").unwrap();
        let u =
            c.url("projects/p/locations/l/keyRings", &[("keyRingId", "r".into()), ("filter", "a = b".into())]).unwrap();
        assert_eq!(u.as_str(), "http://h:1/v1/projects/p/locations/l/keyRings?keyRingId=r&filter=a+%3D+b");
    }

    #[test]
    fn server_errors() {
        use reqwest::StatusCode;
        let body = br#"{"error":{"code":400,"message":"Instance i is suspended.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, body, &Credentials::none()).to_string(),
            "FAILED_PRECONDITION: Instance i is suspended."
        );
        assert_eq!(api_error(StatusCode::BAD_GATEWAY, b"", &Credentials::none()).to_string(), "HTTP 502: Bad Gateway");
    }
}
