//! The key space: listing by prefix in snapshot pages, prefix watches and
//! prefix deletes, over a real socket.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Sse, SseEvent, TestServer, etcd, json, on_test_clock, problem};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

/// The store as a client rebuilds it: key to (value, revision).
type State = BTreeMap<String, (String, u64)>;

async fn put(server: &TestServer, key: &str, value: &str) -> u64 {
    let path = format!("/store/{}", utf8_percent_encode(key, NON_ALPHANUMERIC));
    let response = server
        .request(Method::PUT, &path)
        .body(value.to_owned())
        .send()
        .await
        .expect("PUT");
    assert!(response.status().is_success(), "{}", response.status());
    common::revision(&response)
}

async fn delete(server: &TestServer, key: &str) -> StatusCode {
    let path = format!("/store/{}", utf8_percent_encode(key, NON_ALPHANUMERIC));
    let response = server
        .request(Method::DELETE, &path)
        .send()
        .await
        .expect("DELETE");
    response.status()
}

/// One page: `GET /store` with these query parameters.
async fn page(server: &TestServer, query: &[(&str, &str)]) -> reqwest::Response {
    server
        .request(Method::GET, "/store")
        .query(query)
        .send()
        .await
        .expect("GET /store")
}

async fn ok_page(server: &TestServer, query: &[(&str, &str)]) -> Json {
    let response = page(server, query).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

/// Every page of a listing; returns the items, the revision of the first
/// page, and how many pages it took. Each page must show that revision.
/// `between` runs after every page but the last.
async fn list_all(
    server: &TestServer,
    prefix: &str,
    limit: &str,
    mut between: impl AsyncFnMut(),
) -> (State, u64, usize) {
    let mut items = State::new();
    let mut cursor: Option<String> = None;
    let mut revision = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("prefix", prefix), ("limit", limit)];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let body = ok_page(server, &query).await;
        pages += 1;
        let at = body["revision"].as_u64().expect("revision");
        assert_eq!(
            *revision.get_or_insert(at),
            at,
            "every page shows one revision"
        );
        let mut last: Option<String> = None;
        for item in body["items"].as_array().expect("items") {
            let key = item["key"].as_str().expect("key").to_owned();
            assert!(key.starts_with(prefix), "{key} is under {prefix:?}");
            if let Some(last) = &last {
                assert!(last.as_bytes() < key.as_bytes(), "byte order");
            }
            let value = item["value"].as_str().expect("value").to_owned();
            let revision = item["revision"].as_u64().expect("revision");
            assert!(
                items.insert(key.clone(), (value, revision)).is_none(),
                "{key} twice"
            );
            last = Some(key);
        }
        match body["next"].as_str() {
            Some(next) => {
                cursor = Some(next.to_owned());
                between().await;
            }
            None => {
                assert!(body["next"].is_null(), "next is null on the last page");
                break;
            }
        }
    }
    (items, revision.expect("a page"), pages)
}

/// Applies a change event to a client's copy of the store.
fn apply(state: &mut State, event: &SseEvent) {
    let key = event.key().to_owned();
    match event.event.as_str() {
        "put" | "snapshot" => {
            let revision = event.data["revision"].as_u64().expect("revision");
            state.insert(key, (event.value().expect("value").to_owned(), revision));
        }
        "delete" | "expire" => {
            state.remove(&key);
        }
        other => panic!("unexpected {other} event"),
    }
}

/// Eight clients putting and deleting `keys` keys under `prefix` until
/// stopped, counting their writes.
struct Writers {
    stop: Arc<AtomicBool>,
    done: tokio::sync::watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(server: &Arc<TestServer>, prefix: &'static str, keys: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (progress, done) = tokio::sync::watch::channel(0u64);
        let progress = Arc::new(progress);
        let tasks = (0..8u64)
            .map(|writer| {
                let (server, stop, progress) = (server.clone(), stop.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut n = writer + 1;
                    while !stop.load(Ordering::Relaxed) {
                        n = (n * 7919 + 13) % 1_000_003;
                        let key = format!("{prefix}{:03}", n % keys);
                        if n % 3 == 0 {
                            delete(&server, &key).await;
                        } else {
                            put(&server, &key, &format!("w{writer}-{n}")).await;
                        }
                        progress.send_modify(|done| *done += 1);
                    }
                })
            })
            .collect();
        Self { stop, done, tasks }
    }

    /// Waits until the writers have made `more` writes since the last wait.
    async fn wait_for(&mut self, more: u64) {
        let seen = *self.done.borrow_and_update();
        self.done
            .wait_for(|done| *done >= seen + more)
            .await
            .expect("writers running");
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer");
        }
    }
}

