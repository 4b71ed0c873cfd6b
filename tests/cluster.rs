//! Several kv-store nodes over a three-member etcd cluster (real `etcd`
//! processes on loopback): reads and watches across nodes, and what clients
//! see when an etcd member, a majority of them, or a kv-store node dies.
//!
//! Built with `--features etcd` only; needs the `etcd` binary (Debian's
//! `etcd-server`) and fails loudly without it.

// A binary of its own (it must run alone): it uses a part of the helpers.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use common::process::{ServerProcess, on_etcd};
use common::{PATIENCE, Sse, TestServer, problem, revision};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value as Json;
use tokio::sync::{Notify, watch};

/// Which member leads, from etcd's JSON gateway (`/v3/maintenance/status`
/// answers the leader's id and the member's own).
async fn leader(cluster: &Cluster) -> usize {
    let client = Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        for (index, member) in cluster.members.iter().enumerate() {
            let Ok(answer) = client
                .post(format!("{}/v3/maintenance/status", member.client_url))
                .body("{}")
                .send()
                .await
            else {
                continue;
            };
            let Ok(status) = answer.json::<Json>().await else {
                continue;
            };
            let leader = status["leader"].as_str().unwrap_or("0");
            if leader != "0" && Some(leader) == status["header"]["member_id"].as_str() {
                return index;
            }
        }
        assert!(Instant::now() < deadline, "the cluster elected a leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_one_node_is_read_and_watched_through_the_other() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let a = TestServer::start_on_etcd(&endpoints, &[]).await;
    let b = TestServer::start_on_etcd(&endpoints, &[]).await;
    let mut watch = Sse::new(b.get("/watch?prefix=").await);
    watch.snapshot().await;

    let mut written = Vec::new();
    for n in 0..20 {
        let (node, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let response = node.put(&format!("k{}", n % 5), &n.to_string()).await;
        assert!(response.status().is_success());
        let tag = revision(&response);
        // Read your write on the other node, with the same ETag.
        let read = other.get(&format!("/store/k{}", n % 5)).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(common::etag(&read), Some(format!("\"{tag}\"")));
        assert_eq!(read.text().await.expect("body"), n.to_string());
        written.push((tag, format!("k{}", n % 5), n.to_string()));
    }
    // The watcher on B saw every write, from both nodes, in revision order.
    let seen: Vec<(u64, String, String)> = watch
        .take(written.len())
        .await
        .into_iter()
        .map(|e| {
            let (key, value) = (e.key().to_owned(), e.value().unwrap_or("").to_owned());
            (e.id.expect("id"), key, value)
        })
        .collect();
    assert_eq!(seen, written);
}

/// Writes `key-N` through `node` until told to stop, noting each
/// acknowledged write and when it was acknowledged.
/// A lease is the cluster's, not a node's: granted through A, kept alive
/// through B, its keys' end seen by a watcher on C; the keep-alive through
/// B is 404 once it is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_granted_on_one_node_is_kept_alive_on_another_and_ends_on_a_third() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let a = TestServer::start_on_etcd(&endpoints, &[]).await;
    let b = TestServer::start_on_etcd(&endpoints, &[]).await;
    let c = TestServer::start_on_etcd(&endpoints, &[]).await;
    let granted = a.post_json("/leases", &serde_json::json!({"ttl": 3})).await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    let lease = common::json(granted).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for key in ["svc/1", "svc/2"] {
        let put = a
            .request(
                Method::PUT,
                &format!("/store/{}?lease={lease}", key.replace('/', "%2F")),
            )
            .body("up")
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), StatusCode::CREATED);
    }
    let mut watch = Sse::new(c.get("/watch?prefix=svc/").await);
    watch.snapshot().await;
    // Kept alive through B for twice its TTL: nothing ends.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let kept = b
            .request(Method::POST, &format!("/leases/{lease}/keepalive"))
            .send()
            .await
            .expect("keepalive");
        assert_eq!(kept.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(c.get("/store/svc%2F1").await.status(), StatusCode::OK);
    let read = common::json(b.get(&format!("/leases/{lease}?keys=true")).await).await;
    assert_eq!(read["keys"], serde_json::json!(["svc/1", "svc/2"]));
    // Left alone, it runs out: C's watcher sees both keys go at one revision.
    let gone = watch.take(2).await;
    let seen: Vec<_> = gone.iter().map(|e| (e.event.as_str(), e.key())).collect();
    assert_eq!(seen, [("delete", "svc/1"), ("delete", "svc/2")]);
    assert_eq!(gone[0].id, gone[1].id, "one revision");
    let late = b
        .request(Method::POST, &format!("/leases/{lease}/keepalive"))
        .send()
        .await
        .expect("keepalive");
    problem(late, StatusCode::NOT_FOUND).await;
}

