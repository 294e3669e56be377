//! The daemon's side of the API: an axum router over [`Daemon`], served on
//! unix sockets with every connection's peer checked. Handlers run the
//! (blocking) container operations on tokio's blocking pool.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Created, ErrorBody, Listed, MAX_JSON_BODY, Usage, Waited};
use crate::chunks::ChunkReader;
use crate::daemon::Daemon;
use crate::daemon::events::{Event, EventFilter};
use crate::image::driver::StorageDriver;
use crate::image::images::ImageError;
use crate::image::layer::LayerError;
use crate::reconcile::container::RunRequest;
use crate::reconcile::containers::{self, ContainersError};
use crate::reconcile::verbs::VerbError;
use crate::runtime::attach::{self, Kind};
use crate::runtime::exec::ExecConfig;
use crate::runtime::logs::{self, ReadOptions};
use crate::runtime::{RuntimeError, Status};

/// An error answer: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500 from any error, with its causes.
    pub fn internal(e: &dyn std::error::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            message: self.message,
        })
        .unwrap_or_default();
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

fn runtime_status(e: &RuntimeError) -> StatusCode {
    match e {
        RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
        RuntimeError::Ambiguous(_) => StatusCode::BAD_REQUEST,
        RuntimeError::NameInUse { .. } | RuntimeError::WrongState { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn image_status(e: &ImageError) -> StatusCode {
    let text = e.to_string();
    if text.starts_with("no such image") {
        StatusCode::NOT_FOUND
    } else if matches!(e, ImageError::Reference(_)) {
        StatusCode::BAD_REQUEST
    } else if matches!(
        e,
        ImageError::InUse { .. } | ImageError::MultipleTags { .. }
    ) {
        StatusCode::CONFLICT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The status of a networking error: 404 for an unknown network, 409 for
/// conflicts, 400 for bad requests.
pub(super) fn net_status(e: &crate::net::NetError) -> StatusCode {
    if matches!(e, crate::net::NetError::NotFound(_)) {
        StatusCode::NOT_FOUND
    } else if e.is_conflict() {
        StatusCode::CONFLICT
    } else if e.is_bad_request() || matches!(e, crate::net::NetError::NotConnected { .. }) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl From<crate::net::NetError> for ApiError {
    fn from(e: crate::net::NetError) -> ApiError {
        ApiError::new(net_status(&e), crate::error_chain(&e))
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        ApiError::new(runtime_status(&e), crate::error_chain(&e))
    }
}

impl ApiError {
    /// `e`'s status with the message of `outer` (the error that wraps it,
    /// or `e` itself).
    fn from_containers(e: &ContainersError, outer: &dyn std::error::Error) -> ApiError {
        let status = match e {
            ContainersError::Runtime(r) => runtime_status(r),
            ContainersError::Image(i) => image_status(i),
            ContainersError::Container(_)
            | ContainersError::Reference(_)
            | ContainersError::Health(_)
            | ContainersError::BindSourceMissing { .. }
            | ContainersError::MountOption { .. } => StatusCode::BAD_REQUEST,
            ContainersError::SeccompArch(_) | ContainersError::Seccomp(_) => {
                StatusCode::BAD_REQUEST
            }
            ContainersError::Network(n) => net_status(n),
            ContainersError::PortSpec(_) => StatusCode::BAD_REQUEST,
            ContainersError::Ports(p) => {
                use crate::net::firewall::FirewallError as F;
                match p {
                    F::PortAllocated { .. }
                    | F::PortTwice { .. }
                    | F::PortInUse { .. }
                    | F::NoFreePort { .. } => StatusCode::CONFLICT,
                    F::MixedFamilies { .. } => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
            ContainersError::NoNetworking
            | ContainersError::Io { .. }
            | ContainersError::CopyImage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, crate::error_chain(outer))
    }
}

impl From<ContainersError> for ApiError {
    fn from(e: ContainersError) -> ApiError {
        ApiError::from_containers(&e, &e)
    }
}

impl From<crate::daemon::supervisor::SupervisorError> for ApiError {
    fn from(e: crate::daemon::supervisor::SupervisorError) -> ApiError {
        use crate::daemon::supervisor::SupervisorError as E;
        match e {
            E::Runtime(r) => r.into(),
            E::Containers(c) => c.into(),
            other => ApiError::internal(&other),
        }
    }
}

impl From<VerbError> for ApiError {
    fn from(e: VerbError) -> ApiError {
        let status = match &e {
            VerbError::Runtime(r) => runtime_status(r),
            VerbError::Containers(c) => return ApiError::from_containers(c, &e),
            // moby answers a stopped container's `top` with 409.
            VerbError::NotRunning(_) => StatusCode::CONFLICT,
            // moby's update checks are `errdefs.InvalidParameter`.
            VerbError::PsArgs(_)
            | VerbError::Conflict(_)
            | VerbError::Invalid(_)
            | VerbError::BadPath { .. } => StatusCode::BAD_REQUEST,
            VerbError::PathNotFound { .. } => StatusCode::NOT_FOUND,
            // Docker: "the volume or container rootfs is marked as read-only".
            VerbError::ReadOnlyRoot => StatusCode::FORBIDDEN,
            VerbError::Archive { source, .. } if is_bad_archive(source) => StatusCode::BAD_REQUEST,
            VerbError::Archive { .. }
            | VerbError::Ps { .. }
            | VerbError::PsNoPid
            | VerbError::PsBadPid(_)
            | VerbError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, crate::error_chain(&e))
    }
}

/// Whether an extraction failed on what the client sent (a hostile or
/// broken tar, an entry that would replace a directory) rather than on the
/// daemon's side.
fn is_bad_archive(e: &LayerError) -> bool {
    match e {
        // A parent that is a file, or a link that leads nowhere inside the
        // extraction point (missing parents of plain names are made).
        LayerError::ResolveParent { source, .. } => matches!(
            *source,
            rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP | rustix::io::Errno::NOENT
        ),
        LayerError::StartDecompress(_)
        | LayerError::ReadStream { .. }
        | LayerError::Truncated { .. }
        | LayerError::LayerTooLarge { .. }
        | LayerError::EntryTooLarge { .. }
        | LayerError::TooManyEntries { .. }
        | LayerError::InvalidName { .. }
        | LayerError::InvalidLinkTarget { .. }
        | LayerError::MissingLinkTarget { .. }
        | LayerError::InvalidHeader { .. }
        | LayerError::UnsupportedEntryType { .. }
        | LayerError::DeviceNotAllowed { .. }
        | LayerError::ForbiddenXattr { .. }
        | LayerError::InvalidPax { .. }
        | LayerError::WouldReplace { .. } => true,
        _ => false,
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        ApiError::new(image_status(&e), crate::error_chain(&e))
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking container operation off the async workers.
pub(super) async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
}

/// Reads a JSON body of at most [`MAX_JSON_BODY`] bytes; a wrong field is
/// named in the 400 answer.
pub(super) async fn json_body<T: DeserializeOwned>(req: Request) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_JSON_BODY} bytes"),
            )
        })?;
    decode(&bytes).map_err(ApiError::bad_request)
}

/// Decodes a JSON request body; the error names the field that is wrong
/// (`invalid request body at resources.memory: …`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("invalid request body: {}", e.inner())
        } else {
            format!("invalid request body at {path}: {}", e.inner())
        }
    })
}

