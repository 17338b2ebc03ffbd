//! What every request goes through before its route, in one service: its request id (a
//! client's, if fit, else one made here, sent back on the answer), the choice between the gRPC
//! and REST front ends, and the request log line.
//!
//! These were four tower layers and a middleware function. `Router::layer` wraps every route
//! in each of them, so a request went through nine nested futures and three boxed clones of
//! services before its handler; the profile of 2026-12-05 counted that at about a tenth of a
//! health check's CPU. One service does the same work with one boxed future of its own.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;

use crate::listener::is_grpc;

/// Header carrying the request ID (taken from the client if it sent one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client (found by the hardening probe).
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The entry of every request: see the module's documentation.
#[derive(Clone)]
pub(crate) struct Entry {
    rest: Router,
    grpc: Option<Router>,
    ids: RequestIds,
}

impl Entry {
    pub(crate) fn new(rest: Router, grpc: Option<Router>) -> Self {
        let mut prefix = [0u8; 4];
        let _ = keyhold_crypto::random_bytes(&mut prefix);
        Self { rest, grpc, ids: RequestIds { prefix: u32::from_be_bytes(prefix), next: Arc::default() } }
    }
}

/// Request ids made here: a random prefix per process, then a counter.
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{:08x}-{n:x}", self.prefix)).expect("hex digits and a dash are a header value")
    }
}

impl tower::Service<Request<Body>> for Entry {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let id = match fit_request_id(&mut req) {
            Some(id) => id,
            None => {
                let id = self.ids.make();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let mut target = match &self.grpc {
            Some(grpc) if is_grpc(req.headers()) => grpc.clone(),
            _ => self.rest.clone(),
        };
        let logged = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (Instant::now(), req.method().clone(), req.uri().path().to_string()));
        let answer = tower::Service::call(&mut target, req);
        Box::pin(async move {
            let Ok(mut resp) = answer.await;
            if let Some((start, method, path)) = logged {
                // One log line per request: method, path (never the query or body), status,
                // latency, and the request ID. At `debug` so that a busy server does not spend
                // its time logging; 5xx answers are also logged at `error` by `ApiError`.
                tracing::debug!(
                    request_id = id.to_str().unwrap_or(""),
                    %method,
                    %path,
                    status = resp.status().as_u16(),
                    micros = start.elapsed().as_micros() as u64,
                    "request"
                );
            }
            resp.headers_mut().entry(REQUEST_ID).or_insert(id);
            Ok(resp)
        })
    }
}

/// The client's `x-request-id` if it is one value of 1 to [`MAX_CLIENT_REQUEST_ID`] visible
/// ASCII characters; otherwise it is removed, so that the server makes its own (found by the
/// hardening probe): the id goes into the audit entry and the logs of every request,
/// unauthenticated ones included, so a 60 KB id made 60 KB audit rows out of 401s.
fn fit_request_id(req: &mut Request<Body>) -> Option<HeaderValue> {
    let headers = req.headers_mut();
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    let fit = match (values.next(), values.next()) {
        (None, _) => return None,
        (Some(v), None) => {
            let b = v.as_bytes();
            (!b.is_empty() && b.len() <= MAX_CLIENT_REQUEST_ID && b.iter().all(u8::is_ascii_graphic)).then(|| v.clone())
        }
        (Some(_), Some(_)) => None,
    };
    if fit.is_none() {
        headers.remove(REQUEST_ID_HEADER);
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ids(ids: &[&str]) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        for id in ids {
            req.headers_mut().append(REQUEST_ID, HeaderValue::from_str(id).unwrap());
        }
        req
    }

    #[test]
    fn a_fit_client_id_is_kept_and_any_other_removed() {
        let mut req = with_ids(&["abc-123"]);
        assert_eq!(fit_request_id(&mut req).unwrap(), "abc-123");
        assert_eq!(req.headers()[REQUEST_ID_HEADER], "abc-123");
        let long = "a".repeat(MAX_CLIENT_REQUEST_ID + 1);
        for ids in [vec!["a b"], vec![long.as_str()], vec!["one", "two"], vec![""]] {
            let mut req = with_ids(&ids);
            assert_eq!(fit_request_id(&mut req), None, "{ids:?}");
            assert!(req.headers().get(REQUEST_ID_HEADER).is_none(), "{ids:?}");
        }
        let edge = "a".repeat(MAX_CLIENT_REQUEST_ID);
        assert!(fit_request_id(&mut with_ids(&[&edge])).is_some());
    }

    #[test]
    fn made_ids_differ_and_share_the_process_prefix() {
        let entry = Entry::new(Router::new(), None);
        let (a, b) = (entry.ids.make(), entry.ids.make());
        assert_ne!(a, b);
        assert_eq!(a.to_str().unwrap()[..9], b.to_str().unwrap()[..9]);
    }
}
