//! The TLS flags of the command line, Docker's names: `--tls`,
//! `--tlsverify`, `--tlscacert`, `--tlscert`, `--tlskey`. They are global,
//! so `stack daemon` reads them for the server side and every other verb for
//! the client side; `STACK_TLS_VERIFY` and `STACK_CERT_PATH` fill in what is
//! not given (see [`crate::api::tls`]).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::api::tls::TlsFlags;

/// TLS flags; flatten into the top-level command.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Use TLS; implied by --tlsverify
    #[arg(long = "tls", global = true)]
    pub tls: bool,
    /// Use TLS and verify the remote (env STACK_TLS_VERIFY)
    #[arg(long = "tlsverify", global = true)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA (default: $STACK_CERT_PATH/ca.pem)
    #[arg(long = "tlscacert", global = true, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file (default: $STACK_CERT_PATH/cert.pem)
    #[arg(long = "tlscert", global = true, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file (default: $STACK_CERT_PATH/key.pem)
    #[arg(long = "tlskey", global = true, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl TlsArgs {
    /// The flags as the library takes them.
    pub fn flags(&self) -> TlsFlags {
        TlsFlags {
            tls: self.tls,
            verify: self.tlsverify,
            ca: self.tlscacert.clone(),
            cert: self.tlscert.clone(),
            key: self.tlskey.clone(),
        }
    }

    /// The client's TLS configuration (`None`: TLS is off).
    pub fn client_config(&self) -> miette::Result<Option<Arc<rustls::ClientConfig>>> {
        let tls = self.flags().client(&env).map_err(report)?;
        tls.map(|t| t.config().map_err(report)).transpose()
    }

    /// The daemon's TLS configuration (`None`: TLS is off).
    pub fn server_config(&self) -> miette::Result<Option<Arc<rustls::ServerConfig>>> {
        let tls = self.flags().server(&env).map_err(report)?;
        tls.map(|t| t.config().map_err(report)).transpose()
    }
}

fn report(e: crate::api::tls::TlsError) -> miette::Report {
    miette::miette!("{}", crate::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn flags_are_spelled_like_dockers() {
        let cli = Cli::try_parse_from([
            "stack",
            "--tlsverify",
            "--tlscacert",
            "/c/ca.pem",
            "--tlscert",
            "/c/cert.pem",
            "--tlskey",
            "/c/key.pem",
        ])
        .unwrap();
        assert_eq!(
            cli.tls.flags(),
            TlsFlags {
                tls: false,
                verify: true,
                ca: Some("/c/ca.pem".into()),
                cert: Some("/c/cert.pem".into()),
                key: Some("/c/key.pem".into()),
            }
        );
        let e = cli.tls.client_config().unwrap_err().to_string();
        assert!(e.contains("/c/ca.pem"), "{e}");
    }
}