async fn watch_prefix(server: &TestServer, prefix: &str, since: Option<u64>) -> Sse {
    let mut request = server
        .request(Method::GET, "/watch")
        .query(&[("prefix", prefix)]);
    if let Some(since) = since {
        request = request.header("Last-Event-ID", since.to_string());
    }
    Sse::new(request.send().await.expect("watch"))
}

async fn delete_prefix(server: &TestServer, prefix: &str) -> reqwest::Response {
    server
        .request(Method::DELETE, "/store")
        .query(&[("prefix", prefix)])
        .send()
        .await
        .expect("DELETE /store")
}

#[tokio::test]
async fn a_listing_is_in_byte_order_under_its_prefix() {
    let server = TestServer::start(&[]).await;
    for key in ["a", "a/1", "a/2/x", "a0", "ab", "b", "é", "éa", "e"] {
        put(&server, key, &format!("v-{key}")).await;
    }
    let keys = |body: &Json| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["key"].as_str().expect("key").to_owned())
            .collect()
    };
    let all = ok_page(&server, &[]).await;
    assert_eq!(
        keys(&all),
        ["a", "a/1", "a/2/x", "a0", "ab", "b", "e", "é", "éa"]
    );
    let at = |n: u64| server.base + n;
    assert_eq!(all["revision"], at(9));
    assert!(all["next"].is_null());
    assert!(all.get("count").is_none(), "count only when asked");
    assert_eq!(
        all["items"][0],
        json!({"key": "a", "value": "v-a", "revision": at(1), "create_revision": at(1), "version": 1})
    );

    // A prefix equal to a whole key lists that key and the keys below it.
    assert_eq!(
        keys(&ok_page(&server, &[("prefix", "a")]).await),
        ["a", "a/1", "a/2/x", "a0", "ab"]
    );
    assert_eq!(
        keys(&ok_page(&server, &[("prefix", "a/")]).await),
        ["a/1", "a/2/x"]
    );
    assert_eq!(keys(&ok_page(&server, &[("prefix", "")]).await).len(), 9);
    // Multi-byte characters: é is C3 A9, so it sorts after every ASCII key.
    assert_eq!(
        keys(&ok_page(&server, &[("prefix", "é")]).await),
        ["é", "éa"]
    );
    assert_eq!(
        keys(&ok_page(&server, &[("prefix", "zz")]).await),
        Vec::<String>::new()
    );

    let keys_only = ok_page(
        &server,
        &[("prefix", "a/"), ("keys_only", "true"), ("count", "true")],
    )
    .await;
    assert_eq!(
        keys_only,
        json!({
            "revision": at(9),
            "items": [
                {"key": "a/1", "revision": at(2), "create_revision": at(2), "version": 1},
                {"key": "a/2/x", "revision": at(3), "create_revision": at(3), "version": 1}
            ],
            "next": null,
            "count": 2
        })
    );

    // Pages of two, counted over the whole listing.
    let first = ok_page(
        &server,
        &[("prefix", "a"), ("limit", "2"), ("count", "true")],
    )
    .await;
    assert_eq!(keys(&first), ["a", "a/1"]);
    assert_eq!(first["count"], 5);
    let next = first["next"].as_str().expect("a next page");
    let second = ok_page(
        &server,
        &[("prefix", "a"), ("limit", "2"), ("cursor", next)],
    )
    .await;
    assert_eq!(keys(&second), ["a/2/x", "a0"]);
}

#[tokio::test]
async fn a_page_ends_before_max_page_bytes_but_holds_one_key() {
    let server = TestServer::start(&["--max-page-bytes", "25"]).await;
    for key in ["k1", "k2", "k3"] {
        put(&server, key, &"v".repeat(10)).await;
    }
    put(&server, "k4", &"v".repeat(100)).await;
    // 12 bytes a key and value: two fit in 25, a third would not.
    let (items, _, pages) = list_all(&server, "k", "1000", async || {}).await;
    assert_eq!(items.len(), 4);
    assert_eq!(pages, 3, "k1 k2 | k3 | k4 (alone, though over the limit)");
    let keys_only = ok_page(&server, &[("keys_only", "true")]).await;
    assert_eq!(
        keys_only["items"].as_array().expect("items").len(),
        4,
        "keys alone fit"
    );
}

