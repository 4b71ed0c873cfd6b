//! `--data-dir`: what survives a restart, and what the server refuses.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::process::{ServerProcess, command, status};
use crate::common::revision;
use reqwest::{Client, StatusCode};

async fn put(client: &Client, url: &str, key: &str, value: &str) -> u64 {
    let response = client
        .put(format!("{url}/store/{key}"))
        .body(value.to_owned())
        .send()
        .await
        .expect("PUT");
    assert!(response.status().is_success(), "{}", response.status());
    revision(&response)
}

async fn get(client: &Client, url: &str, key: &str) -> Option<(String, u64)> {
    let response = client
        .get(format!("{url}/store/{key}"))
        .send()
        .await
        .expect("GET");
    match response.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let revision = revision(&response);
            Some((response.text().await.expect("body"), revision))
        }
        other => panic!("GET {key}: {other}"),
    }
}

/// A key's create revision and version, from a GET's headers.
async fn versions(client: &Client, url: &str, key: &str) -> (u64, u64) {
    let response = client
        .get(format!("{url}/store/{key}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {key}");
    let header = |name: &str| -> u64 {
        response.headers()[name]
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("{name} is a number"))
    };
    (header("kv-create-revision"), header("kv-version"))
}

// Real time: the server is a child process, and a TTL must run out on the
// wall clock while it is down.
#[tokio::test]
async fn keys_revisions_and_deadlines_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = Client::new();

    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.clone();
    let created = put(&client, &url, "kept", "v1").await;
    let kept = put(&client, &url, "kept", "v2").await;
    put(&client, &url, "gone", "x").await;
    let response = client
        .delete(format!("{url}/store/gone"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let batch = client
        .post(format!("{url}/batch"))
        .json(&serde_json::json!([
            {"method": "PUT", "key": "a", "value": "1"},
            {"method": "PUT", "key": "b", "value": "2"},
            {"method": "PUT", "key": "later", "value": "l", "ttl": 3600},
            {"method": "PUT", "key": "soon", "value": "s", "ttl": 1},
        ]))
        .send()
        .await
        .expect("batch");
    assert_eq!(batch.status(), StatusCode::OK);
    let written_at = Instant::now();
    let before = status(&client, &url).await;
    assert!(server.stop().success(), "clean exit");

    // `soon` must expire while the server is down: its deadline is wall-clock
    // time, so only time passing can show it.
    let left = Duration::from_secs(1).saturating_sub(written_at.elapsed());
    tokio::time::sleep(left + Duration::from_millis(100)).await;

    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.clone();
    assert_eq!(get(&client, &url, "kept").await, Some(("v2".into(), kept)));
    assert_eq!(versions(&client, &url, "kept").await, (created, 2));
    assert_eq!(get(&client, &url, "gone").await, None);
    assert_eq!(
        get(&client, &url, "a").await.map(|(v, _)| v),
        Some("1".into())
    );
    assert_eq!(
        get(&client, &url, "b").await.map(|(v, _)| v),
        Some("2".into())
    );
    assert_eq!(
        get(&client, &url, "later").await.map(|(v, _)| v),
        Some("l".into())
    );
    assert_eq!(get(&client, &url, "soon").await, None, "expired while down");

    // The revision never goes backwards: ETags stay unique across runs.
    let after = status(&client, &url).await;
    assert_eq!(after["revision"], before["revision"]);
    let next = put(&client, &url, "kept", "v3").await;
    assert_eq!(Some(next), before["revision"].as_u64().map(|r| r + 1));
    assert!(server.stop().success());
}

#[test]
fn a_data_dir_in_use_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = ServerProcess::start(dir.path(), &[]);
    let second = command(dir.path(), &[])
        .output()
        .expect("second server runs");
    assert_eq!(second.status.code(), Some(2));
    let log = String::from_utf8_lossy(&second.stdout);
    assert!(log.contains("in use by another process"), "{log}");
}

