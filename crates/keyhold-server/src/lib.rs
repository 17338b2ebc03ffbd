//! The HTTP face of Keyhold: the Cloud KMS v1 REST surface on axum.
//!
//! Cloud KMS puts custom verbs after a colon in the last path segment
//! (`.../cryptoKeys/k:encrypt`), which axum's router cannot match, so everything under `/v1/`
//! goes to one handler that parses the resource path itself ([`route`]) and dispatches. Errors
//! from every crate become Google's error JSON in one place ([`error::ApiError`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod front;
pub mod host;
mod kms_routes;
pub mod listener;
pub mod methods;
pub mod route;
mod store_routes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use keyhold_kms::Kms;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The KMS.
    pub kms: Arc<Kms>,
    /// The store, when this server runs it.
    pub store: Option<Arc<keyhold_store::Store>>,
}

impl AppState {
    /// The store, or `UNIMPLEMENTED` when this server does not run it.
    pub fn store(&self) -> Result<&Arc<keyhold_store::Store>, error::ApiError> {
        self.store.as_ref().ok_or_else(|| {
            error::ApiError::new(keyhold_api::Code::Unimplemented, "This server does not run the store.")
        })
    }
}

/// Header carrying the request ID (taken from the client if it sent one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone, Default)]
struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:x}", self.prefix)).ok().map(RequestId::new)
    }
}

/// The application router: the REST surface.
pub fn app(state: AppState) -> Router {
    app_with(state, None)
}

/// The application router, with a gRPC front end beside REST on the same port: a request
/// whose `content-type` is `application/grpc…` goes to `grpc` (`keyhold-grpc`), every other
/// request to REST. Both share the request IDs and the request log.
pub fn app_with(state: AppState, grpc: Option<Router>) -> Router {
    let mut prefix = [0u8; 4];
    let _ = keyhold_crypto::random_bytes(&mut prefix);
    let ids = RequestIds { prefix: u32::from_be_bytes(prefix), next: Arc::default() };
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    let rest = Router::new()
        .route("/healthz", get(health))
        .route("/v1/projects/{project}/locations/{location}/instances", any(store_routes::instances))
        .route("/v1/projects/{project}/locations/{location}/instances:restore", any(store_routes::restore))
        .route("/v1/projects/{project}/locations/{location}/instances:import", any(store_routes::import))
        .route("/v1/projects/{project}/locations/{location}/instances/{instance}", any(store_routes::instance))
        .route("/v1/projects/{project}/locations/{location}/instances/{instance}/backups", any(store_routes::backups))
        .route(
            "/v1/projects/{project}/locations/{location}/instances/{instance}/backups/{backup}",
            any(store_routes::backup),
        )
        .route("/v1/projects/{project}/locations/{location}/instances/{instance}/objects", any(store_routes::objects))
        .route(
            "/v1/projects/{project}/locations/{location}/instances/{instance}/objects/{*object}",
            any(store_routes::object),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}/protectedResourcesSummary",
            get(store_routes::protected_resources_summary),
        )
        .route("/v1/projects/{project}/locations/{location}/operations", any(store_routes::operations))
        .route("/v1/projects/{project}/locations/{location}/operations/{operation}", any(store_routes::operation))
        .route("/v1/projects/{project}/protectedResources:search", get(store_routes::search_protected_resources))
        .route("/v1/projects/{project}/exports:reconcile", any(store_routes::reconcile_exports))
        .route("/v2/projects/{project}/policies", any(store_routes::org_policies))
        .route("/v2/projects/{project}/policies/{constraint}", any(store_routes::org_policy))
        .route("/v1/{*path}", any(kms_routes::dispatch))
        .route("/v1beta1/{*path}", any(kms_routes::dispatch_v1beta1))
        .fallback(kms_routes::not_found)
        .with_state(state);
    let routed = match grpc {
        Some(grpc) => rest.layer(axum::middleware::from_fn_with_state(grpc, to_grpc)),
        None => rest,
    };
    routed
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(axum::middleware::from_fn(kms_routes::log_request))
        .layer(SetRequestIdLayer::new(header, ids))
        .layer(axum::middleware::map_request(drop_unfit_request_id))
}

/// Hands gRPC calls to the gRPC front end.
async fn to_grpc(
    axum::extract::State(mut grpc): axum::extract::State<Router>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if listener::is_grpc(req.headers()) {
        match tower::Service::call(&mut grpc, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    } else {
        next.run(req).await
    }
}

/// The longest request id taken from a client (found by the hardening probe).
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

/// Removes a client's `x-request-id` unless it is one value of 1 to [`MAX_CLIENT_REQUEST_ID`]
/// visible ASCII characters, so that the server makes its own (found by the hardening probe): the id goes into
/// the audit entry and the logs of every request, unauthenticated ones included, so a 60 KB id
/// made 60 KB audit rows out of 401s.
async fn drop_unfit_request_id(mut req: Request<axum::body::Body>) -> Request<axum::body::Body> {
    let headers = req.headers_mut();
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    let fit = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_CLIENT_REQUEST_ID && b.iter().all(u8::is_ascii_graphic)
        }
        (Some(_), Some(_)) => false,
    };
    if !fit {
        headers.remove(REQUEST_ID_HEADER);
    }
    req
}

/// The cheapest endpoint: the baseline of the benchmarks, and what readiness probes call.
async fn health() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], "{\"status\":\"SERVING\"}")
}
