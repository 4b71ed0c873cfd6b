//! Watch streams: snapshots, live events, resume, history limits, expiry
//! events, slow clients and shutdown.

use std::collections::BTreeSet;

use crate::common::{
    Sse, SseEvent, TestServer, etcd, on_test_clock, problem, revision, watch_key, watch_keys,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

#[tokio::test]
async fn a_watch_sends_a_snapshot_then_every_change() {
    let server = TestServer::start(&[]).await;
    server.put("other", "x").await;
    let mut watch = watch_key(&server, "k", None).await;

    let (snapshot, synced) = watch.snapshot().await;
    assert_eq!(
        synced,
        server.base + 1,
        "the store revision when the watch opened"
    );
    assert_eq!(
        snapshot[0].data,
        json!({"key": "k", "value": null, "revision": null})
    );
    assert_eq!(server.status().await["watch_requests_count"], 1);

    let put = revision(&server.put("k", "v1").await);
    let cas = server
        .post_json("/store/cas/k", &json!({"expected": "v1", "new": "v2"}))
        .await;
    let cas = revision(&cas);
    server.put("other", "y").await;
    server.delete("k").await;

    let events = watch.take(3).await;
    assert_eq!(events[0].event, "put");
    assert_eq!(events[0].id, Some(put));
    assert_eq!(
        events[0].data,
        json!({"key": "k", "value": "v1", "revision": put, "create_revision": put, "version": 1})
    );
    assert_eq!(events[1].event, "put", "a CAS success is a put");
    assert_eq!(events[1].value(), Some("v2"));
    assert_eq!(
        (
            &events[1].data["create_revision"],
            &events[1].data["version"]
        ),
        (&json!(put), &json!(2)),
        "a rewrite keeps the create revision and counts a version"
    );
    assert_eq!(events[1].id, Some(cas));
    assert_eq!(events[2].event, "delete");
    assert_eq!(events[2].id, Some(cas + 2));
    assert_eq!(
        events[2].data,
        json!({"key": "k", "value": null, "revision": cas + 2})
    );

    // A snapshot of an existing key carries its value and revision.
    server.put("k", "v3").await;
    let mut second = watch_key(&server, "k", None).await;
    let (snapshot, synced) = second.snapshot().await;
    assert_eq!(snapshot[0].value(), Some("v3"));
    assert_eq!(snapshot[0].data["revision"], synced);
}

/// A watch opened after a write was acknowledged shows that write: on etcd
/// the node's own watch may not have seen it yet, so this repeats the race.
#[tokio::test]
async fn a_watch_opened_after_a_write_sees_it_in_its_snapshot() {
    let server = TestServer::start(&[]).await;
    for round in 0..40 {
        let value = round.to_string();
        let written = revision(&server.put("k", &value).await);
        let mut key = watch_key(&server, "k", None).await;
        let (snapshot, synced) = key.snapshot().await;
        assert_eq!(snapshot[0].value(), Some(value.as_str()), "round {round}");
        assert_eq!(synced, written, "round {round}");

        let watch = server
            .request(Method::GET, "/watch")
            .query(&[("prefix", "k")]);
        let mut prefix = Sse::new(watch.send().await.expect("watch"));
        let (snapshot, synced) = prefix.snapshot().await;
        assert_eq!(snapshot.len(), 1, "round {round}");
        assert_eq!(snapshot[0].value(), Some(value.as_str()), "round {round}");
        assert_eq!(synced, written, "round {round}");

        // The live stream starts right after the snapshot: the next write
        // is the next event, not one the snapshot already held.
        let next = revision(&server.put("k", "next").await);
        let event = key.next().await.expect("the next write");
        assert_eq!(event.id, Some(next), "round {round}");
        let event = prefix.next().await.expect("the next write");
        assert_eq!(event.id, Some(next), "round {round}");
    }
}

#[tokio::test]
async fn a_multi_key_watch_under_concurrent_writers_sees_every_event_in_order() {
    let server = TestServer::start(&[]).await;
    let keys: Vec<String> = (0..4).map(|i| format!("w{i}")).collect();
    let mut watch = watch_keys(&server, &json!(keys)).await;
    let (snapshots, _) = watch.snapshot().await;
    assert_eq!(snapshots.len(), keys.len());

    const WRITES: usize = 50;
    let mut writers = Vec::new();
    // Writers on watched keys, and on keys nobody watches.
    for i in 0..8 {
        let key = if i < 4 {
            format!("w{i}")
        } else {
            format!("u{i}")
        };
        let (client, base) = (server.client.clone(), server.url("/store/"));
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for n in 0..WRITES {
                let response = client
                    .put(format!("{base}{key}"))
                    .body(n.to_string())
                    .send()
                    .await
                    .expect("PUT");
                revisions.push(revision(&response));
            }
            (key, revisions)
        }));
    }
    let mut expected = BTreeSet::new();
    for writer in writers {
        let (key, revisions) = writer.await.expect("writer");
        if key.starts_with('w') {
            expected.extend(revisions);
        }
    }

    let events = watch.take(expected.len()).await;
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        expected,
        "exactly the writes to watched keys, none missing"
    );
    for key in &keys {
        let values: Vec<&str> = events
            .iter()
            .filter(|e| e.key() == key)
            .filter_map(|e| e.value())
            .collect();
        let written: Vec<String> = (0..WRITES).map(|n| n.to_string()).collect();
        assert_eq!(values, written, "writes to {key} arrive in order");
    }
}