async fn write_until(
    client: Client,
    url: String,
    prefix: &'static str,
    stop: Arc<Notify>,
    acked: watch::Sender<usize>,
) -> Vec<(String, Instant)> {
    let mut done = Vec::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for n in 0.. {
        let key = format!("{prefix}{n}");
        let request = client.put(format!("{url}/store/{key}")).body(key.clone());
        tokio::select! {
            () = &mut stopped => break,
            response = request.send() => {
                if response.is_ok_and(|r| r.status().is_success()) {
                    done.push((key, Instant::now()));
                    acked.send_modify(|acked| *acked += 1);
                }
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_etcd_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let flags = ["--etcd-timeout", "2s"];
    let a = TestServer::start_on_etcd(&endpoints, &flags).await;
    let b = TestServer::start_on_etcd(&endpoints, &flags).await;
    let stop = Arc::new(Notify::new());
    let (acked, mut progress) = watch::channel(0);
    let writers: Vec<_> = [(&a, "a-"), (&b, "b-")]
        .into_iter()
        .map(|(node, prefix)| {
            tokio::spawn(write_until(
                node.client.clone(),
                node.url(""),
                prefix,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    // Let the writers get going, then kill the leader mid-stream.
    let mut acked_at_least = async |n: usize| {
        tokio::time::timeout(PATIENCE, progress.wait_for(|acked| *acked >= n))
            .await
            .expect("writes go through")
            .map(|acked| *acked)
            .expect("writers running")
    };
    acked_at_least(100).await;
    let killed = leader(&cluster).await;
    cluster.members[killed].kill();
    let before = acked_at_least(0).await;
    // Writes resume after the election.
    acked_at_least(before + 100).await;
    stop.notify_waiters();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    // The longest pause in acknowledged writes around the kill.
    acknowledged.sort_by_key(|(_, at)| *at);
    let gap = acknowledged
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .max()
        .unwrap_or_default();
    println!(
        "leader election: longest pause between acknowledged writes {gap:?} ({} writes)",
        acknowledged.len()
    );
    for (key, _) in &acknowledged {
        for node in [&a, &b] {
            let read = node.get(&format!("/store/{key}")).await;
            let status = read.status();
            if status != StatusCode::OK {
                panic!("{key}: {status} {}", read.text().await.unwrap_or_default());
            }
            assert_eq!(&read.text().await.expect("body"), key);
        }
    }
    cluster.restart(killed);
    cluster.wait_healthy();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_whose_node_is_killed_resumes_on_the_other_with_nothing_missed() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let doomed = ServerProcess::spawn(on_etcd(&endpoints, &[]));
    let other = TestServer::start_on_etcd(&endpoints, &[]).await;
    let client = Client::new();
    let watch = client
        .get(format!("{}/watch?prefix=w/", doomed.url))
        .send()
        .await
        .expect("watch");
    let mut watch = Sse::new(watch);
    watch.snapshot().await;

    // Writes through the other node, some seen on the doomed one.
    let mut written = BTreeMap::new();
    for n in 0..30 {
        let response = other.put(&format!("w%2F{n}"), &n.to_string()).await;
        written.insert(revision(&response), format!("w/{n}"));
    }
    let seen = watch.take(10).await;
    let last = seen.last().and_then(|e| e.id).expect("an id");
    doomed.kill();
    drop(watch);
    for n in 30..40 {
        let response = other.put(&format!("w%2F{n}"), &n.to_string()).await;
        written.insert(revision(&response), format!("w/{n}"));
    }
    // Resume on the other node with the last id the dead one gave.
    let resumed = other
        .request(Method::GET, "/watch?prefix=w/")
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("watch");
    let mut resumed = Sse::new(resumed);
    let rest = resumed.take(30).await;
    let all: Vec<(u64, String)> = seen
        .iter()
        .chain(&rest)
        .map(|e| (e.id.expect("id"), e.key().to_owned()))
        .collect();
    let expected: Vec<(u64, String)> = written.into_iter().collect();
    assert_eq!(all, expected, "every write once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_requests_fail_fast_and_recover() {
    let mut cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let node = TestServer::start_on_etcd(&endpoints, &["--etcd-timeout", "1s"]).await;
    let kept = node.put("kept", "before").await;
    assert!(kept.status().is_success());
    let mut watch = Sse::new(node.get("/watch_key/kept").await);
    watch.snapshot().await;

    cluster.members[1].kill();
    cluster.members[2].kill();
    // Within --etcd-timeout (plus the HTTP round trip), never a hang.
    for (method, path) in [
        (Method::GET, "/store/kept"),
        (Method::PUT, "/store/new"),
        (Method::GET, "/store?prefix="),
        (Method::GET, "/status"),
    ] {
        let asked = Instant::now();
        let response = tokio::time::timeout(PATIENCE, node.request(method.clone(), path).send())
            .await
            .expect("an answer, not a hang")
            .expect("response");
        println!(
            "{method} {path} without quorum: answered in {:?}",
            asked.elapsed()
        );
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(body["type"], "urn:kv-store:problem:unavailable");
    }
    problem(node.get("/readyz").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(watch.next().await.is_none(), "the watch stream ends");

    cluster.restart(1);
    cluster.restart(2);
    cluster.wait_healthy();
    let deadline = Instant::now() + PATIENCE;
    while node.get("/readyz").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "the node is ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = node.get("/store/kept").await;
    assert_eq!(read.text().await.expect("body"), "before");
    let written = node.put("after", "quorum").await;
    assert_eq!(written.status(), StatusCode::CREATED);
    let resumed = node
        .request(Method::GET, "/watch_key/kept")
        .header("Last-Event-ID", revision(&kept).to_string())
        .send()
        .await
        .expect("watch");
    assert_eq!(resumed.status(), StatusCode::OK);
}

/// Runs openssl in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (Debian: apt-get install openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// A P-256 private key in `dir`/`name`.
fn private_key(dir: &std::path::Path, name: &str) {
    let args = [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        name,
    ];
    openssl(dir, &args);
}

/// A test CA and a certificate signed by it for `name` (`server` for
/// 127.0.0.1, or `client`), as PEM files in `dir`.
fn certificate(dir: &std::path::Path, name: &str, extension: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    private_key(dir, &key);
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-out", &csr, "-subj", &subject],
    );
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extension).expect("extension file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_talks_to_etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path();
    private_key(path, "ca.key");
    openssl(
        path,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=kv-store test CA",
        ],
    );
    certificate(
        path,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    certificate(path, "client", "extendedKeyUsage=clientAuth\n");
    let file = |name: &str| path.join(name).display().to_string();
    let cluster = Cluster::start_tls(
        &path.join("ca.pem"),
        &path.join("server.pem"),
        &path.join("server.key"),
    );
    let endpoints = cluster.endpoints();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let node = TestServer::start_on_etcd(
        &endpoints,
        &["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key],
    )
    .await;
    let written = node.put("secret", "over tls").await;
    assert_eq!(written.status(), StatusCode::CREATED);
    assert_eq!(
        node.get("/store/secret").await.text().await.expect("body"),
        "over tls"
    );
    assert_eq!(node.get("/readyz").await.status(), StatusCode::OK);

    // Without a client certificate etcd refuses the connection: 503.
    let refused =
        TestServer::start_on_etcd(&endpoints, &["--etcd-ca", &ca, "--etcd-timeout", "1s"]).await;
    problem(
        refused.get("/store/secret").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    problem(
        refused.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_larger_than_etcds_txn_limit_is_413_before_it_is_sent() {
    let cluster = Cluster::start(1);
    let node = TestServer::start_on_etcd(&cluster.endpoints(), &["--etcd-max-txn-ops", "2"]).await;
    let ops = serde_json::json!([
        {"method": "PUT", "key": "a", "value": "1"},
        {"method": "PUT", "key": "b", "value": "2"},
        {"method": "PUT", "key": "c", "value": "3"}
    ]);
    let body = problem(
        node.post_json("/batch", &ops).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(
        body["detail"],
        "the batch has 3 operations; etcd takes at most 2 in one transaction (--etcd-max-txn-ops)"
    );
    assert_eq!(node.get("/store/a").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_starts_while_etcd_is_down_and_answers_503() {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let endpoints = format!("http://127.0.0.1:{port}");
    let node = TestServer::start_on_etcd(&endpoints, &["--etcd-timeout", "1s"]).await;
    for path in ["/store/k", "/readyz", "/watch_key/k"] {
        let response = tokio::time::timeout(PATIENCE, node.get(path))
            .await
            .expect("an answer, not a hang");
        problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    assert_eq!(node.get("/healthz").await.status(), StatusCode::OK);
}
