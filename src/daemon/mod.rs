//! `stack daemon`: the long-running supervisor. It owns the state root,
//! serves the REST API on a unix socket (and, with TLS, on TCP), keeps
//! containers as their restart policies say and runs their health checks.
//!
//! This is the one place that builds real implementations and may import
//! every other module. [`health`] runs health check monitors, [`config`]
//! reads `daemon.toml`.

pub mod config;
pub mod health;
