//! `http-floor hyper|axum PORT ANSWER_FILE`: answers every request on 127.0.0.1:PORT with the
//! bytes of ANSWER_FILE as `application/json` (bench/http-floor.sh gives it the nginx
//! baseline's answer from bench/suite.py). `hyper` serves HTTP/1.1 with hyper alone; `axum`
//! through an axum router with one fallback handler. Both on a multi-threaded tokio runtime
//! with a worker per core and `TCP_NODELAY`, as `keyhold serve` runs. What an HTTP request
//! costs before any work of Keyhold's: the floor its health check and `:encrypt` stand on.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};

/// The content type of nginx's baseline answer (bench/suite.py).
const JSON: &str = "application/json; charset=UTF-8";

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(port), Some(answer)) =
        (args.next(), args.next().and_then(|p| p.parse::<u16>().ok()), args.next().and_then(|f| std::fs::read(f).ok()))
    else {
        eprintln!("usage: http-floor hyper|axum PORT ANSWER_FILE");
        std::process::exit(2);
    };
    let answer = Bytes::from(answer);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        match mode.as_str() {
            "axum" => {
                // As Keyhold's listener and the hyper floor do (axum::serve does not).
                use axum::serve::ListenerExt as _;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let app = axum::Router::new().fallback(move || {
                    let answer = answer.clone();
                    async move { ([(CONTENT_TYPE, JSON)], answer) }
                });
                axum::serve(listener, app).await.expect("serve");
            }
            "hyper" => loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                        let mut resp = Response::new(Full::new(answer.clone()));
                        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            },
            other => {
                eprintln!("unknown mode {other}: hyper or axum");
                std::process::exit(2);
            }
        }
    });
}
