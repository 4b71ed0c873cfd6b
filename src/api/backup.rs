//! Online backup: the whole store at one revision, streamed as JSON lines
//! (`crate::backup` says the format) while writes go on; `kv-store
//! restore` builds a data dir from it.

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiResponse, OpenApi};

use super::auth::TokenAuth;
use super::problem::ErrorDoc;
use super::problem::{
    ApiError, ErrorStatus, ErrorStatuses, FORBIDDEN, Problem, TOO_MANY_REQUESTS, UNAUTHORIZED,
    UNAVAILABLE,
};
use super::{ApiTags, Context};
use crate::backend::Backend;
use crate::backup::Writer;
use crate::domain::{BackupError, Entry, StorageError};

/// Keys per chunk of the answer.
const CHUNK: usize = 256;

pub const NOT_IMPLEMENTED: ErrorDoc = ErrorDoc {
    status: 501,
    description: "This backend keeps no copy to back up: with `--backend etcd` use `etcdctl snapshot save`.",
    example: (
        "backup-unsupported",
        "Backup unsupported",
        "the etcd backend keeps no copy of the store to back up: use `etcdctl snapshot save`",
    ),
};

pub struct BackupErrors;
impl ErrorStatuses for BackupErrors {
    const STATUSES: &'static [ErrorDoc] = &[
        UNAUTHORIZED,
        FORBIDDEN,
        TOO_MANY_REQUESTS,
        NOT_IMPLEMENTED,
        UNAVAILABLE,
    ];
}

/// A backup's lines, streamed: documented as one string of JSON lines.
pub struct JsonLines(BoxStream<'static, std::io::Result<Bytes>>);

impl Payload for JsonLines {
    const CONTENT_TYPE: &'static str = "application/x-ndjson";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn register(_: &mut Registry) {}
}

impl IntoResponse for JsonLines {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(Body::from_bytes_stream(self.0))
    }
}

#[derive(ApiResponse)]
pub enum BackupResponse {
    /// The backup: its first line names the revision, its last carries the
    /// checksum of all before it. A stream cut short (the history ran out
    /// under the read, or the server stopped) lacks that last line, and a
    /// restore refuses it.
    #[oai(status = 200)]
    Ok(
        JsonLines,
        /// The store revision the backup shows.
        #[oai(header = "Kv-Revision")]
        u64,
    ),
}

/// The lines of the keys, then the last line; an error cuts the stream
/// (and nothing follows it), so the file it leaves has no last line.
fn lines(
    writer: Writer,
    entries: impl Stream<Item = Result<Entry, StorageError>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    // A chunk is read from memory at once, and a client on the same
    // machine takes it as fast: without a yield between chunks the backup
    // would hold its worker thread for the whole store (a 1M-key backup
    // put 0.35 s of stall into other requests' p99).
    let chunks = entries
        .ready_chunks(CHUNK)
        .then(|chunk| async {
            tokio::task::yield_now().await;
            chunk
        })
        .map(Some)
        .chain(stream::once(async { None }));
    chunks.scan(Some(writer), |writer, chunk| {
        let out = match (writer.as_mut(), chunk) {
            (None, _) => None,
            (Some(lines), Some(entries)) => {
                let mut bytes = Vec::new();
                let mut failed = None;
                for entry in entries {
                    match entry {
                        Ok(entry) => bytes.extend(lines.key(&entry)),
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                Some(match failed {
                    None => Ok(Bytes::from(bytes)),
                    Some(err) => {
                        *writer = None;
                        Err(std::io::Error::other(err.to_string()))
                    }
                })
            }
            (Some(_), None) => writer.take().map(|lines| Ok(Bytes::from(lines.end()))),
        };
        std::future::ready(out)
    })
}

pub struct BackupApi<B>(pub Context<B>);

#[OpenApi(tag = "ApiTags::Service")]
impl<B: Backend> BackupApi<B> {
    /// Back up the store
    ///
    /// The whole store at one revision, leases included, as JSON lines,
    /// while writes go on: read from the index a chunk at a time (the
    /// server holds no copy), the keys written meanwhile shown as they were
    /// from the watch history. Save it to a file; `kv-store restore --from
    /// FILE --data-dir DIR` checks it and builds a data dir from it. Admin
    /// tokens only. With `--backend etcd`, 501: use `etcdctl snapshot save`.
    #[oai(path = "/backup", method = "get", operation_id = "backup")]
    async fn backup(&self, auth: TokenAuth) -> Result<BackupResponse, ApiError<BackupErrors>> {
        auth.caller().may_administer()?;
        let backup = self.0.store.backup().await.map_err(|err| match err {
            BackupError::Unsupported(what) => Problem::new(
                ErrorStatus::NOT_IMPLEMENTED,
                "backup-unsupported",
                "Backup unsupported",
                what,
            ),
            BackupError::Storage(err) => Problem::not_stored(&err),
        })?;
        let mut writer = Writer::default();
        let mut head = writer.header(backup.revision, backup.leases.len());
        for lease in &backup.leases {
            head.extend(writer.lease(lease));
        }
        let body = stream::once(async move { Ok(Bytes::from(head)) })
            .chain(lines(writer, backup.entries))
            .take_until(self.0.shutdown.clone().cancelled_owned());
        Ok(BackupResponse::Ok(JsonLines(body.boxed()), backup.revision))
    }
}
