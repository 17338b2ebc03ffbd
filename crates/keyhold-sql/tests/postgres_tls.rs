//! TLS to PostgreSQL (`sslmode`, `sslrootcert` in the `--database` URL) against a real server:
//! a second throwaway cluster started here with `ssl=on`, a certificate made with rcgen (for
//! `pg.keyhold.test`, so that `verify-full` to 127.0.0.1 must fail on the name and `verify-ca`
//! must pass), and a pg_hba.conf that rejects connections without TLS.
//!
//! It needs the PostgreSQL server binaries that `scripts/test.sh with-postgres` installs and,
//! like the other PostgreSQL tests, fails without `KEYHOLD_TEST_POSTGRES_URL` (the sign that the
//! script prepared the machine): `scripts/test.sh with-postgres cargo test -p keyhold-sql --test
//! postgres_tls`.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyhold_sql::postgres::Postgres;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (scripts/test.sh with-postgres installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop().expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (it refuses to run as root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:"]).arg(path).status().unwrap();
        assert!(status.success());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A cluster with `ssl=on`, stopped when dropped.
struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_pg(&self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn start() -> Cluster {
    std::env::var("KEYHOLD_TEST_POSTGRES_URL").expect(
        "KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with `scripts/test.sh with-postgres cargo test -p \
         keyhold-sql --test postgres_tls`, which installs PostgreSQL",
    );
    let bin = pg_bindir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    chown_to_postgres(dir.path());
    let out = as_pg(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));

    let issuer = ca("Keyhold test CA");
    let mut params = CertificateParams::new(vec!["pg.keyhold.test".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "pg.keyhold.test");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // TLS or nothing over TCP.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let ca_path = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca_path, issuer.pem()).unwrap();
    std::fs::write(&other_ca, ca("Another CA").pem()).unwrap();
    chown_to_postgres(dir.path());

    let port = free_port();
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c ssl=on -c fsync=off",
        data.display()
    );
    let out = as_pg(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.path().join("postgres.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
    assert!(out.status.success(), "pg_ctl start: {}{log}", String::from_utf8_lossy(&out.stderr));
    Cluster { _dir: dir, data, bin, port, ca: ca_path, other_ca }
}

async fn connect(url: &str) -> Result<Postgres, String> {
    Postgres::connect(url).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn sslmode_and_sslrootcert_against_a_real_server() {
    let c = start();
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", c.port);
    let ca = c.ca.display();

    // The chain is verified (the name is not: the certificate is for pg.keyhold.test).
    connect(&format!("{base}?sslmode=verify-ca&sslrootcert={ca}")).await.expect("verify-ca");
    // Encrypted, unverified, as libpq's require.
    connect(&format!("{base}?sslmode=require")).await.expect("require");
    // The key-value form works too.
    connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-ca sslrootcert='{ca}'",
        c.port
    ))
    .await
    .expect("key-value form");

    // verify-full checks the name: 127.0.0.1 is not in the certificate.
    let err = connect(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")).await.unwrap_err();
    assert!(err.contains("not valid for name") && err.contains("sslrootcert"), "{err}");
    // A CA that did not issue the server's certificate.
    let err = connect(&format!("{base}?sslmode=verify-ca&sslrootcert={}", c.other_ca.display())).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") && err.contains("sslrootcert"), "{err}");
    // require with a root certificate is verify-ca (libpq), so the other CA fails it too.
    let err = connect(&format!("{base}?sslmode=require&sslrootcert={}", c.other_ca.display())).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Without TLS the server's pg_hba.conf refuses: disable, and prefer (the default), which
    // Keyhold treats as plain TCP.
    for url in [format!("{base}?sslmode=disable"), base.clone(), format!("{base}?sslmode=prefer")] {
        let err = connect(&url).await.unwrap_err();
        assert!(err.contains("no encryption") || err.contains("pg_hba.conf"), "{url}: {err}");
    }
}
