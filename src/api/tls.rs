//! TLS for the API on TCP, with Docker's flags and files: the daemon serves
//! with `--tls --tlscert F --tlskey F` (and asks for client certificates
//! signed by `--tlscacert` with `--tlsverify`); the client connects with
//! `--tls` (no server verification, as Docker) or `--tlsverify` (the server's
//! certificate must chain to the CA), presenting `--tlscert`/`--tlskey` when
//! it has them. `STACK_TLS_VERIFY` and `STACK_CERT_PATH` (`ca.pem`,
//! `cert.pem`, `key.pem`) work like `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH`.
//!
//! Everything here only builds rustls configurations (the ring provider)
//! from PEM files; the server and client hand them to tokio-rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The system's CA bundles, tried in order when `--tlsverify` has no CA file
/// (Debian/Ubuntu/Alpine, then Fedora/RHEL, then openSUSE).
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or is not valid PEM.
    #[error("cannot read the {what} {}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// A PEM file holds nothing of what it should.
    #[error("no {what} found in {}", path.display())]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was refused.
    #[error("invalid CA certificate in {}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A certificate and key that do not make a usable pair.
    #[error("cannot use the certificate {} with the key {}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// Client certificates cannot be verified with this CA.
    #[error("cannot verify client certificates with the CA in {}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The crypto provider supports none of the protocol versions.
    #[error("cannot set up TLS")]
    Protocol(#[source] rustls::Error),
    /// Only one of `--tlscert` and `--tlskey`.
    #[error("--tlscert and --tlskey go together: {given} was given without the other")]
    IncompletePair {
        /// The flag that was given.
        given: &'static str,
    },
    /// The daemon has no certificate or key to serve with.
    #[error(
        "TLS needs a certificate and key: --tlscert and --tlskey, or cert.pem and key.pem in {}",
        dir.display()
    )]
    NoServerCertificate {
        /// The certificate directory that was looked in.
        dir: PathBuf,
    },
    /// `--tlsverify` without a CA to verify with.
    #[error(
        "--tlsverify needs a CA certificate: --tlscacert, or ca.pem in {}",
        dir.display()
    )]
    NoCa {
        /// The certificate directory that was looked in.
        dir: PathBuf,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#1, PKCS#8 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: path.to_path_buf(),
        },
        source => TlsError::Read {
            what: "private key",
            path: path.to_path_buf(),
            source,
        },
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The daemon's TLS: its certificate chain and key; with `client_ca`,
/// clients must present a certificate that chains to it (`--tlsverify`),
/// without, none is asked for (`--tls`).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = read_certs(cert, "certificate")?;
    let private = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                    .build()
                    .map_err(|source| TlsError::ClientVerifier {
                        path: ca.to_path_buf(),
                        source,
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// The client's TLS. With `verify`, the server's certificate must chain to
/// `ca` (the system's CAs when `None`) and name the host; without, any
/// certificate is accepted (Docker's `--tls`), though the handshake is still
/// signed with its key. `cert_and_key` is the client certificate to present.
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
    verify: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = if verify {
        let roots = match ca {
            Some(ca) => read_roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
    };
    let config = match cert_and_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert, "certificate")?, read_key(key)?)
            .map_err(|source| TlsError::Pair {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The first system CA bundle that exists.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let bundle = SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| TlsError::Empty {
            what: "CA certificates",
            path: PathBuf::from(SYSTEM_CA_BUNDLES[0]),
        })?;
    let mut roots = RootCertStore::empty();
    // Like Go's loader, skip what the bundle holds that is not usable.
    let (added, _) = roots.add_parsable_certificates(read_certs(bundle, "CA certificates")?);
    if added == 0 {
        return Err(TlsError::Empty {
            what: "usable CA certificates",
            path: bundle.to_path_buf(),
        });
    }
    Ok(roots)
}

/// `--tls` without `--tlsverify`: any server certificate is accepted (Go's
/// `InsecureSkipVerify`); the handshake signatures are still checked.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS flags as given on the command line (Docker's names), before the
/// environment and the certificate directory fill them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--tls`: use TLS.
    pub tls: bool,
    /// `--tlsverify`: use TLS and verify the peer (implies `--tls`).
    pub verify: bool,
    /// `--tlscacert`.
    pub ca: Option<PathBuf>,
    /// `--tlscert`.
    pub cert: Option<PathBuf>,
    /// `--tlskey`.
    pub key: Option<PathBuf>,
}

