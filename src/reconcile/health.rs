//! Health checks as Docker has them: which check a container gets (the
//! request's settings over the image's `HEALTHCHECK`, with Docker's merge
//! rules and defaults), the state `inspect` reports as `State.Health`, and the
//! state machine that moves it on each probe result.
//!
//! Pure, apart from reading and writing the state file (`health.json` in the
//! container's bundle). Running the probes is the daemon's job
//! (`daemon::health`); this module never runs a process or reads the clock.
//!
//! The rules follow moby `daemon/health.go` (`handleProbeResult`, `monitor`)
//! and `daemon/create.go` (`merge`, `validateHealthCheck`).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image::oci::{HealthConfig, RunConfig};
use crate::spec::model::{HealthCommand, HealthSpec};

/// The state file in a container's bundle.
pub const HEALTH_FILE: &str = "health.json";
/// How many probe results `State.Health.Log` keeps (moby `maxLogEntries`).
pub const MAX_LOG_ENTRIES: usize = 5;
/// How many bytes of a probe's output are kept (moby `maxOutputLen`).
pub const MAX_OUTPUT_LEN: usize = 4096;
/// Time between probes when neither request nor image sets it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a probe may run when neither request nor image sets it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failures that make a container unhealthy by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// Time between probes during the start period by default.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest non-zero duration a check accepts (moby
/// `containertypes.MinimumDuration`).
pub const MINIMUM_DURATION: Duration = Duration::from_millis(1);

/// Why health check settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// A duration below Docker's minimum of 1ms (zero means "inherit").
    #[error("{setting} in Healthcheck cannot be less than 1ms")]
    TooShort {
        /// `Interval`, `Timeout`, `StartPeriod` or `StartInterval`.
        setting: &'static str,
    },
    /// The test is neither `NONE`, `CMD …` nor `CMD-SHELL …`.
    #[error(
        "invalid Healthcheck test {test:?}: expected [\"NONE\"], [\"CMD\", PROGRAM, ARGS…] or [\"CMD-SHELL\", COMMAND]"
    )]
    BadTest {
        /// The test as given.
        test: Vec<String>,
    },
}

/// Health check settings as asked for (`--health-*` flags, a stack
/// service's `health`, an API body); Docker's `HealthConfig` shape on the
/// wire, durations in nanoseconds. Unset or zero fields inherit the image's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthRequest {
    /// `["CMD-SHELL", cmd]` (`--health-cmd`), `["CMD", prog, args…]`, or
    /// `["NONE"]` (`--no-healthcheck`: the image's check is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// `--health-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nanos")]
    pub interval: Option<Duration>,
    /// `--health-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nanos")]
    pub timeout: Option<Duration>,
    /// `--health-retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// `--health-start-period`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nanos")]
    pub start_period: Option<Duration>,
    /// `--health-start-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nanos")]
    pub start_interval: Option<Duration>,
}

impl HealthRequest {
    /// Whether nothing is set (the image's check applies unchanged).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Docker's checks of the settings (`validateHealthCheck`).
    pub fn validate(&self) -> Result<(), HealthError> {
        for (setting, value) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if value.is_some_and(|d| !d.is_zero() && d < MINIMUM_DURATION) {
                return Err(HealthError::TooShort { setting });
            }
        }
        if let Some(test) = &self.test {
            let ok = match test.first().map(String::as_str) {
                None => true,
                Some("NONE") => true,
                Some("CMD" | "CMD-SHELL") => test.len() > 1,
                Some(_) => false,
            };
            if !ok {
                return Err(HealthError::BadTest { test: test.clone() });
            }
        }
        Ok(())
    }

    /// The request a stack service's `health` block makes.
    pub fn from_spec(spec: &HealthSpec) -> Self {
        let test = match &spec.command {
            HealthCommand::Shell(cmd) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            HealthCommand::Exec(argv) => std::iter::once("CMD".to_string())
                .chain(argv.iter().cloned())
                .collect(),
            HealthCommand::Disabled => vec!["NONE".to_string()],
        };
        Self {
            test: Some(test),
            interval: spec.interval.map(|d| d.0),
            timeout: spec.timeout.map(|d| d.0),
            retries: spec.retries,
            start_period: spec.start_period.map(|d| d.0),
            start_interval: None,
        }
    }
}

