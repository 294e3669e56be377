//! Following a stack's containers as they come and go: the daemon's
//! container events of the stack, and each container's log followed again
//! when it starts again. The foreground `stack up` and `stack logs -f
//! SERVICE` share it, so a container recreated, scaled up or restarted
//! joins the stream in both.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::SystemTime;

use crate::api::client::{Client, segment};
use crate::daemon::events::Event;
use crate::reconcile::desired::{LABEL_REPLICA, LABEL_SERVICE, LABEL_STACK};
use crate::runtime::attach::{self, Kind};

/// A time as the API's `since` takes it: Unix seconds with nanoseconds.
pub fn api_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Splits `TIMESTAMP text` (a log line with `timestamps=1`): the time,
/// the timestamp as written, the text.
fn split_timestamp(line: &str) -> Option<(SystemTime, &str, &str)> {
    let (ts, text) = line.split_once(' ').unwrap_or((line, ""));
    let time = crate::runtime::logs::parse_time_filter(ts, SystemTime::now()).ok()?;
    Some((time, ts, text))
}

/// Follows the daemon's container events of stack `stack` from `since`
/// on, on a thread of its own: `send` gets each event, then the reason
/// when the stream ends; it returns false to stop following.
pub fn stack_events(
    client: Arc<Client>,
    stack: &str,
    since: SystemTime,
    send: impl Fn(Result<Event, String>) -> bool + Send + 'static,
) {
    let filters = serde_json::json!({
        "type": ["container"],
        "label": [format!("{LABEL_STACK}={stack}")],
    })
    .to_string();
    let since = api_time(since);
    std::thread::spawn(move || {
        let body = match client
            .get("/events")
            .query("since", since)
            .query("filters", filters)
            .stream()
        {
            Ok(body) => body,
            Err(e) => {
                send(Err(crate::error_chain(&e)));
                return;
            }
        };
        for line in std::io::BufReader::new(body).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    send(Err(e.to_string()));
                    return;
                }
            };
            if let Ok(event) = serde_json::from_str::<Event>(&line)
                && !send(Ok(event))
            {
                return;
            }
        }
        send(Err("the daemon closed the event stream".into()));
    });
}

/// Gets each log line of a followed container: its service, replica,
/// timestamp (RFC 3339, as the daemon wrote it) and text.
pub type LineFn = Arc<dyn Fn(&str, u32, &str, &str) + Send + Sync>;

/// Told the id of a container whose log stream ended (it stopped); false
/// ends its follower.
pub type EndedFn = Arc<dyn Fn(String) -> bool + Send + Sync>;

/// The containers whose logs are followed, each on a thread of its own
/// that waits, once its container stops, until it is told the container
/// started again.
pub struct Followers {
    client: Arc<Client>,
    line: LineFn,
    ended: EndedFn,
    restarted: BTreeMap<String, mpsc::Sender<()>>,
}

impl Followers {
    /// No container followed yet.
    pub fn new(client: Arc<Client>, line: LineFn, ended: EndedFn) -> Followers {
        Followers {
            client,
            line,
            ended,
            restarted: BTreeMap::new(),
        }
    }

    /// Follows container `id`'s log: its lines after `from` (the last
    /// `tail` of them, when given), then every line it writes, also after
    /// it starts again (call `follow` again when it does). True when it
    /// was not followed before.
    pub fn follow(
        &mut self,
        id: &str,
        service: &str,
        replica: u32,
        from: SystemTime,
        tail: Option<String>,
    ) -> bool {
        if let Some(restarted) = self.restarted.get(id) {
            let _ = restarted.send(());
            return false;
        }
        let (restarted, wake) = mpsc::channel();
        self.restarted.insert(id.to_string(), restarted);
        let client = self.client.clone();
        let line = self.line.clone();
        let ended = self.ended.clone();
        let id = id.to_string();
        let service = service.to_string();
        std::thread::spawn(move || {
            let mut last = from;
            let mut tail = tail;
            loop {
                stream_log(&client, &id, &mut last, tail.take(), |ts, text| {
                    line(&service, replica, ts, text);
                });
                if !ended(id.clone()) {
                    return;
                }
                // Until the container starts again, or the followers go.
                if wake.recv().is_err() {
                    return;
                }
                while wake.try_recv().is_ok() {}
            }
        });
        true
    }

    /// Stops waiting for restarts: each follower ends with its stream.
    pub fn clear(&mut self) {
        self.restarted.clear();
    }
}

