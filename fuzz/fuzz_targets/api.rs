//! Fuzzes what the daemon reads from API requests before any container
//! work: request bodies for create, exec and update, the archive stat
//! header, endpoints, signal names and time filters. Any input must give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stack::api::Endpoint;
use stack::api::server::decode;
use stack::api::verbs::{UpdateBody, decode_path_stat};
use stack::reconcile::container::RunRequest;
use stack::runtime::exec::ExecConfig;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = decode::<RunRequest>(data) {
        assert!(message.starts_with("invalid request body"));
    }
    let _ = decode::<ExecConfig>(data);
    if let Ok(update) = decode::<UpdateBody>(data) {
        let _ = update.to_request();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Endpoint::parse(text);
        let _ = decode_path_stat(text);
        let _ = stack::runtime::signal_number(text);
        let _ = stack::runtime::logs::parse_time_filter(text, std::time::SystemTime::UNIX_EPOCH);
    }
});