#[tokio::test]
async fn resume_after_a_disconnect_yields_exactly_the_missed_events() {
    let server = TestServer::start(&[]).await;
    let mut watch = watch_key(&server, "k", None).await;
    watch.snapshot().await;
    server.put("k", "seen").await;
    let last_seen = watch.next().await.expect("put").id.expect("id");
    drop(watch);

    server.put("k", "missed 1").await;
    server.put("elsewhere", "not watched").await;
    server.delete("k").await;
    server.put("k", "missed 2").await;

    let mut resumed = watch_key(&server, "k", Some(last_seen)).await;
    let replayed = resumed.take(3).await;
    let kinds: Vec<(&str, Option<&str>)> = replayed
        .iter()
        .map(|e| (e.event.as_str(), e.value()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("put", Some("missed 1")),
            ("delete", None),
            ("put", Some("missed 2"))
        ]
    );
    assert_eq!(
        replayed
            .iter()
            .map(|e| e.id.expect("id"))
            .collect::<Vec<_>>(),
        [last_seen + 1, last_seen + 3, last_seen + 4]
    );
    // Then live events follow, with no duplicate.
    server.put("k", "live").await;
    let live = resumed.next().await.expect("live event");
    assert_eq!(live.value(), Some("live"));
    assert_eq!(live.id, Some(last_seen + 5));
}

#[tokio::test]
async fn since_resumes_for_browsers_and_last_event_id_wins() {
    let server = TestServer::start(&[]).await;
    for n in 1..=3 {
        server.put("k", &n.to_string()).await;
    }
    let first = server.base + 1;
    let response = server.get(&format!("/watch_key/k?since={first}")).await;
    let mut watch = Sse::new(response);
    let values: Vec<_> = watch
        .take(2)
        .await
        .into_iter()
        .map(|e| e.data["value"].clone())
        .collect();
    assert_eq!(values, [json!("2"), json!("3")]);

    let response = server
        .request(Method::GET, "/watch_key/k?since=0")
        .header("Last-Event-ID", (first + 1).to_string())
        .send()
        .await
        .expect("watch");
    let mut watch = Sse::new(response);
    assert_eq!(watch.next().await.expect("event").value(), Some("3"));

    // An empty Last-Event-ID (no id seen yet) starts afresh.
    let response = server
        .request(Method::GET, "/watch_key/k")
        .header("Last-Event-ID", "")
        .send()
        .await
        .expect("watch");
    let mut watch = Sse::new(response);
    assert_eq!(watch.snapshot().await.0.len(), 1);
}