pub(super) fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// Query flags arrive as `1`/`true`/`0`/`false`.
pub(super) fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "yes"))
}

pub(super) type Params = Query<BTreeMap<String, String>>;

/// Every route of this API version, also served without the version
/// prefix.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let routes = Router::new()
        .route("/_ping", get(|| async { "OK" }).head(|| async { "OK" }))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/containers/json", get(list))
        .route("/containers/create", post(create))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/attach", post(attach_to))
        .route("/containers/{id}/exec", post(exec))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}", delete(remove))
        .route("/commit", post(commit))
        .route("/events", get(events))
        .merge(super::images::routes())
        .merge(super::build::routes())
        .merge(super::verbs::routes())
        .merge(super::networks::routes())
        .merge(super::stacks::routes())
        .with_state(daemon);
    Router::new()
        .nest(super::PREFIX, routes.clone())
        .merge(routes)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "page not found").into_response()
        })
}

/// HTTP/1.1 connections that close when a client sends no complete request
/// head within 30 s, so idle connections cannot pile up.
fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
}

/// Serves `router` on a unix listener until `stop` turns true, refusing
/// peers that are neither root nor in the socket's group.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    gid: Option<u32>,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        if !crate::daemon::peer_allowed(&stream, gid) {
            tracing::warn!("refused an API connection from a process outside the socket's group");
            continue;
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = http1_builder()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Serves `router` on any accepted stream (TLS connections).
pub async fn serve_connection<S>(stream: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let _ = http1_builder()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn version() -> Response {
    json_response(&json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": super::VERSION,
        "MinAPIVersion": super::VERSION,
        "Os": std::env::consts::OS,
        "Arch": std::env::consts::ARCH,
        "KernelVersion": rustix::system::uname().release().to_string_lossy(),
    }))
}

