//! The HTTP face of Keyhold: the Cloud KMS v1 REST surface on axum.
//!
//! Cloud KMS puts custom verbs after a colon in the last path segment
//! (`.../cryptoKeys/k:encrypt`), which axum's router cannot match, so everything under `/v1/`
//! goes to one handler that parses the resource path itself ([`route`]) and dispatches. Errors
//! from every crate become Google's error JSON in one place ([`error::ApiError`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod entry;
pub mod error;
pub mod front;
pub mod host;
mod kms_routes;
pub mod listener;
pub mod methods;
pub mod route;
mod store_routes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use keyhold_kms::Kms;

pub use entry::{MAX_CLIENT_REQUEST_ID, REQUEST_ID_HEADER};

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

/// The application router: the REST surface.
pub fn app(state: AppState) -> Router {
    app_with(state, None)
}

/// The application router, with a gRPC front end beside REST on the same port: a request
/// whose `content-type` is `application/grpc…` goes to `grpc` (`keyhold-grpc`), every other
/// request to REST. Both share the request IDs and the request log.
pub fn app_with(state: AppState, grpc: Option<Router>) -> Router {
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
    Router::new().fallback_service(entry::Entry::new(rest, grpc))
}

/// The cheapest endpoint: the baseline of the benchmarks, and what readiness probes call.
async fn health() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], "{\"status\":\"SERVING\"}")
}