/// Streams container `id`'s log from `last` on until its run ends,
/// calling `line` with the timestamp and text of each line after `last`;
/// `last` moves on.
fn stream_log(
    client: &Client,
    id: &str,
    last: &mut SystemTime,
    tail: Option<String>,
    mut line: impl FnMut(&str, &str),
) {
    let body = match client
        .get(&format!("/containers/{}/logs", segment(id)))
        .query("follow", "1")
        .query("timestamps", "1")
        .query("since", api_time(*last))
        .query_opt("tail", tail.as_deref())
        .stream()
    {
        Ok(body) => body,
        Err(_) => return,
    };
    let mut reader = std::io::BufReader::new(body);
    let mut pending: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut emit = |bytes: &[u8], last: &mut SystemTime| {
        let text = String::from_utf8_lossy(bytes);
        if let Some((time, ts, text)) = split_timestamp(&text) {
            if time <= *last {
                return;
            }
            *last = time;
            line(ts, text);
        }
    };
    loop {
        let (kind, data) = match attach::read_frame(&mut reader) {
            Ok(Some((kind @ (Kind::Stdout | Kind::Stderr), data))) => (kind, data),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        let buf = pending.entry(kind as u8).or_default();
        buf.extend_from_slice(&data);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(i + 1);
            let mut done = std::mem::replace(buf, rest);
            done.pop();
            emit(&done, last);
        }
    }
    for (_, buf) in pending {
        if !buf.is_empty() {
            emit(&buf, last);
        }
    }
}

/// What `stack logs -f SERVICE` follows.
#[derive(Debug, Clone)]
pub struct ServiceLogs {
    /// The stack.
    pub stack: String,
    /// The service.
    pub service: String,
    /// Only this replica (`--index`).
    pub index: Option<u32>,
    /// Containers that start from then on join.
    pub events_since: SystemTime,
    /// The lines of the containers there already: after this time …
    pub from: SystemTime,
    /// … and the last `tail` of them.
    pub tail: Option<String>,
    /// Each line after its timestamp (`-t`).
    pub timestamps: bool,
}

/// `stack logs -f SERVICE`: the logs of the service's containers
/// `members`, each line after `web-1 | ` when there are several, and of
/// every container of the service that starts later (recreated, scaled
/// up), and of a restarted one again; until interrupted or the daemon
/// goes.
pub fn follow_service(
    client: &Arc<Client>,
    what: &ServiceLogs,
    members: &[super::services::Member],
) -> miette::Result<i32> {
    let (tx, rx) = mpsc::channel();
    stack_events(client.clone(), &what.stack, what.events_since, move |e| {
        tx.send(e).is_ok()
    });
    let prefixed = members.len() > 1 || what.index.is_none();
    let width = members
        .iter()
        .map(|m| m.short_name().len())
        .max()
        .unwrap_or(0);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let timestamps = what.timestamps;
    let line: LineFn = Arc::new(move |service, replica, ts, text| {
        let mut text = if timestamps {
            format!("{ts} {text}")
        } else {
            text.to_string()
        };
        if prefixed {
            let name = format!("{service}-{replica}");
            text = format!("{name:<width$} | {text}");
        }
        let out = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = out.lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    });
    let mut followers = Followers::new(client.clone(), line, Arc::new(|_| true));
    for m in members {
        followers.follow(&m.id, &m.service, m.replica, what.from, what.tail.clone());
    }
    for event in rx {
        let event = event.map_err(|why| miette::miette!("lost the daemon's events: {why}"))?;
        if event.action != "start" {
            continue;
        }
        let attrs = &event.actor.attributes;
        let (Some(service), Some(replica)) = (attrs.get(LABEL_SERVICE), attrs.get(LABEL_REPLICA))
        else {
            continue;
        };
        let replica: u32 = replica.parse().unwrap_or(0);
        if *service != what.service || what.index.is_some_and(|i| i != replica) {
            continue;
        }
        followers.follow(
            &event.actor.id,
            service,
            replica,
            SystemTime::UNIX_EPOCH,
            None,
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_their_timestamp() {
        let (t, ts, text) = split_timestamp("2026-11-29T13:00:00.5Z hello world").unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(ts, "2026-11-29T13:00:00.5Z");
        assert_eq!(api_time(t), "1795957200.500000000");
        assert!(split_timestamp("no timestamp").is_none());
    }
}
