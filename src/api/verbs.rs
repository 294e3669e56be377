//! The container verbs beyond the life cycle, Docker-shaped (Engine API
//! v1.43): `GET /containers/{id}/top`, `GET /containers/{id}/changes`,
//! `GET`/`HEAD`/`PUT /containers/{id}/archive` (the tar streams of `cp`),
//! `POST /containers/{id}/update` and `POST /containers/prune`.
//!
//! The work is the library's (`reconcile::verbs`, `reconcile::archive`);
//! this file parses requests, answers with Docker's bodies and status codes,
//! and emits the events Docker emits (`update`, and `destroy` for each
//! container a prune removes, through the supervisor). It never parses a tar
//! stream itself: uploads go to the same extraction that unpacks image
//! layers, every path resolved inside the container's root.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::server::{
    ApiError, ApiResult, ChunkSink, Params, blocking, channel_body, filters_param, json_body,
    json_response, read_body, truthy, with_container, with_locked_container,
};
use crate::daemon::Daemon;
use crate::daemon::events::{Event, EventType};
use crate::reconcile::archive::{PathStat, PutOptions};
use crate::reconcile::container::Resources;
use crate::reconcile::verbs::{PruneFilters, PruneReport, RestartPolicy, UpdateRequest};

/// The header that carries a path's stat on archive answers: base64 of the
/// JSON of [`PathStat`] (moby `X-Docker-Container-Path-Stat`).
pub const PATH_STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// The routes of this file.
pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/changes", get(changes))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/update", post(update))
}

/// `POST /containers/{id}/update`'s body, as Docker sends it: a zero (or
/// empty) field leaves the limit as it is, as moby reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateBody {
    /// Memory limit in bytes.
    pub memory: i64,
    /// Memory plus swap in bytes, `-1` for unlimited swap.
    pub memory_swap: i64,
    /// Memory soft limit in bytes.
    pub memory_reservation: i64,
    /// CPU shares (relative weight).
    pub cpu_shares: i64,
    /// CPUs in billionths (`--cpus 1.5` is 1500000000).
    pub nano_cpus: i64,
    /// CFS quota in µs.
    pub cpu_quota: i64,
    /// CFS period in µs.
    pub cpu_period: i64,
    /// CPUs allowed (`0-2,4`).
    pub cpuset_cpus: String,
    /// Memory nodes allowed.
    pub cpuset_mems: String,
    /// Largest number of processes; `0` or `-1` for unlimited, absent to
    /// keep it.
    pub pids_limit: Option<i64>,
    /// Block IO weight, 10–1000.
    pub blkio_weight: u16,
    /// A new restart policy (an empty name keeps the old one).
    pub restart_policy: Option<RestartPolicyBody>,
}

/// Docker's `RestartPolicy` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyBody {
    /// `no`, `always`, `on-failure`, `unless-stopped`, or empty.
    pub name: String,
    /// For `on-failure`: the most restarts, 0 for no limit.
    pub maximum_retry_count: i64,
}

/// Nanoseconds of CPU per second of one CPU.
const NANO: f64 = 1e9;

impl UpdateBody {
    /// The body that asks for `req`.
    pub fn from_request(req: &UpdateRequest) -> UpdateBody {
        let r = &req.resources;
        UpdateBody {
            memory: r.memory.unwrap_or(0),
            memory_swap: r.memory_swap.unwrap_or(0),
            memory_reservation: r.memory_reservation.unwrap_or(0),
            cpu_shares: r
                .cpu_shares
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            // docker/cli's `NanoCPUs.Set`: the fraction times 1e9, rounded.
            #[allow(clippy::cast_possible_truncation)]
            nano_cpus: r.cpus.map_or(0, |c| (c * NANO).round() as i64),
            cpu_quota: r.cpu_quota.unwrap_or(0),
            cpu_period: r
                .cpu_period
                .map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX)),
            cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
            cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
            pids_limit: r.pids_limit,
            blkio_weight: r.blkio_weight.unwrap_or(0),
            restart_policy: req.restart.map(|p| RestartPolicyBody {
                name: p.name.to_string(),
                maximum_retry_count: i64::from(p.maximum_retry_count),
            }),
        }
    }

    /// What the body asks for; the error names the field that is wrong.
    pub fn to_request(&self) -> Result<UpdateRequest, String> {
        let set = |v: i64| (v != 0).then_some(v);
        let positive = |field: &str, v: i64| -> Result<Option<u64>, String> {
            match v {
                0 => Ok(None),
                v => u64::try_from(v)
                    .map(Some)
                    .map_err(|_| format!("invalid {field} {v}: must not be negative")),
            }
        };
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let cpus = match self.nano_cpus {
            0 => None,
            n if n < 0 => return Err(format!("invalid NanoCpus {n}: must not be negative")),
            #[allow(clippy::cast_precision_loss)]
            n => Some(n as f64 / NANO),
        };
        let restart = match &self.restart_policy {
            Some(p) if !p.name.is_empty() => {
                let text = if p.maximum_retry_count != 0 {
                    format!("{}:{}", p.name, p.maximum_retry_count)
                } else {
                    p.name.clone()
                };
                let (name, count) = crate::spec::restart::parse_restart(&text)
                    .map_err(|e| format!("invalid RestartPolicy: {e}"))?;
                Some(RestartPolicy {
                    name,
                    maximum_retry_count: count.unwrap_or(0),
                })
            }
            _ => None,
        };
        Ok(UpdateRequest {
            resources: Resources {
                memory: set(self.memory),
                memory_swap: set(self.memory_swap),
                memory_reservation: set(self.memory_reservation),
                cpu_shares: positive("CpuShares", self.cpu_shares)?,
                cpus,
                cpu_period: positive("CpuPeriod", self.cpu_period)?,
                cpu_quota: set(self.cpu_quota),
                cpuset_cpus: text(&self.cpuset_cpus),
                cpuset_mems: text(&self.cpuset_mems),
                pids_limit: self.pids_limit,
                blkio_weight: (self.blkio_weight != 0).then_some(self.blkio_weight),
                oom_kill_disable: false,
            },
            restart,
        })
    }
}