#[test]
fn a_data_dir_from_a_newer_format_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(ServerProcess::start(dir.path(), &[]).stop().success());
    {
        // What a future kv-store would leave behind.
        let db = redb::Database::open(dir.path().join("kv-store.redb")).expect("opens");
        let txn = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut meta = txn.open_table(meta).expect("meta table");
            meta.insert("format", kv_store::store::DISK_FORMAT + 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let refused = command(dir.path(), &[]).output().expect("server runs");
    assert_eq!(refused.status.code(), Some(2));
    let log = String::from_utf8_lossy(&refused.stdout);
    assert!(log.contains("newer than this kv-store reads"), "{log}");
}

/// Writes a data dir the way kv-store 0.1 with format 1 left it: entries of
/// create revision, mod revision, version, deadline (u64 each), value.
fn write_format_1(dir: &std::path::Path, entries: &[(&str, u64, u64, &str)], revision: u64) {
    let db = redb::Database::create(dir.join("kv-store.redb")).expect("creates");
    let txn = db.begin_write().expect("write");
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let mut meta = txn.open_table(meta).expect("meta table");
        meta.insert("format", 1).expect("insert");
        meta.insert("revision", revision).expect("insert");
        let keys: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("keys");
        let mut keys = txn.open_table(keys).expect("keys table");
        for (key, mod_revision, deadline_ms, value) in entries {
            let mut bytes = Vec::new();
            for field in [1, *mod_revision, 3, *deadline_ms] {
                bytes.extend_from_slice(&field.to_le_bytes());
            }
            bytes.extend_from_slice(value.as_bytes());
            keys.insert(*key, bytes.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_format_1_data_dir_is_read_and_upgraded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unix_ms = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    };
    let now = std::time::SystemTime::now();
    let in_an_hour = unix_ms(now + Duration::from_secs(3600));
    let a_minute_ago = unix_ms(now - Duration::from_secs(60));
    write_format_1(
        dir.path(),
        &[
            ("plain", 4, 0, "old value"),
            ("later", 9, in_an_hour, "l"),
            ("past", 7, a_minute_ago, "p"),
        ],
        9,
    );
    let client = Client::new();
    for run in ["upgrades", "reads the upgraded dir"] {
        let server = ServerProcess::start(dir.path(), &[]);
        let url = server.url.clone();
        let plain = get(&client, &url, "plain").await;
        assert_eq!(plain, Some(("old value".to_owned(), 4)), "{run}");
        // Format 1 kept the create revision and version; they are served.
        assert_eq!(versions(&client, &url, "plain").await, (1, 3), "{run}");
        let later = get(&client, &url, "later").await;
        assert_eq!(later, Some(("l".to_owned(), 9)), "{run}");
        // Its deadline was read, at the old layout's offset.
        assert_eq!(get(&client, &url, "past").await, None, "{run}");
        assert_eq!(status(&client, &url).await["revision"], 9, "{run}");
        assert!(server.stop().success(), "{run}: clean exit");
    }
}

/// Writes a data dir the way kv-store with format 2 left it: entries of
/// mod revision and deadline (u64 each, no deadline here), then the value.
fn write_format_2(dir: &std::path::Path, entries: &[(&str, u64, &str)], revision: u64) {
    let db = redb::Database::create(dir.join("kv-store.redb")).expect("creates");
    let txn = db.begin_write().expect("write");
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let mut meta = txn.open_table(meta).expect("meta table");
        meta.insert("format", 2).expect("insert");
        meta.insert("revision", revision).expect("insert");
        let keys: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("keys");
        let mut keys = txn.open_table(keys).expect("keys table");
        for (key, mod_revision, value) in entries {
            let mut bytes = Vec::new();
            for field in [*mod_revision, 0] {
                bytes.extend_from_slice(&field.to_le_bytes());
            }
            bytes.extend_from_slice(value.as_bytes());
            keys.insert(*key, bytes.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_format_2_data_dir_is_read_and_upgraded() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_format_2(dir.path(), &[("a", 3, "x"), ("b", 5, "y")], 5);
    let client = Client::new();
    for run in ["upgrades", "reads the upgraded dir"] {
        let server = ServerProcess::start(dir.path(), &[]);
        let url = server.url.clone();
        assert_eq!(
            get(&client, &url, "a").await,
            Some(("x".into(), 3)),
            "{run}"
        );
        // Format 2 kept no create revision or version: a key counts as
        // created by its last write.
        assert_eq!(versions(&client, &url, "b").await, (5, 1), "{run}");
        assert!(server.stop().success(), "{run}: clean exit");
    }
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.clone();
    let written = put(&client, &url, "b", "z").await;
    assert_eq!(written, 6);
    assert_eq!(versions(&client, &url, "b").await, (5, 2));
    assert!(server.stop().success());
}

#[tokio::test]
async fn interval_mode_commits_answered_writes_on_a_clean_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = Client::new();
    for mode in ["interval", "never"] {
        let server = ServerProcess::start(dir.path(), &["--fsync", mode]);
        let revision = put(&client, &server.url, mode, "answered").await;
        assert!(server.stop().success(), "clean exit");

        let server = ServerProcess::start(dir.path(), &[]);
        assert_eq!(
            get(&client, &server.url, mode).await,
            Some(("answered".into(), revision)),
            "--fsync {mode}"
        );
        assert!(server.stop().success(), "clean exit");
    }
}

/// Starts the server on `dir` and expects it to refuse with exit code 2 and
/// a log naming the database file and `says`.
fn assert_refused(dir: &std::path::Path, says: &str) {
    use std::io::{BufRead, BufReader};
    let mut child = command(dir, &[]).spawn().expect("server runs");
    let stdout = child.stdout.take().expect("piped");
    let mut log = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on the data dir: {log}{line}");
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("kv-store.redb"), "names the file: {log}");
    assert!(log.contains(says), "{says:?}: {log}");
}

/// A data dir holding a few keys, one with `value`, cleanly stopped.
async fn stopped_data_dir(value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = Client::new();
    let server = ServerProcess::start(dir.path(), &[]);
    for i in 0..20 {
        put(&client, &server.url, &format!("k{i}"), "filler").await;
    }
    put(&client, &server.url, "target", value).await;
    assert!(server.stop().success(), "clean exit");
    dir
}

#[tokio::test]
async fn a_changed_byte_in_a_cleanly_closed_data_dir_is_refused() {
    let value = "a value whose bytes are easy to find on disk";
    let dir = stopped_data_dir(value).await;
    let file = dir.path().join("kv-store.redb");
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes
        .windows(value.len())
        .position(|w| w == value.as_bytes())
        .expect("the value is in the file");
    // "a value" -> "b value": still UTF-8, the kind of change only a
    // checksum notices.
    bytes[at] ^= 0x03;
    std::fs::write(&file, &bytes).expect("write");
    assert_refused(dir.path(), "damaged");
}

#[tokio::test]
async fn an_empty_or_truncated_database_file_is_refused() {
    let dir = stopped_data_dir("v").await;
    let file = dir.path().join("kv-store.redb");
    let length = std::fs::metadata(&file).expect("metadata").len();
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..(length / 2) as usize]).expect("truncate");
    assert_refused(dir.path(), "damaged");
    std::fs::write(&file, b"").expect("empty");
    assert_refused(dir.path(), "is empty");
    std::fs::remove_file(&file).expect("remove");
    assert_refused(dir.path(), "already reached revision 21");
}