async fn info(State(d): State<Arc<Daemon>>) -> ApiResult<Response> {
    let info = blocking(move || {
        let list = d.containers.runtime.list()?;
        let count = |f: &dyn Fn(Status) -> bool| list.iter().filter(|(_, s)| f(s.status)).count();
        let images = d
            .containers
            .images
            .catalog
            .list()
            .map(|l| l.len())
            .unwrap_or(0);
        let cgroup = crate::runtime::cgroup::Hierarchy::detect().ok();
        Ok(json!({
            "Containers": list.len(),
            "ContainersRunning": count(&|s| s == Status::Running),
            "ContainersPaused": count(&|s| s == Status::Paused),
            "ContainersStopped": count(&|s| matches!(s, Status::Exited | Status::Created)),
            "Images": images,
            "Driver": d.containers.storage_driver().name(),
            "DockerRootDir": d.root,
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup.as_ref().map_or("", |h| match h.version() {
                crate::runtime::cgroup::CgroupVersion::V1 => "1",
                crate::runtime::cgroup::CgroupVersion::V2 => "2",
            }),
            "Runtimes": ["stack", "runc", "crun"],
            "DefaultRuntime": "stack",
            "KernelVersion": rustix::system::uname().release().to_string_lossy(),
            "OperatingSystem": std::env::consts::OS,
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map_or(1, usize::from),
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "ApiVersion": super::VERSION,
            "Debug": d.options.debug,
            "Name": rustix::system::uname().nodename().to_string_lossy(),
        }))
    })
    .await?;
    Ok(json_response(&info))
}

async fn list(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let size = truthy(q.get("size"));
    let rows = blocking(move || {
        let runtime = &d.containers.runtime;
        let mut rows = Vec::new();
        for (record, state) in runtime.list()? {
            // Recorded at create; older containers have it in their spec only.
            let command = record
                .extra
                .get("command")
                .and_then(|c| serde_json::from_value::<Vec<String>>(c.clone()).ok())
                .or_else(|| {
                    runtime
                        .spec(&record.id)
                        .ok()
                        .and_then(|s| s.process().as_ref().and_then(|p| p.args().clone()))
                })
                .unwrap_or_default();
            let size = size.then(|| match containers::driver_of(&record) {
                StorageDriver::Overlay => dir_size(&record.rootfs.upper),
                // The root is a full copy: only the changes count.
                StorageDriver::Vfs => d.containers.vfs_size_rw(&record),
            });
            rows.push(Listed {
                restart_count: d.supervisor.restart_count(&record.id),
                health: (state.status == Status::Running)
                    .then(|| d.containers.health(&record.id).map(|h| h.status))
                    .flatten(),
                record,
                state,
                command,
                size,
            });
        }
        Ok(rows)
    })
    .await?;
    Ok(json_response(&rows))
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Emits a container event for `id` (nothing when it is gone).
fn emit(d: &Daemon, id: &str, action: &str) {
    if let Ok(record) = d.containers.runtime.record(id) {
        d.events.emit(Event::container(action, &record));
    }
}

fn resolve(d: &Daemon, name: &str) -> ApiResult<String> {
    Ok(d.containers.runtime.resolve(name)?)
}

/// The prologue every container handler shares: on the blocking pool,
/// `name` (a name, id or id prefix) resolved to the container's id, then
/// `f` with the daemon and that id. Library errors become their API status
/// and message through `?` (`No such container: x` is a 404).
pub(super) async fn with_container<T, F>(d: &Arc<Daemon>, name: String, f: F) -> ApiResult<T>
where
    F: FnOnce(&Daemon, &str) -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    let d = d.clone();
    blocking(move || {
        let id = resolve(&d, &name)?;
        f(&d, &id)
    })
    .await
}