#[tokio::test]
async fn bad_parameters_and_cursors_are_refused() {
    let server = TestServer::start(&[]).await;
    for n in 0..3 {
        put(&server, &format!("a/{n}"), "v").await;
    }
    for limit in ["0", "10001", "abc", "-1"] {
        let body = problem(
            page(&server, &[("limit", limit)]).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(
            body["detail"],
            format!("limit {limit} is not a whole number from 1 to 10000")
        );
    }
    let first = ok_page(&server, &[("prefix", "a/"), ("limit", "1")]).await;
    let cursor = first["next"].as_str().expect("next").to_owned();
    // An empty cursor is no cursor: the first page.
    let again = ok_page(&server, &[("prefix", "a/"), ("limit", "1"), ("cursor", "")]).await;
    assert_eq!(again["items"], first["items"]);

    // Each character changed in turn: never read as another position.
    for at in 0..cursor.len() {
        let mut tampered = cursor.clone().into_bytes();
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ASCII");
        let body = problem(
            page(&server, &[("prefix", "a/"), ("cursor", &tampered)]).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("not one this server gave out"),
            "{body}"
        );
    }
    let other = problem(
        page(&server, &[("prefix", "b/"), ("cursor", &cursor)]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        other["detail"]
            .as_str()
            .expect("detail")
            .contains("another prefix")
    );
    let unprefixed = problem(
        page(&server, &[("cursor", &cursor)]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        unprefixed["detail"]
            .as_str()
            .expect("detail")
            .contains("another prefix")
    );
}

#[tokio::test]
async fn pages_show_the_first_pages_revision_while_eight_writers_change_the_prefix() {
    let server = Arc::new(TestServer::start(&[]).await);
    for n in 0..200 {
        put(&server, &format!("p/{n:03}"), "initial").await;
    }
    put(&server, "q/outside", "x").await;
    // The complete change log from the start, to rebuild any past state.
    let mut log = watch_prefix(&server, "p/", Some(server.base)).await;

    let mut writers = Writers::start(&server, "p/", 300);
    // Between pages, wait until the writers have done 20 more writes.
    let (listed, at, pages) = list_all(&server, "p/", "7", async || {
        writers.wait_for(20).await;
    })
    .await;
    writers.stop().await;
    assert!(pages > 20, "{pages} pages");

    // The store at `at`, from the change log.
    let mut state = State::new();
    loop {
        let event = log.next().await.expect("event");
        if event.id.expect("id") > at {
            break;
        }
        apply(&mut state, &event);
    }
    assert_eq!(listed, state, "the listing is the store at revision {at}");
    let now = ok_page(&server, &[("prefix", "p/"), ("limit", "10000")]).await;
    assert!(
        now["revision"].as_u64().expect("revision") > at,
        "writes happened meanwhile"
    );
}

#[tokio::test]
async fn a_listing_older_than_the_history_is_gone() {
    let server = TestServer::start(&["--history", "10"]).await;
    for n in 0..5 {
        put(&server, &format!("a/{n}"), "v").await;
    }
    let first = ok_page(&server, &[("prefix", "a/"), ("limit", "2")]).await;
    let cursor = first["next"].as_str().expect("next").to_owned();
    // Still within the history: the next page works.
    for n in 0..5 {
        put(&server, "elsewhere", &n.to_string()).await;
    }
    ok_page(
        &server,
        &[("prefix", "a/"), ("limit", "2"), ("cursor", &cursor)],
    )
    .await;
    // Ten more writes: revision 5 falls out of the history (on etcd: is
    // compacted away).
    for n in 0..10 {
        put(&server, "elsewhere", &n.to_string()).await;
    }
    let listed = server.base + 5;
    if let Some(endpoints) = server.etcd_endpoints() {
        let compact = server
            .client
            .post(format!("{endpoints}/v3/kv/compaction"))
            .body(json!({"revision": (server.base + 11).to_string()}).to_string())
            .send()
            .await
            .expect("etcd compacts");
        assert_eq!(compact.status(), StatusCode::OK);
    }
    let body = problem(
        page(
            &server,
            &[("prefix", "a/"), ("limit", "2"), ("cursor", &cursor)],
        )
        .await,
        StatusCode::GONE,
    )
    .await;
    assert_eq!(body["type"], "urn:kv-store:problem:history-gone");
    if !etcd::wanted() {
        assert_eq!(body["oldest_revision"], 11);
        assert_eq!(
            body["detail"],
            "the listing shows revision 5, and the history now starts at 11: list again without \
             `cursor`"
        );
    }
    assert!(body["oldest_revision"].as_u64() > Some(listed));
}

#[test]
fn a_listing_shows_ttls_and_keys_whose_ttl_ran_out_are_not_listed() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        put(&server, "t/live", "v").await;
        let response = server
            .request(Method::PUT, "/store/t%2Fshort?ttl=1")
            .body("v")
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), StatusCode::CREATED);
        let before = ok_page(&server, &[("prefix", "t/")]).await;
        let (live, short) = (&before["items"][0], &before["items"][1]);
        assert_eq!((live.get("ttl"), live.get("lease")), (None, None), "{live}");
        // etcd raises a TTL to its minimum (README: "Backends").
        let ttl = short["ttl"].as_u64().expect("a TTL");
        assert!(ttl == 1 || etcd::wanted() && ttl >= 1, "{short}");
        assert_eq!(short.get("lease"), None, "{short}");
        // Wait for the key's expiry as a client sees it: the watch's event.
        let mut watch = watch_prefix(&server, "t/", Some(server.base + 2)).await;
        let expired = watch.next().await.expect("expire event");
        // etcd deletes an expired key like any other (README: "Backends").
        let kind = if etcd::wanted() { "delete" } else { "expire" };
        assert_eq!((expired.event.as_str(), expired.key()), (kind, "t/short"));
        let body = ok_page(&server, &[("prefix", "t/"), ("count", "true")]).await;
        assert_eq!(body["items"].as_array().expect("items").len(), 1);
        assert_eq!(body["count"], 1);
    });
}