/// The check a container runs: every setting resolved. Serializes in
/// Docker's `Config.Healthcheck` shape (durations in nanoseconds); this is
/// what `record.extra["healthcheck"]` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// `["CMD", prog, args…]` or `["CMD-SHELL", command…]`.
    pub test: Vec<String>,
    /// Time between probes.
    #[serde(with = "nanos")]
    pub interval: Duration,
    /// A probe running longer is killed and counts as a failure.
    #[serde(with = "nanos")]
    pub timeout: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
    /// Failures in this time after the start do not count while starting.
    #[serde(with = "nanos")]
    pub start_period: Duration,
    /// Time between probes during the start period.
    #[serde(with = "nanos")]
    pub start_interval: Duration,
    /// The shell a `CMD-SHELL` test runs in: the image's `SHELL`, else
    /// `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

impl HealthCheck {
    /// The probe's command line inside the container.
    pub fn argv(&self) -> Vec<String> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                let mut argv = if self.shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    self.shell.clone()
                };
                argv.extend(rest.iter().cloned());
                argv
            }
            Some((_, rest)) => rest.to_vec(),
            None => Vec::new(),
        }
    }
}

/// A duration from an image config (nanoseconds; zero or negative: unset).
fn image_duration(ns: Option<i64>) -> Option<Duration> {
    ns.and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Duration::from_nanos)
}

/// The check a container gets: `request` over the image's `HEALTHCHECK`
/// field by field (moby `merge`: an unset or zero field inherits the
/// image's), then Docker's defaults. `None` when there is no test, the test
/// is `NONE` (`--no-healthcheck`), or its type is unknown (moby `getProbe`
/// ignores those too).
pub fn effective(request: &HealthRequest, image: &RunConfig) -> Option<HealthCheck> {
    let none = HealthConfig::default();
    let from_image = image.healthcheck.as_ref().unwrap_or(&none);
    let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    let test = request
        .test
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| from_image.test.clone())?;
    match test.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL") if test.len() > 1 => {}
        _ => return None,
    }
    let retries = request
        .retries
        .filter(|r| *r > 0)
        .or_else(|| {
            from_image
                .retries
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| *r > 0)
        })
        .unwrap_or(DEFAULT_RETRIES);
    Some(HealthCheck {
        test,
        interval: nonzero(request.interval)
            .or_else(|| image_duration(from_image.interval))
            .unwrap_or(DEFAULT_INTERVAL),
        timeout: nonzero(request.timeout)
            .or_else(|| image_duration(from_image.timeout))
            .unwrap_or(DEFAULT_TIMEOUT),
        retries,
        start_period: nonzero(request.start_period)
            .or_else(|| image_duration(from_image.start_period))
            .unwrap_or(Duration::ZERO),
        start_interval: nonzero(request.start_interval)
            .or_else(|| image_duration(from_image.start_interval))
            .unwrap_or(DEFAULT_START_INTERVAL),
        shell: image.shell.clone().unwrap_or_default(),
    })
}

/// Where a container's health stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No probe succeeded yet (and not enough failed).
    Starting,
    /// The last probe succeeded.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// The word Docker uses (`starting`, `healthy`, `unhealthy`): the
    /// status of `inspect` and of `health_status: …` events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// What `ps` shows in parentheses after `Up …` (moby `Health.String`).
    pub fn ps_text(self) -> &'static str {
        match self {
            Self::Starting => "health: starting",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe's outcome, as `State.Health.Log` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// When the probe started (RFC 3339).
    pub start: String,
    /// When it ended (RFC 3339).
    pub end: String,
    /// 0 healthy, anything else a failure; -1 when it timed out or could
    /// not run.
    pub exit_code: i32,
    /// Its stdout and stderr, at most [`MAX_OUTPUT_LEN`] bytes (then `...`).
    pub output: String,
}

/// `State.Health`: the status, the current run of failures, the last
/// results (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// The status.
    pub status: HealthStatus,
    /// Consecutive failures that counted.
    pub failing_streak: u32,
    /// The last [`MAX_LOG_ENTRIES`] results.
    #[serde(default)]
    pub log: Vec<HealthResult>,
}

