//! Watch streams as Server-Sent Events: each event encoded once, shared by
//! every watcher, and charged to each until it has left for the socket.

use std::io::Write;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::Serialize;

use crate::domain::{Event, EventKind};
use crate::watch::{Delivery, SharedFrame, WatchItem};

/// The `data` of an event, borrowed from the event for serialising.
#[derive(Serialize)]
struct Data<'a> {
    key: &'a str,
    value: Option<&'a str>,
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
}

/// One SSE frame: `id`, `event` and one `data` line of JSON.
///
/// A snapshot event has no `id`: a client that loses the stream halfway
/// through a snapshot must not resume as if it had it all. The `sync`
/// frame that ends the snapshot carries the id to resume from.
fn encode(event: &Event) -> Bytes {
    let mut frame = Vec::with_capacity(event.cost() + 64);
    let data = Data {
        key: event.key(),
        value: event.value(),
        revision: event.revision(),
        create_revision: event.meta().map(|meta| meta.create_revision),
        version: event.meta().map(|meta| meta.version),
        lease: event
            .meta()
            .and_then(|meta| meta.lease)
            .map(|lease| lease.to_string()),
    };
    // Writing to a Vec cannot fail, and the data has only strings and
    // integers, which serialise.
    if event.kind != EventKind::Snapshot {
        let _ = writeln!(frame, "id: {}", event.position());
    }
    let _ = write!(frame, "event: {}\ndata: ", event.kind.as_str());
    let _ = serde_json::to_writer(&mut frame, &data);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// A frame on its way to the socket, holding its watcher's charge and the
/// shared frame's place in the watchers' total until hyper drops it.
struct Charged {
    bytes: Bytes,
    _shared: Arc<SharedFrame>,
    _charge: crate::watch::Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The frame that ends a snapshot: everything the store held at
/// `revision` has been sent, and the stream resumes from there.
fn synced(revision: u64) -> Bytes {
    Bytes::from(format!(
        "id: {revision}\nevent: sync\ndata: {{\"revision\":{revision}}}\n\n"
    ))
}

/// The bytes to send for an item: for an event, the shared encoding with
/// the watcher's charge riding along. A watcher the store dropped is an
/// error, so the server cuts its stream instead of ending it: the client
/// must resume, not take the stream for finished.
fn frame(item: WatchItem) -> std::io::Result<Bytes> {
    let delivery = match item {
        WatchItem::Event(delivery) => delivery,
        WatchItem::Synced(revision) => return Ok(synced(revision)),
        WatchItem::Idle => return Ok(Bytes::from_static(b":\n\n")),
        WatchItem::Dropped => {
            return Err(std::io::Error::other("the store dropped the watcher"));
        }
    };
    let Delivery {
        event,
        frame,
        charge,
    } = delivery;
    let bytes = frame.get_or_encode(|| encode(&event));
    Ok(Bytes::from_owner(Charged {
        bytes,
        _shared: frame,
        _charge: charge,
    }))
}

/// A `text/event-stream` response of pre-encoded frames, documented like
/// poem-openapi's `EventStream<T>` (an array of `T`).
///
/// Why not `EventStream`: it formats every event into a new `String` per
/// watcher and copies it again through an `AsyncRead` adapter, so ten
/// thousand watchers of a 1 MiB value held ten thousand copies of it.
pub struct SseFrames<T> {
    frames: BoxStream<'static, std::io::Result<Bytes>>,
    item: PhantomData<fn() -> T>,
}

impl<T> SseFrames<T> {
    /// The watch items as frames; [`WatchItem::Idle`] (the store's
    /// heartbeat) as a comment.
    pub fn new(deliveries: impl Stream<Item = WatchItem> + Send + 'static) -> Self {
        Self::of_frames(deliveries.map(frame))
    }

    /// Frames encoded elsewhere; an error cuts the stream.
    pub fn of_frames(frames: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Self {
        Self {
            frames: frames.boxed(),
            item: PhantomData,
        }
    }
}

impl<T: Type> Payload for SseFrames<T> {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(T::schema_ref())),
            ..MetaSchema::new_with_format("array", "event-stream")
        }))
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for SseFrames<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type("text/event-stream")
            .header("X-Accel-Buffering", "no")
            .header("Cache-Control", "no-cache")
            .body(Body::from_bytes_stream(self.frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Entry, LeaseId, Meta};

    #[test]
    fn a_frame_is_id_event_and_one_data_line() {
        let meta = Meta {
            create_revision: 4,
            mod_revision: 7,
            version: 2,
            lease: LeaseId::new(0x2a),
        };
        let entry = Entry::new("k", "line\nbreak \"q\"".as_bytes(), meta, None);
        let frame = encode(&Event::live(7, EventKind::Put, entry));
        assert_eq!(
            &frame[..],
            b"id: 7\nevent: put\ndata: {\"key\":\"k\",\"value\":\"line\\nbreak \\\"q\\\"\",\"revision\":7,\"create_revision\":4,\"version\":2,\"lease\":\"000000000000002a\"}\n\n"
        );
        let mut gone = Event::gone(9, EventKind::Delete, "k".into());
        gone.part = Some(2);
        assert_eq!(
            &encode(&gone)[..],
            b"id: 9.2\nevent: delete\ndata: {\"key\":\"k\",\"value\":null,\"revision\":9}\n\n"
        );
    }

    #[test]
    fn a_snapshot_has_no_id_and_the_sync_frame_carries_it() {
        let entry = Entry::new("k", b"v", Meta::created(3), None);
        let snapshot = encode(&Event::live(9, EventKind::Snapshot, entry));
        assert_eq!(
            &snapshot[..],
            b"event: snapshot\ndata: {\"key\":\"k\",\"value\":\"v\",\"revision\":3,\"create_revision\":3,\"version\":1}\n\n"
        );
        assert_eq!(
            &synced(9)[..],
            b"id: 9\nevent: sync\ndata: {\"revision\":9}\n\n"
        );
    }
}
