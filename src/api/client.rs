//! The command line's side of the API: a blocking client. Each call opens a
//! connection (a unix socket connect costs microseconds; a TLS connection
//! pays its handshake), sends one request and hands back the answer as JSON,
//! bytes, a reader over a streamed body, or — for attach, start with attach
//! and exec — the upgraded connection itself.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Endpoint, ErrorBody, PREFIX};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the endpoint.
    #[error("cannot connect to the stack daemon at {endpoint}: {source}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The exchange broke off.
    #[error("the connection to the daemon failed: {0}")]
    Http(String),
    /// The answer could not be read.
    #[error("the daemon sent an answer this client cannot read: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether no daemon answered at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

type Body = BoxBody<Bytes, io::Error>;

/// A connection to the daemon's API.
pub struct Client {
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Client {
    /// A client of the daemon at `endpoint`; TCP endpoints need `tls`.
    pub fn new(
        endpoint: Endpoint,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client, ClientError> {
        // One worker thread drives connections in the background, so an
        // upgraded TLS connection can be relayed while the caller blocks.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| ClientError::Http(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Client { endpoint, tls, rt })
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A call with `method` on `path` (below the version prefix).
    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            client: self,
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Call<'_> {
        self.call(Method::DELETE, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> Call<'_> {
        self.call(Method::PUT, path)
    }

    /// `HEAD path`.
    pub fn head(&self, path: &str) -> Call<'_> {
        self.call(Method::HEAD, path)
    }

    /// Whether the daemon answers `/_ping`.
    pub fn ping(&self) -> Result<(), ClientError> {
        self.get("/_ping").bytes().map(|_| ())
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Body>, ClientError> {
        let connect_err = |source| ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let handshake_err = |e: hyper::Error| ClientError::Http(e.to_string());
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_err)?;
                tokio::spawn(conn.with_upgrades());
                Ok(send)
            }
            Endpoint::Tcp(addr) => {
                let config = self.tls.clone().ok_or_else(|| {
                    connect_err(io::Error::other(
                        "a TCP endpoint needs TLS (--tls or --tlsverify)",
                    ))
                })?;
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(connect_err)?;
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| connect_err(io::Error::other(e)))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(connect_err)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(handshake_err)?;
                tokio::spawn(conn.with_upgrades());
                Ok(send)
            }
        }
    }
}

/// One request being put together.
#[allow(missing_debug_implementations)]
pub struct Call<'a> {
    client: &'a Client,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Option<Body>,
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes one path segment (a container name or id).
pub fn segment(s: &str) -> String {
    encode(s)
}

