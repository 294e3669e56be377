//! Networking: name resolution for containers ([`dns`]). Never touches the
//! stack file or containers' records; the daemon feeds it resolved values.

pub mod dns;