#[tokio::test]
async fn resuming_beyond_the_history_is_gone() {
    let server = TestServer::start(&["--history", "4"]).await;
    for n in 1..=10 {
        server.put("k", &n.to_string()).await;
    }
    let at = |n: u64| server.base + n;
    assert_eq!(server.status().await["oldest_revision"], at(7));

    let resume = async |after: u64| {
        server
            .request(Method::GET, "/watch_key/k")
            .header("Last-Event-ID", after.to_string())
            .send()
            .await
            .expect("watch")
    };
    if let Some(endpoints) = server.etcd_endpoints() {
        // On etcd, what the node's window lacks is read from etcd's own
        // history, until etcd compacts it.
        let mut older = Sse::new(resume(at(2)).await);
        let ids: Vec<_> = older.take(8).await.iter().map(|e| e.id).collect();
        assert_eq!(ids, (3..=10).map(|n| Some(at(n))).collect::<Vec<_>>());
        let compact = server
            .client
            .post(format!("{endpoints}/v3/kv/compaction"))
            .body(json!({"revision": at(7).to_string()}).to_string())
            .send()
            .await
            .expect("etcd compacts");
        assert_eq!(compact.status(), StatusCode::OK);
    }
    let body = problem(resume(at(5)).await, StatusCode::GONE).await;
    assert_eq!(body["oldest_revision"], at(7));

    // From another run of the server: newer than anything here.
    let newer = format!("/watch_key/k?since={}", at(11));
    problem(server.get(&newer).await, StatusCode::GONE).await;

    // The oldest event still in history can be resumed after its predecessor.
    let mut watch = watch_key(&server, "k", Some(at(6))).await;
    let ids: Vec<_> = watch
        .take(4)
        .await
        .iter()
        .map(|e| e.id.expect("id"))
        .collect();
    assert_eq!(ids, [at(7), at(8), at(9), at(10)]);

    let bad = server
        .request(Method::GET, "/watch_key/k")
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .expect("watch");
    problem(bad, StatusCode::BAD_REQUEST).await;
}

#[test]
fn expiry_is_an_event_and_a_put_without_ttl_clears_the_ttl() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        // k1 gets a TTL, then loses it; k2 gets the same TTL later.
        let with_ttl = |key: &'static str| {
            server
                .request(Method::PUT, &format!("/store/{key}?ttl=1"))
                .body("short-lived")
                .send()
        };
        assert_eq!(
            with_ttl("k1").await.expect("PUT").status(),
            StatusCode::CREATED
        );
        assert_eq!(
            server.put("k1", "kept").await.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            with_ttl("k2").await.expect("PUT").status(),
            StatusCode::CREATED
        );

        let mut watch = watch_keys(&server, &json!(["k1", "k2"])).await;
        watch.snapshot().await;
        // Had k1 kept its TTL, its expiry (due first) would come first.
        let expired = watch.next().await.expect("expire event");
        // etcd deletes an expired key like any other (README: "Backends").
        let kind = if etcd::wanted() { "delete" } else { "expire" };
        assert_eq!(expired.event, kind);
        assert_eq!(expired.key(), "k2");
        assert_eq!(expired.value(), None);
        assert_eq!(expired.data["revision"], expired.id.expect("id"));

        problem(server.get("/store/k2").await, StatusCode::NOT_FOUND).await;
        assert_eq!(
            server.get("/store/k1").await.text().await.expect("body"),
            "kept"
        );
        let status = server.status().await;
        assert_eq!(status["expired_keys"], if etcd::wanted() { 0 } else { 1 });
        assert_eq!(status["total_keys"], 1);
    });
}

