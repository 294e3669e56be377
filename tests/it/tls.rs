//! TLS for the API: certificates made by the `openssl` command, real
//! handshakes between a tokio-rustls server and client on 127.0.0.1 with the
//! configurations `stack::api::tls` builds.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use stack::api::tls::{self, TlsError, TlsFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any one connection may take before the test fails.
const LIMIT: Duration = Duration::from_secs(20);

/// A CA with a server and a client certificate, and a second CA with a
/// client certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth\n");
        pki.leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = crate::output_within(
            Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path()),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        let (key, cert, subj) = (
            format!("{name}-key.pem"),
            format!("{name}.pem"),
            format!("/CN=stack test {name}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, extensions: &str) {
        let (key, csr, cert, ext, subj) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        std::fs::write(self.path(&ext), extensions).unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    fn server(&self, client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
        let ca = client_ca.map(|c| self.path(&format!("{c}.pem")));
        tls::server_config(
            &self.path("server.pem"),
            &self.path("server-key.pem"),
            ca.as_deref(),
        )
        .unwrap()
    }

    fn client(
        &self,
        ca: Option<&str>,
        cert: Option<&str>,
        verify: bool,
    ) -> Arc<rustls::ClientConfig> {
        let ca = ca.map(|c| self.path(&format!("{c}.pem")));
        let pair = cert.map(|c| {
            (
                self.path(&format!("{c}.pem")),
                self.path(&format!("{c}-key.pem")),
            )
        });
        tls::client_config(
            ca.as_deref(),
            pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            verify,
        )
        .unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server that accepts one connection, completes the handshake and says
/// hello; its outcome is the handshake's.
async fn serve_once(
    config: Arc<rustls::ServerConfig>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let mut tls = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
        tls.write_all(b"hello\n").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(())
    });
    (addr, task)
}

/// Connects with TLS and reads everything the server sends.
async fn talk(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
    Ok(got)
}

/// One connection: what the client got and how the server's handshake
/// ended.
fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (Result<Vec<u8>, String>, Result<(), String>) {
    runtime().block_on(async {
        let (addr, task) = serve_once(server).await;
        let got = tokio::time::timeout(LIMIT, talk(addr, client))
            .await
            .expect("the client finishes");
        let served = tokio::time::timeout(LIMIT, task)
            .await
            .expect("the server finishes")
            .unwrap();
        (got, served)
    })
}

#[test]
fn a_client_with_a_certificate_from_the_ca_is_served() {
    let pki = Pki::new();
    let (got, served) = exchange(
        pki.server(Some("ca")),
        pki.client(Some("ca"), Some("client"), true),
    );
    assert_eq!(got.unwrap(), b"hello\n");
    served.unwrap();
}

#[test]
fn a_client_without_a_certificate_is_refused_when_verifying() {
    let pki = Pki::new();
    let (got, served) = exchange(pki.server(Some("ca")), pki.client(Some("ca"), None, true));
    assert_ne!(got.as_deref().ok(), Some(&b"hello\n"[..]));
    let e = served.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (got, served) = exchange(
        pki.server(Some("ca")),
        pki.client(Some("ca"), Some("stranger"), true),
    );
    assert_ne!(got.as_deref().ok(), Some(&b"hello\n"[..]));
    assert!(served.is_err());
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (got, served) = exchange(pki.server(None), pki.client(Some("other-ca"), None, true));
    let e = got.unwrap_err();
    assert!(e.contains("UnknownIssuer") || e.contains("issuer"), "{e}");
    assert!(served.is_err());
}

#[test]
fn tls_without_verification_accepts_the_server_like_docker() {
    let pki = Pki::new();
    // No CA at all on the client: --tls alone does not check the server.
    let (got, served) = exchange(pki.server(None), pki.client(None, None, false));
    assert_eq!(got.unwrap(), b"hello\n");
    served.unwrap();
}

#[test]
fn a_plain_tcp_client_gets_no_answer() {
    let pki = Pki::new();
    let (got, served) = runtime().block_on(async {
        let (addr, task) = serve_once(pki.server(Some("ca"))).await;
        let got = tokio::time::timeout(LIMIT, async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /_ping HTTP/1.1\r\nHost: stack\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            got
        })
        .await
        .expect("the server hangs up");
        let served = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
        (got, served)
    });
    // At most a TLS alert record (content type 21), never an HTTP answer.
    assert!(
        got.is_empty() || got[0] == 21,
        "plain client got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(served.is_err());
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let pki = Pki::new();
    let e =
        tls::server_config(&pki.path("server.pem"), &pki.path("client-key.pem"), None).unwrap_err();
    assert!(matches!(e, TlsError::Pair { .. }), "{e:?}");
    assert!(e.to_string().contains("server.pem"), "{e}");
}

#[test]
fn the_cert_path_directory_supplies_the_clients_files() {
    let pki = Pki::new();
    let certs = pki.path("certs");
    std::fs::create_dir(&certs).unwrap();
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        std::fs::copy(pki.path(from), certs.join(to)).unwrap();
    }
    let dir = certs.display().to_string();
    let env = move |k: &str| match k {
        "STACK_CERT_PATH" => Some(dir.clone()),
        "STACK_TLS_VERIFY" => Some("1".to_string()),
        _ => None,
    };
    let client = TlsFlags::default().client(&env).unwrap().unwrap();
    assert!(client.verify);
    let (got, served) = exchange(pki.server(Some("ca")), client.config().unwrap());
    assert_eq!(got.unwrap(), b"hello\n");
    served.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_tlsverify_daemon_serves_clients_with_certificates_and_refuses_others() {
    let pki = Pki::new();
    let host = crate::host::Host::new();
    crate::stop_daemon(&host.root());
    let port = free_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let p = |n: &str| pki.path(n).to_string_lossy().into_owned();
    let mut daemon = host
        .cmd(&[
            "-H",
            &addr,
            "--tlsverify",
            "--tlscacert",
            &p("ca.pem"),
            "--tlscert",
            &p("server.pem"),
            "--tlskey",
            &p("server-key.pem"),
            "daemon",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the daemon listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = |extra: &[&str], args: &[&str]| {
        let mut full = vec!["-H", addr.as_str(), "--tlsverify", "--tlscacert"];
        let ca = p("ca.pem");
        full.push(&ca);
        full.extend_from_slice(extra);
        full.extend_from_slice(args);
        host.stack(&full)
    };
    let (cert, key) = (p("client.pem"), p("client-key.pem"));
    let with_cert = ["--tlscert", cert.as_str(), "--tlskey", key.as_str()];
    let out = client(&with_cert, &["run", "--rm", "bb", "echo", "over tls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    // No client certificate: the handshake fails, nothing is served.
    let out = client(&[], &["ps"]);
    assert!(!out.status.success());
    // A certificate from another CA is refused too.
    let (cert, key) = (p("stranger.pem"), p("stranger-key.pem"));
    let out = client(&["--tlscert", &cert, "--tlskey", &key], &["ps"]);
    assert!(!out.status.success());
    let _ = daemon.kill();
    let _ = daemon.wait();
}
