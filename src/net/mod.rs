//! Container networking: what lives in the host's network stack for
//! containers. It may use `sys` and nothing else of the crate; `reconcile`
//! turns user requests into the plain values these modules take, and the
//! daemon feeds name resolution ([`dns`]) resolved values.

pub mod dns;
pub mod firewall;
