//! Access control: bearer tokens from `--auth-file`, scoped to key prefixes.

use crate::common;

use std::path::Path;

use crate::common::process::{ServerProcess, command};
use crate::common::{Sse, TestServer, json, problem};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

/// A token of an auth file: (secret, name, read, write, admin).
type TestToken = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    bool,
);

/// Tokens of the auth file the tests use.
const TOKENS: &[TestToken] = &[
    (
        "kvs_deploy",
        "deploy-bot",
        &["config/"],
        &["config/deploy/"],
        false,
    ),
    ("kvs_admin", "ops", &[], &[], true),
    ("kvs_all", "everything", &[], &[""], false),
    ("kvs_accent", "accent", &["é/"], &[], false),
];

/// The `[[token]]` blocks for `tokens`, as `kv-store token new` prints them.
fn auth_file(tokens: &[TestToken]) -> String {
    let list = |items: &[&str]| {
        let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    tokens
        .iter()
        .map(|(secret, name, read, write, admin)| {
            format!(
                "[[token]]\nname = {name:?}\nsha256 = {:?}\nread = {}\nwrite = {}\nadmin = {admin}\n\n",
                kv_store::auth::new_token::digest_hex(secret),
                list(read),
                list(write),
            )
        })
        .collect()
}

fn write_auth_file(dir: &Path, tokens: &[TestToken]) -> String {
    let path = dir.join("tokens.toml");
    std::fs::write(&path, auth_file(tokens)).expect("auth file written");
    path.display().to_string()
}

async fn server_with_tokens(flags: &[&str]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_auth_file(dir.path(), TOKENS);
    let mut all = vec!["--auth-file", path.as_str()];
    all.extend_from_slice(flags);
    (TestServer::start(&all).await, dir)
}

/// One request of every kind the API has, as a builder.
fn every_kind(server: &TestServer) -> Vec<(&'static str, RequestBuilder)> {
    let json_body = |builder: RequestBuilder, body: serde_json::Value| {
        builder
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    vec![
        ("get", server.request(Method::GET, "/store/config%2Fdb")),
        (
            "put",
            server.request(Method::PUT, "/store/config%2Fdb").body("v"),
        ),
        (
            "delete",
            server.request(Method::DELETE, "/store/config%2Fdb"),
        ),
        (
            "cas",
            json_body(
                server.request(Method::POST, "/store/cas/config%2Fdb"),
                json!({"expected": null, "new": "v"}),
            ),
        ),
        (
            "batch",
            json_body(
                server.request(Method::POST, "/batch"),
                json!([{"method": "GET", "key": "config/db"}]),
            ),
        ),
        (
            "txn",
            json_body(
                server.request(Method::POST, "/txn"),
                json!({"then": [{"op": "GET", "key": "config/db"}]}),
            ),
        ),
        ("leases", server.request(Method::GET, "/leases")),
        (
            "watch key",
            server.request(Method::GET, "/watch_key/config%2Fdb"),
        ),
        (
            "watch prefix",
            server.request(Method::GET, "/watch?prefix=config/"),
        ),
        (
            "watch keys",
            json_body(server.request(Method::POST, "/watch"), json!(["config/db"])),
        ),
        ("list", server.request(Method::GET, "/store?prefix=config/")),
        (
            "delete prefix",
            server.request(Method::DELETE, "/store?prefix=config/"),
        ),
        ("status", server.request(Method::GET, "/status")),
        ("metrics", server.request(Method::GET, "/metrics")),
        ("unknown route", server.request(Method::GET, "/nowhere")),
    ]
}

#[tokio::test]
async fn every_request_but_probes_and_docs_needs_a_known_token() {
    let (server, _dir) = server_with_tokens(&[]).await;
    for (kind, request) in every_kind(&server) {
        let response = request.send().await.expect("request");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"kv-store\""),
            "{kind}"
        );
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "urn:kv-store:problem:unauthorized", "{kind}");
    }
    for (kind, request) in every_kind(&server) {
        let response = request
            .bearer_auth("kvs_guessed")
            .send()
            .await
            .expect("request");
        let challenge = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            challenge.as_ref().map(|v| v.as_bytes()),
            Some(&b"Bearer realm=\"kv-store\", error=\"invalid_token\""[..]),
            "{kind}"
        );
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    for path in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/openapi.yaml",
        "/docs",
    ] {
        assert_eq!(server.get(path).await.status(), StatusCode::OK, "{path}");
    }
    // Two Authorization headers: which one counts would be a guess (a
    // proxy may judge by the other), so neither does; on the fast path
    // and the long way alike.
    for path in ["/store/config", "/store/config%2Fdb", "/status"] {
        let twice = server
            .request(Method::GET, path)
            .header("authorization", "Bearer kvs_admin")
            .header("authorization", "Bearer kvs_all")
            .send()
            .await
            .expect("request");
        assert!(twice.headers().get("www-authenticate").is_none(), "{path}");
        let body = problem(twice, StatusCode::BAD_REQUEST).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("several Authorization headers"), "{detail}");
    }
    // A token of the right kind but another scheme is no token.
    let basic = server
        .request(Method::GET, "/store/config%2Fdb")
        .header("authorization", "Basic a3ZzX2RlcGxveQ==")
        .send()
        .await
        .expect("request");
    problem(basic, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn scopes_decide_and_a_403_names_the_key_or_prefix() {
    let (server, _dir) = server_with_tokens(&[]).await;
    let as_bot =
        |method: Method, path: &str| server.request(method, path).bearer_auth("kvs_deploy");
    let status = async |builder: RequestBuilder| builder.send().await.expect("request").status();

    // Reads under config/, writes under config/deploy/.
    assert_eq!(
        status(as_bot(Method::GET, "/store/config%2Fdb")).await,
        StatusCode::NOT_FOUND
    );
    let put = as_bot(Method::PUT, "/store/config%2Fdeploy%2Fv").body("1");
    assert_eq!(status(put).await, StatusCode::CREATED);
    let denied = as_bot(Method::PUT, "/store/config%2Fdb").body("1");
    let body = problem(denied.send().await.expect("PUT"), StatusCode::FORBIDDEN).await;
    assert_eq!(body["type"], "urn:kv-store:problem:forbidden");
    assert_eq!(
        body["detail"],
        "token \"deploy-bot\" may not write key \"config/db\""
    );
    // `config/` covers neither `config` nor `configs/`.
    for path in ["/store/config", "/store/configs%2Fx"] {
        let body = problem(
            as_bot(Method::GET, path).send().await.expect("GET"),
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("may not read key")
        );
    }
    let cas = as_bot(Method::POST, "/store/cas/config%2Fdb")
        .header("content-type", "application/json")
        .body(json!({"expected": null, "new": "x"}).to_string());
    assert_eq!(status(cas).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(as_bot(Method::DELETE, "/store/config%2Fdb")).await,
        StatusCode::FORBIDDEN
    );

    // A batch with one op out of scope applies nothing.
    let batch = as_bot(Method::POST, "/batch")
        .header("content-type", "application/json")
        .body(
            json!([
                {"method": "PUT", "key": "config/deploy/w", "value": "1"},
                {"method": "PUT", "key": "config/db", "value": "1"}
            ])
            .to_string(),
        );
    let body = problem(batch.send().await.expect("batch"), StatusCode::FORBIDDEN).await;
    assert_eq!(
        body["detail"],
        "token \"deploy-bot\" may not write key \"config/db\""
    );
    assert_eq!(
        status(as_bot(Method::GET, "/store/config%2Fdeploy%2Fw")).await,
        StatusCode::NOT_FOUND,
        "nothing applied"
    );

    // A prefix only when one scope covers all of it.
    for (path, expected) in [
        ("/store?prefix=config/", StatusCode::OK),
        ("/store?prefix=config/a", StatusCode::OK),
        ("/store?prefix=config", StatusCode::FORBIDDEN),
        ("/store?prefix=", StatusCode::FORBIDDEN),
        ("/watch?prefix=config", StatusCode::FORBIDDEN),
        ("/watch_key/configs", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(status(as_bot(Method::GET, path)).await, expected, "{path}");
    }
    let watched = as_bot(Method::POST, "/watch")
        .header("content-type", "application/json")
        .body(json!({"keys": ["config/db"], "prefixes": ["config"]}).to_string());
    let body = problem(watched.send().await.expect("watch"), StatusCode::FORBIDDEN).await;
    assert_eq!(
        body["detail"],
        "token \"deploy-bot\" may not read every key under prefix \"config\""
    );
    let mut watch = Sse::new(
        as_bot(Method::GET, "/watch?prefix=config/")
            .send()
            .await
            .expect("watch"),
    );
    watch.snapshot().await;
    for (path, expected) in [
        ("/store?prefix=config/deploy/", StatusCode::OK),
        ("/store?prefix=config/", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            status(as_bot(Method::DELETE, path)).await,
            expected,
            "{path}"
        );
    }

    // Status and metrics are for admin tokens.
    for path in ["/status", "/metrics"] {
        assert_eq!(
            status(as_bot(Method::GET, path)).await,
            StatusCode::FORBIDDEN
        );
        let admin = server.request(Method::GET, path).bearer_auth("kvs_admin");
        assert_eq!(status(admin).await, StatusCode::OK, "{path}");
    }
    let admin_get = server
        .request(Method::GET, "/store/k")
        .bearer_auth("kvs_admin");
    assert_eq!(
        status(admin_get).await,
        StatusCode::FORBIDDEN,
        "admin is not a key scope"
    );

    // The empty prefix is every key; UTF-8 prefixes are bytes.
    let all = |method: Method, path: &str| server.request(method, path).bearer_auth("kvs_all");
    assert_eq!(
        status(all(Method::GET, "/store?prefix=")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(all(Method::PUT, "/store/%C3%A9%2Fx").body("v")).await,
        StatusCode::CREATED
    );
    let accent = |path: &str| server.request(Method::GET, path).bearer_auth("kvs_accent");
    assert_eq!(status(accent("/store/%C3%A9%2Fx")).await, StatusCode::OK);
    assert_eq!(status(accent("/store/e%2Fx")).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(accent("/store?prefix=%C3%A9/")).await,
        StatusCode::OK
    );
}

/// A transaction is checked as a whole before anything runs: every key
/// and prefix of its guards and of both branches, whichever would run.
#[tokio::test]
async fn a_transaction_needs_every_key_it_names_in_scope() {
    let (server, _dir) = server_with_tokens(&[]).await;
    let txn = async |body: serde_json::Value| {
        server
            .request(Method::POST, "/txn")
            .bearer_auth("kvs_deploy")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("txn")
    };
    let write = json!({"op": "PUT", "key": "config/deploy/v", "value": "1"});
    let refused = [
        (
            json!({"guards": [{"key": "secrets/x", "compare": "ABSENT"}], "then": [write]}),
            "token \"deploy-bot\" may not read key \"secrets/x\"",
        ),
        (
            json!({"guards": [{"prefix": "config", "compare": "ABSENT"}], "then": [write]}),
            "token \"deploy-bot\" may not read every key under prefix \"config\"",
        ),
        (
            // The else branch would not run, and is checked all the same.
            json!({"then": [write], "else": [{"op": "DELETE", "key": "config/db"}]}),
            "token \"deploy-bot\" may not write key \"config/db\"",
        ),
        (
            json!({"then": [write, {"op": "DELETE", "prefix": "config/"}]}),
            "token \"deploy-bot\" may not write every key under prefix \"config/\"",
        ),
        (
            json!({"then": [write, {"op": "GET", "prefix": "configs/"}]}),
            "token \"deploy-bot\" may not read every key under prefix \"configs/\"",
        ),
    ];
    for (body, detail) in refused {
        let problem = problem(txn(body.clone()).await, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .ends_with(detail),
            "{body}: {problem}"
        );
    }
    let applied = txn(json!({
        "guards": [{"prefix": "config/", "compare": "ABSENT"}],
        "then": [write, {"op": "GET", "prefix": "config/"}]
    }))
    .await;
    assert_eq!(applied.status(), StatusCode::OK);
    assert_eq!(json(applied).await["succeeded"], true, "nothing ran before");
}

/// A lease is its granter's: another token may not keep it alive, read or
/// revoke it (an admin token may), nor see it listed. Putting a key on it
/// needs only the key's scope.
#[tokio::test]
async fn a_lease_is_used_only_by_the_token_that_granted_it() {
    let (server, _dir) = server_with_tokens(&[]).await;
    let as_token = |token: &str, method: Method, path: &str| {
        server.request(method, path).bearer_auth(token.to_owned())
    };
    let granted = as_token("kvs_deploy", Method::POST, "/leases")
        .header("content-type", "application/json")
        .body(json!({"ttl": 60}).to_string())
        .send()
        .await
        .expect("grant");
    assert_eq!(granted.status(), StatusCode::CREATED);
    let granted = json(granted).await;
    assert_eq!(granted["owner"], "deploy-bot");
    let lease = granted["id"].as_str().expect("id").to_owned();
    let put = as_token(
        "kvs_deploy",
        Method::PUT,
        &format!("/store/config%2Fdeploy%2Fv?lease={lease}"),
    )
    .body("1");
    assert_eq!(put.send().await.expect("PUT").status(), StatusCode::CREATED);

    let uses = [
        (Method::GET, format!("/leases/{lease}")),
        (Method::POST, format!("/leases/{lease}/keepalive")),
        (Method::DELETE, format!("/leases/{lease}")),
    ];
    for (method, path) in &uses[..2] {
        let other = as_token("kvs_all", method.clone(), path).send().await;
        let body = problem(other.expect("request"), StatusCode::FORBIDDEN).await;
        assert_eq!(
            body["detail"],
            format!("token \"everything\" may not use lease {lease}: another token granted it")
        );
        for token in ["kvs_deploy", "kvs_admin"] {
            let own = as_token(token, method.clone(), path).send().await;
            assert_eq!(
                own.expect("request").status(),
                StatusCode::OK,
                "{token} {path}"
            );
        }
    }
    let listed = |token: &'static str| {
        let request = as_token(token, Method::GET, "/leases");
        async move { json(request.send().await.expect("list")).await["leases"].clone() }
    };
    assert_eq!(listed("kvs_all").await, json!([]));
    assert_eq!(
        listed("kvs_admin").await,
        json!([{"id": lease, "owner": "deploy-bot"}])
    );
    let (method, path) = &uses[2];
    let revoke = as_token("kvs_all", method.clone(), path).send().await;
    problem(revoke.expect("revoke"), StatusCode::FORBIDDEN).await;
    let revoke = as_token("kvs_deploy", method.clone(), path).send().await;
    assert_eq!(revoke.expect("revoke").status(), StatusCode::OK);
}

/// The fast path (a plain key) and poem-openapi (the same key
/// percent-encoded) answer a token's requests alike: two servers get the
/// same requests, one each way.
#[tokio::test]
async fn the_fast_path_checks_tokens_as_the_operations_do() {
    let (fast, _fast_dir) = server_with_tokens(&[]).await;
    let (long, _long_dir) = server_with_tokens(&[]).await;
    let cases: &[(Method, &str, Option<&str>)] = &[
        (Method::GET, "config", None),
        (Method::GET, "config", Some("kvs_deploy")),
        (Method::GET, "config", Some("kvs_guessed")),
        (Method::GET, "config", Some("kvs_all")),
        (Method::PUT, "config", Some("kvs_deploy")),
        (Method::PUT, "config", Some("kvs_all")),
        (Method::PUT, "other", None),
        (Method::DELETE, "config", Some("kvs_deploy")),
        (Method::DELETE, "config", Some("kvs_all")),
        (Method::DELETE, "config", None),
    ];
    for (method, key, token) in cases {
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        let mut answers = Vec::new();
        for (server, path) in [
            (&fast, format!("/store/{key}")),
            (&long, format!("/store/{encoded}")),
        ] {
            let mut request = server.request(method.clone(), &path).body("v");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("request");
            let status = response.status();
            let challenge = response.headers().get("www-authenticate").cloned();
            let body = response.text().await.expect("body");
            answers.push((status, challenge, body));
        }
        assert_eq!(
            answers[0], answers[1],
            "{method} {key} {token:?}: fast path vs poem-openapi"
        );
    }
}

#[tokio::test]
async fn with_tokens_the_rate_limit_is_per_token_and_per_ip_before() {
    let (server, _dir) = server_with_tokens(&["--rate-limit", "1", "--rate-burst", "3"]).await;
    let get = |token: &str| {
        server
            .request(Method::GET, "/store/config%2Fdb")
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            get("kvs_deploy").await.expect("GET").status(),
            StatusCode::NOT_FOUND
        );
    }
    problem(
        get("kvs_deploy").await.expect("GET"),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    // Another token from the same address has its own budget.
    assert_eq!(
        get("kvs_all").await.expect("GET").status(),
        StatusCode::NOT_FOUND
    );
    // Wrong tokens are counted by address: guessing is throttled.
    for _ in 0..3 {
        problem(
            get("kvs_guess").await.expect("GET"),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    problem(
        get("kvs_guess").await.expect("GET"),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
}

#[tokio::test]
async fn without_an_auth_file_nothing_changes() {
    let server = TestServer::start(&[]).await;
    assert_eq!(server.put("k", "v").await.status(), StatusCode::CREATED);
    // A token sent to a server without tokens is ignored.
    let with_token = server
        .request(Method::GET, "/store/k")
        .bearer_auth("kvs_anything")
        .send()
        .await
        .expect("GET");
    assert_eq!(with_token.status(), StatusCode::OK);
    assert!(json(server.get("/status").await).await["revision"].is_u64());
}

#[test]
fn sighup_reloads_tokens_ends_a_removed_tokens_streams_and_keeps_the_old_on_a_bad_file() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("data dir");
    let path = write_auth_file(dir.path(), TOKENS);
    let server = ServerProcess::spawn({
        let mut command = command(data.path(), &["--auth-file", &path]);
        command.env("RUST_LOG", "info");
        command
    });
    let client = reqwest::Client::new();
    let url = server.url.clone();
    let get = |token: &'static str| {
        let request = client
            .get(format!("{url}/store/config%2Fdb"))
            .bearer_auth(token);
        async move { request.send().await.expect("GET").status() }
    };
    runtime.block_on(async {
        let watch = client
            .get(format!("{url}/watch_key/config%2Fdb"))
            .bearer_auth("kvs_deploy")
            .send()
            .await
            .expect("watch");
        let mut watch = Sse::new(watch);
        watch.snapshot().await;

        // deploy-bot removed, a new token added.
        let new: &[TestToken] = &[("kvs_new", "newcomer", &["config/"], &[], false), TOKENS[1]];
        write_auth_file(dir.path(), new);
        hangup(server.pid());
        assert!(
            watch.next().await.is_none(),
            "the removed token's stream ends"
        );
        assert_eq!(get("kvs_new").await, StatusCode::NOT_FOUND);
        assert_eq!(get("kvs_deploy").await, StatusCode::UNAUTHORIZED);

        // A bad file keeps the tokens that were there.
        std::fs::write(dir.path().join("tokens.toml"), "[[token]\n").expect("written");
        hangup(server.pid());
        let logged = wait_for_log(&server, "kept the old tokens");
        assert!(logged.contains("not valid"), "{logged}");
        assert_eq!(get("kvs_new").await, StatusCode::NOT_FOUND);
    });
    server.stop();
}

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for a log line of the server containing `text`.
fn wait_for_log(server: &ServerProcess, text: &str) -> String {
    loop {
        let line = server
            .logs
            .recv_timeout(common::PATIENCE)
            .expect("the server logs it");
        if line.contains(text) {
            return line;
        }
    }
}

#[test]
fn without_an_auth_file_a_server_on_a_public_address_warns() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().expect("data dir");
    let mut child = command(data.path(), &["--listen", "0.0.0.0:0"])
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut before = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains("listening on") {
            break;
        }
        before.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        before
            .iter()
            .any(|line| line.contains("WARN") && line.contains("no --auth-file")),
        "{before:?}"
    );
}

/// A lock's (or an election's) name is checked as a key prefix: taking or
/// releasing it needs write scope on `NAME/`, reading it or fencing a write
/// on it read scope.
#[tokio::test]
async fn lock_and_election_names_are_in_scope_like_keys() {
    let (server, _dir) = server_with_tokens(&[]).await;
    let as_bot =
        |method: Method, path: &str| server.request(method, path).bearer_auth("kvs_deploy");
    let lock = |name: &str| {
        as_bot(Method::POST, &format!("/locks/{name}"))
            .header("content-type", "application/json")
            .body(json!({"ttl": 30}).to_string())
    };
    let held = lock("config%2Fdeploy%2Fjob").send().await.expect("POST");
    assert_eq!(held.status(), StatusCode::OK);
    let token = json(held).await["token"].clone();
    for (what, request) in [
        ("lock outside write scope", lock("config%2Fdb")),
        (
            "campaign outside write scope",
            as_bot(Method::POST, "/elections/jobs")
                .header("content-type", "application/json")
                .body(json!({"value": "v", "ttl": 30}).to_string()),
        ),
        (
            "read outside read scope",
            as_bot(Method::GET, "/locks/jobs"),
        ),
        (
            "observe outside read scope",
            as_bot(Method::GET, "/elections/jobs/observe"),
        ),
        (
            "fence on a lock outside read scope",
            as_bot(Method::PUT, "/store/config%2Fdeploy%2Fx")
                .header("If-Fence", "jobs=1")
                .body("v"),
        ),
    ] {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        problem(response, StatusCode::FORBIDDEN).await;
    }
    // Inside its scopes: read the lock, fence a write on it, release it.
    let read = as_bot(Method::GET, "/locks/config%2Fdeploy%2Fjob")
        .send()
        .await
        .expect("GET");
    assert_eq!(json(read).await["holder"]["token"], token);
    let fenced = as_bot(Method::PUT, "/store/config%2Fdeploy%2Fx")
        .header("If-Fence", format!("config/deploy/job={token}"))
        .body("v")
        .send()
        .await
        .expect("PUT");
    assert_eq!(fenced.status(), StatusCode::CREATED);
    let released = as_bot(
        Method::DELETE,
        &format!("/locks/config%2Fdeploy%2Fjob?token={token}"),
    )
    .send()
    .await
    .expect("DELETE");
    assert_eq!(released.status(), StatusCode::NO_CONTENT);
}
