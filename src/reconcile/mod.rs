//! Turning what is asked for into what runs: today single containers
//! ([`containers`]), built from requests by [`container`]; the stack loop
//! (desired state, plan, executor) joins them here.

pub mod archive;
pub mod container;
pub mod containers;
pub mod desired;
pub mod health;
pub mod link;
pub mod plan;
pub mod ports;
pub mod verbs;