/// The container's id (`name` resolved on the blocking pool).
pub(super) async fn container_id(d: &Arc<Daemon>, name: String) -> ApiResult<String> {
    with_container(d, name, |_, id| Ok(id.to_string())).await
}

/// [`with_container`] holding the supervisor's lock of the container, so
/// no start, stop, policy restart or removal runs while `f` changes it.
pub(super) async fn with_locked_container<T, F>(d: &Arc<Daemon>, name: String, f: F) -> ApiResult<T>
where
    F: FnOnce(&Daemon, &str) -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    let id = container_id(d, name).await?;
    let _guard = d.supervisor.lock(&id).await;
    let d = d.clone();
    blocking(move || f(&d, &id)).await
}

async fn create(
    State(d): State<Arc<Daemon>>,
    Query(q): Params,
    req: Request,
) -> ApiResult<Response> {
    let mut request: RunRequest = json_body(req).await?;
    if let Some(name) = q.get("name").filter(|n| !n.is_empty()) {
        request.name = Some(name.clone());
    }
    d.apply_defaults(&mut request);
    let durable = !request.auto_remove;
    let d2 = d.clone();
    let created = blocking(move || {
        let id = d2.containers.create(&request)?;
        if let Ok(record) = d2.containers.runtime.record(&id) {
            d2.events.emit(Event::container("create", &record));
        }
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    })
    .await?;
    if durable {
        // Flushed after the answer, off the path of `run`: until then a host
        // crash may lose the container (never half of it). A `--rm`
        // container is not flushed at all: after a host crash it would be
        // removed anyway.
        let id = created.id.clone();
        tokio::task::spawn_blocking(move || match d.containers.runtime.persist(&id) {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(container = id, error = %crate::error_chain(&e), "cannot flush the container's files")
            }
        });
    }
    Ok((StatusCode::CREATED, json_response(&created)).into_response())
}

async fn inspect(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    let value = with_container(&d, name, |d, id| {
        let mut value = d.containers.inspect(id)?;
        value["RestartCount"] = json!(d.supervisor.restart_count(id));
        Ok(value)
    })
    .await?;
    Ok(json_response(&value))
}

fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| !v.is_empty())
}

/// The 101 answer that hands the connection over to `relay`, which gets the
/// raw connection once the answer is out.
fn switch_protocols<F, Fut>(mut req: Request, relay: F) -> Response
where
    F: FnOnce(hyper::upgrade::Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            relay(upgraded).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_default()
}

/// Copies between the client's upgraded connection and a local socket
/// (a shim's attach socket, or our end of an exec's frame stream).
async fn splice(upgraded: hyper::upgrade::Upgraded, local: StdUnixStream) {
    if local.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut local) = tokio::net::UnixStream::from_std(local) else {
        return;
    };
    let mut client = TokioIo::new(upgraded);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut local).await;
}

