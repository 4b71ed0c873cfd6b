//! The binary: flags, `--print-openapi`, and shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::common::{PATIENCE, Sse};

const BIN: &str = env!("CARGO_BIN_EXE_kv-store");

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn bad_flag_values_exit_2_with_a_message() {
    for (args, env) in [
        (vec!["--rate-limit", "lots"], vec![]),
        (vec!["--listen", "nowhere"], vec![]),
        (vec!["--log-format", "xml"], vec![]),
        (vec!["--max-key-bytes", "0"], vec![]),
        (vec!["--history", "-5"], vec![]),
        (vec!["--header-timeout", "soon"], vec![]),
        (vec!["--idle-timeout", "0s"], vec![]),
        (vec!["--watch-heartbeat", "0ms"], vec![]),
        (vec!["--max-connections", "0"], vec![]),
        (vec!["--no-such-flag"], vec![]),
        (vec!["--backend", "postgres"], vec![]),
        (vec!["--etcd-user", "kv"], vec![]),
        (vec!["--etcd-timeout", "never"], vec![]),
        (vec![], vec![("KV_MAX_BATCH_OPS", "many")]),
    ] {
        let output = run(&args, &env);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_data_dir_with_the_etcd_backend_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("UTF-8 path");
    let output = run(
        &[
            "--backend",
            "etcd",
            "--data-dir",
            path,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("NO_COLOR", "1")],
    );
    assert_eq!(output.status.code(), Some(2));
    let logged = String::from_utf8_lossy(&output.stdout);
    assert!(
        logged.contains("--data-dir keeps a memory store on disk"),
        "{logged}"
    );
}

#[test]
fn a_bad_auth_file_exits_2_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("tokens.toml");
    std::fs::write(&bad, "[[token]]\nname = \"x\"\nsha256 = \"short\"\n").expect("written");
    let missing = dir.path().join("missing.toml");
    for (path, says) in [
        (&bad, "64 hex digits"),
        (&missing, "cannot read the auth file"),
    ] {
        let path = path.to_str().expect("UTF-8 path");
        let output = run(
            &["--auth-file", path, "--listen", "127.0.0.1:0"],
            &[("NO_COLOR", "1")],
        );
        assert_eq!(output.status.code(), Some(2), "{path}");
        let logged = String::from_utf8_lossy(&output.stdout);
        assert!(logged.contains(says), "{logged}");
    }
}

#[test]
fn token_new_prints_a_token_and_the_block_that_admits_it() {
    let output = run(
        &[
            "token",
            "new",
            "--name",
            "deploy-bot",
            "--read",
            "config/",
            "--write",
            "config/deploy/",
        ],
        &[],
    );
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let token = printed.lines().next().expect("the token first");
    assert!(
        token.starts_with("kvs_") && token.len() >= 4 + 43,
        "{token}"
    );
    let block = &printed[printed.find("[[token]]").expect("a block")..];
    assert!(block.contains("name = \"deploy-bot\""));
    assert!(block.contains(&format!(
        "sha256 = \"{}\"",
        kv_store::auth::new_token::digest_hex(token)
    )));
    assert!(block.contains("write = [\"config/deploy/\"]"));
    assert!(!block.contains(token), "the secret is not in the block");
}

#[test]
fn token_new_into_a_closed_pipe_does_not_panic() {
    // `true` reads nothing and exits: the token is written to a closed pipe.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' token new --name x --read a/ | true"))
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_negative_rate_limit_says_what_is_wrong() {
    let output = run(&["--rate-limit", "-1"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"-1\" is not a whole number from 0 to 4294967295"),
        "{stderr}"
    );
}

#[test]
fn print_openapi_writes_the_spec() {
    let output = run(&["--print-openapi"], &[]);
    assert!(output.status.success());
    let spec = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(spec.trim_end(), kv_store::api::spec_json());
}

#[test]
fn a_busy_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = run(&["--listen", &addr], &[]);
    assert_eq!(output.status.code(), Some(1));
    let logs = String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("cannot start the server"), "{logs}");
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("stdout");
    let (addr_tx, addr_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = addr_tx.send(addr);
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(PATIENCE)
        .expect("the server logs its address");

    let response = reqwest::get(format!("http://{addr}/watch_key/k"))
        .await
        .expect("watch");
    let mut watch = Sse::new(response);
    watch.snapshot().await;

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(watch.next().await, None, "the stream ends");
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = exit_rx
        .recv_timeout(PATIENCE)
        .expect("the server exits")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}

