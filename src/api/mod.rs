//! The daemon's REST API: JSON over HTTP/1.1 on a unix socket, or on TCP
//! with TLS ([`tls`]), shaped after Docker's Engine API.

pub mod tls;
