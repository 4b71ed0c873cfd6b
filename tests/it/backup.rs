//! Online backup and restore: `GET /backup` under concurrent writers, then
//! `kv-store restore` and a server on the data dir it built, which serves
//! exactly the store as it was at the backup's revision.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::process::ServerProcess;
use crate::common::{TestServer, etcd, json, problem, revision};
use reqwest::StatusCode;
use serde_json::json;

const KEYS: usize = 5_000;
const WRITERS: usize = 8;

/// `kv-store restore FILE --data-dir DIR`: its exit code and stderr.
fn restore(file: &std::path::Path, dir: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kv-store"))
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("kv-store runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_writers_restores_to_its_revision_exactly() {
    let server = TestServer::start(&[]).await;
    if etcd::wanted() {
        let refused = problem(server.get("/backup").await, StatusCode::NOT_IMPLEMENTED).await;
        assert!(
            refused["detail"]
                .as_str()
                .is_some_and(|d| d.contains("etcdctl snapshot save")),
            "{refused}"
        );
        return;
    }
    // The store before: keys (values as PUT), one on a lease, one with a TTL.
    let mut model: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<_> = chunk
            .iter()
            .map(|n| json!({"method": "PUT", "key": format!("k{n:05}"), "value": "0"}))
            .collect();
        let results = json(server.post_json("/batch", &json!(ops)).await).await;
        for (n, result) in chunk.iter().zip(results.as_array().expect("results")) {
            let at = result["revision"].as_u64().expect("a revision");
            model.insert(format!("k{n:05}"), ("0".to_owned(), at));
        }
    }
    let lease = json(
        server
            .post_json("/leases", &json!({"ttl": 600, "id": "00000000000000c1"}))
            .await,
    )
    .await;
    assert_eq!(lease["id"], "00000000000000c1");
    let on_lease = server
        .request(reqwest::Method::PUT, "/store/leased?lease=c1")
        .body("on a lease")
        .send()
        .await
        .expect("PUT");
    model.insert("leased".into(), ("on a lease".into(), revision(&on_lease)));
    let ttl = server
        .request(reqwest::Method::PUT, "/store/ttl?ttl=600")
        .body("for a while")
        .send()
        .await
        .expect("PUT");
    model.insert("ttl".into(), ("for a while".into(), revision(&ttl)));

    // Writers overwrite keys while the backup is read.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, url, stop) = (server.client.clone(), server.url(""), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            let mut n = writer;
            while !stop.load(Ordering::Relaxed) {
                n = (n * 7919 + 13) % KEYS;
                let (key, value) = (format!("k{n:05}"), format!("w{writer}-{}", written.len()));
                let response = client
                    .put(format!("{url}/store/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                    .expect("PUT");
                written.push((revision(&response), key, value));
            }
            written
        }));
    }
    let backup = server.get("/backup").await;
    assert_eq!(backup.status(), StatusCode::OK);
    let at: u64 = backup.headers()["kv-revision"]
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("Kv-Revision");
    let bytes = backup.bytes().await.expect("the backup");
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await.expect("a writer"));
    }
    writes.sort_unstable();
    assert!(
        writes.iter().any(|(at_write, ..)| *at_write > at),
        "some writes came after the backup's revision"
    );
    for (written_at, key, value) in writes.into_iter().filter(|(r, ..)| *r <= at) {
        model.insert(key, (value, written_at));
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kv.backup");
    std::fs::write(&file, &bytes).expect("saved");
    let data = dir.path().join("data");
    assert_eq!(restore(&file, &data), (Some(0), String::new()));

    // A server on it serves the store at the backup's revision, exactly.
    let restored = ServerProcess::start(&data, &[]);
    let client = reqwest::Client::new();
    let listing = json(
        client
            .get(format!("{}/store?prefix=&limit=10000", restored.url))
            .send()
            .await
            .expect("a listing"),
    )
    .await;
    assert_eq!(listing["revision"], at);
    assert_eq!(listing["next"], serde_json::Value::Null);
    let served: BTreeMap<String, (String, u64)> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let key = item["key"].as_str().expect("a key").to_owned();
            let value = item["value"].as_str().expect("a value").to_owned();
            (key, (value, item["revision"].as_u64().expect("a revision")))
        })
        .collect();
    assert_eq!(served.len(), model.len());
    assert!(served == model, "the restored store differs from the model");
    let leased = listing["items"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["key"] == "leased"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(leased["lease"], "00000000000000c1");
    let lease = client
        .get(format!("{}/leases/c1", restored.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(lease.status(), StatusCode::OK);

    // A file cut short, or altered, is refused and builds nothing.
    let cut = dir.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("saved");
    let (code, stderr) = restore(&cut, &dir.path().join("cut"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(!dir.path().join("cut").join("kv-store.redb").exists());
    let mut altered = bytes.to_vec();
    let at_value = altered
        .windows(3)
        .position(|window| window == b"\"w0")
        .map_or(altered.len() / 2, |at| at + 2);
    altered[at_value] = b'X';
    let changed = dir.path().join("altered.backup");
    std::fs::write(&changed, &altered).expect("saved");
    let (code, stderr) = restore(&changed, &dir.path().join("altered"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("altered"), "{stderr}");
    // Nor into a data dir that holds a store.
    let (code, stderr) = restore(&file, &data);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("already holds a store"), "{stderr}");
}

#[tokio::test]
async fn a_backup_needs_an_admin_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let minted = Command::new(env!("CARGO_BIN_EXE_kv-store"))
        .args(["token", "new", "--name", "app", "--write", ""])
        .output()
        .expect("kv-store token new");
    let text = String::from_utf8_lossy(&minted.stdout).into_owned();
    let token = text.lines().next().expect("a token").to_owned();
    let block = &text[text.find("[[token]]").expect("a block")..];
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, block).expect("auth file");
    let path = file.to_str().expect("a UTF-8 path");
    // Access control is the same on every backend; on etcd the backup is
    // 501 anyway (above).
    let server = TestServer::start_memory(&["--auth-file", path]).await;
    let refused = server
        .request(reqwest::Method::GET, "/backup")
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    problem(refused, StatusCode::FORBIDDEN).await;
}
