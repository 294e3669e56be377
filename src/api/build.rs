//! `POST /build`: Docker's build route. The CLI and the daemon share a
//! host, so a directory context is named, not uploaded (`context=/abs/path`,
//! an extension); the body is then empty, or the Dockerfile's text
//! (`-f -`). Without `context`, the body is a context tarball (plain or
//! gzip), unpacked into a temporary directory under the daemon's root and
//! removed after, or a Dockerfile alone (an empty context). The answer
//! streams JSON lines: `{"stream": …}`, `{"aux":{"ID":…}}`, and
//! `{"error": …, "errorDetail": …}` on failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::images::JsonMessage;
use super::server::{ApiError, ApiResult, read_body};
use crate::build::{BuildOptions, build};
use crate::daemon::Daemon;
use crate::daemon::build::DaemonBuildHost;
use crate::image::reference::Reference;

/// The build route, merged into [`super::server::router`].
pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new().route("/build", post(build_route))
}

/// Largest Dockerfile accepted in a body (as Docker's 1 MiB... doubled).
const MAX_DOCKERFILE: u64 = 2 << 20;

async fn build_route(
    State(d): State<Arc<Daemon>>,
    Query(pairs): Query<Vec<(String, String)>>,
    req: Request,
) -> ApiResult<Response> {
    let q: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let truthy = |k: &str| {
        q.get(k)
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
    };
    let mut opts = BuildOptions {
        dockerfile: q.get("dockerfile").filter(|f| !f.is_empty()).cloned(),
        target: q.get("target").filter(|t| !t.is_empty()).cloned(),
        no_cache: truthy("nocache"),
        pull: truthy("pull"),
        quiet: truthy("q"),
        ..BuildOptions::default()
    };
    for (k, v) in &pairs {
        if k == "t" && !v.is_empty() {
            let r: Reference =
                v.parse()
                    .map_err(|e: crate::image::reference::ReferenceError| {
                        ApiError::bad_request(format!("invalid tag {v:?}: {e}"))
                    })?;
            opts.tags.push(r);
        }
    }
    if let Some(args) = q.get("buildargs").filter(|a| !a.is_empty()) {
        opts.build_args = serde_json::from_str(args)
            .map_err(|e| ApiError::bad_request(format!("invalid buildargs: {e}")))?;
    }
    if let Some(labels) = q.get("labels").filter(|a| !a.is_empty()) {
        opts.labels = serde_json::from_str(labels)
            .map_err(|e| ApiError::bad_request(format!("invalid labels: {e}")))?;
    }
    let context = q
        .get("context")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from);
    if let Some(c) = &context {
        if !c.is_absolute() {
            return Err(ApiError::bad_request(format!(
                "the build context must be an absolute path: {}",
                c.display()
            )));
        }
        if let Err(e) = std::fs::read_dir(c) {
            return Err(ApiError::bad_request(format!(
                "the daemon cannot read the build context {}: {e}",
                c.display()
            )));
        }
    }
    let (reader, _pump) = read_body(req.into_body());
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let send = |m: JsonMessage| {
            let _ = tx.send(m.to_line());
        };
        let quiet = opts.quiet;
        let result = prepare_and_build(&d, handle, opts, context, reader, &mut |text: &str| {
            if !quiet {
                send(JsonMessage {
                    stream: Some(text.to_string()),
                    ..JsonMessage::default()
                });
            }
        });
        match result {
            Ok(id) => send(JsonMessage {
                aux: Some(serde_json::json!({ "ID": id })),
                ..JsonMessage::default()
            }),
            Err(message) => send(JsonMessage::error(message)),
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<Bytes, std::io::Error>(line), rx))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// Reads the body (a tarball, a Dockerfile, or nothing), then builds.
fn prepare_and_build(
    d: &Arc<Daemon>,
    handle: tokio::runtime::Handle,
    mut opts: BuildOptions,
    context: Option<PathBuf>,
    mut body: impl Read,
    out: &mut dyn FnMut(&str),
) -> Result<String, String> {
    let mut head = Vec::new();
    (&mut body)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read the request body: {e}"))?;
    let mut unpacked = None;
    match context {
        Some(c) => {
            opts.context = c;
            if !head.is_empty() {
                opts.dockerfile_text = Some(read_text(&head, body)?);
            }
        }
        None => {
            let is_gzip = head.starts_with(&[0x1f, 0x8b]);
            let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
            let dir = tempfile::Builder::new()
                .prefix("context-")
                .tempdir_in(d.root.join("build"))
                .or_else(|_| {
                    std::fs::create_dir_all(d.root.join("build"))?;
                    tempfile::Builder::new()
                        .prefix("context-")
                        .tempdir_in(d.root.join("build"))
                })
                .map_err(|e| format!("cannot make a context directory: {e}"))?;
            if is_gzip || is_tar {
                let whole = std::io::Cursor::new(head).chain(body);
                let reader: Box<dyn Read> = if is_gzip {
                    Box::new(flate2::read::MultiGzDecoder::new(whole))
                } else {
                    Box::new(whole)
                };
                let mut archive = tar::Archive::new(reader);
                archive.set_preserve_permissions(true);
                archive.set_preserve_mtime(true);
                archive.set_unpack_xattrs(false);
                let entries = archive
                    .entries()
                    .map_err(|e| format!("cannot read the context tarball: {e}"))?;
                for entry in entries {
                    let mut entry =
                        entry.map_err(|e| format!("cannot read the context tarball: {e}"))?;
                    entry
                        .unpack_in(dir.path())
                        .map_err(|e| format!("cannot unpack the context tarball: {e}"))?;
                }
            } else if head.is_empty() {
                return Err("the build needs a context: a context directory or a tarball or Dockerfile as the body".into());
            } else {
                opts.dockerfile_text = Some(read_text(&head, body)?);
            }
            opts.context = dir.path().to_path_buf();
            unpacked = Some(dir);
        }
    }
    let host = DaemonBuildHost { daemon: d, handle };
    let result = build(&d.containers.images, &host, &d.root, &opts, out)
        .map(|id| id.to_string())
        .map_err(|e| crate::error_chain(&e));
    drop(unpacked);
    result
}

fn read_text(head: &[u8], body: impl Read) -> Result<String, String> {
    let mut bytes = head.to_vec();
    body.take(MAX_DOCKERFILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the Dockerfile from the body: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "the Dockerfile is not UTF-8".to_string())
}