/// A stack's container stopped by the user stays stopped until started
/// again (the stack loop would restart it otherwise).
fn hold_stack_container(d: &Daemon, id: &str, held: bool) -> ApiResult<()> {
    crate::daemon::stacks::hold(d, id, held)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn start(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let attach = wants_upgrade(&req);
    let (id, _) = resolve_record(&d, name).await?;
    hold_stack_container(&d, &id, false)?;
    let ours = if attach {
        let (ours, theirs) = StdUnixStream::pair().map_err(|e| ApiError::internal(&e))?;
        d.supervisor.start(&id, Some(OwnedFd::from(theirs))).await?;
        Some(ours)
    } else {
        let st = d.containers.runtime.state(&id)?;
        if matches!(st.status, Status::Running | Status::Paused) {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        d.supervisor.start(&id, None).await?;
        None
    };
    Ok(match ours {
        Some(ours) => switch_protocols(req, move |up| splice(up, ours)),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn attach_to(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    if !wants_upgrade(&req) {
        return Err(ApiError::bad_request(
            "attach needs an upgraded connection (Connection: Upgrade)",
        ));
    }
    let stream = with_container(&d, name, |d, id| {
        let st = d.containers.runtime.state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("container {id} is {}: cannot attach to it", st.status),
            ));
        }
        Ok(d.containers.runtime.attach(id)?)
    })
    .await?;
    Ok(switch_protocols(req, move |up| splice(up, stream)))
}

fn stop_timeout(q: &BTreeMap<String, String>, default: u32) -> ApiResult<Duration> {
    match q.get("t").or_else(|| q.get("time")) {
        None => Ok(Duration::from_secs(u64::from(default))),
        Some(t) => {
            let secs: i64 = t
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid stop timeout {t:?}")))?;
            Ok(if secs < 0 {
                Duration::from_secs(365 * 24 * 3600)
            } else {
                Duration::from_secs(secs.unsigned_abs())
            })
        }
    }
}

fn signal_param(q: &BTreeMap<String, String>, default: &str) -> ApiResult<i32> {
    let name = q.get("signal").map_or(default, String::as_str);
    crate::runtime::signal_number(name)
        .ok_or_else(|| ApiError::bad_request(format!("invalid signal {name:?}")))
}

/// The container and its record, resolved on the blocking pool.
async fn resolve_record(
    d: &Arc<Daemon>,
    name: String,
) -> ApiResult<(String, crate::runtime::ContainerRecord)> {
    with_container(d, name, |d, id| {
        let record = d.containers.runtime.record(id)?;
        Ok((id.to_string(), record))
    })
    .await
}

async fn stop(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let (id, record) = resolve_record(&d, name).await?;
    let signal = signal_param(&q, &record.stop_signal)?;
    let timeout = stop_timeout(&q, record.stop_timeout)?;
    hold_stack_container(&d, &id, true)?;
    let st = d.containers.runtime.state(&id)?;
    if !matches!(st.status, Status::Running | Status::Paused) {
        // Still a stop by the user: a planned restart is called off.
        d.supervisor.stopped_by_user(&id)?;
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    d.supervisor.stop(&id, signal, timeout).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restart(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let (id, record) = resolve_record(&d, name).await?;
    let signal = signal_param(&q, &record.stop_signal)?;
    let timeout = stop_timeout(&q, record.stop_timeout)?;
    hold_stack_container(&d, &id, false)?;
    d.supervisor.restart(&id, signal, timeout).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let signal = signal_param(&q, "SIGKILL")?;
    let (id, _) = resolve_record(&d, name).await?;
    d.supervisor.kill(&id, signal).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn wait(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let condition = q
        .get("condition")
        .cloned()
        .unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition {condition:?}: expected not-running, next-exit or removed"
        )));
    }
    let id = container_id(&d, name).await?;
    if condition == "next-exit" {
        return Ok(json_response(&next_exit(&d, &id).await?));
    }
    // Removal is awaited through the event bus: subscribed before the
    // container is looked at, so its `destroy` cannot slip past.
    let mut removed = if condition == "removed" {
        Some(subscribe_container(&d, &id, &["destroy"])?)
    } else {
        None
    };
    let d2 = d.clone();
    let waited = blocking(move || {
        let st = d2.containers.runtime.wait(&id, None)?;
        Ok((
            id,
            Waited {
                status_code: st.exit_code,
            },
        ))
    })
    .await?;
    let (id, waited) = waited;
    if let Some(subscription) = removed.as_mut() {
        while d.containers.runtime.record(&id).is_ok() {
            if subscription.next().await.is_none() {
                break;
            }
        }
    }
    Ok(json_response(&waited))
}

/// The live events of container `id` whose action is one of `actions`.
fn subscribe_container(
    d: &Daemon,
    id: &str,
    actions: &[&str],
) -> ApiResult<crate::daemon::events::Subscription> {
    let mut pairs = vec![("container".to_string(), id.to_string())];
    pairs.extend(actions.iter().map(|a| ("event".to_string(), a.to_string())));
    let filter = EventFilter::from_pairs(pairs).map_err(|e| ApiError::internal(&e))?;
    d.events
        .subscribe(filter, None, None)
        .map_err(|e| ApiError::internal(&e))
}

/// `wait?condition=next-exit`: the exit code of the container's next `die`
/// on the event bus. As moby's `WaitConditionNextExit`, whatever the state
/// now, the wait ends the next time the container stops; a removal first
/// ends it with the last exit code. Nothing polls, and a client that goes
/// away drops the subscription with the request.
async fn next_exit(d: &Daemon, id: &str) -> ApiResult<Waited> {
    // Subscribed before the state is read, so no exit slips between.
    let mut exits = subscribe_container(d, id, &["die", "destroy"])?;
    let last = d.containers.runtime.state(id)?.exit_code;
    while let Some(event) = exits.next().await {
        // The filter matches names and id prefixes too.
        if event.actor.id != id {
            continue;
        }
        let status_code = match event.action.as_str() {
            "die" => event
                .actor
                .attributes
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(last),
            _ => last,
        };
        return Ok(Waited { status_code });
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is shutting down",
    ))
}

