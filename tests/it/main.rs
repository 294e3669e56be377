//! Integration tests: one binary for every test under `tests/it/`.

// Every file here is a test module; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]
// Test helpers may panic on what the test itself set up.
#![allow(clippy::unwrap_used)]

mod cgroup;
mod cli_grammar;
mod compose;
mod images;
mod interpolate;
mod layer;
mod logs;
mod registry;
mod robustness;
mod runtime;
mod seccomp;
mod spec;
