//! The gRPC face of Keyhold: Cloud KMS v1 (`google.cloud.kms.v1.KeyManagementService`), the
//! IAM (`google.iam.v1.IAMPolicy`) and Locations (`google.cloud.location.Locations`) mixins,
//! the Inventory methods Keyhold serves over REST
//! (`google.cloud.kms.inventory.v1.KeyTrackingService`), and the gRPC health service
//! (`grpc.health.v1.Health`).
//!
//! It is served on the REST port ([`keyhold_server::app_with`]): HTTP/2 by ALPN under TLS,
//! h2c in clear, and every request whose content type is `application/grpc` comes here. Each
//! method is the REST method's twin: the same KMS façade call, so the same authentication
//! (a bearer token in the `authorization` metadata, a client certificate's principal, the
//! access reason in `x-keyhold-access-reason`), IAM checks, audit entries, status codes and
//! messages, with REST's `google.rpc` error details in `grpc-status-details-bin`. A method
//! Keyhold does not serve answers `UNIMPLEMENTED` saying so.
//!
//! The services are generated from Google's protos at build time ([`pb`]), over the messages
//! `keyhold-proto` generates from the same protos, which the REST surface reads and writes
//! too; each served method is `keyhold_server::methods`' implementation, the one REST runs.

#![forbid(unsafe_code)]

mod call;
mod inventory;
mod kms_service;
mod mixins;
pub mod pb;
pub mod status;

use axum::Router;
use keyhold_server::AppState;

pub use call::Front;

use pb::google::cloud::kms::inventory::v1::key_tracking_service_server::KeyTrackingServiceServer;
use pb::google::cloud::kms::v1::key_management_service_server::KeyManagementServiceServer;
use pb::google::cloud::location::locations_server::LocationsServer;
use pb::google::iam::v1::iam_policy_server::IamPolicyServer;
use pb::google::longrunning::operations_server::OperationsServer;

/// The gRPC services served, by full name (the health service reports each as `SERVING`).
pub const SERVICES: &[&str] = &[
    "google.cloud.kms.v1.KeyManagementService",
    "google.iam.v1.IAMPolicy",
    "google.cloud.location.Locations",
    "google.cloud.kms.inventory.v1.KeyTrackingService",
    "google.longrunning.Operations",
];

/// The gRPC front end, as a router for [`keyhold_server::app_with`]. `max_message_bytes`
/// bounds every message both ways (the listener's body limit bounds a request before).
pub async fn router(state: AppState, max_message_bytes: usize) -> Router {
    let front = Front { state };
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in SERVICES {
        health.set_service_status(*service, tonic_health::ServingStatus::Serving).await;
    }
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    macro_rules! limited {
        ($server:expr) => {
            $server.max_decoding_message_size(max_message_bytes).max_encoding_message_size(max_message_bytes)
        };
    }
    tonic::service::Routes::new(limited!(KeyManagementServiceServer::new(front.clone())))
        .add_service(limited!(IamPolicyServer::new(front.clone())))
        .add_service(limited!(LocationsServer::new(front.clone())))
        .add_service(limited!(OperationsServer::new(front.clone())))
        .add_service(limited!(KeyTrackingServiceServer::new(front)))
        .add_service(health_service)
        .into_axum_router()
        .fallback(not_served)
        .layer(axum::middleware::from_fn(explain_unimplemented))
}

/// tonic answers a method a served service does not have (`KeyManagementService/Nope`)
/// `UNIMPLEMENTED` without a message: it gets [`not_served`]'s.
async fn explain_unimplemented(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    let h = resp.headers();
    let unimplemented = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"12");
    if unimplemented && h.get("grpc-message").is_none_or(|m| m.is_empty()) {
        return not_served(uri).await;
    }
    resp
}

/// Any other gRPC method: `UNIMPLEMENTED`, saying which, never a transport error.
async fn not_served(uri: axum::http::Uri) -> axum::response::Response {
    let method: String = uri.path().trim_start_matches('/').chars().take(200).collect();
    tonic::Status::unimplemented(format!(
        "The gRPC method {method} is not served by Keyhold; see docs/api.md for the methods it serves."
    ))
    .into_http()
}