/// The client's TLS settings, resolved: what [`client_config`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Verify the server against `ca`.
    pub verify: bool,
    /// The CA; the system's when `None`.
    pub ca: Option<PathBuf>,
    /// The client certificate and key.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The rustls configuration.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        client_config(
            self.ca.as_deref(),
            self.cert_and_key
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            self.verify,
        )
    }
}

/// The daemon's TLS settings, resolved: what [`server_config`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// With `--tlsverify`: the CA client certificates must chain to.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls configuration.
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        server_config(&self.cert, &self.key, self.client_ca.as_deref())
    }
}

/// The certificate directory: `$STACK_CERT_PATH`, else `$HOME/.stack`
/// (Docker: `$DOCKER_CERT_PATH`, else `~/.docker`).
pub fn cert_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("STACK_CERT_PATH").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    PathBuf::from(env("HOME").unwrap_or_else(|| "/root".into())).join(".stack")
}

/// A flag's file, else the default file in the certificate directory when
/// it exists (docker/cli drops defaults that are not there).
fn flag_or_default(flag: &Option<PathBuf>, dir: &Path, name: &str) -> Option<PathBuf> {
    flag.clone()
        .or_else(|| Some(dir.join(name)).filter(|p| p.exists()))
}

impl TlsFlags {
    /// Whether `STACK_TLS_VERIFY` asks for verification: any non-empty value,
    /// as Docker reads `DOCKER_TLS_VERIFY`.
    fn env_verify(env: &dyn Fn(&str) -> Option<String>) -> bool {
        env("STACK_TLS_VERIFY").is_some_and(|v| !v.is_empty())
    }

    /// The client's settings (docker/cli `SetDefaultOptions`): `None` when
    /// TLS is off. `--tlsverify` or `STACK_TLS_VERIFY` turn it on and verify;
    /// files not given come from the certificate directory when there.
    pub fn client(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ClientTls>, TlsError> {
        let verify = self.verify || Self::env_verify(env);
        if !self.tls && !verify {
            return Ok(None);
        }
        let dir = cert_dir(env);
        let cert = flag_or_default(&self.cert, &dir, "cert.pem");
        let key = flag_or_default(&self.key, &dir, "key.pem");
        let cert_and_key = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            // A default file without its partner is ignored; a flag is not.
            (Some(_), None) if self.cert.is_some() => {
                return Err(TlsError::IncompletePair { given: "--tlscert" });
            }
            (None, Some(_)) if self.key.is_some() => {
                return Err(TlsError::IncompletePair { given: "--tlskey" });
            }
            _ => None,
        };
        Ok(Some(ClientTls {
            verify,
            ca: verify
                .then(|| flag_or_default(&self.ca, &dir, "ca.pem"))
                .flatten(),
            cert_and_key,
        }))
    }

