//! `http-floor hyper|axum PORT`: answers every request with a fixed JSON body, the shape of a
//! Keyhold `:encrypt` answer, on 127.0.0.1:PORT. `hyper` serves HTTP/1.1 with hyper alone;
//! `axum` through an axum router with one fallback handler. Both on a multi-threaded tokio
//! runtime with a worker per core, as `keyhold serve` runs. What an HTTP request costs
//! before any work of Keyhold's: the floor its health check and `:encrypt` stand on.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

const ANSWER: &str = "{\n  \"name\": \"projects/bench/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1\",\n  \"ciphertext\": \"AQAAAAAAAAABj08Zzr/mnNvXV9vFLiR+c8y0IPizGaM4mVYuTHU1MoZD\",\n  \"ciphertextCrc32c\": \"815134736\",\n  \"protectionLevel\": \"SOFTWARE\"\n}";

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(port)) = (args.next(), args.next().and_then(|p| p.parse::<u16>().ok())) else {
        eprintln!("usage: http-floor hyper|axum PORT");
        std::process::exit(2);
    };
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
                let app = axum::Router::new()
                    .fallback(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], ANSWER) });
                axum::serve(listener, app).await.expect("serve");
            }
            "hyper" => loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
                        let mut resp = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
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
