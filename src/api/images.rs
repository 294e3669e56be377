//! The image endpoints, shaped after Docker's Engine API: list, inspect,
//! history, tag, remove, prune; pull and push, answered with a stream of
//! Docker's JSON progress messages while they run; save (a tar stream), and
//! load and import, whose tar uploads go into the store as they arrive
//! (never buffered whole).
//!
//! Registry credentials come with each pull or push in Docker's
//! `X-Registry-Auth` header ([`RegistryAuth`]): the daemon never reads a
//! user's credential files. Which registries may be reached over plain HTTP
//! and which mirrors serve Docker Hub are the daemon's own options.
//!
//! The wire types come first; the daemon's handlers follow.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::server::{
    ApiError, ApiResult, ChunkSink, Params, blocking, channel_body, json_response, read_body,
    repo_tag_param, truthy,
};
use crate::daemon::Daemon;
use crate::daemon::events::Event;
use crate::image::archive::{ArchiveError, ArchiveFormat};
use crate::image::auth::Credentials;
use crate::image::catalog::CatalogError;
use crate::image::changes::Change;
use crate::image::digest::Digest;
use crate::image::images::{ImageError, Images, ImportSource, Removed};
use crate::image::oci::{Descriptor, Platform};
use crate::image::pull::{self, PullProgress};
use crate::image::push::{self, PushProgress};
use crate::image::reference::Reference;
use crate::image::registry::{RegistryClient, RegistryError, UploadOutcome};
use crate::reconcile::containers::ContainerUsage;

// ---------------------------------------------------------------------------
// Wire types

/// The header that carries registry credentials with a pull or push.
pub const REGISTRY_AUTH_HEADER: &str = "x-registry-auth";

/// Docker's `AuthConfig`: what `X-Registry-Auth` carries, as base64url JSON.
/// Its `Debug` output never shows a secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// The user name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The password or token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `base64(user:password)`, another way to send both.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    /// The registry the credentials are for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serveraddress: String,
    /// An OAuth2 refresh token (Docker's identity token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
    /// A bearer token for the registry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registrytoken: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("auth", &secret(&self.auth))
            .field("serveraddress", &self.serveraddress)
            .field("identitytoken", &secret(&self.identitytoken))
            .field("registrytoken", &secret(&self.registrytoken))
            .finish()
    }
}

/// Why an `X-Registry-Auth` header was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryAuthError {
    /// Not base64.
    #[error("invalid X-Registry-Auth header: not base64url")]
    Base64(#[source] base64::DecodeError),
    /// Not the JSON of an auth config.
    #[error("invalid X-Registry-Auth header: not an auth config")]
    Json(#[source] serde_json::Error),
    /// The `auth` field is not `base64(user:password)`.
    #[error("invalid X-Registry-Auth header: the auth field is not base64(user:password)")]
    AuthField,
}

/// base64url as Docker writes it (padded); read padded or not, in either
/// base64 alphabet, as clients vary.
fn lenient_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = text.trim();
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::STANDARD, config).decode(text))
}

impl RegistryAuth {
    /// A user name and password for `serveraddress`.
    pub fn new(username: &str, password: &str, serveraddress: &str) -> RegistryAuth {
        RegistryAuth {
            username: username.to_string(),
            password: password.to_string(),
            serveraddress: serveraddress.to_string(),
            ..RegistryAuth::default()
        }
    }

    /// The header value: base64url of the JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }

    /// Reads a header value; an empty one (or `{}`) is no credentials.
    pub fn decode(value: &str) -> Result<RegistryAuth, RegistryAuthError> {
        if value.trim().is_empty() {
            return Ok(RegistryAuth::default());
        }
        let json = lenient_base64(value).map_err(RegistryAuthError::Base64)?;
        serde_json::from_slice(&json).map_err(RegistryAuthError::Json)
    }

    /// The credentials it holds, if any. As Docker's daemon: a registry
    /// token wins, then an identity token (a refresh token for the token
    /// server; a registry that wants basic authentication gets none), then a
    /// user name and password, then `auth`.
    pub fn credentials(&self) -> Result<Option<Credentials>, RegistryAuthError> {
        if !self.registrytoken.is_empty() {
            return Ok(Some(Credentials::registry_token(&self.registrytoken)));
        }
        if !self.identitytoken.is_empty() {
            return Ok(Some(Credentials::identity_token(
                &self.username,
                &self.identitytoken,
            )));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Ok(Some(Credentials::new(&self.username, &self.password)));
        }
        if !self.auth.is_empty() {
            let raw = lenient_base64(&self.auth).map_err(|_| RegistryAuthError::AuthField)?;
            let text = String::from_utf8(raw).map_err(|_| RegistryAuthError::AuthField)?;
            let (user, password) = text.split_once(':').ok_or(RegistryAuthError::AuthField)?;
            return Ok(Some(Credentials::new(user, password)));
        }
        Ok(None)
    }
}