impl Health {
    /// The state when a container (re)starts: `starting`, no failures, the
    /// log of an earlier run kept (moby `initHealthMonitor`).
    pub fn starting(previous: Option<Health>) -> Health {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: previous.map(|h| h.log).unwrap_or_default(),
        }
    }

    /// Takes one probe result that started `since_start` after the
    /// container did; returns the new status when it changed (moby
    /// `handleProbeResult`). A success makes it healthy; a failure counts
    /// unless the container is still starting within its start period, and
    /// `retries` counted failures in a row make it unhealthy.
    pub fn observe(
        &mut self,
        check: &HealthCheck,
        result: HealthResult,
        since_start: Duration,
    ) -> Option<HealthStatus> {
        let before = self.status;
        let success = result.exit_code == 0;
        self.log.push(result);
        if self.log.len() > MAX_LOG_ENTRIES {
            let excess = self.log.len() - MAX_LOG_ENTRIES;
            self.log.drain(..excess);
        }
        if success {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else {
            let grace = self.status == HealthStatus::Starting && since_start < check.start_period;
            if !grace {
                self.failing_streak = self.failing_streak.saturating_add(1);
                if self.failing_streak >= check.retries.max(1) {
                    self.status = HealthStatus::Unhealthy;
                }
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// How long to wait before the next probe (moby `monitor`'s
/// `getInterval`): the start interval while the container is starting and
/// within its start period, else the interval.
pub fn next_interval(check: &HealthCheck, status: HealthStatus, since_start: Duration) -> Duration {
    if since_start < check.start_period && status == HealthStatus::Starting {
        check.start_interval
    } else {
        check.interval
    }
}

/// A probe's output as Docker keeps it: the first [`MAX_OUTPUT_LEN`] bytes,
/// with `...` appended when there was more (moby `limitedBuffer`).
pub fn truncate_output(bytes: &[u8], truncated: bool) -> String {
    let cut = bytes.len() > MAX_OUTPUT_LEN;
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT_LEN)]).into_owned();
    if cut || truncated {
        text.push_str("...");
    }
    text
}

/// The health state kept in a container's bundle, if any.
pub fn read(bundle: &Path) -> Option<Health> {
    let bytes = std::fs::read(bundle.join(HEALTH_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the health state into a container's bundle atomically (temp file,
/// rename), without waiting for the disk: like the shim's state, it
/// describes a running container, which a host crash ends anyway.
pub fn write(bundle: &Path, health: &Health) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(health)?;
    bytes.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".health-")
        .tempfile_in(bundle)?;
    tmp.write_all(&bytes)?;
    tmp.persist(bundle.join(HEALTH_FILE)).map_err(|e| e.error)?;
    Ok(())
}

/// Durations as Docker's JSON has them: integer nanoseconds.
mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(u64::deserialize(d)?))
    }
}