impl Call<'_> {
    /// Adds `key=value` to the query.
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `key=value` when there is a value.
    pub fn query_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }

    /// Adds `key=1` when `on`.
    pub fn flag(self, key: &str, on: bool) -> Self {
        if on { self.query(key, "1") } else { self }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Sends `value` as the JSON body.
    pub fn json(mut self, value: &impl Serialize) -> Self {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.body = Some(
            Full::new(Bytes::from(bytes))
                .map_err(|e| match e {})
                .boxed(),
        );
        self.headers
            .push(("content-type", "application/json".into()));
        self
    }

    /// Streams `reader` as the body (a tar archive, say).
    pub fn upload(mut self, mut reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if tx.blocking_send(Ok(Frame::data(chunk))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        self.body = Some(StreamBody::new(stream).boxed());
        self.headers
            .push(("content-type", "application/x-tar".into()));
        self
    }

    fn uri(&self) -> String {
        let mut uri = format!("{PREFIX}{}", self.path);
        for (i, (k, v)) in self.query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&encode(k));
            uri.push('=');
            uri.push_str(&encode(v));
        }
        uri
    }

    fn request(&mut self, upgrade: bool) -> Result<Request<Body>, ClientError> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.uri())
            .header("host", "stack");
        for (k, v) in &self.headers {
            builder = builder.header(*k, v);
        }
        if upgrade {
            builder = builder
                .header("connection", "Upgrade")
                .header("upgrade", "tcp");
        }
        let body = self
            .body
            .take()
            .unwrap_or_else(|| Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
        builder
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    async fn exchange(mut self, upgrade: bool) -> Result<Response<Incoming>, ClientError> {
        let request = self.request(upgrade)?;
        let mut send = self.client.connect().await?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| {
                    let text = String::from_utf8_lossy(&body).trim().to_string();
                    if text.is_empty() {
                        status.to_string()
                    } else {
                        text
                    }
                });
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(response)
    }

    /// Sends the request; the whole answer body.
    pub fn bytes(self) -> Result<Bytes, ClientError> {
        let rt = &self.client.rt;
        rt.block_on(async move {
            let response = self.exchange(false).await?;
            response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| ClientError::Http(e.to_string()))
        })
    }

    /// Sends the request; the answer decoded from JSON.
    pub fn send_json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = self.bytes()?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends the request and checks it succeeded.
    pub fn ok(self) -> Result<(), ClientError> {
        self.bytes().map(|_| ())
    }

    /// Sends the request; the answer's headers, its body left unread (for
    /// `HEAD`, which has none).
    pub fn headers(self) -> Result<HeaderMap, ClientError> {
        let rt = &self.client.rt;
        rt.block_on(async move { Ok(self.exchange(false).await?.headers().clone()) })
    }

    /// Sends the request; a reader over the answer body as it streams in.
    pub fn stream(self) -> Result<BodyReader, ClientError> {
        let handle = self.client.rt.handle().clone();
        let response = self.client.rt.block_on(self.exchange(false))?;
        let (parts, body) = response.into_parts();
        Ok(BodyReader {
            handle,
            headers: parts.headers,
            body,
            buf: Bytes::new(),
        })
    }

    /// Sends the request asking to upgrade the connection; the raw
    /// connection once the daemon agreed (bytes it already sent are not
    /// lost: the stream is a local socket the client reads from).
    pub fn upgrade(self) -> Result<UnixStream, ClientError> {
        let rt = &self.client.rt;
        rt.block_on(async move {
            let response = self.exchange(true).await?;
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                return Err(ClientError::Http(format!(
                    "the daemon did not switch protocols (status {})",
                    response.status()
                )));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| ClientError::Http(e.to_string()))?;
            match upgraded.downcast::<TokioIo<tokio::net::UnixStream>>() {
                Ok(parts) if parts.read_buf.is_empty() => {
                    // The daemon's own socket: hand it over, no relay needed.
                    drop((ours, theirs));
                    let std = parts
                        .io
                        .into_inner()
                        .into_std()
                        .map_err(|e| ClientError::Http(e.to_string()))?;
                    std.set_nonblocking(false)
                        .map_err(|e| ClientError::Http(e.to_string()))?;
                    Ok(std)
                }
                Ok(parts) => {
                    let pre = parts.read_buf;
                    relay_in_background(parts.io.into_inner(), pre, theirs)?;
                    Ok(ours)
                }
                Err(upgraded) => {
                    relay_in_background(TokioIo::new(upgraded), Bytes::new(), theirs)?;
                    Ok(ours)
                }
            }
        })
    }
}

/// Copies between an upgraded connection (after `pre`, bytes already read
/// from it) and one end of a local socket pair, in the runtime's worker.
fn relay_in_background<T>(remote: T, pre: Bytes, local: UnixStream) -> Result<(), ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    local
        .set_nonblocking(true)
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let mut local =
        tokio::net::UnixStream::from_std(local).map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut remote = remote;
        if local.write_all(&pre).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut remote, &mut local).await;
        }
    });
    Ok(())
}

/// A blocking reader over a streamed answer body.
pub struct BodyReader {
    handle: tokio::runtime::Handle,
    headers: HeaderMap,
    body: Incoming,
    buf: Bytes,
}

impl BodyReader {
    /// A header of the answer, when it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader").finish_non_exhaustive()
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.handle.block_on(self.body.frame()) {
                None => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf = data;
                    }
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}
