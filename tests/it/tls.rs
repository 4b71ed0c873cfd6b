//! HTTPS (HTTP/1.1 and h2 by ALPN), client certificates, certificate
//! reload, and HTTP/2 in clear text (h2c). Certificates come from a test CA
//! made with rcgen; the client is curl, as a user would run it.

use crate::common;

use std::process::Command;

use crate::common::pki::{Pki, path_str};
use crate::common::process::{ServerProcess, command};
use crate::common::{Sse, TestServer};
use reqwest::StatusCode;

/// Runs curl with `args`; returns its exit code, what `-w` wrote and
/// stderr.
fn curl(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs (Debian: apt-get install curl)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http1_and_h2_by_alpn_and_refuses_plain_http() {
    let pki = Pki::new();
    pki.issue("server", "kv-store", false, false);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server =
        TestServer::start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let ca = pki.path("ca.pem");
    let ca = path_str(&ca);
    let put = format!("{base}/store/k");
    let (code, out, err) = curl(&[
        "--cacert",
        ca,
        "--http1.1",
        "-X",
        "PUT",
        "-d",
        "v",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &put,
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "1.1 201"), "{err}");
    let (code, out, err) = curl(&["--cacert", ca, "--http2", "-w", " %{http_version}", &put]);
    assert_eq!((code, out.as_str()), (Some(0), "v 2"), "{err}");
    // A watch over h2.
    let (_, out, _) = curl(&[
        "--cacert",
        ca,
        "--http2",
        "-N",
        "--max-time",
        "2",
        &format!("{base}/watch_key/k"),
    ]);
    assert!(
        out.contains("event: snapshot") && out.contains("event: sync"),
        "{out}"
    );
    // Clear text on the TLS port gets no HTTP answer.
    let (code, _, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", server.addr.port())]);
    assert_ne!(code, Some(0));
    // A client that does not trust the CA refuses the server.
    let (code, _, _) = curl(&[&format!("{base}/healthz")]);
    assert_eq!(
        code,
        Some(60),
        "curl: peer certificate cannot be authenticated"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_refused_by_clients() {
    let pki = Pki::new();
    pki.issue("old", "kv-store", false, true);
    let (cert, key) = (pki.path("old.pem"), pki.path("old.key"));
    let server =
        TestServer::start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]).await;
    let ca = pki.path("ca.pem");
    let url = format!("https://127.0.0.1:{}/healthz", server.addr.port());
    let (code, _, err) = curl(&["--cacert", path_str(&ca), "-v", &url]);
    assert_eq!(code, Some(60), "{err}");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    let pki = Pki::new();
    pki.issue("server", "kv-store", false, false);
    pki.issue("client", "deploy-bot", true, false);
    let flags = pki.server_flags(true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start(&flags).await;
    let ca = pki.path("ca.pem");
    let url = format!("https://127.0.0.1:{}/healthz", server.addr.port());
    let (code, _, _) = curl(&["--cacert", path_str(&ca), &url]);
    assert_ne!(code, Some(0), "no client certificate: no connection");
    let (client_cert, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    let (code, out, err) = curl(&[
        "--cacert",
        path_str(&ca),
        "--cert",
        path_str(&client_cert),
        "--key",
        path_str(&client_key),
        &url,
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "OK"), "{err}");
}

#[test]
fn sighup_serves_a_renewed_certificate_without_a_restart() {
    let pki = Pki::new();
    pki.issue("server", "first", false, false);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let data = tempfile::tempdir().expect("data dir");
    let server = ServerProcess::spawn(command(
        data.path(),
        &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)],
    ));
    let ca = pki.path("ca.pem");
    let subject = || {
        let (code, _, err) = curl(&[
            "--cacert",
            path_str(&ca),
            "-v",
            &format!("{}/healthz", server.url),
        ]);
        assert_eq!(code, Some(0), "{err}");
        err
    };
    assert!(subject().contains("CN=first"));
    pki.issue("server", "second", false, false);
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    loop {
        let line = server
            .logs
            .recv_timeout(common::PATIENCE)
            .expect("the server logs the reload");
        if line.contains("reloaded the TLS certificate") {
            break;
        }
    }
    assert!(subject().contains("CN=second"));
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_carries_requests_and_several_watch_streams_on_one_connection() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("an h2c client");
    let mut watches = Vec::new();
    for key in ["a", "b", "c"] {
        let response = client
            .get(server.url(&format!("/watch_key/{key}")))
            .send()
            .await
            .expect("watch");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let mut watch = Sse::new(response);
        watch.snapshot().await;
        watches.push(watch);
    }
    for key in ["a", "b", "c"] {
        let put = client
            .put(server.url(&format!("/store/{key}")))
            .body(format!("value of {key}"))
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), StatusCode::CREATED);
    }
    for (watch, key) in watches.iter_mut().zip(["a", "b", "c"]) {
        let event = watch.next().await.expect("the put");
        assert_eq!(event.value(), Some(format!("value of {key}").as_str()));
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|line| line == "kv_connections 1"),
        "three watches and the requests on one connection: {metrics}"
    );
}
