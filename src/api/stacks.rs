//! The stack routes (ours; Docker has none): register and apply a stack
//! (`POST /stacks`), list them, show one, plan one without applying it,
//! apply one again, scale its services, and take one down. Stacks of the
//! daemon's watch directory show where they come from; `up` and `down`
//! leave them to their files (409).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::server::{ApiError, ApiResult, json_body, json_response};
use crate::daemon::Daemon;
use crate::daemon::stacks::{Registry, ScaleError, StackSource};

/// The stack routes.
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/stacks", get(list).post(up))
        .route("/stacks/plan", post(plan))
        .route("/stacks/{name}", get(status).delete(down))
        .route("/stacks/{name}/apply", post(apply))
        .route("/stacks/{name}/scale", post(scale))
        .route("/stacks/{name}/stop", post(stop))
        .route("/stacks/{name}/kill", post(kill))
        .route("/stacks/{name}/wait", get(wait))
}

/// What `GET /stacks/{name}/wait` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitResult {
    /// Every selected service runs (healthy where it has a check).
    pub ready: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stack name as Compose accepts a project name.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid stack name {name:?}: lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )))
    }
}

fn check_source(source: &StackSource) -> ApiResult<()> {
    check_name(&source.name)?;
    if !source.project_dir.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "the project directory {} is not an absolute path",
            source.project_dir.display()
        )));
    }
    Ok(())
}

async fn up(State(d): State<Arc<Daemon>>, req: Request) -> ApiResult<Response> {
    let source: StackSource = json_body(req).await?;
    check_source(&source)?;
    d.gitops
        .check_up(&source.name)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    let status = Registry::up(&d, source)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(json_response(&status).into_response())
}

async fn plan(State(d): State<Arc<Daemon>>, req: Request) -> ApiResult<Response> {
    let source: StackSource = json_body(req).await?;
    check_source(&source)?;
    let steps = Registry::plan(&d, &source)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(json_response(&steps).into_response())
}

/// Every stack, then the watch directory's entries that run none
/// (invalid before their first good version, or refused).
async fn list(State(d): State<Arc<Daemon>>) -> ApiResult<Response> {
    let mut list = d.stacks.list();
    for status in &mut list {
        d.gitops.decorate(status);
    }
    list.extend(d.gitops.rows());
    Ok(json_response(&list).into_response())
}

async fn status(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    let status = match d.stacks.status(&name) {
        Some(mut status) => {
            d.gitops.decorate(&mut status);
            status
        }
        None => d.gitops.row(&name).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no such stack: {name}"))
        })?,
    };
    Ok(json_response(&status).into_response())
}

async fn apply(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    let status =
        d.stacks.kick(&name).await.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no such stack: {name}"))
        })?;
    Ok(json_response(&status).into_response())
}

/// `POST /stacks/{name}/scale` with `{"web": 3}`: the replica counts to
/// run from now on; answers the stack's status after the apply.
async fn scale(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    check_name(&name)?;
    let wanted: BTreeMap<String, u32> = json_body(req).await?;
    if wanted.is_empty() {
        return Err(ApiError::bad_request(
            "no service to scale: send {\"SERVICE\": REPLICAS, …}",
        ));
    }
    let status = Registry::scale(&d, &name, &wanted).await.map_err(|e| {
        let code = match e {
            ScaleError::NoStack(_) | ScaleError::NoService { .. } => StatusCode::NOT_FOUND,
            ScaleError::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ScaleError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(code, e.to_string())
    })?;
    Ok(json_response(&status).into_response())
}

async fn down(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_name(&name)?;
    let volumes = matches!(q.get("volumes").map(String::as_str), Some("1" | "true"));
    d.gitops
        .check_down(&name)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    let report = Registry::down(&d, &name, volumes)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    d.gitops.forget(&name);
    Ok(json_response(&report).into_response())
}

/// `POST /stacks/{name}/stop`: the daemon stops keeping the stack and
/// stops its containers (the end of a foreground `stack up`).
async fn stop(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    check_name(&name)?;
    let report = Registry::stop(&d, &name)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(json_response(&report).into_response())
}

/// `POST /stacks/{name}/kill`: the daemon stops keeping the stack and
/// kills its containers (a second Ctrl-C).
async fn kill(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    check_name(&name)?;
    let report = Registry::kill(&d, &name)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(json_response(&report).into_response())
}

/// `GET /stacks/{name}/wait?timeout=SECONDS`: answers once the stack's
/// services run (and are healthy where they have a check), or cannot, or
/// the timeout passed.
async fn wait(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let timeout = match q.get("timeout").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(t) => Some(std::time::Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeout {t:?}: whole seconds"))
        })?)),
    };
    if d.stacks.status(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such stack: {name}"),
        ));
    }
    let result = match Registry::wait(&d, &name, timeout)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?
    {
        None => WaitResult {
            ready: true,
            error: None,
        },
        Some(why) => WaitResult {
            ready: false,
            error: Some(why),
        },
    };
    Ok(json_response(&result).into_response())
}