async fn pause(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    freeze(&d, name, true).await
}

async fn unpause(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    freeze(&d, name, false).await
}

/// Pauses (`pause`) or resumes the container, with Docker's event.
async fn freeze(d: &Arc<Daemon>, name: String, pause: bool) -> ApiResult<Response> {
    with_container(d, name, move |d, id| {
        if pause {
            d.containers.runtime.pause(id)?;
        } else {
            d.containers.runtime.resume(id)?;
        }
        emit(d, id, if pause { "pause" } else { "unpause" });
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn rename(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let new_name = q
        .get("name")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("rename needs ?name=NEW_NAME"))?;
    let new_name = new_name.strip_prefix('/').unwrap_or(&new_name).to_string();
    if !crate::reconcile::containers::is_valid_name(&new_name) {
        return Err(ApiError::bad_request(format!(
            "invalid container name {new_name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    with_container(&d, name, move |d, id| {
        let old = d.containers.runtime.record(id)?.name;
        d.containers.runtime.rename(id, &new_name)?;
        if let Ok(record) = d.containers.runtime.record(id) {
            d.events.emit(
                Event::container("rename", &record).with_attribute("oldName", format!("/{old}")),
            );
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let force = truthy(q.get("force"));
    let volumes = truthy(q.get("v"));
    let (id, _) = resolve_record(&d, name).await?;
    d.supervisor.remove(&id, force, volumes).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A writer that turns what it is given into frames of one kind, sent to a
/// streamed answer body.
struct FrameSink {
    kind: Kind,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
}

impl Write for FrameSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let chunk = &buf[..buf.len().min(attach::MAX_FRAME)];
        let mut framed = Vec::with_capacity(chunk.len() + 5);
        attach::encode(&mut framed, self.kind, chunk);
        send_chunk(&self.tx, Bytes::from(framed))?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a request body into a blocking reader, a few chunks ahead at
/// most (uploads are bounded by the disk, never by memory). When the reader
/// stops early (the archive was refused), the rest of the body is still
/// read and dropped, so the client finishes its upload and gets the answer;
/// await the pump before answering.
pub(super) fn read_body(body: Body) -> (ChunkReader, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let pump = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut reading = true;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if reading && tx.send(Ok(bytes)).await.is_err() {
                        reading = false;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)))
                        .await;
                    return;
                }
            }
        }
    });
    (ChunkReader::new(rx), pump)
}

/// Sends one chunk of a streamed answer from a blocking thread; a client
/// that went away is a broken pipe.
fn send_chunk(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    chunk: Bytes,
) -> io::Result<()> {
    tx.blocking_send(Ok(chunk))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
}

/// A writer that sends what it is given, unframed, to a streamed answer
/// body (tar streams).
pub(super) struct ChunkSink {
    /// Where the chunks go.
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_chunk(&self.tx, Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn channel_body(rx: tokio::sync::mpsc::Receiver<Result<Bytes, io::Error>>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

async fn container_logs(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let now = SystemTime::now();
    let time = |key: &str| -> ApiResult<Option<SystemTime>> {
        match q.get(key).filter(|v| !v.is_empty() && v.as_str() != "0") {
            None => Ok(None),
            Some(v) => logs::parse_time_filter(v, now)
                .map(Some)
                .map_err(|e| ApiError::bad_request(e.to_string())),
        }
    };
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("all" | "-1" | "") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let both = !q.contains_key("stdout") && !q.contains_key("stderr");
    let options = ReadOptions {
        tail,
        since: time("since")?,
        until: time("until")?,
        timestamps: truthy(q.get("timestamps")),
        stdout: both || truthy(q.get("stdout")),
        stderr: both || truthy(q.get("stderr")),
        follow: truthy(q.get("follow")),
    };
    let follow = options.follow;
    let mut reader = with_container(&d, name, move |d, id| {
        let bundle = d.containers.runtime.bundle(id);
        let mut reader =
            logs::LogReader::open(bundle.dir(), id, options).map_err(|e| ApiError::internal(&e))?;
        if follow {
            let st = d.containers.runtime.state(id)?;
            let stop = rustix::process::Pid::from_raw(st.shim_pid).and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
            reader = reader.with_stop(match stop {
                Some(fd) => logs::Stop::WhenReadable(fd),
                None => logs::Stop::When(Box::new(|| true)),
            });
        }
        Ok(reader)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let mut out = FrameSink {
            kind: Kind::Stdout,
            tx: tx.clone(),
        };
        let mut err = FrameSink {
            kind: Kind::Stderr,
            tx: tx.clone(),
        };
        if let Err(e) = reader.write_raw_to(&mut out, &mut err) {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/vnd.stack.frames")
        .body(channel_body(rx))
        .unwrap_or_default())
}

/// What `POST /containers/{id}/exec` takes.
#[derive(Debug, Deserialize)]
pub struct ExecRequest {
    /// The process.
    pub config: ExecConfig,
    /// Keep stdin open.
    #[serde(default)]
    pub interactive: bool,
    /// Start it and answer at once, without streams.
    #[serde(default)]
    pub detach: bool,
}

async fn exec(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let upgrade = wants_upgrade(&req);
    let (parts, body) = req.into_parts();
    let exec: ExecRequest = json_body(Request::from_parts(parts.clone(), body)).await?;
    let (id, config) = with_container(&d, name, move |d, id| {
        let st = d.containers.runtime.state(id)?;
        if st.status != Status::Running {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("container {id} is {}: cannot exec in it", st.status),
            ));
        }
        Ok((id.to_string(), exec))
    })
    .await?;
    if let Ok(record) = d.containers.runtime.record(&id) {
        d.events.emit(
            Event::container(
                format!("exec_start: {}", config.config.args.join(" ")),
                &record,
            )
            .with_attribute("execID", crate::runtime::new_id()),
        );
    }
    if config.detach || !upgrade {
        let mut cmd =
            crate::runtime::exec::helper_command(&d.containers.runtime, &id, &config.config);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| ApiError::internal(&e))?;
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (ours, theirs) = StdUnixStream::pair().map_err(|e| ApiError::internal(&e))?;
    let runtime = d.containers.runtime.clone();
    let interactive = config.interactive;
    std::thread::spawn(move || {
        crate::runtime::exec::serve_framed(&runtime, &id, &config.config, interactive, theirs)
    });
    let req = Request::from_parts(parts, Body::empty());
    Ok(switch_protocols(req, move |up| splice(up, ours)))
}

async fn stats(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stream = q.get("stream").is_none_or(|v| truthy(Some(v)));
    let (id, record) = resolve_record(&d, name).await?;
    let record_name = record.name;
    let sample = move |d: &Daemon| -> ApiResult<Usage> {
        let s = d.containers.runtime.stats(&id)?;
        Ok(Usage {
            id: id.clone(),
            name: record_name.clone(),
            read_ns: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos()),
            memory: s.memory.as_ref().map(|m| m.usage),
            memory_limit: s.memory.as_ref().and_then(|m| m.limit),
            cpu_ns: s.cpu.as_ref().map(|c| c.usage_ns),
            pids: s.pids.as_ref().map(|p| p.current),
        })
    };
    if !stream {
        let usage = blocking(move || sample(&d)).await?;
        return Ok(json_response(&usage));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let d = d.clone();
            let sample = sample.clone();
            let usage = tokio::task::spawn_blocking(move || sample(&d)).await;
            let Ok(Ok(usage)) = usage else { return };
            let mut line = serde_json::to_vec(&usage).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(channel_body(rx))
        .unwrap_or_default())
}

async fn export(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    let id = container_id(&d, name).await?;
    // Reading the root means mounting it in a private mount namespace,
    // which takes a single-threaded process: `stack __export`.
    let mut cmd = crate::runtime::export_helper_command(&d.containers.runtime, &id);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| ApiError::internal(&e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::bad_request("no output from the export"))?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let stream = tokio_util::io::ReaderStream::new(stdout);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// What `POST /commit` takes besides the query.
#[derive(Debug, Default, Deserialize)]
pub struct CommitRequest {
    /// Dockerfile instructions to apply (`-c`).
    #[serde(default)]
    pub changes: Vec<String>,
}

async fn commit(
    State(d): State<Arc<Daemon>>,
    Query(q): Params,
    req: Request,
) -> ApiResult<Response> {
    let body: CommitRequest = json_body(req).await.unwrap_or_default();
    let container = q
        .get("container")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("commit needs ?container=NAME"))?;
    let reference = repo_tag_param(&q)?;
    let changes = body
        .changes
        .iter()
        .map(|c| c.parse::<crate::image::changes::Change>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let comment = q.get("comment").cloned();
    let author = q.get("author").cloned();
    let pause = q.get("pause").is_none_or(|v| truthy(Some(v)));
    let digest = with_container(&d, container, move |d, id| {
        let runtime = &d.containers.runtime;
        let paused =
            pause && runtime.state(id)?.status == Status::Running && runtime.pause(id).is_ok();
        let result = d.containers.commit(
            id,
            reference.as_ref(),
            &changes,
            comment.as_deref(),
            author.as_deref(),
        );
        if paused {
            let _ = runtime.resume(id);
        }
        Ok(result?)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        json_response(&json!({ "Id": digest.to_string() })),
    )
        .into_response())
}

/// The image reference of Docker's `repo` and `tag` parameters (commit,
/// import), `None` without `repo`.
pub(super) fn repo_tag_param(
    q: &BTreeMap<String, String>,
) -> ApiResult<Option<crate::image::reference::Reference>> {
    let Some(repo) = q.get("repo").filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let text = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.clone(),
    };
    text.parse::<crate::image::reference::Reference>()
        .map(Some)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Docker's `filters` parameter: a JSON map from key to values (a list, or
/// the older map of value to `true`).
pub(super) fn filters_param(q: &BTreeMap<String, String>) -> ApiResult<Vec<(String, String)>> {
    let Some(text) = q.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(Vec::new());
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("invalid filters {text:?}: {e}")))?;
    let map = value.as_object().ok_or_else(|| {
        ApiError::bad_request(format!("invalid filters {text:?}: expected an object"))
    })?;
    let mut pairs = Vec::new();
    for (key, values) in map {
        match values {
            serde_json::Value::Array(list) => {
                for v in list {
                    let v = v.as_str().ok_or_else(|| {
                        ApiError::bad_request(format!("invalid filter value for {key:?}"))
                    })?;
                    pairs.push((key.clone(), v.to_string()));
                }
            }
            serde_json::Value::Object(set) => {
                for v in set.keys() {
                    pairs.push((key.clone(), v.clone()));
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter value for {key:?}"
                )));
            }
        }
    }
    Ok(pairs)
}

async fn events(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let now = SystemTime::now();
    let time = |key: &str| -> ApiResult<Option<SystemTime>> {
        q.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                crate::daemon::events::parse_time(v, now)
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .transpose()
    };
    let since = time("since")?;
    let until = time("until")?;
    let filter = EventFilter::from_pairs(filters_param(&q)?)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut subscription = d
        .events
        .subscribe(filter, since, until)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = subscription.next() => {
                    let Some(event) = event else { return };
                    let mut line = serde_json::to_vec(&event).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Ok(Bytes::from(line))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(channel_body(rx))
        .unwrap_or_default())
}
