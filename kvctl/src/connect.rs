//! The endpoints a request may go to, and failover between them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use kv_store_client::{ByteStream, Client, Error};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::cli::Connection;
use crate::failure::{Failure, chain};

/// How long a request may take.
#[derive(Clone, Copy)]
pub enum Patience {
    /// At most `--timeout`.
    Bounded,
    /// As long as the server takes: a wait in a lock's line.
    Unbounded,
    /// A stream (a watch, a snapshot): as long as it goes on, but given up
    /// once nothing at all has arrived for `STREAM_SILENCE`, longer than a
    /// watch goes without a heartbeat.
    Streaming,
}

/// How long a stream may be silent before kvctl takes its connection for
/// dead (a watch's heartbeat comes every 15 to 30 s by default).
pub const STREAM_SILENCE: Duration = Duration::from_secs(75);

pub struct Endpoints {
    urls: Vec<String>,
    bounded: Vec<Client>,
    unbounded: Vec<Client>,
    streaming: Vec<Client>,
    /// The endpoint that answered last, tried first next time.
    current: AtomicUsize,
}

impl Endpoints {
    pub fn new(connection: &Connection) -> Result<Self, Failure> {
        if connection.endpoints.is_empty() {
            return Err(Failure::Usage("--endpoints names no server".to_owned()));
        }
        let bounded = connection
            .endpoints
            .iter()
            .map(|url| client(connection, url, Patience::Bounded))
            .collect::<Result<_, _>>()?;
        let unbounded = connection
            .endpoints
            .iter()
            .map(|url| client(connection, url, Patience::Unbounded))
            .collect::<Result<_, _>>()?;
        let streaming = connection
            .endpoints
            .iter()
            .map(|url| client(connection, url, Patience::Streaming))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            urls: connection.endpoints.clone(),
            bounded,
            unbounded,
            streaming,
            current: AtomicUsize::new(0),
        })
    }

    /// Sends a request to the endpoint that answered last, then to each of
    /// the others in turn while none can be connected to. Only a failure
    /// to connect moves on: a request that reached a server may have been
    /// applied, and is not sent again.
    pub async fn call<T>(
        &self,
        patience: Patience,
        request: impl AsyncFn(&Client) -> Result<T, Error<ByteStream>>,
    ) -> Result<T, Failure> {
        let clients = match patience {
            Patience::Bounded => &self.bounded,
            Patience::Unbounded => &self.unbounded,
            Patience::Streaming => &self.streaming,
        };
        let first = self.current.load(Ordering::Relaxed);
        let mut why = Vec::new();
        for step in 0..clients.len() {
            let at = (first + step) % clients.len();
            match request(&clients[at]).await {
                Ok(answer) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Error::CommunicationError(error)) if error.is_connect() => {
                    why.push(format!("{}: {}", self.urls[at], chain(&error)));
                }
                Err(error) => return Err(Failure::from_client(error).await),
            }
        }
        Err(Failure::Unreachable(why.join("; ")))
    }
}

fn client(connection: &Connection, url: &str, patience: Patience) -> Result<Client, Failure> {
    let mut headers = HeaderMap::new();
    if let Some(token) = &connection.token {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Failure::Usage("--token holds a character a header cannot".to_owned()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(connection.timeout);
    builder = match patience {
        Patience::Bounded => builder.timeout(connection.timeout),
        Patience::Unbounded => builder,
        Patience::Streaming => builder.read_timeout(STREAM_SILENCE),
    };
    if let Some(path) = &connection.cacert {
        let pem = read(path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| Failure::Usage(format!("--cacert {}: {error}", path.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&connection.cert, &connection.key) {
        let mut pem = read(cert)?;
        pem.extend_from_slice(b"\n");
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|error| Failure::Usage(format!("--cert/--key: {error}")))?;
        builder = builder.identity(identity);
    }
    let http = builder
        .build()
        .map_err(|error| Failure::Local(format!("cannot set up HTTP: {}", chain(&error))))?;
    Ok(Client::new_with_client(url.trim_end_matches('/'), http))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| Failure::Usage(format!("{}: {error}", path.display())))
}

/// A whole body.
pub async fn read_all(stream: ByteStream) -> Result<Vec<u8>, Failure> {
    stream
        .into_inner()
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .map_err(|error| Failure::Local(format!("reading the answer: {}", chain(&error))))
}

/// The revision in an `ETag` header (`"15"`).
pub fn etag_revision(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::ETAG)?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}