/// One line of a progress stream: Docker's `JSONMessage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonMessage {
    /// What is happening (`Downloading`, `Pull complete`, `Digest: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What it is about: a layer's short digest, or a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Bytes done of a transfer.
    #[serde(
        default,
        rename = "progressDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_detail: Option<ProgressDetail>,
    /// Text output (`Loaded image: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The failure that ended the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The same failure, structured.
    #[serde(
        default,
        rename = "errorDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<ErrorDetail>,
    /// A result for programs (a push's digest, a pull's reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl JsonMessage {
    /// A status line, about `id` when given.
    pub fn status(status: impl Into<String>, id: Option<String>) -> JsonMessage {
        JsonMessage {
            status: Some(status.into()),
            id,
            ..JsonMessage::default()
        }
    }

    /// An error line.
    pub fn error(message: impl Into<String>) -> JsonMessage {
        let message = message.into();
        JsonMessage {
            error: Some(message.clone()),
            error_detail: Some(ErrorDetail {
                code: None,
                message,
            }),
            ..JsonMessage::default()
        }
    }

    /// The message as one line of the stream.
    pub fn to_line(&self) -> Bytes {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// How far a transfer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Bytes in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// An error in a progress stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A code, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The message.
    pub message: String,
}

/// One image of `GET /images/json`: Docker's `ImageSummary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// The image id.
    pub id: String,
    /// The parent image (none: images here have no parents yet).
    #[serde(default)]
    pub parent_id: String,
    /// Its names, `repository:tag`, familiar (`busybox:latest`).
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `repository@digest` of the manifests it came with, familiar.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Creation time, seconds since the epoch (0: unknown).
    #[serde(default)]
    pub created: i64,
    /// Bytes of its layers' content, uncompressed, as Docker counts them.
    #[serde(default)]
    pub size: u64,
    /// Not computed: -1, as Docker answers unless asked.
    #[serde(default)]
    pub shared_size: i64,
    /// Not computed: -1, as Docker answers unless asked.
    #[serde(default)]
    pub containers: i64,
}

/// One step of `GET /images/{name}/history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image id for the top step, `<missing>` below, as Docker says.
    pub id: String,
    /// Seconds since the epoch (0: unknown).
    pub created: i64,
    /// The instruction.
    pub created_by: String,
    /// The image's names, on the top step.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Bytes of content the step's layer added (0 for empty layers).
    pub size: u64,
    /// The step's comment.
    #[serde(default)]
    pub comment: String,
}

/// One thing `DELETE /images/{name}` or a prune did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteItem {
    /// A name was removed.
    Untagged(String),
    /// An image was deleted.
    Deleted(String),
}

/// The answer to `POST /images/prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    /// What went.
    #[serde(default)]
    pub images_deleted: Vec<DeleteItem>,
    /// Bytes of blobs freed.
    pub space_reclaimed: u64,
}

/// Docker's `filters` query value: `{"key": ["value", …]}` (the older
/// `{"key": {"value": true}}` is read too).
pub fn parse_filters(text: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, String> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(BTreeMap::new());
    };
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Values {
        List(Vec<String>),
        Set(BTreeMap<String, bool>),
    }
    let map: BTreeMap<String, Values> =
        serde_json::from_str(text).map_err(|e| format!("invalid filters {text:?}: {e}"))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let values = match v {
                Values::List(l) => l,
                Values::Set(s) => s
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(v, _)| v)
                    .collect(),
            };
            (k, values)
        })
        .collect())
}

/// Go's `path.Match` for `*` and `?` (enough for Docker's reference filter).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' && t[ti] != '/' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star.filter(|_| t[mark] != '/') {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Docker's reference filter (`reference.FamiliarMatch`): the pattern
/// against `repository:tag`, or against the repository alone when it names
/// no tag.
fn matches_reference(name: &Reference, pattern: &str) -> bool {
    glob_match(pattern, &name.familiar())
        || (!pattern.contains(':') && glob_match(pattern, &name.familiar_repository()))
}

// ---------------------------------------------------------------------------
// Routes

/// The image routes, merged into [`super::server::router`].
pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/get", get(save))
        .route("/images/load", post(load))
        .route("/images/prune", post(prune))
        // Names hold slashes (`host:5000/team/app`), as in Docker's
        // `/images/{name:.*}/json`: the rest of the path is split here.
        .route(
            "/images/{*rest}",
            get(named_get).post(named_post).delete(remove),
        )
}

/// Docker's wording for a missing image; other errors as the server maps
/// them.
fn image_error(e: ImageError) -> ApiError {
    match &e {
        ImageError::Catalog(CatalogError::NotFound(name))
        | ImageError::Archive(ArchiveError::Catalog(CatalogError::NotFound(name))) => {
            no_such_image(name)
        }
        ImageError::Archive(_) => ApiError::bad_request(crate::error_chain(&e)),
        _ => ApiError::from(e),
    }
}

fn no_such_image(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {name}"))
}

fn not_found_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "page not found")
}