#[tokio::test]
async fn an_older_copy_of_the_database_is_refused() {
    let dir = stopped_data_dir("v").await;
    let file = dir.path().join("kv-store.redb");
    let old = std::fs::read(&file).expect("read");
    let client = Client::new();
    let server = ServerProcess::start(dir.path(), &[]);
    put(&client, &server.url, "later", "x").await;
    assert!(server.stop().success(), "clean exit");
    std::fs::write(&file, old).expect("put the old copy back");
    assert_refused(
        dir.path(),
        "is at revision 21, but this data dir already reached revision 22",
    );
}

/// What happens to the database file while the server runs.
#[derive(Clone, Copy, Debug)]
enum Vanish {
    RemoveFile,
    RemoveDir,
    /// A copy taken after the first write is moved over it.
    ReplaceFile,
}

/// Waits for a log line containing `says`; the lines before it are
/// returned with it.
fn await_log(server: &ServerProcess, says: &str) -> String {
    let mut seen = String::new();
    loop {
        let line = server
            .logs
            .recv_timeout(common::PATIENCE)
            .unwrap_or_else(|_| panic!("a log line with {says:?}; saw: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(says) {
            return seen;
        }
    }
}

async fn vanish_under_a_running_server(vanish: Vanish, fsync: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = data.join("kv-store.redb");
    let client = Client::new();
    let server = ServerProcess::start(&data, &["--fsync", fsync]);
    let url = server.url.clone();
    let kept = put(&client, &url, "before", "v").await;
    let copy = dir.path().join("copy.redb");
    match vanish {
        Vanish::RemoveFile => std::fs::remove_file(&file).expect("remove the file"),
        Vanish::RemoveDir => std::fs::remove_dir_all(&data).expect("remove the dir"),
        Vanish::ReplaceFile => {
            std::fs::copy(&file, &copy).expect("copy");
            std::fs::rename(&copy, &file).expect("move the copy over the file");
        }
    }
    // Logged at once, with no write to notice it.
    let logged = await_log(&server, "refusing every write");
    assert!(logged.contains("kv-store.redb"), "{vanish:?}: {logged}");

    for key in ["before", "after"] {
        let refused = client
            .put(format!("{url}/store/{key}"))
            .body("w")
            .send()
            .await
            .expect("PUT");
        let body = common::problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(body["type"], "urn:kv-store:problem:data-dir-lost", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&*file.to_string_lossy()), "{detail}");
    }
    let batch = client
        .post(format!("{url}/batch"))
        .json(&serde_json::json!([{"method": "DELETE", "key": "before"}]))
        .send()
        .await
        .expect("batch");
    common::problem(batch, StatusCode::SERVICE_UNAVAILABLE).await;
    let ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("readyz");
    let body = common::problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("kv-store.redb"),
        "{body}"
    );
    // Reads go on from memory.
    assert_eq!(get(&client, &url, "before").await, Some(("v".into(), kept)));
    assert!(server.stop().success(), "clean exit");

    // Nothing was acknowledged after the file went: a restart finds what
    // the data dir holds, or refuses to start on a file that went missing.
    match vanish {
        Vanish::RemoveFile => assert_refused(&data, "already reached revision 1"),
        Vanish::RemoveDir => {
            let server = ServerProcess::start(&data, &[]);
            assert_eq!(get(&client, &server.url, "before").await, None);
            assert_eq!(status(&client, &server.url).await["revision"], 0);
        }
        Vanish::ReplaceFile => {
            let server = ServerProcess::start(&data, &[]);
            assert_eq!(
                get(&client, &server.url, "before").await,
                Some(("v".into(), kept))
            );
            assert_eq!(get(&client, &server.url, "after").await, None);
        }
    }
}