async fn top(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let ps_args = q.get("ps_args").cloned().unwrap_or_default();
    let result = with_container(&d, name, move |d, id| Ok(d.containers.top(id, &ps_args)?)).await?;
    Ok(json_response(&result))
}

async fn changes(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> ApiResult<Response> {
    let changes = with_container(&d, name, |d, id| Ok(d.containers.changes(id)?)).await?;
    Ok(json_response(&changes))
}

/// The `path` query parameter, which the archive routes need (moby's
/// `badParameterError`).
fn path_param(q: &std::collections::BTreeMap<String, String>) -> ApiResult<String> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("bad parameter: path cannot be empty"))
}

/// The stat header's value.
fn stat_header(stat: &PathStat) -> ApiResult<HeaderValue> {
    let json = serde_json::to_vec(stat).map_err(|e| ApiError::internal(&e))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    HeaderValue::from_str(&encoded).map_err(|e| ApiError::internal(&e))
}

/// The [`PathStat`] in a [`PATH_STAT_HEADER`] value.
pub fn decode_path_stat(value: &str) -> Result<PathStat, String> {
    let json = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| format!("invalid {PATH_STAT_HEADER} header: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("invalid {PATH_STAT_HEADER} header: {e}"))
}

/// `HEAD /containers/{id}/archive?path=`: the stat header only.
async fn archive_head(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let stat = with_container(&d, name, move |d, id| {
        Ok(d.containers.archive_stat(id, &path)?)
    })
    .await?;
    Ok(Response::builder()
        .header(PATH_STAT_HEADER, stat_header(&stat)?)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::empty())
        .unwrap_or_default())
}

