//! The registry client: the OCI distribution protocol (`/v2/`) over HTTP(S),
//! with Docker's authentication flows.
//!
//! It owns talking to registries: ping, basic and bearer-token authentication,
//! manifests and indexes, blob download and upload, tags and catalog. It never
//! writes a byte to the [`BlobStore`] that does not match its digest: blobs
//! stream into [`BlobStore::put`] with the digest they were announced with.
//! It knows nothing of image records or tags in the local catalog; that is
//! [`pull`](super::pull) and [`push`](super::push).
//!
//! # Why our own client on reqwest, not oci-client
//!
//! DEPENDENCIES.md recommends oci-client; it was checked (0.18) and left out
//! because the behaviour this module must have sits exactly where oci-client
//! gives no hook:
//! - resuming a broken blob transfer with `Range` while the digest keeps
//!   hashing over the whole blob (oci-client streams into an `AsyncWrite` from
//!   the start, and has no retry or backoff at all);
//! - authentication that follows the registry: oci-client wants the caller to
//!   call `auth()` per image and operation beforehand, caches one token per
//!   registry and operation rather than per scope, and cannot ask for a
//!   cross-repository mount scope (`repository:from:pull`) next to the push;
//! - plain HTTP decided per registry from host names and CIDRs, Docker Hub
//!   mirrors, and errors that carry the registry's `errors[].code/message`.
//!
//! What is left is small: a few requests, two headers to parse
//! ([`challenge`]) and the token exchange from Docker's token spec.

pub mod challenge;

mod blob;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use thiserror::Error;
use tracing::{debug, warn};

pub use blob::UploadOutcome;

use self::challenge::{Challenge, next_link, parse_challenge};
use super::auth::{AuthStore, Credentials, SecretKind};
use super::catalog::CatalogError;
use super::digest::Digest;
use super::oci;
use super::reference::{DEFAULT_DOMAIN, Reference};
use super::snapshot::SnapshotError;
use super::store::{BlobStore, StoreError};

/// Installs ring as rustls' process-wide crypto provider. reqwest is built
/// without a provider (DEPENDENCIES.md, "rustls provider order"), and building
/// a client before one is installed panics. Idempotent: a provider installed
/// before (by us or by `main`) is kept.
pub fn init_tls() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Manifest media types we ask for, in the order Docker sends them.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    oci::MEDIA_OCI_MANIFEST,
    oci::MEDIA_OCI_INDEX,
    oci::MEDIA_DOCKER_MANIFEST,
    oci::MEDIA_DOCKER_LIST,
];

/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Attempts per request before a transient failure is final.
const MAX_ATTEMPTS: u32 = 5;

/// Docker Hub's API endpoint for the `docker.io` domain.
const DOCKER_HUB_ENDPOINT: &str = "https://registry-1.docker.io";

/// Docker Hub's index, which serves the search API (`/v1/search`).
pub const DOCKER_INDEX_SERVER: &str = "https://index.docker.io";

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries allowed over plain HTTP: host names, `host:port`, IP
    /// addresses or CIDRs. The default allows `localhost`, `127.0.0.0/8` and
    /// `::1`, as Docker does.
    pub insecure: Vec<String>,
    /// Mirrors tried before Docker Hub for `docker.io` pulls
    /// (`https://mirror.example`, or a bare host).
    pub mirrors: Vec<String>,
    /// Credentials by registry.
    pub auth: AuthStore,
    /// Blobs up to this size are uploaded with one `PUT`; bigger ones in
    /// `PATCH` chunks of this size.
    pub chunk_size: u64,
    /// How many blobs move at once in one pull or push.
    pub parallel: usize,
    /// Entries asked for per page of tag and repository listings (`n`);
    /// the registry may send fewer, and `Link` headers lead to the rest.
    pub page_size: usize,
    /// Where Docker Hub's search API is (`scheme://host[:port]`, default
    /// [`DOCKER_INDEX_SERVER`]).
    pub index_server: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: vec!["localhost".into(), "127.0.0.0/8".into(), "::1".into()],
            mirrors: Vec::new(),
            auth: AuthStore::empty(),
            chunk_size: 8 << 20,
            parallel: 4,
            page_size: 100,
            index_server: DOCKER_INDEX_SERVER.to_string(),
        }
    }
}

impl RegistryOptions {
    /// True when `domain` (`host[:port]`) may be reached over plain HTTP.
    pub fn is_insecure(&self, domain: &str) -> bool {
        let host = host_of(domain);
        let ip = host.parse::<IpAddr>().ok();
        self.insecure.iter().any(|entry| {
            let entry = entry.trim();
            if entry.eq_ignore_ascii_case(domain) || entry.eq_ignore_ascii_case(host) {
                return true;
            }
            match (ip, parse_cidr(entry)) {
                (Some(ip), Some((net, bits))) => cidr_contains(net, bits, ip),
                _ => false,
            }
        })
    }
}

/// The host of `host[:port]`, `[v6]:port` or a bare v6 address.
fn host_of(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if domain.matches(':').count() > 1 {
        return domain;
    }
    domain.split(':').next().unwrap_or(domain)
}