/// The image name of a `/images/{name}/…` path and what follows it.
fn split_named<'a>(rest: &'a str, verbs: &[&'static str]) -> Option<(&'a str, &'static str)> {
    let rest = rest.trim_start_matches('/');
    verbs.iter().find_map(|verb| {
        rest.strip_suffix(verb)
            .and_then(|n| n.strip_suffix('/'))
            .filter(|n| !n.is_empty())
            .map(|n| (n, *verb))
    })
}

async fn named_get(State(d): State<Arc<Daemon>>, Path(rest): Path<String>) -> ApiResult<Response> {
    match split_named(&rest, &["json", "history"]) {
        Some((name, "json")) => inspect(d, name.to_string()).await,
        Some((name, _)) => history(d, name.to_string()).await,
        None => Err(not_found_route()),
    }
}

async fn named_post(
    State(d): State<Arc<Daemon>>,
    Path(rest): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match split_named(&rest, &["tag", "push"]) {
        Some((name, "tag")) => tag(d, name.to_string(), q).await,
        Some((name, _)) => push(d, name.to_string(), q, &headers).await,
        None => Err(not_found_route()),
    }
}

// ---------------------------------------------------------------------------
// List, inspect, history, tag, remove, prune

/// Seconds since the epoch of an RFC 3339 time (0 when absent or invalid).
fn unix_seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| crate::runtime::logs::parse_time_filter(t, SystemTime::now()).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// `repository@digest` as stored, in Docker's familiar form.
fn familiar_digest(repo_digest: &str) -> String {
    repo_digest
        .parse::<Reference>()
        .map_or_else(|_| repo_digest.to_string(), |r| r.familiar())
}