/// Every request leaves one access-log line: who (address, token name),
/// what (operation, status, bytes), how long; never a value or a secret;
/// no colour codes into a pipe; JSON with --log-format json.
#[tokio::test]
async fn every_request_leaves_one_access_log_line() {
    use crate::common::process::{ServerProcess, in_memory};
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "kvs_access-log-test";
    let auth = dir.path().join("tokens.toml");
    let block = kv_store::auth::new_token::block(secret, "logger", &[], &[String::new()], false);
    std::fs::write(&auth, block).expect("auth file");
    let auth = auth.to_str().expect("UTF-8 path");
    for format in ["text", "json"] {
        let mut command = in_memory(&["--auth-file", auth, "--log-format", format]);
        command.env_remove("NO_COLOR").env("KV_ACCESS_LOG", "true");
        let server = ServerProcess::spawn(command);
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{}/store/k", server.url))
            .bearer_auth(secret)
            .body("a-secret-value")
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), reqwest::StatusCode::CREATED);
        let get = client
            .get(format!("{}/store/k", server.url))
            .bearer_auth(secret)
            .send()
            .await
            .expect("GET");
        assert_eq!(get.status(), reqwest::StatusCode::OK);
        let missing = client
            .delete(format!("{}/store/missing", server.url))
            .bearer_auth(secret)
            .send()
            .await
            .expect("DELETE");
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
        let anonymous = client
            .get(format!("{}/store/k", server.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);

        let mut lines = Vec::new();
        while lines.len() < 4 {
            let line = server
                .logs
                .recv_timeout(PATIENCE)
                .expect("an access-log line");
            if line.contains("kv_store::access") {
                lines.push(line);
            }
        }
        for line in &lines {
            assert!(!line.contains("a-secret-value"), "no value: {line}");
            assert!(!line.contains(secret), "no secret: {line}");
            assert!(
                !line.contains('\u{1b}'),
                "no colour codes into a pipe: {line}"
            );
        }
        match format {
            "text" => {
                for (line, expected) in lines.iter().zip([
                    "token=logger operation=put_key status=201 bytes=0 micros=",
                    "token=logger operation=get_key status=200 bytes=14 micros=",
                    // An error answer names its token too.
                    "token=logger operation=delete_key status=404",
                    // Refused before any operation ran: counted as `other`, as in
                    // the metrics.
                    "token=- operation=other status=401",
                ]) {
                    assert!(
                        line.contains(" INFO kv_store::access: client=127.0.0.1:"),
                        "{line}"
                    );
                    assert!(line.contains(expected), "{line} has {expected}");
                }
            }
            _ => {
                let record: serde_json::Value =
                    serde_json::from_str(&lines[1]).expect("a JSON line");
                assert_eq!(record["target"], "kv_store::access");
                assert_eq!(record["fields"]["token"], "logger");
                assert_eq!(record["fields"]["operation"], "get_key");
                assert_eq!(record["fields"]["status"], 200);
                assert_eq!(record["fields"]["bytes"], 14);
            }
        }
        server.stop();
    }
}

#[test]
fn help_groups_the_flags_under_headings() {
    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    let headings: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with(' ') && line.ends_with(':'))
        .collect();
    assert_eq!(
        headings,
        [
            "Commands:",
            "Options:",
            "Security:",
            "Network:",
            "Limits:",
            "Watches:",
            "Storage:",
            "etcd (--backend etcd):",
            "Logging:"
        ]
    );
}