#[tokio::test]
async fn list_then_watch_from_the_listing_gives_the_final_state() {
    let server = Arc::new(TestServer::start(&[]).await);
    for n in 0..100 {
        put(&server, &format!("s/{n:03}"), "initial").await;
    }
    let mut writers = Writers::start(&server, "s/", 150);
    let (mut state, at, _) = list_all(&server, "s/", "9", async || {
        writers.wait_for(10).await;
    })
    .await;
    let mut watch = watch_prefix(&server, "s/", Some(at)).await;
    writers.wait_for(200).await;
    writers.stop().await;
    // A marker after the last write: the watch has everything once it arrives.
    let end = put(&server, "s/~end", "end").await;
    loop {
        let event = watch.next().await.expect("event");
        let id = event.id.expect("id");
        assert!(id > at, "nothing at or before the listing's revision");
        apply(&mut state, &event);
        if id == end {
            break;
        }
    }
    let (now, _, _) = list_all(&server, "s/", "10000", async || {}).await;
    assert_eq!(state, now, "listing + watch = the store");
}

#[tokio::test]
async fn a_prefix_watch_sends_a_snapshot_then_sync_then_changes() {
    let server = TestServer::start(&[]).await;
    put(&server, "w/b", "2").await;
    put(&server, "w/a", "1").await;
    put(&server, "x", "outside").await;
    let mut watch = watch_prefix(&server, "w/", None).await;
    let (snapshot, synced) = watch.snapshot().await;
    let at = |n: u64| server.base + n;
    assert_eq!(synced, at(3));
    assert_eq!(
        snapshot.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        [
            json!({"key": "w/a", "value": "1", "revision": at(2), "create_revision": at(2), "version": 1}),
            json!({"key": "w/b", "value": "2", "revision": at(1), "create_revision": at(1), "version": 1}),
        ]
    );
    put(&server, "x", "still outside").await;
    let created = put(&server, "w/new", "3").await;
    let event = watch.next().await.expect("event");
    assert_eq!(
        (event.event.as_str(), event.key(), event.id),
        ("put", "w/new", Some(created))
    );

    // An empty prefix gets a sync event too, so a client can resume.
    let mut empty = watch_prefix(&server, "nothing/", None).await;
    let (snapshot, synced) = empty.snapshot().await;
    assert!(snapshot.is_empty());
    drop(empty);
    let created = put(&server, "nothing/yet", "v").await;
    let mut resumed = watch_prefix(&server, "nothing/", Some(synced)).await;
    let event = resumed.next().await.expect("the missed event, no snapshot");
    assert_eq!((event.event.as_str(), event.id), ("put", Some(created)));
}