fn parse_cidr(entry: &str) -> Option<(IpAddr, u8)> {
    match entry.split_once('/') {
        Some((ip, bits)) => Some((ip.parse().ok()?, bits.parse().ok()?)),
        None => {
            let ip: IpAddr = entry.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let prefix = |a: u128, width: u8| -> u128 {
        let bits = u32::from(bits.min(width));
        if bits == 0 {
            0
        } else {
            a >> (u32::from(width) - bits)
        }
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            prefix(u32::from(n).into(), 32) == prefix(u32::from(i).into(), 32)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => prefix(n.into(), 128) == prefix(i.into(), 128),
        _ => false,
    }
}

/// What was being done when an error happened, for messages such as
/// `pull localhost:5000/app:v1: manifest unknown (404)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The verb: `pull`, `push`, `login`, `list tags`…
    pub op: &'static str,
    /// What it was done to: a reference, repository or registry.
    pub target: String,
}

impl Operation {
    /// An operation on `target`.
    pub fn new(op: &'static str, target: impl fmt::Display) -> Self {
        Self {
            op,
            target: target.to_string(),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.target)
    }
}

/// Errors of registry operations.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client {
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The registry could not be reached, or the transfer broke and retries
    /// ran out.
    #[error("{operation}: cannot reach {registry}")]
    Connect {
        /// What failed.
        operation: Operation,
        /// The registry endpoint.
        registry: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{operation}: {} ({status})", describe(code.as_deref(), message.as_deref(), *status))]
    Status {
        /// What failed.
        operation: Operation,
        /// The HTTP status.
        status: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`), when it sent one.
        code: Option<String>,
        /// The registry's error message, when it sent one.
        message: Option<String>,
    },
    /// The registry refused the credentials, or wants some and has none.
    #[error("{operation}: access denied by {registry}: {} ({status}){}",
        describe(code.as_deref(), message.as_deref(), *status),
        if *has_credentials { "; the credentials were not accepted" } else { "; log in first" })]
    Unauthorized {
        /// What failed.
        operation: Operation,
        /// The registry.
        registry: String,
        /// 401 or 403.
        status: u16,
        /// The registry's error code, when it sent one.
        code: Option<String>,
        /// The registry's error message, when it sent one.
        message: Option<String>,
        /// Whether credentials were sent.
        has_credentials: bool,
    },
    /// The token server did not give a usable token.
    #[error("{operation}: the token server {realm} gave no usable token")]
    Token {
        /// What failed.
        operation: Operation,
        /// The token server.
        realm: String,
    },
    /// A blob's content does not match its digest.
    #[error(
        "{operation}: blob {digest} was refused and nothing was stored: its content hashes to {actual}"
    )]
    BlobDigest {
        /// What failed.
        operation: Operation,
        /// The digest the blob was announced with.
        digest: Digest,
        /// What the received content hashes to.
        actual: Digest,
    },
    /// A manifest's content does not match the digest asked for or announced.
    #[error("{operation}: manifest was refused: asked for {expected}, content hashes to {actual}")]
    ManifestDigest {
        /// What failed.
        operation: Operation,
        /// The digest asked for (or announced in `Docker-Content-Digest`).
        expected: Digest,
        /// What the received bytes hash to.
        actual: Digest,
    },
    /// More bytes came than the descriptor announced.
    #[error(
        "{operation}: blob {digest} is larger than the {limit} bytes announced; it was refused"
    )]
    TooLarge {
        /// What failed.
        operation: Operation,
        /// The blob.
        digest: Digest,
        /// The announced size.
        limit: u64,
    },
    /// Writing a blob into the local store failed.
    #[error("{operation}: cannot store blob {digest}")]
    Store {
        /// What failed.
        operation: Operation,
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Reading a blob from the local store failed.
    #[error("{operation}: cannot read local blob {digest}")]
    LocalBlob {
        /// What failed.
        operation: Operation,
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A layer could not be unpacked, or is not the layer the config names.
    #[error("{operation}: cannot unpack layer {blob}")]
    Unpack {
        /// What failed.
        operation: Operation,
        /// The layer blob.
        blob: Digest,
        /// Why (boxed: unpack errors are large, and rare).
        #[source]
        source: Box<SnapshotError>,
    },
    /// The local catalog failed.
    #[error("{operation}: image catalog")]
    Catalog {
        /// What failed.
        operation: Operation,
        /// Why.
        #[source]
        source: CatalogError,
    },
    /// A manifest, index, config or listing does not parse.
    #[error("{operation}: invalid {what}")]
    Parse {
        /// What failed.
        operation: Operation,
        /// What did not parse.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The registry answered something the protocol does not allow.
    #[error("{operation}: {what}")]
    Protocol {
        /// What failed.
        operation: Operation,
        /// What was wrong.
        what: &'static str,
    },
    /// A manifest of a kind we do not handle.
    #[error("{operation}: unsupported media type {media_type:?}")]
    MediaType {
        /// What failed.
        operation: Operation,
        /// The media type.
        media_type: String,
    },
    /// The index has no manifest for the platform asked for.
    #[error("{operation}: no image for platform {wanted}; available: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    Platform {
        /// What failed.
        operation: Operation,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index has.
        available: Vec<String>,
    },
    /// The config's `rootfs.diff_ids` and the manifest's layers disagree.
    #[error(
        "{operation}: the config lists {diff_ids} layer diff ids but the manifest has {layers} layers"
    )]
    LayerCount {
        /// What failed.
        operation: Operation,
        /// Entries in `rootfs.diff_ids`.
        diff_ids: usize,
        /// Layers in the manifest.
        layers: usize,
    },
    /// The credentials file cannot be read.
    #[error("cannot read registry credentials from {}", path.display())]
    AuthRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not JSON.
    #[error("the registry credentials file {} is corrupt", path.display())]
    AuthCorrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The credentials file cannot be written.
    #[error("cannot write registry credentials to {}", path.display())]
    AuthWrite {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A credential helper could not be run, or failed.
    #[error("credential helper {program} {verb} for {registry} failed")]
    CredentialHelper {
        /// The helper program (`docker-credential-<name>`).
        program: String,
        /// What it was asked to do: `get`, `store` or `erase`.
        verb: &'static str,
        /// The server URL it was asked about.
        registry: String,
        /// Why: the helper's own message when it ran and failed.
        #[source]
        source: std::io::Error,
    },
    /// A background task died.
    #[error("{operation}: a transfer task failed")]
    Task {
        /// What failed.
        operation: Operation,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

fn describe(code: Option<&str>, message: Option<&str>, status: u16) -> String {
    match (message, code) {
        (Some(m), _) if !m.is_empty() => m.to_string(),
        (_, Some(c)) if !c.is_empty() => c.to_ascii_lowercase().replace('_', " "),
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_ascii_lowercase(),
    }
}

impl RegistryError {
    /// True when the registry said the manifest or blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

/// One registry endpoint: where requests go, and which name credentials and
/// challenges are kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// The registry domain (for credentials).
    host: String,
}

/// A repository on one endpoint: what blob and manifest requests are made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    endpoint: Endpoint,
    path: String,
}

impl Repository {
    /// The repository path (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.endpoint.base, self.path)
    }
}

/// One repository found by [`RegistryClient::search`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResult {
    /// The repository (`busybox`, `user/app`).
    pub name: String,
    /// What its owner says it is.
    pub description: String,
    /// Its stars.
    pub star_count: u64,
    /// A Docker official image.
    pub is_official: bool,
    /// Built automatically from a source repository (a retired Hub feature).
    pub is_automated: bool,
}

/// A manifest or index as received.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes, exactly as the registry sent them.
    pub bytes: Vec<u8>,
    /// Its media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// A bearer token and when to stop using it.
struct CachedToken {
    token: String,
    expires: Instant,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

#[derive(Debug, Default)]
struct AuthState {
    /// What each endpoint asked for on its last 401.
    challenges: HashMap<String, Challenge>,
    /// Tokens by realm, service, scopes and user.
    tokens: HashMap<String, CachedToken>,
}

/// The token server's answer (Docker's token spec; `access_token` is the
/// OAuth2 name of the same thing).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The registry client. Cheap to share behind an `Arc`; it keeps challenges
/// and tokens so later requests authenticate up front.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    options: RegistryOptions,
    state: Mutex<AuthState>,
}

/// `repository:<path>:pull`.
pub fn pull_scope(path: &str) -> String {
    format!("repository:{path}:pull")
}

/// `repository:<path>:pull,push`.
pub fn push_scope(path: &str) -> String {
    format!("repository:{path}:pull,push")
}

impl RegistryClient {
    /// A client with `options`. Installs the TLS provider if needed.
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        init_tls();
        let http = reqwest::Client::builder()
            .user_agent(concat!("stack/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| RegistryError::Client { source })?;
        Ok(Self {
            http,
            options,
            state: Mutex::new(AuthState::default()),
        })
    }

    /// The HTTP client (ADD of a URL in a build fetches with it).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The options the client was built with.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    fn endpoint(&self, domain: &str) -> Endpoint {
        if domain == DEFAULT_DOMAIN {
            return Endpoint {
                base: DOCKER_HUB_ENDPOINT.to_string(),
                host: DEFAULT_DOMAIN.to_string(),
            };
        }
        let scheme = if self.options.is_insecure(domain) {
            "http"
        } else {
            "https"
        };
        Endpoint {
            base: format!("{scheme}://{domain}"),
            host: domain.to_string(),
        }
    }

    /// The endpoint a configured URL (a mirror, the index server) names; a
    /// bare host gets the scheme its registry would.
    fn endpoint_at(&self, location: &str) -> Endpoint {
        let location = location.trim_end_matches('/');
        if location.starts_with("http://") || location.starts_with("https://") {
            let host = location.split_once("://").map_or(location, |(_, h)| h);
            let host = host.split('/').next().unwrap_or(host);
            Endpoint {
                base: location.to_string(),
                host: host.to_string(),
            }
        } else {
            self.endpoint(location)
        }
    }

    /// The repository of `reference` on its own registry (for pushes).
    pub fn repository(&self, reference: &Reference) -> Repository {
        Repository {
            endpoint: self.endpoint(reference.domain()),
            path: reference.path().to_string(),
        }
    }

    /// Where to pull `reference` from, in order: mirrors first for Docker
    /// Hub, then the registry itself.
    pub fn pull_repositories(&self, reference: &Reference) -> Vec<Repository> {
        let mut out: Vec<Repository> = Vec::new();
        if reference.domain() == DEFAULT_DOMAIN {
            for mirror in &self.options.mirrors {
                out.push(Repository {
                    endpoint: self.endpoint_at(mirror),
                    path: reference.path().to_string(),
                });
            }
        }
        out.push(self.repository(reference));
        out
    }

    /// The stored credentials for a registry host; its credential helper,
    /// when one must be asked, runs on a blocking thread.
    async fn stored_credentials(&self, host: &str) -> Option<Credentials> {
        let auth = &self.options.auth;
        if !auth.needs_helper(host) {
            return auth.credentials(host);
        }
        let (auth, host) = (auth.clone(), host.to_string());
        tokio::task::spawn_blocking(move || auth.credentials(&host))
            .await
            .ok()
            .flatten()
    }

    fn cached_challenge(&self, endpoint: &Endpoint) -> Option<Challenge> {
        self.lock_state().challenges.get(&endpoint.base).cloned()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (each change is one insert or remove), so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `Authorization` header for a request to `endpoint` needing
    /// `scopes`, from what the endpoint asked for before.
    async fn authorization(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        credentials: Option<&Credentials>,
        operation: &Operation,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let stored;
        let credentials = match credentials {
            Some(c) => Some(c),
            None => {
                stored = self.stored_credentials(&endpoint.host).await;
                stored.as_ref()
            }
        };
        if let Some(c) = credentials.filter(|c| c.kind() == SecretKind::RegistryToken) {
            // Docker's `registrytoken`: the bearer token itself, whatever
            // the registry asked for.
            return bearer_header(c.password(), operation, endpoint.base.as_str()).map(Some);
        }
        match self.cached_challenge(endpoint) {
            None => Ok(None),
            // A token is no password: basic authentication goes without.
            Some(Challenge::Basic) => Ok(credentials
                .filter(|c| c.kind() == SecretKind::Password)
                .map(basic_header)),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = scopes.to_vec();
                if scopes.is_empty() {
                    scopes.extend(scope);
                }
                let token = self
                    .token(&realm, service.as_deref(), &scopes, credentials, operation)
                    .await?;
                bearer_header(&token, operation, &realm).map(Some)
            }
        }
    }

    /// A token for `scopes` from the token server, cached until it expires.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: Option<&Credentials>,
        operation: &Operation,
    ) -> Result<String, RegistryError> {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        let key = format!(
            "{realm}\n{}\n{}\n{}\n{:?}",
            service.unwrap_or_default(),
            sorted.join(" "),
            credentials.map_or("", |c| c.username.as_str()),
            credentials.map(Credentials::kind)
        );
        if let Some(cached) = self.lock_state().tokens.get(&key)
            && cached.expires > Instant::now()
        {
            return Ok(cached.token.clone());
        }
        let request = match credentials.filter(|c| c.kind() == SecretKind::IdentityToken) {
            // OAuth2, as distribution's token handler does with a refresh
            // token: a form POST to the realm.
            Some(c) => self
                .http
                .post(realm)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(refresh_form(service, &sorted, c.password())),
            None => {
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(service) = service {
                    query.push(("service", service));
                }
                for scope in &sorted {
                    query.push(("scope", scope));
                }
                let basic = credentials.filter(|c| c.kind() == SecretKind::Password);
                if let Some(c) = basic {
                    query.push(("account", &c.username));
                }
                let mut request = self.http.get(realm).query(&query);
                if let Some(c) = basic {
                    request = request.header(header::AUTHORIZATION, basic_header(c));
                }
                request
            }
        };
        debug!(realm, scopes = %sorted.join(" "), "fetching registry token");
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Connect {
                operation: operation.clone(),
                registry: realm.to_string(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let (code, message) = error_body(response).await;
            return Err(if matches!(status.as_u16(), 401 | 403) {
                RegistryError::Unauthorized {
                    operation: operation.clone(),
                    registry: realm.to_string(),
                    status: status.as_u16(),
                    code,
                    message,
                    has_credentials: credentials.is_some(),
                }
            } else {
                RegistryError::Status {
                    operation: operation.clone(),
                    status: status.as_u16(),
                    code,
                    message,
                }
            });
        }
        let body = read_limited(response, 1 << 20, operation, realm).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|source| RegistryError::Parse {
                operation: operation.clone(),
                what: "token response",
                source,
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Token {
                operation: operation.clone(),
                realm: realm.to_string(),
            })?;
        // Docker's token spec: 60 s when unsaid. Stop 10 s early so a request
        // never goes out with a token that expires in flight.
        let lifetime = parsed.expires_in.unwrap_or(60).max(20);
        self.lock_state().tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                expires: Instant::now() + Duration::from_secs(lifetime - 10),
            },
        );
        Ok(token)
    }

    /// Sends a request built by `build`, authenticating as the endpoint asks
    /// (learning its challenge from a 401 and sending again once) and, when
    /// `retry` is set, retrying transient failures (connection errors, 5xx,
    /// 429) with exponential backoff. Returns any final response; the caller
    /// judges its status.
    async fn send(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        operation: &Operation,
        retry: bool,
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        self.send_as(endpoint, scopes, operation, retry, None, build)
            .await
    }

    async fn send_as(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        operation: &Operation,
        retry: bool,
        credentials: Option<&Credentials>,
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            attempt += 1;
            let mut request = build(&self.http);
            if let Some(value) = self
                .authorization(endpoint, scopes, credentials, operation)
                .await?
            {
                request = request.header(header::AUTHORIZATION, value);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    if retry && attempt < MAX_ATTEMPTS && is_transient(&source) {
                        warn!(registry = %endpoint.base, attempt, "registry request failed, retrying");
                        tokio::time::sleep(backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(RegistryError::Connect {
                        operation: operation.clone(),
                        registry: endpoint.base.clone(),
                        source,
                    });
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let parsed = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(found) = parsed {
                    let has_credentials = credentials.is_some()
                        || self.stored_credentials(&endpoint.host).await.is_some();
                    let useful = matches!(found, Challenge::Bearer { .. }) || has_credentials;
                    let mut state = self.lock_state();
                    // A 401 with a token in hand means the token no longer
                    // does (expired early, or scope changed): forget tokens.
                    if matches!(found, Challenge::Bearer { .. }) {
                        state.tokens.clear();
                    }
                    state.challenges.insert(endpoint.base.clone(), found);
                    drop(state);
                    if useful {
                        attempt -= 1;
                        continue;
                    }
                }
            }
            let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            if retry && transient && attempt < MAX_ATTEMPTS {
                let after = retry_after(response.headers());
                warn!(registry = %endpoint.base, status = status.as_u16(), attempt, "registry busy or failing, retrying");
                tokio::time::sleep(backoff(attempt, after)).await;
                continue;
            }
            return Ok(response);
        }
    }

    /// The error for a response with an unexpected status, with the
    /// registry's `errors[]` code and message when the body has them.
    async fn status_error(
        &self,
        endpoint: &Endpoint,
        operation: &Operation,
        response: Response,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let (code, message) = error_body(response).await;
        if matches!(status, 401 | 403) {
            RegistryError::Unauthorized {
                operation: operation.clone(),
                registry: endpoint.host.clone(),
                status,
                code,
                message,
                has_credentials: self.stored_credentials(&endpoint.host).await.is_some(),
            }
        } else {
            RegistryError::Status {
                operation: operation.clone(),
                status,
                code,
                message,
            }
        }
    }

    /// `GET /v2/`: checks that `domain` speaks the protocol and that we may
    /// use it (authenticating as it asks).
    pub async fn ping(&self, domain: &str) -> Result<(), RegistryError> {
        let endpoint = self.endpoint(domain);
        let operation = Operation::new("ping", domain);
        let url = format!("{}/v2/", endpoint.base);
        let response = self
            .send(&endpoint, &[], &operation, true, &|c| c.get(&url))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&endpoint, &operation, response).await)
        }
    }

    /// Checks `credentials` against `domain` the way `docker login` does:
    /// `GET /v2/`, then basic authentication or a token fetched with them,
    /// whichever the registry asks for. A registry that asks for nothing
    /// accepts any credentials.
    pub async fn check_credentials(
        &self,
        domain: &str,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let endpoint = self.endpoint(domain);
        let operation = Operation::new("login", domain);
        let url = format!("{}/v2/", endpoint.base);
        let probe = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| RegistryError::Connect {
                operation: operation.clone(),
                registry: endpoint.base.clone(),
                source,
            })?;
        if probe.status().is_success() {
            return Ok(());
        }
        if probe.status() != StatusCode::UNAUTHORIZED {
            return Err(self.status_error(&endpoint, &operation, probe).await);
        }
        let challenge = probe
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or(RegistryError::Protocol {
                operation: operation.clone(),
                what: "the registry wants authentication but sent no usable challenge",
            })?;
        let request = self.http.get(&url);
        let request = match &challenge {
            Challenge::Basic => request.header(header::AUTHORIZATION, basic_header(credentials)),
            Challenge::Bearer { realm, service, .. } => {
                let token = self
                    .token(
                        realm,
                        service.as_deref(),
                        &[],
                        Some(credentials),
                        &operation,
                    )
                    .await?;
                request.bearer_auth(token)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Connect {
                operation: operation.clone(),
                registry: endpoint.base.clone(),
                source,
            })?;
        if response.status().is_success() {
            self.lock_state()
                .challenges
                .insert(endpoint.base.clone(), challenge);
            return Ok(());
        }
        let status = response.status().as_u16();
        let (code, message) = error_body(response).await;
        Err(RegistryError::Unauthorized {
            operation,
            registry: endpoint.host,
            status,
            code,
            message,
            has_credentials: true,
        })
    }

    /// Fetches the manifest or index `reference` (a tag or `sha256:…`) of
    /// `repository`. When `expected` is given the bytes must hash to it;
    /// otherwise a `Docker-Content-Digest` the registry sends must match.
    pub async fn fetch_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        expected: Option<&Digest>,
        operation: &Operation,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = repository.url(&format!("manifests/{reference}"));
        let scopes = [pull_scope(&repository.path)];
        let accept = MANIFEST_ACCEPT.join(", ");
        let response = self
            .send(&repository.endpoint, &scopes, operation, true, &|c| {
                c.get(&url).header(header::ACCEPT, &accept)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(&repository.endpoint, operation, response)
                .await);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_limited(
            response,
            MAX_MANIFEST_SIZE,
            operation,
            &repository.endpoint.base,
        )
        .await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected.or(announced.as_ref())
            && *expected != digest
        {
            return Err(RegistryError::ManifestDigest {
                operation: operation.clone(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let media_type = match content_type {
            Some(t) if MANIFEST_ACCEPT.contains(&t.as_str()) => t,
            _ => sniff_media_type(&bytes).ok_or_else(|| RegistryError::MediaType {
                operation: operation.clone(),
                media_type: String::from("(none)"),
            })?,
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Uploads a manifest under `reference` (a tag or its digest); returns
    /// the digest the registry stored it under, which must be the digest of
    /// `bytes`.
    pub async fn put_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        operation: &Operation,
    ) -> Result<Digest, RegistryError> {
        let url = repository.url(&format!("manifests/{reference}"));
        let scopes = [push_scope(&repository.path)];
        let body = bytes::Bytes::copy_from_slice(bytes);
        let response = self
            .send(&repository.endpoint, &scopes, operation, true, &|c| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(self
                .status_error(&repository.endpoint, operation, response)
                .await);
        }
        let digest = Digest::of(bytes);
        let stored = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        match stored {
            Some(stored) if stored != digest => Err(RegistryError::ManifestDigest {
                operation: operation.clone(),
                expected: digest,
                actual: stored,
            }),
            _ => Ok(digest),
        }
    }

    /// Every tag of `repository` (`/v2/<name>/tags/list`, following `Link`
    /// pages).
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let repository = self.repository(reference);
        let operation = Operation::new("list tags", reference.repository());
        let scopes = [pull_scope(&repository.path)];
        let first = format!(
            "{}?n={}",
            repository.url("tags/list"),
            self.options.page_size.max(1)
        );
        let mut out = Vec::new();
        for page in self
            .pages(&repository.endpoint, &scopes, &operation, first)
            .await?
        {
            let tags: Tags =
                serde_json::from_slice(&page).map_err(|source| RegistryError::Parse {
                    operation: operation.clone(),
                    what: "tag list",
                    source,
                })?;
            out.extend(tags.tags.unwrap_or_default());
        }
        Ok(out)
    }

    /// Every repository on the registry `domain` (`/v2/_catalog`, following
    /// `Link` pages), for `search`.
    pub async fn catalog(&self, domain: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Repositories {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let endpoint = self.endpoint(domain);
        let operation = Operation::new("list repositories of", domain);
        let scopes = ["registry:catalog:*".to_string()];
        let first = format!(
            "{}/v2/_catalog?n={}",
            endpoint.base,
            self.options.page_size.max(1)
        );
        let mut out = Vec::new();
        for page in self.pages(&endpoint, &scopes, &operation, first).await? {
            let repos: Repositories =
                serde_json::from_slice(&page).map_err(|source| RegistryError::Parse {
                    operation: operation.clone(),
                    what: "repository catalog",
                    source,
                })?;
            out.extend(repos.repositories.unwrap_or_default());
        }
        Ok(out)
    }

    /// Docker Hub's search (`GET /v1/search?q=TERM&n=LIMIT` on
    /// [`RegistryOptions::index_server`]): at most `limit` repositories
    /// matching `term`, as the index ranks them.
    pub async fn search(
        &self,
        term: &str,
        limit: usize,
    ) -> Result<Vec<SearchResult>, RegistryError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            results: Option<Vec<RawResult>>,
        }
        #[derive(Deserialize)]
        struct RawResult {
            name: String,
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            star_count: Option<u64>,
            #[serde(default)]
            is_official: Option<bool>,
            #[serde(default)]
            is_automated: Option<bool>,
        }
        let endpoint = self.endpoint_at(&self.options.index_server);
        let operation = Operation::new("search", &endpoint.host);
        let url = format!("{}/v1/search", endpoint.base);
        let n = limit.to_string();
        let response = self
            .send(&endpoint, &[], &operation, true, &|c| {
                c.get(&url).query(&[("q", term), ("n", n.as_str())])
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(&endpoint, &operation, response).await);
        }
        let body = read_limited(response, 16 << 20, &operation, &endpoint.base).await?;
        let page: Page = serde_json::from_slice(&body).map_err(|source| RegistryError::Parse {
            operation: operation.clone(),
            what: "search results",
            source,
        })?;
        Ok(page
            .results
            .unwrap_or_default()
            .into_iter()
            .map(|r| SearchResult {
                name: r.name,
                description: r.description.unwrap_or_default(),
                star_count: r.star_count.unwrap_or(0),
                is_official: r.is_official.unwrap_or(false),
                is_automated: r.is_automated.unwrap_or(false),
            })
            .collect())
    }

    /// The bodies of a paginated listing, first page at `url`.
    async fn pages(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        operation: &Operation,
        mut url: String,
    ) -> Result<Vec<Vec<u8>>, RegistryError> {
        let mut pages = Vec::new();
        // A registry that links a page to itself must not loop us forever.
        for _ in 0..10_000 {
            let response = self
                .send(endpoint, scopes, operation, true, &|c| c.get(&url))
                .await?;
            if !response.status().is_success() {
                return Err(self.status_error(endpoint, operation, response).await);
            }
            let next = response
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            pages.push(read_limited(response, 16 << 20, operation, &endpoint.base).await?);
            match next {
                Some(next) => url = resolve(&endpoint.base, &next, operation)?,
                None => return Ok(pages),
            }
        }
        Err(RegistryError::Protocol {
            operation: operation.clone(),
            what: "the listing never ends",
        })
    }

    /// Downloads blob `descriptor` of `repository` into `store`, verified
    /// against its digest and size; `advanced` is told of each byte count
    /// received. Resumes with `Range` after a broken transfer.
    pub async fn download_blob(
        &self,
        repository: &Repository,
        descriptor: &oci::Descriptor,
        store: &BlobStore,
        operation: &Operation,
        advanced: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        blob::download(self, repository, descriptor, store, operation, advanced).await
    }

    /// Downloads a small blob (a config) into memory, verified against its
    /// digest and size.
    pub async fn fetch_blob(
        &self,
        repository: &Repository,
        descriptor: &oci::Descriptor,
        operation: &Operation,
    ) -> Result<Vec<u8>, RegistryError> {
        blob::fetch_small(self, repository, descriptor, operation).await
    }

    /// Uploads blob `digest` from `store` unless the repository has it:
    /// mounted from `mount_from` (another repository path on the same
    /// registry) when possible, else one `PUT`, or `PATCH` chunks for blobs
    /// bigger than [`RegistryOptions::chunk_size`].
    pub async fn upload_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        store: &BlobStore,
        mount_from: Option<&str>,
        operation: &Operation,
        advanced: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<UploadOutcome, RegistryError> {
        blob::upload(
            self, repository, digest, store, mount_from, operation, advanced,
        )
        .await
    }

    /// True when `repository` has blob `digest` (`HEAD`).
    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
        operation: &Operation,
    ) -> Result<bool, RegistryError> {
        blob::exists(self, repository, digest, operation).await
    }
}

/// The body of an OAuth2 refresh-token grant, as distribution's
/// `fetchTokenWithOAuth` and Docker's daemon (client id `docker`) send it.
/// Docker ignores the refresh token a server may send back, and so do we.
fn refresh_form(service: Option<&str>, scopes: &[String], refresh_token: &str) -> String {
    let scope = scopes.join(" ");
    [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("service", service.unwrap_or_default()),
        ("client_id", "docker"),
        ("scope", scope.as_str()),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
    .collect::<Vec<_>>()
    .join("&")
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `Authorization: Bearer TOKEN`, marked sensitive.
fn bearer_header(
    token: &str,
    operation: &Operation,
    realm: &str,
) -> Result<HeaderValue, RegistryError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| RegistryError::Token {
            operation: operation.clone(),
            realm: realm.to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic_header(credentials: &Credentials) -> HeaderValue {
    let encoded = BASE64.encode(format!(
        "{}:{}",
        credentials.username,
        credentials.password()
    ));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .expect("base64 output is always a valid header value");
    value.set_sensitive(true);
    value
}

fn is_transient(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// 250 ms doubling per attempt, at most 8 s; a `Retry-After` in seconds wins
/// when it is shorter than a minute.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after.filter(|d| *d <= Duration::from_secs(60)) {
        return after;
    }
    let exp = attempt.saturating_sub(1).min(5);
    Duration::from_millis(250 << exp).min(Duration::from_secs(8))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `location` (absolute, or relative to the endpoint) as an absolute URL.
fn resolve(base: &str, location: &str, operation: &Operation) -> Result<String, RegistryError> {
    let invalid = || RegistryError::Protocol {
        operation: operation.clone(),
        what: "the registry sent an invalid location",
    };
    let base = reqwest::Url::parse(base).map_err(|_| invalid())?;
    base.join(location).map(String::from).map_err(|_| invalid())
}

/// The registry's error code and message from an error body, if any.
async fn error_body(response: Response) -> (Option<String>, Option<String>) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 << 10 {
            break;
        }
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) => parsed
            .errors
            .into_iter()
            .next()
            .map_or((None, None), |e| (e.code, e.message)),
        Err(_) => (None, None),
    }
}

/// A whole response body, refusing more than `limit` bytes.
async fn read_limited(
    response: Response,
    limit: u64,
    operation: &Operation,
    registry: &str,
) -> Result<Vec<u8>, RegistryError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(RegistryError::Protocol {
            operation: operation.clone(),
            what: "the response is larger than allowed",
        });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| RegistryError::Connect {
            operation: operation.clone(),
            registry: registry.to_string(),
            source,
        })?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(RegistryError::Protocol {
                operation: operation.clone(),
                what: "the response is larger than allowed",
            });
        }
    }
    Ok(body)
}

/// The media type a manifest names itself, or guesses from its shape when it
/// names none (OCI makes `mediaType` optional).
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(t) = value.get("mediaType").and_then(|v| v.as_str()) {
        return Some(t.to_string());
    }
    if value.get("manifests").is_some() {
        Some(oci::MEDIA_OCI_INDEX.to_string())
    } else if value.get("layers").is_some() {
        Some(oci::MEDIA_OCI_MANIFEST.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_by_name_port_and_cidr() {
        let mut options = RegistryOptions::default();
        assert!(options.is_insecure("localhost:5000"));
        assert!(options.is_insecure("127.0.0.1:41234"));
        assert!(options.is_insecure("127.9.9.9"));
        assert!(options.is_insecure("[::1]:5000"));
        assert!(!options.is_insecure("registry.example:5000"));
        assert!(!options.is_insecure("10.0.0.1:5000"));
        assert!(!options.is_insecure("docker.io"));
        options.insecure = vec!["10.0.0.0/8".into(), "registry.example:5000".into()];
        assert!(options.is_insecure("10.1.2.3:5000"));
        assert!(options.is_insecure("registry.example:5000"));
        assert!(!options.is_insecure("registry.example:443"));
        assert!(
            !options.is_insecure("localhost:5000"),
            "the list replaces the default"
        );
    }

    #[test]
    fn endpoints_pick_the_scheme_and_docker_hub() {
        let client = RegistryClient::new(RegistryOptions {
            mirrors: vec!["http://127.0.0.1:5001".into(), "mirror.example".into()],
            ..RegistryOptions::default()
        })
        .unwrap();
        let local: Reference = "localhost:5000/app:v1".parse().unwrap();
        assert_eq!(
            client.repository(&local).endpoint.base,
            "http://localhost:5000"
        );
        assert_eq!(
            client.pull_repositories(&local).len(),
            1,
            "mirrors are for docker.io"
        );
        let hub: Reference = "busybox".parse().unwrap();
        let bases: Vec<String> = client
            .pull_repositories(&hub)
            .into_iter()
            .map(|r| r.endpoint.base)
            .collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5001",
                "https://mirror.example",
                DOCKER_HUB_ENDPOINT
            ]
        );
        assert_eq!(client.repository(&hub).path(), "library/busybox");
        let remote: Reference = "ghcr.io/o/app".parse().unwrap();
        assert_eq!(client.repository(&remote).endpoint.base, "https://ghcr.io");
    }

    #[test]
    fn errors_carry_the_registry_message_and_status() {
        let err = RegistryError::Status {
            operation: Operation::new("pull", "localhost:5000/app:v1"),
            status: 404,
            code: Some("MANIFEST_UNKNOWN".into()),
            message: Some("manifest unknown".into()),
        };
        assert_eq!(
            err.to_string(),
            "pull localhost:5000/app:v1: manifest unknown (404)"
        );
        assert!(err.is_not_found());
        let bare = RegistryError::Status {
            operation: Operation::new("pull", "x"),
            status: 503,
            code: None,
            message: None,
        };
        assert_eq!(bare.to_string(), "pull x: service unavailable (503)");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, None), Duration::from_millis(250));
        assert_eq!(backoff(3, None), Duration::from_secs(1));
        assert_eq!(backoff(30, None), Duration::from_secs(8));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn manifests_without_a_media_type_are_sniffed() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(oci::MEDIA_OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(oci::MEDIA_OCI_MANIFEST)
        );
        assert_eq!(sniff_media_type(b"[]"), None);
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let mut options = RegistryOptions::default();
        options
            .auth
            .insert("localhost:5000", Credentials::new("me", "hunter2"));
        let client = RegistryClient::new(options).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let header = basic_header(&Credentials::new("me", "hunter2"));
        assert!(header.is_sensitive());
    }

    /// What the token server of [`identity_tokens_are_traded_with_an_oauth_post`]
    /// was sent: method, content type, form pairs.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

    /// A registry peer on loopback that wants `Bearer access-1`, with its
    /// token server at `/token`, which trades the refresh token `id-1` for it.
    async fn token_registry() -> (String, Seen) {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen: Seen = Seen::default();
        let realm = format!("http://{host}/token");
        let guarded = move |headers: HeaderMap| {
            let realm = realm.clone();
            async move {
                let bearer = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    == Some("Bearer access-1");
                use axum::response::IntoResponse as _;
                if bearer {
                    r#"{"name":"app","tags":["v1"]}"#.into_response()
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            header::WWW_AUTHENTICATE,
                            format!(r#"Bearer realm="{realm}",service="peer""#),
                        )],
                    )
                        .into_response()
                }
            }
        };
        let token = {
            let seen = seen.clone();
            move |method: axum::http::Method, headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let pairs = form_decode(&body);
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let ok = pairs
                        .iter()
                        .any(|(k, v)| k == "refresh_token" && v == "id-1");
                    seen.lock()
                        .unwrap()
                        .push((method.to_string(), content_type, pairs));
                    if ok {
                        (
                            StatusCode::OK,
                            r#"{"access_token":"access-1","expires_in":300,"refresh_token":"id-2"}"#,
                        )
                    } else {
                        (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_grant"}"#)
                    }
                }
            }
        };
        let app = axum::Router::new()
            .route("/v2/", get(guarded.clone()))
            .route("/v2/app/tags/list", get(guarded))
            .route("/token", post(token.clone()).get(token));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (host, seen)
    }

    #[tokio::test]
    async fn identity_tokens_are_traded_with_an_oauth_post() {
        let (host, seen) = token_registry().await;
        let mut auth = AuthStore::empty();
        auth.insert(&host, Credentials::identity_token("me", "id-1"));
        let client = RegistryClient::new(RegistryOptions {
            auth,
            ..RegistryOptions::default()
        })
        .unwrap();
        let reference: Reference = format!("{host}/app").parse().unwrap();
        assert_eq!(client.list_tags(&reference).await.unwrap(), ["v1"]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (method, content_type, pairs) = &seen[0];
        assert_eq!(method, "POST");
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        let pair = |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.as_str());
        assert_eq!(pair("grant_type"), Some("refresh_token"));
        assert_eq!(pair("refresh_token"), Some("id-1"));
        assert_eq!(pair("service"), Some("peer"));
        assert_eq!(pair("client_id"), Some("docker"));
        assert_eq!(pair("scope"), Some("repository:app:pull"));
        assert_eq!(pair("password"), None);
    }

    #[tokio::test]
    async fn a_refused_identity_token_is_unauthorized_and_a_registry_token_goes_as_is() {
        let (host, seen) = token_registry().await;
        let reference: Reference = format!("{host}/app").parse().unwrap();
        let with = |creds: Credentials| {
            let mut auth = AuthStore::empty();
            auth.insert(&host, creds);
            RegistryClient::new(RegistryOptions {
                auth,
                ..RegistryOptions::default()
            })
            .unwrap()
        };
        let err = with(Credentials::identity_token("me", "stale"))
            .list_tags(&reference)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
        let tags = with(Credentials::registry_token("access-1"))
            .list_tags(&reference)
            .await
            .unwrap();
        assert_eq!(tags, ["v1"]);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "the registry token needs no token server"
        );
    }

    /// Reads `application/x-www-form-urlencoded` pairs.
    fn form_decode(body: &str) -> Vec<(String, String)> {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let mut out = Vec::new();
            let mut bytes = s.bytes();
            while let Some(b) = bytes.next() {
                if b == b'%' {
                    let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                        .iter()
                        .map(|&c| char::from(c))
                        .collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                } else {
                    out.push(b);
                }
            }
            String::from_utf8(out).unwrap()
        };
        body.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    #[test]
    fn form_encoding_escapes_what_it_must() {
        assert_eq!(
            form_encode("repository:a/b:pull push"),
            "repository%3Aa%2Fb%3Apull+push"
        );
        let form = refresh_form(Some("reg"), &["s:1".into(), "s:2".into()], "t&=+");
        assert_eq!(
            form_decode(&form),
            [
                ("grant_type".to_string(), "refresh_token".to_string()),
                ("refresh_token".into(), "t&=+".into()),
                ("service".into(), "reg".into()),
                ("client_id".into(), "docker".into()),
                ("scope".into(), "s:1 s:2".into()),
            ]
        );
    }
}