#[tokio::test]
async fn a_batch_reaches_watchers_at_one_revision_numbered_by_part() {
    let server = TestServer::start(&[]).await;
    server.put("c", "0").await;
    let mut watch = watch_keys(&server, &json!(["a", "b", "c"])).await;
    let (_, synced) = watch.snapshot().await;
    let batch = server
        .post_json(
            "/batch",
            &json!([
                {"method": "PUT", "key": "a", "value": "1"},
                {"method": "PUT", "key": "b", "value": "2"},
                {"method": "DELETE", "key": "c"}
            ]),
        )
        .await;
    assert_eq!(batch.status(), StatusCode::OK);
    let at = synced + 1;
    let seen = |events: Vec<SseEvent>| -> Vec<(u64, Option<u32>, String, String)> {
        events
            .into_iter()
            .map(|e| {
                let key = e.key().to_owned();
                (e.id.expect("id"), e.part, e.event, key)
            })
            .collect()
    };
    let event = |part, kind: &str, key: &str| (at, Some(part), kind.to_owned(), key.to_owned());
    assert_eq!(
        seen(watch.take(3).await),
        [
            event(0, "put", "a"),
            event(1, "put", "b"),
            event(2, "delete", "c")
        ]
    );

    // A client cut off after `a` resumes with the rest of the revision; one
    // that saw `b` (the part it watches) has nothing more of it.
    let resume = |keys: Json, id: String| {
        server
            .request(Method::POST, "/watch")
            .header("content-type", "application/json")
            .header("Last-Event-ID", id)
            .body(keys.to_string())
            .send()
    };
    let mut rest = Sse::new(
        resume(json!(["a", "b", "c"]), format!("{at}.0"))
            .await
            .expect("watch"),
    );
    assert_eq!(
        seen(rest.take(2).await),
        [event(1, "put", "b"), event(2, "delete", "c")]
    );
    let mut none = Sse::new(
        resume(json!(["b"]), format!("{at}.1"))
            .await
            .expect("watch"),
    );
    let after = server.put("b", "3").await;
    let next = none.next().await.expect("the next write");
    assert_eq!((next.id, next.part), (Some(revision(&after)), None));
    for bad in ["7.", "7.x", ".1", "7.1.1"] {
        let response = resume(json!(["a"]), bad.to_owned()).await.expect("watch");
        problem(response, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_slow_watcher_is_dropped_and_resumes_without_loss() {
    let server = TestServer::start(&[
        "--watch-queue-bytes",
        "400000",
        "--max-value-bytes",
        "2000000",
    ])
    .await;
    let mut watch = watch_key(&server, "k", None).await;
    watch.snapshot().await;

    // Far more than the socket buffers and the queue can hold, while the
    // watcher reads nothing.
    const WRITES: usize = 200;
    let big = "x".repeat(100_000);
    for n in 0..WRITES {
        server.put("k", &format!("{n}:{big}")).await;
    }
    let mut received = Vec::new();
    while let Some(event) = watch.next().await {
        received.push(event);
    }
    assert!(
        received.len() < WRITES,
        "the stream ended early ({} events)",
        received.len()
    );
    assert_eq!(server.status().await["dropped_watchers"], 1);

    let last = received.last().and_then(|e| e.id).unwrap_or(0);
    let mut resumed = watch_key(&server, "k", Some(last)).await;
    received.extend(resumed.take(WRITES - received.len()).await);
    let prefixes: Vec<String> = received
        .iter()
        .filter_map(|e| e.value())
        .map(|v| v.split(':').next().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..WRITES).map(|n| n.to_string()).collect();
    assert_eq!(prefixes, expected, "every write arrives exactly once");
}

#[tokio::test]
async fn watch_requests_are_validated() {
    let server = TestServer::start(&["--max-watch-keys", "2"]).await;
    problem(
        server.post_json("/watch", &json!([])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        server.post_json("/watch", &json!(["a", "b", "c"])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    problem(
        server.post_json("/watch", &json!(["a", ""])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    for malformed in [json!({"a": 1}), json!(["a", 5])] {
        let response = server.post_json("/watch", &malformed).await;
        problem(response, StatusCode::BAD_REQUEST).await;
    }
    let not_json = server
        .request(Method::POST, "/watch")
        .body("[\"a\"]")
        .send()
        .await
        .expect("watch");
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = TestServer::start(&[]).await;
    let mut watch = watch_key(&server, "k", None).await;
    watch.snapshot().await;
    assert_eq!(server.status().await["watch_requests_count"], 1);
    let stopping = tokio::spawn(server.stop());
    assert_eq!(watch.next().await, None, "the stream ends on shutdown");
    stopping.await.expect("server stopped");
}

#[test]
fn an_idle_stream_is_sent_a_heartbeat() {
    on_test_clock(async {
        let server = TestServer::start(&["--watch-heartbeat", "5s"]).await;
        let response = server.get("/watch_key/k").await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = futures_util::StreamExt::boxed(response.bytes_stream());
        let mut seen = Vec::new();
        let heartbeat = tokio::time::timeout(crate::common::PATIENCE, async {
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut body).await {
                seen.extend_from_slice(&chunk);
                if seen.ends_with(b"\n\n:\n\n") {
                    return true;
                }
            }
            false
        })
        .await;
        let text = String::from_utf8_lossy(&seen);
        assert_eq!(heartbeat, Ok(true), "a comment after the snapshot: {text}");
        assert!(text.contains("event: sync"), "{text}");
    });
}