#[tokio::test]
async fn a_snapshot_larger_than_the_watch_queue_arrives_whole() {
    let server = TestServer::start(&["--watch-queue-bytes", "16384"]).await;
    let ops: Vec<Json> = (0..3000)
        .map(|n| json!({"method": "PUT", "key": format!("big/{n:04}"), "value": "v".repeat(100)}))
        .collect();
    for chunk in ops.chunks(1000) {
        let response = server.post_json("/batch", &json!(chunk)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let revision = server.status().await["revision"].clone();
    // 3000 events of ~200 bytes: 600 KB, far over the 16 KiB queue.
    let mut watch = watch_prefix(&server, "big/", None).await;
    let (snapshot, synced) = watch.snapshot().await;
    assert_eq!(snapshot.len(), 3000);
    assert_eq!(synced, revision);
    assert_eq!(server.status().await["dropped_watchers"], 0);
}

#[tokio::test]
async fn post_watch_takes_keys_and_prefixes_and_sends_each_event_once() {
    let server = TestServer::start(&[]).await;
    put(&server, "k", "1").await;
    put(&server, "p/1", "2").await;
    let mut watch = Sse::new(
        server
            .post_json(
                "/watch",
                &json!({"keys": ["k", "p/1", "k"], "prefixes": ["p/", "p/deeper/"]}),
            )
            .await,
    );
    let (snapshot, _) = watch.snapshot().await;
    let keys: Vec<&str> = snapshot.iter().map(SseEvent::key).collect();
    assert_eq!(keys, ["k", "p/1"], "each key once");
    let revision = put(&server, "p/deeper/x", "3").await;
    put(&server, "k", "4").await;
    let events = watch.take(2).await;
    assert_eq!(events[0].id, Some(revision));
    assert_eq!(events[0].key(), "p/deeper/x");
    assert_eq!(events[1].key(), "k");

    // The seed's form still works.
    let mut plain = Sse::new(server.post_json("/watch", &json!(["k"])).await);
    assert_eq!(plain.snapshot().await.0.len(), 1);
    for bad in [
        json!({}),
        json!({"keys": [], "prefixes": []}),
        json!({"key": ["k"]}),
        json!(7),
    ] {
        problem(
            server.post_json("/watch", &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn a_prefix_delete_is_one_commit_seen_as_one_delete_per_key() {
    let server = TestServer::start(&[]).await;
    for key in ["d/1", "d/2", "d/3/x", "d", "e/1"] {
        put(&server, key, "v").await;
    }
    let mut watch = watch_prefix(&server, "d", None).await;
    let (snapshot, synced) = watch.snapshot().await;
    assert_eq!(snapshot.len(), 4);

    let response = delete_prefix(&server, "d/").await;
    assert_eq!(response.status(), StatusCode::OK);
    let at = synced + 1;
    assert_eq!(json(response).await, json!({"deleted": 3, "revision": at}));
    let events = watch.take(3).await;
    let seen = |events: &[SseEvent]| {
        events
            .iter()
            .map(|e| (e.event.clone(), e.key().to_owned(), e.id, e.part))
            .collect::<Vec<_>>()
    };
    let expected = |key: &str, part| ("delete".to_owned(), key.to_owned(), Some(at), Some(part));
    assert_eq!(
        seen(&events),
        [expected("d/1", 0), expected("d/2", 1), expected("d/3/x", 2)],
        "one revision, its events numbered"
    );
    // Cut off after the first of them: the rest of the revision follows.
    let resumed = server
        .request(Method::GET, "/watch")
        .query(&[("prefix", "d")])
        .header("Last-Event-ID", format!("{at}.0"))
        .send()
        .await
        .expect("watch");
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut resumed = Sse::new(resumed);
    assert_eq!(
        seen(&resumed.take(2).await),
        [expected("d/2", 1), expected("d/3/x", 2)]
    );
    let left = ok_page(&server, &[]).await;
    assert_eq!(left["items"].as_array().expect("items").len(), 2);

    // Nothing under it: nothing deleted, the revision unchanged.
    let none = delete_prefix(&server, "d/").await;
    assert_eq!(json(none).await, json!({"deleted": 0, "revision": at}));
    let empty = problem(delete_prefix(&server, "").await, StatusCode::BAD_REQUEST).await;
    assert!(
        empty["detail"]
            .as_str()
            .expect("detail")
            .contains("the prefix is empty")
    );
    let missing = server
        .request(Method::DELETE, "/store")
        .send()
        .await
        .expect("DELETE");
    problem(missing, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_prefix_delete_with_a_data_dir_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("UTF-8 path");
    let server = TestServer::start_memory(&["--data-dir", path]).await;
    for n in 0..50 {
        put(&server, &format!("g/{n}"), "v").await;
    }
    put(&server, "h", "kept").await;
    let response = delete_prefix(&server, "g/").await;
    assert_eq!(json(response).await, json!({"deleted": 50, "revision": 52}));
    server.stop().await;

    let server = TestServer::start_memory(&["--data-dir", path]).await;
    let (items, at, _) = list_all(&server, "", "1000", async || {}).await;
    assert_eq!(at, 52);
    assert_eq!(items.keys().collect::<Vec<_>>(), ["h"]);
}