/// `GET /containers/{id}/archive?path=`: the path as a tar stream, its stat
/// in the header. What fails before the first byte is an error answer;
/// what fails later breaks the stream off, so the client never takes a cut
/// archive for a whole one.
async fn archive_get(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let asked = path.clone();
    let (id, stat) = with_container(&d, name, move |d, id| {
        Ok((id.to_string(), d.containers.archive_stat(id, &asked)?))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let containers = d.containers.clone();
    tokio::task::spawn_blocking(move || {
        let mut sink = std::io::BufWriter::with_capacity(256 << 10, ChunkSink { tx: tx.clone() });
        let sent = containers
            .archive_get(&id, &path, &mut sink)
            .map_err(|e| std::io::Error::other(crate::error_chain(&e)))
            .and_then(|_| std::io::Write::flush(&mut sink));
        if let Err(e) = sent {
            drop(sink);
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(Response::builder()
        .header(PATH_STAT_HEADER, stat_header(&stat)?)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(channel_body(rx))
        .unwrap_or_default())
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`:
/// extracts the tar body into the directory `path` of the container as it
/// streams in (bounded by the disk only). Entries are placed as image
/// layers are, inside the container's root: a name that climbs out with
/// `..` is refused, and a symlink leads within the container, never to the
/// host.
async fn archive_put(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Params,
    req: Request,
) -> ApiResult<Response> {
    // The body is drained whatever the answer, so the client always gets it.
    let (mut reader, pump) = read_body(req.into_body());
    let opts = PutOptions {
        copy_uid_gid: truthy(q.get("copyUIDGID")),
        no_overwrite_dir_non_dir: truthy(q.get("noOverwriteDirNonDir")),
    };
    let extracted = match path_param(&q) {
        Ok(path) => {
            with_container(&d, name, move |d, id| {
                Ok(d.containers.archive_put(id, &path, &mut reader, &opts)?)
            })
            .await
        }
        Err(e) => Err(e),
    };
    let _ = pump.await;
    extracted?;
    Ok(StatusCode::OK.into_response())
}

async fn update(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let body: UpdateBody = json_body(req).await?;
    let request = body.to_request().map_err(ApiError::bad_request)?;
    let result = with_locked_container(&d, name, move |d, id| {
        let result = d.containers.update(id, &request)?;
        if let Ok(record) = d.containers.runtime.record(id) {
            d.events.emit(Event::container("update", &record));
        }
        Ok(result)
    })
    .await?;
    Ok(json_response(&result))
}

/// The filters `POST /containers/prune` takes (moby `daemon/prune.go`).
fn prune_filters(pairs: Vec<(String, String)>) -> ApiResult<PruneFilters> {
    let mut filters = PruneFilters::default();
    for (key, value) in pairs {
        match key.as_str() {
            "until" if filters.until.is_some() => {
                return Err(ApiError::bad_request(
                    "more than one until filter specified",
                ));
            }
            "until" => filters.until = Some(value),
            "label" => filters.label.push(value),
            "label!" => filters.label_not.push(value),
            other => {
                return Err(ApiError::bad_request(format!("invalid filter '{other}'")));
            }
        }
    }
    Ok(filters)
}

/// `POST /containers/prune?filters=`: removes the stopped containers that
/// pass the filters, each through the supervisor (under its lock, with its
/// `destroy` event), and emits Docker's `prune` event.
async fn prune(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let filters = prune_filters(filters_param(&q)?)?;
    let d2 = d.clone();
    let candidates = blocking(move || Ok(d2.containers.prune_candidates(&filters)?)).await?;
    let mut report = PruneReport::default();
    for (id, size) in candidates {
        match d.supervisor.remove(&id, false, false).await {
            Ok(()) => {
                report.space_reclaimed += size;
                report.containers_deleted.push(id);
            }
            // Started meanwhile, or removed by someone else: not ours.
            Err(e) => {
                tracing::debug!(container = %id, error = %crate::error_chain(&e), "prune left the container");
            }
        }
    }
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("reclaimed".to_string(), report.space_reclaimed.to_string());
    d.events
        .emit(Event::new(EventType::Container, "prune", "", attributes));
    Ok(json_response(&report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::restart::RestartPolicyName;

    #[test]
    fn update_bodies_round_trip_and_zero_means_unchanged() {
        let req = UpdateRequest {
            resources: Resources {
                memory: Some(96 << 20),
                memory_swap: Some(-1),
                cpus: Some(0.5),
                pids_limit: Some(40),
                cpuset_cpus: Some("0".into()),
                ..Resources::default()
            },
            restart: Some(RestartPolicy {
                name: RestartPolicyName::OnFailure,
                maximum_retry_count: 2,
            }),
        };
        let body = UpdateBody::from_request(&req);
        assert_eq!(body.nano_cpus, 500_000_000);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["Memory"], 96 << 20);
        assert_eq!(json["NanoCpus"], 500_000_000);
        assert_eq!(json["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(json["RestartPolicy"]["MaximumRetryCount"], 2);
        assert_eq!(body.to_request().unwrap(), req);

        let empty: UpdateBody = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.to_request().unwrap(), UpdateRequest::default());
        let kept: UpdateBody =
            serde_json::from_str(r#"{"Memory": 0, "RestartPolicy": {"Name": ""}}"#).unwrap();
        assert_eq!(kept.to_request().unwrap(), UpdateRequest::default());
    }

    #[test]
    fn bad_update_bodies_name_the_field() {
        for (body, field) in [
            (r#"{"CpuShares": -2}"#, "CpuShares"),
            (r#"{"NanoCpus": -1}"#, "NanoCpus"),
            (r#"{"CpuPeriod": -1}"#, "CpuPeriod"),
            (
                r#"{"RestartPolicy": {"Name": "sometimes"}}"#,
                "RestartPolicy",
            ),
            (
                r#"{"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}"#,
                "RestartPolicy",
            ),
        ] {
            let parsed: UpdateBody = serde_json::from_str(body).unwrap();
            let err = parsed.to_request().unwrap_err();
            assert!(err.contains(field), "{body}: {err}");
        }
        let err =
            super::super::server::decode::<UpdateBody>(br#"{"BlkioWeight": -5}"#).unwrap_err();
        assert!(err.contains("BlkioWeight"), "{err}");
    }

    #[test]
    fn the_stat_header_is_base64_json_with_dockers_names() {
        let stat = PathStat {
            name: "passwd".into(),
            size: 12,
            mode: 0o644,
            mtime: "2024-01-02T03:04:05.000000006Z".into(),
            link_target: String::new(),
        };
        let value = stat_header(&stat).unwrap();
        let text = value.to_str().unwrap();
        let json = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["name"], "passwd");
        assert_eq!(json["linkTarget"], "");
        assert_eq!(decode_path_stat(text).unwrap(), stat);
        assert!(decode_path_stat("not base64!").is_err());
    }

    #[test]
    fn prune_takes_until_and_labels_and_refuses_other_filters() {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let f = prune_filters(pairs(&[
            ("until", "1h"),
            ("label", "a=b"),
            ("label!", "keep"),
        ]))
        .unwrap();
        assert_eq!(
            f,
            PruneFilters {
                until: Some("1h".into()),
                label: vec!["a=b".into()],
                label_not: vec!["keep".into()],
            }
        );
        let err = prune_filters(pairs(&[("color", "red")])).unwrap_err();
        assert_eq!(err.message(), "invalid filter 'color'");
        assert!(prune_filters(pairs(&[("until", "1h"), ("until", "2h")])).is_err());
    }
}