#[tokio::test]
async fn a_removed_database_file_stops_writes_at_once() {
    vanish_under_a_running_server(Vanish::RemoveFile, "always").await;
}

#[tokio::test]
async fn a_removed_data_dir_stops_writes_at_once() {
    vanish_under_a_running_server(Vanish::RemoveDir, "always").await;
}

#[tokio::test]
async fn a_replaced_database_file_stops_writes_at_once() {
    vanish_under_a_running_server(Vanish::ReplaceFile, "always").await;
}

#[tokio::test]
async fn a_removed_database_file_stops_deferred_writes_too() {
    vanish_under_a_running_server(Vanish::RemoveFile, "interval").await;
}

/// Leases survive a restart with their keys, each with its full TTL
/// again; a revoked one stays gone. Both ways to the disk: a group per
/// commit, and the periodic commit.
#[tokio::test]
async fn leases_and_their_keys_survive_a_restart_with_their_full_ttl() {
    for fsync in ["always", "interval"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = Client::new();
        let flags = ["--fsync", fsync];
        let server = ServerProcess::start(dir.path(), &flags);
        let url = server.url.clone();
        let grant = async |ttl: u64| -> String {
            let response = client
                .post(format!("{url}/leases"))
                .json(&serde_json::json!({"ttl": ttl}))
                .send()
                .await
                .expect("grant");
            assert_eq!(response.status(), StatusCode::CREATED);
            let body: serde_json::Value = response.json().await.expect("JSON");
            body["id"].as_str().expect("id").to_owned()
        };
        let (kept, revoked) = (grant(600).await, grant(600).await);
        for (key, lease) in [("k1", &kept), ("k2", &kept), ("k3", &revoked)] {
            let response = client
                .put(format!("{url}/store/{key}?lease={lease}"))
                .body("v")
                .send()
                .await
                .expect("PUT");
            assert_eq!(response.status(), StatusCode::CREATED);
        }
        let response = client
            .delete(format!("{url}/leases/{revoked}"))
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(server.stop().success(), "clean exit");

        let server = ServerProcess::start(dir.path(), &flags);
        let url = server.url.clone();
        let read = client
            .get(format!("{url}/leases/{kept}?keys=true"))
            .send()
            .await
            .expect("GET lease");
        assert_eq!(read.status(), StatusCode::OK, "{fsync}");
        let read: serde_json::Value = read.json().await.expect("JSON");
        assert_eq!(read["keys"], serde_json::json!(["k1", "k2"]), "{fsync}");
        assert_eq!(read["granted_ttl"], 600);
        assert!(read["ttl"].as_u64() >= Some(599), "full TTL again: {read}");
        let gone = client
            .get(format!("{url}/leases/{revoked}"))
            .send()
            .await
            .expect("GET lease");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{fsync}");
        assert_eq!(get(&client, &url, "k3").await, None, "{fsync}");
        let k1 = client
            .get(format!("{url}/store/k1"))
            .send()
            .await
            .expect("GET");
        assert_eq!(k1.headers()["kv-lease"].as_bytes(), kept.as_bytes());
        // Still the lease its keys are on: revoking it takes them.
        let response = client
            .delete(format!("{url}/leases/{kept}"))
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(get(&client, &url, "k1").await, None, "{fsync}");
        assert!(server.stop().success());
    }
}