fn list_images(
    images: &Images,
    filters: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<ImageSummary>, ImageError> {
    let dangling = match filters.get("dangling").map(Vec::as_slice) {
        None | Some([]) => None,
        Some(values) => Some(values.iter().any(|v| v == "true" || v == "1")),
    };
    let patterns = filters.get("reference").cloned().unwrap_or_default();
    let records = images.catalog.list()?;
    let tags = images.catalog.tags()?;
    let mut out = Vec::new();
    for record in records {
        let names: Vec<&Reference> = tags
            .iter()
            .filter(|(_, id)| **id == record.id)
            .map(|(r, _)| r)
            .collect();
        if dangling.is_some_and(|want| want != names.is_empty()) {
            continue;
        }
        // With reference filters, an image shows the names that match, and
        // only images with such a name show (moby `daemon/images/images.go`).
        let names: Vec<&Reference> = if patterns.is_empty() {
            names
        } else {
            let kept: Vec<&Reference> = names
                .into_iter()
                .filter(|n| patterns.iter().any(|p| matches_reference(n, p)))
                .collect();
            if kept.is_empty() {
                continue;
            }
            kept
        };
        out.push(ImageSummary {
            id: record.id.to_string(),
            parent_id: String::new(),
            repo_tags: names.iter().map(|n| n.familiar()).collect(),
            repo_digests: record
                .repo_digests
                .iter()
                .map(|d| familiar_digest(d))
                .collect(),
            created: unix_seconds(record.created.as_deref()),
            size: images.layer_sizes(&record).iter().sum(),
            shared_size: -1,
            containers: -1,
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

async fn list(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let filters =
        parse_filters(q.get("filters").map(String::as_str)).map_err(ApiError::bad_request)?;
    if let Some(key) = filters
        .keys()
        .find(|k| !matches!(k.as_str(), "dangling" | "reference"))
    {
        return Err(ApiError::bad_request(format!(
            "invalid filter '{key}': use dangling=true|false or reference=PATTERN"
        )));
    }
    let list =
        blocking(move || list_images(&d.containers.images, &filters).map_err(image_error)).await?;
    Ok(json_response(&list))
}

async fn inspect(d: Arc<Daemon>, name: String) -> ApiResult<Response> {
    let value = blocking(move || d.containers.images.inspect(&name).map_err(image_error)).await?;
    Ok(json_response(&value))
}

async fn history(d: Arc<Daemon>, name: String) -> ApiResult<Response> {
    let items = blocking(move || {
        let images = &d.containers.images;
        let lines = images.history(&name).map_err(image_error)?;
        let id = images
            .catalog
            .resolve(&name)
            .map_err(|e| image_error(e.into()))?;
        let tags: Vec<String> = images
            .catalog
            .tags()
            .map_err(|e| image_error(e.into()))?
            .into_iter()
            .filter(|(_, d)| *d == id)
            .map(|(r, _)| r.familiar())
            .collect();
        Ok(lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| HistoryItem {
                tags: if i == 0 { tags.clone() } else { Vec::new() },
                created: unix_seconds(l.created.as_deref()),
                id: l.id,
                created_by: l.created_by,
                size: l.size,
                comment: l.comment,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json_response(&items))
}

async fn tag(d: Arc<Daemon>, name: String, q: BTreeMap<String, String>) -> ApiResult<Response> {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("tag needs ?repo=REPOSITORY"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.clone(),
    };
    target
        .parse::<Reference>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    blocking(move || {
        let tagged = d
            .containers
            .images
            .tag(&name, &target)
            .map_err(image_error)?;
        d.events
            .emit(Event::image("tag", &name, Some(&tagged.to_string())));
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED.into_response())
}

/// Which containers use which images, read now.
fn usage(d: &Daemon) -> ApiResult<ContainerUsage> {
    Ok(ContainerUsage::of_runtime(&d.containers.runtime)?)
}

/// The answer to an image removal, with an `untag` or `delete` event for
/// each step.
fn delete_items(d: &Daemon, removed: Vec<Removed>) -> Vec<DeleteItem> {
    removed
        .into_iter()
        .map(|r| match r {
            Removed::Untagged(name) => {
                d.events.emit(Event::image("untag", &name, Some(&name)));
                DeleteItem::Untagged(name)
            }
            Removed::Deleted(id) => {
                let id = id.to_string();
                d.events.emit(Event::image("delete", &id, None));
                DeleteItem::Deleted(id)
            }
        })
        .collect()
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(rest): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let name = rest.trim_start_matches('/').to_string();
    let force = truthy(q.get("force"));
    let prune = !truthy(q.get("noprune"));
    let removed = blocking(move || {
        let usage = usage(&d)?;
        let removed = d
            .containers
            .images
            .remove(&name, force, prune, &usage)
            .map_err(image_error)?;
        Ok(delete_items(&d, removed))
    })
    .await?;
    Ok(json_response(&removed))
}

async fn prune(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let filters =
        parse_filters(q.get("filters").map(String::as_str)).map_err(ApiError::bad_request)?;
    let mut all = false;
    for (key, values) in &filters {
        match key.as_str() {
            // `image prune -a` sends dangling=false: every unused image.
            "dangling" => all = values.iter().any(|v| v == "false" || v == "0"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': only dangling=true|false is supported"
                )));
            }
        }
    }
    let report = blocking(move || {
        let usage = usage(&d)?;
        let (removed, freed) = d
            .containers
            .images
            .prune(all, &usage)
            .map_err(image_error)?;
        Ok(PruneReport {
            images_deleted: delete_items(&d, removed.into_iter().map(Removed::Deleted).collect()),
            space_reclaimed: freed,
        })
    })
    .await?;
    Ok(json_response(&report))
}

// ---------------------------------------------------------------------------
// Progress streams (pull, push)

/// What a streaming operation sends: lines, or the failure that ended it.
enum Item {
    Line(Bytes),
    Failed(StatusCode, String),
}

/// Bytes of a transfer between two progress messages: about a hundred per
/// layer, however big, so a stream never grows with the image.
fn progress_step(total: u64) -> u64 {
    (total / 100).max(256 << 10)
}

#[derive(Debug, Default, Clone, Copy)]
struct Transfer {
    total: u64,
    current: u64,
    sent: u64,
}

/// The sending side of a progress stream. Progress callbacks are
/// synchronous and run inside the pull's or push's tasks, so sending never
/// blocks; the messages are bounded by [`progress_step`].
struct Messages {
    tx: mpsc::UnboundedSender<Item>,
    transfers: Mutex<HashMap<Digest, Transfer>>,
}

impl Messages {
    fn new() -> (Messages, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Messages {
                tx,
                transfers: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    fn send(&self, message: &JsonMessage) {
        let _ = self.tx.send(Item::Line(message.to_line()));
    }

    fn status(&self, status: impl Into<String>) {
        self.send(&JsonMessage::status(status, None));
    }

    fn layer(&self, digest: &Digest, status: &str) {
        self.send(&JsonMessage::status(
            status,
            Some(digest.short().to_string()),
        ));
    }

    fn aux(&self, aux: serde_json::Value) {
        self.send(&JsonMessage {
            aux: Some(aux),
            ..JsonMessage::default()
        });
    }

    fn fail(&self, status: StatusCode, message: String) {
        let _ = self.tx.send(Item::Failed(status, message));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Transfer>> {
        // Each change is one insert or update: a panic cannot leave it torn.
        self.transfers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn transfer_started(&self, digest: &Digest, total: u64, status: &str) {
        self.lock().insert(
            digest.clone(),
            Transfer {
                total,
                ..Transfer::default()
            },
        );
        self.transfer_message(digest, status, 0, total);
    }

    fn transfer_advanced(&self, digest: &Digest, bytes: u64, status: &str) {
        let due = {
            let mut map = self.lock();
            let t = map.entry(digest.clone()).or_default();
            t.current += bytes;
            let due = t.current - t.sent >= progress_step(t.total) || t.current >= t.total;
            if due {
                t.sent = t.current;
            }
            due.then_some(*t)
        };
        if let Some(t) = due {
            self.transfer_message(digest, status, t.current, t.total);
        }
    }

    fn transfer_message(&self, digest: &Digest, status: &str, current: u64, total: u64) {
        self.send(&JsonMessage {
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..JsonMessage::status(status, Some(digest.short().to_string()))
        });
    }
}

/// The answer to a streaming operation. Like Docker's, it waits for the
/// first message: an operation that fails before it has anything to say
/// (an unknown image, refused credentials) is answered with an error status;
/// later failures end the stream with an error message.
async fn progress_response(mut rx: mpsc::UnboundedReceiver<Item>) -> ApiResult<Response> {
    let first = match rx.recv().await {
        None => Bytes::new(),
        Some(Item::Failed(status, message)) => return Err(ApiError::new(status, message)),
        Some(Item::Line(line)) => line,
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        let line = match rx.recv().await? {
            Item::Line(line) => line,
            Item::Failed(_, message) => JsonMessage::error(message).to_line(),
        };
        Some((Ok::<Bytes, io::Error>(line), rx))
    });
    let body = futures::stream::once(async move { Ok(first) }).chain(rest);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

/// Runs `work` in the background, feeding `messages`; it is cancelled when
/// the client goes away (the answer's receiver is dropped), as Docker's pull
/// is: a cancelled transfer leaves only verified blobs, complete layers and
/// temp files the store removes itself.
fn spawn_streaming<F>(messages: Arc<Messages>, work: F)
where
    F: std::future::Future<Output = Result<(), (StatusCode, String)>> + Send + 'static,
{
    tokio::spawn(async move {
        let closed = messages.tx.clone();
        tokio::select! {
            result = work => {
                if let Err((status, message)) = result {
                    messages.fail(status, message);
                }
            }
            () = closed.closed() => {
                tracing::debug!("the client went away: the transfer is cancelled");
            }
        }
    });
}

/// The credentials of a request, from `X-Registry-Auth`.
fn request_credentials(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    let Some(value) = headers.get(REGISTRY_AUTH_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid X-Registry-Auth header: not ASCII"))?;
    RegistryAuth::decode(text)
        .and_then(|auth| auth.credentials())
        .map_err(|e| ApiError::bad_request(crate::error_chain(&e)))
}

/// A registry client with the daemon's registry options and the request's
/// credentials (for `domain`), and nothing else.
fn registry_client(
    d: &Daemon,
    domain: &str,
    credentials: Option<Credentials>,
) -> Result<RegistryClient, RegistryError> {
    d.registry_client(domain, credentials)
}

fn registry_failure(e: &RegistryError) -> (StatusCode, String) {
    let status = match e {
        RegistryError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        RegistryError::Platform { .. } => StatusCode::NOT_FOUND,
        RegistryError::Catalog {
            source: CatalogError::NotFound(_),
            ..
        } => StatusCode::NOT_FOUND,
        e if e.is_not_found() => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, crate::error_chain(e))
}

/// A pull's progress, as Docker words it.
struct PullMessages<'a> {
    out: &'a Messages,
    reference: &'a Reference,
}

impl PullProgress for PullMessages<'_> {
    fn resolved(&self, _manifest: &Digest, _layers: &[Descriptor]) {
        let id = self
            .reference
            .tag()
            .map(str::to_string)
            .or_else(|| self.reference.digest().map(ToString::to_string));
        self.out.send(&JsonMessage::status(
            format!("Pulling from {}", self.reference.path()),
            id,
        ));
    }
    fn layer_started(&self, digest: &Digest, size: u64) {
        self.out.transfer_started(digest, size, "Downloading");
    }
    fn layer_advanced(&self, digest: &Digest, bytes: u64) {
        self.out.transfer_advanced(digest, bytes, "Downloading");
    }
    fn layer_done(&self, digest: &Digest) {
        self.out.layer(digest, "Download complete");
    }
    fn layer_unpacked(&self, digest: &Digest) {
        self.out.layer(digest, "Pull complete");
    }
    fn layer_exists(&self, digest: &Digest) {
        self.out.layer(digest, "Already exists");
    }
}

/// A push's progress, as Docker words it.
struct PushMessages<'a> {
    out: &'a Messages,
}

impl PushProgress for PushMessages<'_> {
    fn blob_started(&self, digest: &Digest, size: u64) {
        self.out.transfer_started(digest, size, "Pushing");
    }
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.out.transfer_advanced(digest, bytes, "Pushing");
    }
    fn blob_done(&self, digest: &Digest, outcome: UploadOutcome) {
        let status = match outcome {
            UploadOutcome::Uploaded => "Pushed",
            UploadOutcome::Mounted => "Mounted from another repository",
            UploadOutcome::Exists => "Layer already exists",
        };
        self.out.layer(digest, status);
    }
}

/// `POST /images/create`: a pull (`fromImage`) or an import (`fromSrc`).
async fn create(
    State(d): State<Arc<Daemon>>,
    Query(pairs): Query<Vec<(String, String)>>,
    req: Request,
) -> ApiResult<Response> {
    let q: BTreeMap<String, String> = pairs.iter().cloned().collect();
    if let Some(image) = q.get("fromImage").filter(|i| !i.is_empty()) {
        return pull_image(d, image, &q, req.headers()).await;
    }
    if q.contains_key("fromSrc") {
        let changes: Vec<String> = pairs
            .into_iter()
            .filter(|(k, _)| k == "changes")
            .map(|(_, v)| v)
            .collect();
        return import(d, &q, changes, req).await;
    }
    Err(ApiError::bad_request(
        "create needs ?fromImage=NAME (pull) or ?fromSrc=- (import)",
    ))
}

/// Whether `name` names a tag or digest (`name:tag`, `name@digest`), not
/// just a repository.
pub fn names_tag_or_digest(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    name.contains('@') || last.contains(':')
}

fn platform_param(q: &BTreeMap<String, String>) -> ApiResult<Option<Platform>> {
    q.get("platform")
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<Platform>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: as in Docker's API, a
/// digest in `tag` pins it, and a repository with neither tag nor digest
/// pulls every tag.
async fn pull_image(
    d: Arc<Daemon>,
    image: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let bad = |e: crate::image::reference::ReferenceError| ApiError::bad_request(e.to_string());
    let mut reference: Reference = image.parse().map_err(bad)?;
    let tag = q.get("tag").filter(|t| !t.is_empty());
    let all_tags = tag.is_none() && !names_tag_or_digest(image);
    if let Some(tag) = tag {
        reference = match tag.parse::<Digest>() {
            Ok(digest) => reference.with_digest(digest),
            Err(_) => reference.with_tag(tag).map_err(bad)?,
        };
    }
    let platform = platform_param(q)?;
    let credentials = request_credentials(headers)?;
    let (messages, rx) = Messages::new();
    let messages = Arc::new(messages);
    let out = messages.clone();
    spawn_streaming(messages, async move {
        let client = registry_client(&d, reference.domain(), credentials)
            .map_err(|e| registry_failure(&e))?;
        let references = if all_tags {
            let mut tags = client
                .list_tags(&reference)
                .await
                .map_err(|e| registry_failure(&e))?;
            tags.sort();
            tags.iter()
                .map(|t| reference.with_tag(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("the registry listed an invalid tag: {e}"),
                    )
                })?
        } else {
            vec![reference]
        };
        let images = &d.containers.images;
        for reference in &references {
            let progress = PullMessages {
                out: &out,
                reference,
            };
            let pulled = pull::pull(
                &client,
                &images.blobs,
                &images.catalog,
                Some(&images.snapshots),
                reference,
                platform.as_ref(),
                &progress,
            )
            .await
            .map_err(|e| registry_failure(&e))?;
            out.status(format!("Digest: {}", pulled.digest));
            let status = if pulled.downloaded > 0 {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            out.status(format!("Status: {status} {}", reference.familiar()));
            d.events.emit(Event::image(
                "pull",
                &reference.to_string(),
                Some(&reference.to_string()),
            ));
            out.aux(serde_json::json!({
                "Reference": pulled.reference.to_string(),
                "Id": pulled.id.to_string(),
                "Digest": pulled.digest.to_string(),
            }));
        }
        Ok(())
    });
    progress_response(rx).await
}

/// `POST /images/{name}/push?tag=TAG`.
async fn push(
    d: Arc<Daemon>,
    name: String,
    q: BTreeMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let bad = |e: crate::image::reference::ReferenceError| ApiError::bad_request(e.to_string());
    let mut reference: Reference = name.parse().map_err(bad)?;
    if let Some(tag) = q.get("tag").filter(|t| !t.is_empty()) {
        reference = reference.with_tag(tag).map_err(bad)?;
    }
    if reference.digest().is_some() {
        return Err(ApiError::bad_request(format!(
            "cannot push a digest reference: {}",
            reference.familiar()
        )));
    }
    let credentials = request_credentials(headers)?;
    let d2 = d.clone();
    let local = reference.to_string();
    blocking(move || {
        d2.containers.images.catalog.resolve(&local).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("An image does not exist locally with the tag: {local}"),
            )
        })
    })
    .await?;
    let (messages, rx) = Messages::new();
    let messages = Arc::new(messages);
    let out = messages.clone();
    out.status(format!(
        "The push refers to repository [{}]",
        reference.repository()
    ));
    spawn_streaming(messages, async move {
        let client = registry_client(&d, reference.domain(), credentials)
            .map_err(|e| registry_failure(&e))?;
        let images = &d.containers.images;
        let pushed = push::push(
            &client,
            &images.blobs,
            &images.catalog,
            &reference,
            &PushMessages { out: &out },
        )
        .await
        .map_err(|e| registry_failure(&e))?;
        let tag = reference
            .tag()
            .unwrap_or(crate::image::reference::DEFAULT_TAG);
        out.status(format!(
            "{tag}: digest: {} size: {}",
            pushed.digest, pushed.size
        ));
        out.aux(serde_json::json!({
            "Tag": tag,
            "Digest": pushed.digest.to_string(),
            "Size": pushed.size,
        }));
        d.events.emit(Event::image(
            "push",
            &reference.to_string(),
            Some(&reference.to_string()),
        ));
        Ok(())
    });
    progress_response(rx).await
}

// ---------------------------------------------------------------------------
// Save, load, import

/// `GET /images/get?names=A&names=B[&format=oci]`: a tar stream of the
/// images, Docker's archive format unless `format=oci`.
async fn save(
    State(d): State<Arc<Daemon>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let names: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v.clone())
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request("save needs ?names=IMAGE"));
    }
    let format = match pairs.iter().rev().find(|(k, _)| k == "format") {
        None => ArchiveFormat::Docker,
        Some((_, f)) if f.is_empty() || f == "docker" => ArchiveFormat::Docker,
        Some((_, f)) if f == "oci" => ArchiveFormat::Oci,
        Some((_, f)) => {
            return Err(ApiError::bad_request(format!(
                "invalid format {f:?}: use docker or oci"
            )));
        }
    };
    // Every name is resolved before the answer starts, so a missing one
    // is a 404, not a broken stream.
    let d2 = d.clone();
    let checked = names.clone();
    blocking(move || {
        for name in &checked {
            d2.containers
                .images
                .catalog
                .resolve(name)
                .map_err(|e| image_error(e.into()))?;
        }
        Ok(())
    })
    .await?;
    let (tx, rx) = mpsc::channel(4);
    let images = d.containers.images.clone();
    tokio::task::spawn_blocking(move || {
        let sink = io::BufWriter::with_capacity(1 << 20, ChunkSink { tx: tx.clone() });
        if let Err(e) = images.save(&names, format, sink) {
            let _ = tx.blocking_send(Err(io::Error::other(crate::error_chain(&e))));
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(channel_body(rx))
        .unwrap_or_default())
}

fn json_lines(messages: &[JsonMessage]) -> Response {
    let mut body = Vec::new();
    for m in messages {
        body.extend_from_slice(&m.to_line());
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// `POST /images/load`: a Docker archive or OCI layout as a tar upload.
/// Every file goes into the blob store as it streams in, verified; nothing
/// is recorded unless the whole archive is sound.
async fn load(State(d): State<Arc<Daemon>>, req: Request) -> ApiResult<Response> {
    let (reader, pump) = read_body(req.into_body());
    let images = d.containers.images.clone();
    let loaded = tokio::task::spawn_blocking(move || images.load(reader)).await;
    let _ = pump.await;
    let loaded = loaded
        .map_err(|e| ApiError::internal(&e))?
        .map_err(image_error)?;
    let mut lines = Vec::new();
    for image in loaded {
        if image.tags.is_empty() {
            lines.push(format!("Loaded image ID: {}\n", image.id));
        }
        for tag in image.tags {
            lines.push(format!("Loaded image: {}\n", tag.familiar()));
        }
    }
    let messages: Vec<JsonMessage> = lines
        .into_iter()
        .map(|stream| JsonMessage {
            stream: Some(stream),
            ..JsonMessage::default()
        })
        .collect();
    Ok(json_lines(&messages))
}

/// `POST /images/create?fromSrc=-&repo=&tag=&message=&changes=…&platform=`:
/// a root file system tar (plain, gzip or zstd) as the body becomes a
/// one-layer image.
async fn import(
    d: Arc<Daemon>,
    q: &BTreeMap<String, String>,
    changes: Vec<String>,
    req: Request,
) -> ApiResult<Response> {
    if q.get("fromSrc").map(String::as_str) != Some("-") {
        return Err(ApiError::bad_request(
            "import reads the request body only: use fromSrc=-",
        ));
    }
    let reference = repo_tag_param(q)?;
    let changes = changes
        .iter()
        .map(|c| c.parse::<Change>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = platform_param(q)?;
    let message = q.get("message").filter(|m| !m.is_empty()).cloned();
    let (mut reader, pump) = read_body(req.into_body());
    let images = d.containers.images.clone();
    let imported = tokio::task::spawn_blocking(move || {
        let result = images.import(
            ImportSource::Tar(&mut reader),
            reference.as_ref(),
            &changes,
            message.as_deref(),
            platform.as_ref(),
        );
        drop(reader);
        result
    })
    .await;
    let _ = pump.await;
    let id = imported
        .map_err(|e| ApiError::internal(&e))?
        .map_err(image_error)?;
    Ok(json_lines(&[JsonMessage::status(id.to_string(), None)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go_path_match() {
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("*", "busybox"));
        assert!(!glob_match("*", "library/busybox"));
        assert!(glob_match("*/app", "user/app"));
        assert!(glob_match("busybox:1.?", "busybox:1.3"));
        assert!(!glob_match("busy", "busybox"));
    }

    #[test]
    fn reference_filters_match_familiar_names_like_docker() {
        let r: Reference = "localhost:5000/tools/busybox:v1".parse().unwrap();
        assert!(matches_reference(&r, "localhost:5000/*/*"));
        assert!(matches_reference(&r, "localhost:5000/tools/busybox:v?"));
        assert!(!matches_reference(&r, "busybox"));
        let hub: Reference = "busybox:latest".parse().unwrap();
        assert!(matches_reference(&hub, "busy*"));
        assert!(matches_reference(&hub, "busybox:latest"));
        assert!(!matches_reference(&hub, "busybox:1"));
    }

    #[test]
    fn registry_auth_round_trips_and_hides_secrets() {
        let auth = RegistryAuth::new("me", "pa:ss", "localhost:5000");
        let header = auth.encode();
        assert!(!header.contains('+') && !header.contains('/'), "{header}");
        let back = RegistryAuth::decode(&header).unwrap();
        assert_eq!(back, auth);
        let creds = back.credentials().unwrap().unwrap();
        assert_eq!((creds.username.as_str(), creds.password()), ("me", "pa:ss"));
        assert!(!format!("{back:?}").contains("pa:ss"));
        // Unpadded and the `auth` field, as other clients send them.
        let unpadded = header.trim_end_matches('=');
        assert_eq!(RegistryAuth::decode(unpadded).unwrap(), auth);
        let basic = base64::engine::general_purpose::STANDARD.encode("u:p");
        let json = format!("{{\"auth\":\"{basic}\"}}");
        let header = base64::engine::general_purpose::URL_SAFE.encode(json);
        let creds = RegistryAuth::decode(&header)
            .unwrap()
            .credentials()
            .unwrap()
            .unwrap();
        assert_eq!((creds.username.as_str(), creds.password()), ("u", "p"));
        assert_eq!(
            RegistryAuth::decode("").unwrap().credentials().unwrap(),
            None
        );
        let empty = base64::engine::general_purpose::URL_SAFE.encode("{}");
        assert_eq!(
            RegistryAuth::decode(&empty).unwrap().credentials().unwrap(),
            None
        );
    }

    #[test]
    fn bad_registry_auth_headers_are_refused_with_the_reason() {
        let err = RegistryAuth::decode("not base64!").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid X-Registry-Auth header"),
            "{err}"
        );
        let not_json = base64::engine::general_purpose::URL_SAFE.encode("[1,2]");
        assert!(matches!(
            RegistryAuth::decode(&not_json).unwrap_err(),
            RegistryAuthError::Json(_)
        ));
    }

    #[test]
    fn tokens_in_registry_auth_become_token_credentials() {
        use crate::image::auth::SecretKind;
        let identity = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"me","identitytoken":"t","serveraddress":"r"}"#);
        let creds = RegistryAuth::decode(&identity)
            .unwrap()
            .credentials()
            .unwrap()
            .unwrap();
        assert_eq!(creds.kind(), SecretKind::IdentityToken);
        assert_eq!((creds.username.as_str(), creds.password()), ("me", "t"));
        let bare = base64::engine::general_purpose::URL_SAFE.encode(r#"{"identitytoken":"t"}"#);
        let creds = RegistryAuth::decode(&bare)
            .unwrap()
            .credentials()
            .unwrap()
            .unwrap();
        assert_eq!(creds.username, "<token>");
        let registry = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"registrytoken":"b","identitytoken":"t"}"#);
        let creds = RegistryAuth::decode(&registry)
            .unwrap()
            .credentials()
            .unwrap()
            .unwrap();
        assert_eq!(
            (creds.kind(), creds.password()),
            (SecretKind::RegistryToken, "b")
        );
    }

    #[test]
    fn filters_read_both_of_docker_s_forms() {
        let f = parse_filters(Some(r#"{"dangling":["true"],"reference":["a","b"]}"#)).unwrap();
        assert_eq!(f["dangling"], ["true"]);
        assert_eq!(f["reference"], ["a", "b"]);
        let f = parse_filters(Some(r#"{"dangling":{"false":true}}"#)).unwrap();
        assert_eq!(f["dangling"], ["false"]);
        assert!(parse_filters(None).unwrap().is_empty());
        assert!(parse_filters(Some("{bad")).is_err());
    }

    #[test]
    fn image_paths_split_at_their_verb() {
        assert_eq!(
            split_named("localhost:5000/team/app:v1/json", &["json", "history"]),
            Some(("localhost:5000/team/app:v1", "json"))
        );
        assert_eq!(
            split_named("/busybox/history", &["json", "history"]),
            Some(("busybox", "history"))
        );
        assert_eq!(split_named("json", &["json"]), None);
        assert_eq!(split_named("busybox/other", &["json"]), None);
    }

    #[test]
    fn progress_is_sent_in_steps_of_about_a_percent() {
        let (messages, mut rx) = Messages::new();
        let digest = Digest::of(b"layer");
        let total = 100 << 20;
        messages.transfer_started(&digest, total, "Downloading");
        for _ in 0..(total / (64 << 10)) {
            messages.transfer_advanced(&digest, 64 << 10, "Downloading");
        }
        drop(messages);
        let mut lines = Vec::new();
        while let Some(Item::Line(line)) = rx.blocking_recv() {
            lines.push(serde_json::from_slice::<JsonMessage>(&line).unwrap());
        }
        assert!(lines.len() <= 102, "{} messages", lines.len());
        let last = lines.last().unwrap().progress_detail.unwrap();
        assert_eq!((last.current, last.total), (Some(total), Some(total)));
        assert_eq!(lines[0].id.as_deref(), Some(digest.short()));
    }
}