    /// The daemon's settings (dockerd): `None` when TLS is off. A
    /// certificate and key are required; with `--tlsverify` a CA too.
    pub fn server(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ServerTls>, TlsError> {
        let verify = self.verify || Self::env_verify(env);
        if !self.tls && !verify {
            return Ok(None);
        }
        let dir = cert_dir(env);
        let (Some(cert), Some(key)) = (
            flag_or_default(&self.cert, &dir, "cert.pem"),
            flag_or_default(&self.key, &dir, "key.pem"),
        ) else {
            return Err(TlsError::NoServerCertificate { dir });
        };
        let client_ca = if verify {
            Some(flag_or_default(&self.ca, &dir, "ca.pem").ok_or(TlsError::NoCa { dir })?)
        } else {
            None
        };
        Ok(Some(ServerTls {
            cert,
            key,
            client_ca,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = server_config(
            Path::new("/no/such/cert.pem"),
            Path::new("/no/such/key.pem"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            crate::error_chain(&e).split(": ").next(),
            Some("cannot read the certificate /no/such/cert.pem")
        );
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("cert.pem");
        std::fs::write(&junk, "this is not a certificate\n").unwrap();
        let e = server_config(&junk, &junk, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no certificate found in {}", junk.display())
        );
        let e = client_config(Some(&junk), None, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no CA certificate found in {}", junk.display())
        );
    }

    #[test]
    fn broken_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_config(Some(&bad), None, true).unwrap_err();
        assert!(
            crate::error_chain(&e).starts_with(&format!(
                "cannot read the CA certificate {}: ",
                bad.display()
            )),
            "{}",
            crate::error_chain(&e)
        );
    }

    #[test]
    fn tls_without_verification_needs_no_files() {
        assert!(client_config(None, None, false).is_ok());
    }

    #[test]
    fn client_flags_resolve_like_dockers() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_path_buf();
        let no_env = env_of(&[("HOME", "/nonexistent".into())]);
        // No TLS unless asked for.
        assert_eq!(TlsFlags::default().client(&no_env).unwrap(), None);
        // --tls: no verification, no files.
        let tls = TlsFlags {
            tls: true,
            ..TlsFlags::default()
        };
        assert_eq!(
            tls.client(&no_env).unwrap(),
            Some(ClientTls {
                verify: false,
                ca: None,
                cert_and_key: None
            })
        );
        // STACK_TLS_VERIFY turns on verification, with the files of
        // STACK_CERT_PATH that exist.
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(certs.join(f), "").unwrap();
        }
        let env = env_of(&[
            ("STACK_TLS_VERIFY", "1".into()),
            ("STACK_CERT_PATH", certs.display().to_string()),
        ]);
        assert_eq!(
            TlsFlags::default().client(&env).unwrap(),
            Some(ClientTls {
                verify: true,
                ca: Some(certs.join("ca.pem")),
                cert_and_key: Some((certs.join("cert.pem"), certs.join("key.pem"))),
            })
        );
        // Flags win over the directory.
        let flags = TlsFlags {
            verify: true,
            ca: Some("/x/ca.pem".into()),
            ..TlsFlags::default()
        };
        assert_eq!(
            flags.client(&env).unwrap().unwrap().ca,
            Some(PathBuf::from("/x/ca.pem"))
        );
        // A certificate flag without its key is an error.
        let half = TlsFlags {
            tls: true,
            cert: Some("/x/cert.pem".into()),
            ..TlsFlags::default()
        };
        assert!(matches!(
            half.client(&no_env),
            Err(TlsError::IncompletePair { given: "--tlscert" })
        ));
    }

    #[test]
    fn server_flags_need_a_certificate_and_for_verify_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_path_buf();
        let env = env_of(&[("STACK_CERT_PATH", certs.display().to_string())]);
        let tls = TlsFlags {
            tls: true,
            ..TlsFlags::default()
        };
        assert!(matches!(
            tls.server(&env),
            Err(TlsError::NoServerCertificate { .. })
        ));
        std::fs::write(certs.join("cert.pem"), "").unwrap();
        std::fs::write(certs.join("key.pem"), "").unwrap();
        assert_eq!(
            tls.server(&env).unwrap(),
            Some(ServerTls {
                cert: certs.join("cert.pem"),
                key: certs.join("key.pem"),
                client_ca: None,
            })
        );
        let verify = TlsFlags {
            verify: true,
            ..TlsFlags::default()
        };
        assert!(matches!(verify.server(&env), Err(TlsError::NoCa { .. })));
        std::fs::write(certs.join("ca.pem"), "").unwrap();
        assert_eq!(
            verify.server(&env).unwrap().unwrap().client_ca,
            Some(certs.join("ca.pem"))
        );
        assert_eq!(TlsFlags::default().server(&env).unwrap(), None);
    }
}