/// [`nanos`] for optional fields.
mod opt_nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    // serde's `with` passes `&Option<_>`.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::nanos::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn image(health: Option<HealthConfig>) -> RunConfig {
        RunConfig {
            healthcheck: health,
            ..RunConfig::default()
        }
    }

    fn check(retries: u32, start_period: Duration) -> HealthCheck {
        HealthCheck {
            test: strings(&["CMD", "true"]),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries,
            start_period,
            start_interval: Duration::from_secs(5),
            shell: vec![],
        }
    }

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: "2026-01-01T00:00:00Z".into(),
            end: "2026-01-01T00:00:01Z".into(),
            exit_code: code,
            output: format!("exit {code}"),
        }
    }

    #[test]
    fn no_check_without_a_test_anywhere() {
        assert_eq!(effective(&HealthRequest::default(), &image(None)), None);
        let only_interval = HealthRequest {
            interval: Some(Duration::from_secs(1)),
            ..HealthRequest::default()
        };
        assert_eq!(effective(&only_interval, &image(None)), None);
    }

    #[test]
    fn the_image_check_applies_with_dockers_defaults() {
        let img = image(Some(HealthConfig {
            test: Some(strings(&["CMD-SHELL", "curl -f localhost"])),
            interval: Some(5_000_000_000),
            ..HealthConfig::default()
        }));
        let c = effective(&HealthRequest::default(), &img).unwrap();
        assert_eq!(c.test, strings(&["CMD-SHELL", "curl -f localhost"]));
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, 3);
        assert_eq!(c.start_period, Duration::ZERO);
        assert_eq!(c.start_interval, DEFAULT_START_INTERVAL);
        assert_eq!(c.argv(), strings(&["/bin/sh", "-c", "curl -f localhost"]));
    }

    #[test]
    fn request_fields_override_the_image_one_by_one() {
        let img = image(Some(HealthConfig {
            test: Some(strings(&["CMD", "/healthz"])),
            interval: Some(5_000_000_000),
            timeout: Some(2_000_000_000),
            retries: Some(7),
            start_period: Some(9_000_000_000),
            start_interval: Some(1_000_000_000),
        }));
        let req = HealthRequest {
            interval: Some(Duration::from_secs(1)),
            retries: Some(2),
            // Zero means "not set" in Docker: the image's value stays.
            timeout: Some(Duration::ZERO),
            ..HealthRequest::default()
        };
        let c = effective(&req, &img).unwrap();
        assert_eq!(c.test, strings(&["CMD", "/healthz"]));
        assert_eq!(c.argv(), strings(&["/healthz"]));
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retries, 2);
        assert_eq!(c.start_period, Duration::from_secs(9));
        assert_eq!(c.start_interval, Duration::from_secs(1));

        let req = HealthRequest {
            test: Some(strings(&["CMD-SHELL", "exit 0"])),
            ..HealthRequest::default()
        };
        let c = effective(&req, &img).unwrap();
        assert_eq!(c.test, strings(&["CMD-SHELL", "exit 0"]));
        assert_eq!(c.retries, 7);
    }

    #[test]
    fn none_disables_the_images_check() {
        let img = image(Some(HealthConfig {
            test: Some(strings(&["CMD", "/healthz"])),
            ..HealthConfig::default()
        }));
        let req = HealthRequest {
            test: Some(strings(&["NONE"])),
            ..HealthRequest::default()
        };
        assert_eq!(effective(&req, &img), None);
        let img_none = image(Some(HealthConfig {
            test: Some(strings(&["NONE"])),
            ..HealthConfig::default()
        }));
        assert_eq!(effective(&HealthRequest::default(), &img_none), None);
    }

    #[test]
    fn shell_tests_run_in_the_images_shell() {
        let mut img = image(None);
        img.shell = Some(strings(&["/bin/bash", "-ec"]));
        let req = HealthRequest {
            test: Some(strings(&["CMD-SHELL", "true"])),
            ..HealthRequest::default()
        };
        assert_eq!(
            effective(&req, &img).unwrap().argv(),
            strings(&["/bin/bash", "-ec", "true"])
        );
    }

    #[test]
    fn validation_follows_docker() {
        let short = HealthRequest {
            timeout: Some(Duration::from_micros(10)),
            ..HealthRequest::default()
        };
        assert_eq!(
            short.validate().unwrap_err().to_string(),
            "Timeout in Healthcheck cannot be less than 1ms"
        );
        let zero = HealthRequest {
            interval: Some(Duration::ZERO),
            ..HealthRequest::default()
        };
        assert!(zero.validate().is_ok());
        for bad in [&["CMD"][..], &["SHELL", "x"]] {
            let req = HealthRequest {
                test: Some(strings(bad)),
                ..HealthRequest::default()
            };
            assert!(req.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_and_checks_use_dockers_json_shape() {
        let req = HealthRequest {
            test: Some(strings(&["CMD-SHELL", "true"])),
            interval: Some(Duration::from_millis(1500)),
            ..HealthRequest::default()
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 1_500_000_000u64})
        );
        assert_eq!(serde_json::from_value::<HealthRequest>(json).unwrap(), req);
        let c = check(3, Duration::ZERO);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["Timeout"], 30_000_000_000u64);
        assert_eq!(serde_json::from_value::<HealthCheck>(json).unwrap(), c);
    }

    #[test]
    fn the_first_success_makes_it_healthy() {
        let c = check(3, Duration::ZERO);
        let mut h = Health::starting(None);
        assert_eq!(
            h.observe(&c, result(0), Duration::from_secs(30)),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.observe(&c, result(0), Duration::from_secs(60)), None);
        assert_eq!(h.failing_streak, 0);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let c = check(3, Duration::ZERO);
        let mut h = Health::starting(None);
        assert_eq!(
            h.observe(&c, result(0), Duration::from_secs(1)),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.observe(&c, result(1), Duration::from_secs(2)), None);
        assert_eq!(h.observe(&c, result(1), Duration::from_secs(3)), None);
        assert_eq!(h.status, HealthStatus::Healthy);
        assert_eq!(h.failing_streak, 2);
        assert_eq!(
            h.observe(&c, result(-1), Duration::from_secs(4)),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(h.failing_streak, 3);
        assert_eq!(h.observe(&c, result(1), Duration::from_secs(5)), None);
        assert_eq!(h.failing_streak, 4);
        // One success is enough to be healthy again.
        assert_eq!(
            h.observe(&c, result(0), Duration::from_secs(6)),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.failing_streak, 0);
    }

    #[test]
    fn a_starting_container_can_become_unhealthy_without_ever_passing() {
        let c = check(2, Duration::ZERO);
        let mut h = Health::starting(None);
        assert_eq!(h.observe(&c, result(1), Duration::from_secs(1)), None);
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(
            h.observe(&c, result(2), Duration::from_secs(2)),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_while_starting() {
        let c = check(1, Duration::from_secs(10));
        let mut h = Health::starting(None);
        for t in [1, 5, 9] {
            assert_eq!(h.observe(&c, result(1), Duration::from_secs(t)), None);
        }
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        assert_eq!(
            h.observe(&c, result(1), Duration::from_secs(10)),
            Some(HealthStatus::Unhealthy)
        );

        // Once healthy, failures count even inside the start period.
        let mut h = Health::starting(None);
        h.observe(&c, result(0), Duration::from_secs(1));
        assert_eq!(
            h.observe(&c, result(1), Duration::from_secs(2)),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn the_log_keeps_the_last_five_results() {
        let c = check(100, Duration::ZERO);
        let mut h = Health::starting(None);
        for code in 0..8 {
            h.observe(&c, result(code), Duration::from_secs(1));
        }
        let codes: Vec<i32> = h.log.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [3, 4, 5, 6, 7]);
        // A restart starts over but keeps the log, as Docker does.
        let again = Health::starting(Some(h));
        assert_eq!(
            (again.status, again.failing_streak),
            (HealthStatus::Starting, 0)
        );
        assert_eq!(again.log.len(), 5);
    }

    #[test]
    fn the_start_interval_applies_while_starting_in_the_start_period() {
        let c = check(3, Duration::from_secs(60));
        let s = Duration::from_secs;
        assert_eq!(next_interval(&c, HealthStatus::Starting, s(0)), s(5));
        assert_eq!(next_interval(&c, HealthStatus::Healthy, s(10)), s(30));
        assert_eq!(next_interval(&c, HealthStatus::Starting, s(60)), s(30));
        assert_eq!(
            next_interval(&check(3, Duration::ZERO), HealthStatus::Starting, s(0)),
            s(30)
        );
    }

    #[test]
    fn output_is_cut_at_four_kibibytes() {
        assert_eq!(truncate_output(b"ok\n", false), "ok\n");
        let long = vec![b'x'; MAX_OUTPUT_LEN + 10];
        let text = truncate_output(&long, false);
        assert_eq!(text.len(), MAX_OUTPUT_LEN + 3);
        assert!(text.ends_with("x..."));
        assert_eq!(truncate_output(b"ab", true), "ab...");
    }

    #[test]
    fn state_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let mut h = Health::starting(None);
        h.observe(&check(3, Duration::ZERO), result(0), Duration::ZERO);
        write(dir.path(), &h).unwrap();
        assert_eq!(read(dir.path()), Some(h.clone()));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(HEALTH_FILE)).unwrap()).unwrap();
        assert_eq!(json["Status"], "healthy");
        assert_eq!(json["FailingStreak"], 0);
        assert_eq!(json["Log"][0]["ExitCode"], 0);
        assert_eq!(json["Log"][0]["Output"], "exit 0");
        // Only the state file is left: the temp file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stack_file_health_blocks_become_requests() {
        use crate::spec::duration::DurationSpec;
        let spec = HealthSpec {
            command: HealthCommand::Exec(strings(&["pg_isready"])),
            interval: Some(DurationSpec(Duration::from_secs(10))),
            timeout: None,
            retries: Some(5),
            start_period: None,
            on_unhealthy: crate::spec::model::OnUnhealthy::None,
        };
        let req = HealthRequest::from_spec(&spec);
        assert_eq!(req.test, Some(strings(&["CMD", "pg_isready"])));
        assert_eq!(req.interval, Some(Duration::from_secs(10)));
        assert_eq!(req.retries, Some(5));
        let spec = HealthSpec {
            command: HealthCommand::Shell("true".into()),
            ..spec
        };
        assert_eq!(
            HealthRequest::from_spec(&spec).test,
            Some(strings(&["CMD-SHELL", "true"]))
        );
    }
}
