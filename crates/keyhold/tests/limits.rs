//! The listener limits of the real `keyhold serve` and `keyhold ekm serve` processes (issue
//! 15, finding 3): the flags reach the listener, idle sockets under a small open-file limit do
//! not lock a client out, and SIGTERM still finishes cleanly. Servers listen on port 0 and
//! the tests read the bound address from their log; they wait on events, never on latency.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(30);

struct Proc {
    child: Child,
    log: PathBuf,
    addr: std::net::SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sh -c "ulimit -n NOFILE; exec keyhold ARGS"` and waits for the address it serves on.
fn spawn(dir: &Path, nofile: Option<u32>, args: &[&str]) -> Proc {
    let log = dir.join(format!("{}.log", args[0]));
    let mut script = String::new();
    if let Some(n) = nofile {
        script.push_str(&format!("ulimit -n {n} && "));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_keyhold"))
        .args(args)
        .env("KEYHOLD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.split("serving").nth(1).and_then(|rest| rest.split("on http://").nth(1)) {
            let addr: String = addr.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
            return Proc { child, log, addr: addr.parse().unwrap() };
        }
        if Instant::now() > deadline || child.try_wait().is_ok_and(|s| s.is_some()) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n").await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection stayed open; received: {:?}", String::from_utf8_lossy(&out)));
    String::from_utf8_lossy(&out).into_owned()
}

/// The server's log once it holds `text` (within 20 s).
async fn log_once_it_has(log: &std::path::Path, text: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let now = std::fs::read_to_string(log).unwrap_or_default();
        if now.contains(text) || start.elapsed() > std::time::Duration::from_secs(20) {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn terminate(mut p: Proc) -> String {
    assert!(Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap().success());
    let exit = p.child.wait().unwrap();
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}: {log}");
    log
}

/// The probe's lock-out: under a 1,024-descriptor limit, ~1,100 idle sockets made accept()
/// fail with EMFILE for everyone. Here: 256 descriptors and 400 idle sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_open_file_limit_do_not_lock_a_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let p = spawn(dir.path(), Some(256), &["serve", "--in-memory", "--listen", "127.0.0.1:0", "--data-dir", data]);
    // The limits are logged just after the "serving" line `spawn` waits for.
    let log = log_once_it_has(&p.log, "listener limits").await;
    assert!(log.contains("max_connections=192"), "default cap is 3/4 of ulimit -n: {log}");
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let answer = healthz(p.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("SERVING"), "{answer:?}");
    drop(idle);
    let log = terminate(p);
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A cap set above the open-file limit: accept() fails with EMFILE. The loop must neither spin
/// nor stop, and must get descriptors back from idle connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_are_waited_out_and_idle_connections_give_descriptors_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["serve", "--in-memory", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
    let p = spawn(dir.path(), Some(64), &[&args[..], &["--max-connections", "1000"]].concat());
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let answer = healthz(p.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("SERVING"), "{answer:?}");
    drop(idle);
    let log = terminate(p);
    assert!(log.contains("close to or above the open-file limit"), "{log}");
    assert!(log.contains("accept error; retrying"), "the test did not reach the descriptor limit: {log}");
}

#[tokio::test]
async fn serve_flags_reach_the_listener_and_sigterm_still_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = spawn(
        dir.path(),
        None,
        &[
            "serve",
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--idle-timeout",
            "0.3s",
            "--max-body-bytes",
            "2048",
            "--stream-min-rate",
            "1234",
            "--stream-min-rate-grace",
            "2.5s",
        ],
    );
    // --idle-timeout: a silent connection is closed.
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    // --max-body-bytes: refused from Content-Length, in Google's error JSON.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /v1/projects/p/locations/global/keyRings?keyRingId=r HTTP/1.1\r\nHost: k\r\nContent-Length: 2049\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("\"status\": \"INVALID_ARGUMENT\"") && answer.contains("2048 bytes"), "{answer:?}");
    // An idle keep-alive connection does not hold up SIGTERM.
    let _kept = TcpStream::connect(p.addr).await.unwrap();
    let log = terminate(p);
    assert!(log.contains("stopped"), "{log}");
    // Hardening review: the minimum upload rate and its grace reach the listener.
    assert!(log.contains("stream_min_rate=1234") && log.contains("stream_min_rate_grace=2.5s"), "{log}");
}

#[tokio::test]
async fn ekm_serve_has_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ekm");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("policy.json"), r#"{"keys": {}}"#).unwrap();
    let p = spawn(
        dir.path(),
        None,
        &[
            "ekm",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--header-read-timeout",
            "0.3s",
        ],
    );
    assert!(healthz(p.addr).await.starts_with("HTTP/1.1 200"));
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /v0/ekm/keys/k:wrap HTTP/1.1\r\nHost: k\r\nContent-Length: 1099511627776\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    // --header-read-timeout: a head that never ends is cut.
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut slow).await, "");
    terminate(p);
}
