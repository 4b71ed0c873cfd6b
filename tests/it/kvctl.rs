//! `kvctl`, the command-line client, run as a user runs it (a process, its
//! stdout, stderr and exit code) against a server on a real socket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::pki::{Pki, path_str};
use crate::common::process::{ServerProcess, command};
use crate::common::{TestServer, json, watch_keys};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The kvctl binary. `cargo test` builds the binaries of this package
/// only, so the first test to ask builds kvctl's (the same profile, the
/// same target dir) and the others wait for it.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let server = Path::new(env!("CARGO_BIN_EXE_kv-store"));
        let dir = server.parent().expect("the binaries' directory");
        let target = dir.parent().expect("the target directory");
        let profile = match dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("a binaries' directory with a name: {}", dir.display()),
        };
        let built = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "kvctl", "--profile", profile])
            .arg("--target-dir")
            .arg(target)
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cargo build -p kvctl failed");
        dir.join("kvctl")
    })
}

/// kvctl pointed at some endpoints, with some environment.
struct Kvctl {
    endpoints: String,
    env: Vec<(&'static str, String)>,
}

/// What a run of kvctl gave.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Kvctl {
    fn at(server: &TestServer) -> Self {
        Self::endpoints(&server.url(""))
    }

    fn endpoints(endpoints: &str) -> Self {
        Self {
            endpoints: endpoints.to_owned(),
            env: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KVCTL_ENDPOINTS", &self.endpoints)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_with_input(args, "")
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> Ran {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvctl starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin written");
        child.wait_with_output().expect("kvctl ends").into()
    }

    /// A run that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(0), "kvctl {args:?}: {ran:?}");
        ran.stdout
    }

    /// A run that must exit with `code`; its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(code), "kvctl {args:?}: {ran:?}");
        assert!(ran.stderr.starts_with("kvctl: ") || code == 2, "{ran:?}");
        ran.stderr
    }
}

/// What a kvctl started with `Kvctl::command` gave once it ended.
async fn finish(child: std::process::Child) -> Ran {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("kvctl ends")
        .into()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_del_ls_print_and_exit_as_documented() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let base = server.base;
    assert_eq!(kv.ok(&["put", "app/a", "1"]), "OK\n");
    let ran = kv.run_with_input(&["put", "app/b", "-o", "json"], "from stdin");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        lines(&ran.stdout),
        [json!({"key": "app/b", "revision": base + 2, "created": true})]
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "from a file").expect("written");
    kv.ok(&["put", "app/c", "--file", path_str(file.path())]);

    assert_eq!(kv.ok(&["get", "app/b"]), "from stdin\n");
    assert_eq!(
        lines(&kv.ok(&["get", "app/c", "-o", "json"])),
        [json!({"key": "app/c", "value": "from a file", "revision": base + 3})]
    );
    assert_eq!(
        kv.ok(&["get", "app/a", "-o", "table"]),
        format!("KEY    VALUE  REVISION\napp/a  1      {}\n", base + 1)
    );
    assert!(kv.fails(&["get", "app/none"], 3).contains("404"));

    // Conditions: 4 when they fail, nothing written.
    let at = (base + 1).to_string();
    let stale = base.to_string();
    kv.fails(&["put", "app/a", "x", "--if-match", &stale], 4);
    kv.fails(&["put", "app/a", "x", "--if-absent"], 4);
    kv.ok(&["put", "app/a", "2", "--if-match", &at]);
    kv.ok(&["put", "app/new", "n", "--if-absent"]);
    kv.fails(&["put", "app/a", "x", "--fence", "nolock=1"], 4);

    assert_eq!(
        kv.ok(&["ls", "app/"]),
        "app/a\t2\napp/b\tfrom stdin\napp/c\tfrom a file\napp/new\tn\n"
    );
    assert_eq!(
        kv.ok(&["ls", "app/", "--keys-only"]),
        "app/a\napp/b\napp/c\napp/new\n"
    );
    let table = kv.ok(&["ls", "app/", "-o", "table"]);
    assert!(
        table.starts_with("KEY      VALUE        REVISION  VERSION  LEASE  TTL\n"),
        "{table}"
    );

    assert_eq!(kv.ok(&["del", "app/new"]), "1\n");
    kv.fails(&["del", "app/new"], 3);
    kv.fails(&["del", "app/a", "--if-match", &stale], 4);
    assert_eq!(kv.ok(&["del", "app/", "--prefix"]), "3\n");
    assert_eq!(kv.ok(&["ls", "app/"]), "");

    // Usage: 2, from clap or from kvctl.
    kv.fails(&["put"], 2);
    kv.fails(&["get", ""], 2);
    kv.fails(&["put", "k", "v", "--lease", "not-hex"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_reads_every_page() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let batch: Vec<Value> = (0..30)
        .map(|n| json!({"method": "PUT", "key": format!("p/{n:02}"), "value": n.to_string()}))
        .collect();
    assert!(
        server
            .post_json("/batch", &json!(batch))
            .await
            .status()
            .is_success()
    );
    let listed = lines(&kv.ok(&["ls", "p/", "--page-size", "7", "-o", "json"]));
    let keys: Vec<&str> = listed
        .iter()
        .map(|item| item["key"].as_str().expect("key"))
        .collect();
    let expected: Vec<String> = (0..30).map(|n| format!("p/{n:02}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_endpoint_is_tried_when_one_cannot_be_reached() {
    let server = TestServer::start(&[]).await;
    // Nothing listens on port 1.
    let kv = Kvctl::endpoints(&format!("http://127.0.0.1:1,{}", server.url("")));
    kv.ok(&["put", "k", "v"]);
    assert_eq!(kv.ok(&["get", "k"]), "v\n");
    let stderr = Kvctl::endpoints("http://127.0.0.1:1").fails(&["get", "k"], 5);
    assert!(stderr.contains("no endpoint could be reached"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_comes_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = dir.path().join("tokens.toml");
    std::fs::write(
        &auth,
        format!(
            "[[token]]\nname = \"cli\"\nsha256 = {:?}\nwrite = [\"\"]\nadmin = true\n",
            kv_store::auth::new_token::digest_hex("kvs_cli")
        ),
    )
    .expect("auth file");
    let server = TestServer::start_memory(&["--auth-file", path_str(&auth)]).await;
    let mut kv = Kvctl::at(&server);
    assert!(kv.fails(&["put", "k", "v"], 1).contains("401"));
    kv.ok(&["put", "k", "v", "--token", "kvs_cli"]);
    kv.env.push(("KVCTL_TOKEN", "kvs_cli".to_owned()));
    assert_eq!(kv.ok(&["get", "k"]), "v\n");
    kv.ok(&["status"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_ca_and_a_client_certificate() {
    let pki = Pki::new();
    pki.issue("server", "kv-store", false, false);
    pki.issue("client", "kvctl", true, false);
    let flags = pki.server_flags(true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_memory(&flags).await;
    let ca = pki.path("ca.pem");
    let kv = Kvctl::endpoints(&format!("https://127.0.0.1:{}", server.addr.port()));
    let (client_cert, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    let tls = [
        "--cacert",
        path_str(&ca),
        "--cert",
        path_str(&client_cert),
        "--key",
        path_str(&client_key),
    ];
    let with = |args: &[&'static str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tls);
        all
    };
    kv.ok(&with(&["put", "k", "over TLS"]));
    assert_eq!(kv.ok(&with(&["get", "k"])), "over TLS\n");
    // Without the client certificate the server ends the connection after
    // the handshake (TLS 1.3: the client has sent its request by then).
    kv.fails(&["get", "k", "--cacert", path_str(&ca)], 1);
    // Without the CA kvctl refuses the server's certificate: a connection
    // that could not be made, so the next endpoint would be tried.
    let stderr = kv.fails(&["get", "k"], 5);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

/// A TCP proxy to `target` that cuts its first connection once it has
/// passed on a chunk holding a `put` event; later connections pass.
async fn cutting_proxy(
    target: std::net::SocketAddr,
) -> (String, tokio::sync::oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut cut = Some(cut_tx);
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let Some(cut) = cut.take() else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            };
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                let downstream = async {
                    let mut buffer = vec![0; 16 * 1024];
                    loop {
                        let n = server_read.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        let chunk = &buffer[..n];
                        if client_write.write_all(chunk).await.is_err() {
                            return;
                        }
                        if String::from_utf8_lossy(chunk).contains("event: put") {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = upstream => {}
                    () = downstream => {}
                }
                drop((client, server));
                let _ = cut.send(());
            });
        }
    });
    (url, cut_rx)
}

/// Puts `w/N` = `N` for each N of `numbers`.
async fn put_numbered(server: &TestServer, numbers: std::ops::Range<u32>) {
    for n in numbers {
        let put = server.put(&format!("w%2F{n}"), &n.to_string()).await;
        assert!(put.status().is_success(), "PUT w/{n}: {}", put.status());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_after_a_disconnect_without_loss_or_repeat() {
    let server = TestServer::start(&[]).await;
    put_numbered(&server, 0..3).await;
    let (proxy, cut) = cutting_proxy(server.addr).await;
    let since = server.base.to_string();
    let watch = Kvctl::endpoints(&proxy)
        .command(&[
            "watch", "--prefix", "w/", "--since", &since, "--count", "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvctl watch starts");
    cut.await.expect("the proxy cut the first connection");
    put_numbered(&server, 3..10).await;
    let ran = finish(watch).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let expected: String = (0..10).map(|n| format!("put w/{n} {n}\n")).collect();
    assert_eq!(ran.stdout, expected);
    assert!(ran.stderr.contains("resuming"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_runs_a_command_per_event() {
    let server = TestServer::start(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events");
    server.put("e%2Fa", "1").await;
    server.delete("e%2Fa").await;
    let since = server.base.to_string();
    let script = format!(
        "echo \"$KV_WATCH_EVENT $KV_WATCH_KEY $KV_WATCH_VALUE $KV_WATCH_REVISION\" >> {}",
        log.display()
    );
    let kv = Kvctl::at(&server);
    kv.ok(&[
        "watch", "e/a", "--since", &since, "--count", "2", "--", "sh", "-c", &script,
    ]);
    let events = std::fs::read_to_string(&log).expect("the command ran");
    let (put, delete) = (server.base + 1, server.base + 2);
    assert_eq!(events, format!("put e/a 1 {put}\ndelete e/a  {delete}\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restores_to_the_same_keys() {
    let server = TestServer::start_memory(&[]).await;
    let kv = Kvctl::at(&server);
    for n in 0..50 {
        kv.ok(&["put", &format!("s/{n:02}"), &format!("value {n}")]);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("snapshot.jsonl");
    let saved = kv.ok(&["snapshot", "save", path_str(&file)]);
    assert!(
        saved.starts_with(&format!("saved {}: revision 50, 50 keys", file.display())),
        "{saved}"
    );
    let data = dir.path().join("data");
    let restored = Command::new(env!("CARGO_BIN_EXE_kv-store"))
        .args(["restore", path_str(&file), "--data-dir", path_str(&data)])
        .output()
        .expect("restore runs");
    assert!(restored.status.success(), "{restored:?}");
    let copy = ServerProcess::spawn(command(&data, &[]));
    let listing = kv.ok(&["ls", "s/"]);
    assert_eq!(Kvctl::endpoints(&copy.url).ok(&["ls", "s/"]), listing);
    drop(copy);
}

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_carries_values_ttls_and_leases() {
    let from = TestServer::start(&[]).await;
    let kv = Kvctl::at(&from);
    kv.ok(&["lease", "grant", "100", "--id", "c1"]);
    kv.ok(&["put", "x/plain", "p"]);
    kv.ok(&["put", "x/ttl", "t", "--ttl", "100"]);
    kv.ok(&["put", "x/leased", "l", "--lease", "00000000000000c1"]);
    kv.ok(&["put", "y/other", "o"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("x.jsonl");
    let said = kv.ok(&["export", "x/", "--file", path_str(&file)]);
    assert!(
        said.starts_with("exported 3 keys and 1 leases at revision"),
        "{said}"
    );
    let exported = std::fs::read_to_string(&file).expect("export");

    let to = TestServer::start(&[]).await;
    let kv2 = Kvctl::at(&to);
    // A file cut short writes nothing.
    let cut: String = exported
        .lines()
        .take(3)
        .map(|line| format!("{line}\n"))
        .collect();
    let ran = kv2.run_with_input(&["import"], &cut);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("cut short"), "{ran:?}");
    assert_eq!(kv2.ok(&["ls"]), "");

    let said = kv2.ok(&["import", path_str(&file)]);
    assert_eq!(
        said,
        "imported 3 keys and 1 leases (0 keys skipped: their lease had ended)\n"
    );
    let listed = lines(&kv2.ok(&["ls", "-o", "json"]));
    let values: Vec<(&str, &str)> = listed
        .iter()
        .map(|item| {
            (
                item["key"].as_str().unwrap_or(""),
                item["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        values,
        [("x/leased", "l"), ("x/plain", "p"), ("x/ttl", "t")]
    );
    // The lease keeps its id where it is free.
    let lease = listed[0]["lease"].as_str().expect("x/leased is on a lease");
    assert_eq!(lease, "00000000000000c1");
    let lease_ttl = json(to.get(&format!("/leases/{lease}")).await).await["ttl"]
        .as_u64()
        .expect("the new lease's ttl");
    assert!((1..=100).contains(&lease_ttl), "{lease_ttl}");
    let ttl = listed[2]["ttl"].as_u64().expect("x/ttl keeps a TTL");
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(listed[1].get("ttl"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_and_transactions() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let granted = lines(&kv.ok(&["lease", "grant", "60", "--id", "a1", "-o", "json"]));
    assert_eq!(granted[0]["id"], "00000000000000a1");
    kv.ok(&["put", "l/k", "v", "--lease", "a1"]);
    let got = kv.ok(&["lease", "get", "a1", "--keys"]);
    assert!(got.starts_with("lease 00000000000000a1 ttl "), "{got}");
    assert!(got.ends_with("\nl/k\n"), "{got}");
    assert_eq!(kv.ok(&["lease", "list"]), "00000000000000a1\n");
    assert_eq!(kv.ok(&["lease", "revoke", "a1"]), "OK\n");
    kv.fails(&["get", "l/k"], 3);
    kv.fails(&["lease", "revoke", "a1"], 3);

    let txn = r#"{"guards":[{"key":"t/k","compare":"ABSENT"}],"then":[{"op":"PUT","key":"t/k","value":"first"}],"else":[{"op":"GET","key":"t/k"}]}"#;
    let first = kv.run_with_input(&["txn"], txn);
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.starts_with("SUCCESS revision "), "{first:?}");
    let second = kv.run_with_input(&["txn", "-o", "json"], txn);
    let answer = &lines(&second.stdout)[0];
    assert_eq!(
        (
            answer["succeeded"].clone(),
            answer["results"][0]["value"].clone()
        ),
        (json!(false), json!("first"))
    );
    let bad = kv.run_with_input(&["txn"], "{\"then\": 5}");
    assert_eq!(bad.code, Some(2), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_runs_a_command_with_its_token_and_passes_on_its_exit_code() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let inner = format!(
        "{} put fenced/k \"$KV_LOCK_NAME $KV_LOCK_TOKEN\" --fence \"$KV_LOCK_NAME=$KV_LOCK_TOKEN\" && exit 7",
        binary().display()
    );
    let ran = kv.run(&["lock", "job", "--", "sh", "-c", &inner]);
    assert_eq!(ran.code, Some(7), "{ran:?}");
    let written = kv.ok(&["get", "fenced/k"]);
    assert!(written.starts_with("job "), "{written}");
    // The lock was released: a try-lock gets it at once.
    kv.ok(&["lock", "job", "--wait", "0", "--", "true"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_makes_a_try_lock_exit_4_and_a_lost_one_stops_all_its_command_started() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let mut line = watch_keys(&server, &json!({"prefixes": ["busy/"]})).await;
    line.snapshot().await;
    // The command starts a process of its own and waits for it.
    let script = format!("sleep 600 & echo $! > {}; wait", pid_file.display());
    let holder = kv
        .command(&["lock", "busy", "--ttl", "30", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvctl lock starts");
    let joined = line.next().await.expect("the holder joins the line");
    assert_eq!(joined.event, "put");
    let stderr = kv.fails(&["lock", "busy", "--wait", "0", "--", "true"], 4);
    assert!(stderr.contains("423"), "{stderr}");

    // Someone deletes the holder's key: the lock is lost, everything the
    // command started is stopped, and kvctl says so.
    assert!(
        server
            .delete(&joined.key().replace('/', "%2F"))
            .await
            .status()
            .is_success()
    );
    let ran = finish(holder).await;
    assert_eq!(ran.code, Some(6), "{ran:?}");
    assert!(ran.stderr.contains("lock lost"), "{ran:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("the command wrote its child's pid");
    assert!(
        !running(pid.trim()),
        "the command's own child {pid} outlived the lock"
    );
}

/// Whether a process runs (a zombie, ended but not yet reaped, does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_waits_in_line_longer_than_its_ttl_and_passes_on_ctrl_c() {
    let server = TestServer::start(&[]).await;
    let kv = Kvctl::at(&server);
    let mut line = watch_keys(&server, &json!({"prefixes": ["slow/"]})).await;
    line.snapshot().await;
    // The holder holds for 3 s, three times the waiter's TTL: the waiter's
    // lease is kept alive while it waits, so it keeps its place.
    let holder = kv
        .command(&["lock", "slow", "--ttl", "1", "--", "sleep", "3"])
        .spawn()
        .expect("kvctl lock starts");
    assert_eq!(line.next().await.expect("the holder joins").event, "put");
    let waiter = kv
        .command(&["lock", "slow", "--ttl", "1", "--", "echo", "my turn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the waiter starts");
    let ran = finish(waiter).await;
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "my turn\n"),
        "{ran:?}"
    );
    tokio::task::spawn_blocking(move || {
        let mut holder = holder;
        holder.wait()
    })
    .await
    .expect("joined")
    .expect("the holder ends");

    // Ctrl-C (SIGINT to kvctl) goes to the command, and the lock is
    // released once it has ended.
    let mut line = watch_keys(&server, &json!({"prefixes": ["slow/"]})).await;
    let (before, _) = line.snapshot().await;
    assert!(
        before.iter().all(|key| key.value().is_none()),
        "the line is empty"
    );
    let held = kv
        .command(&["lock", "slow", "--", "sleep", "600"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvctl lock starts");
    assert_eq!(line.next().await.expect("it joins").event, "put");
    let pid = i32::try_from(held.id()).expect("a pid");
    // SAFETY: kill(2) sends a signal to the kvctl this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let ran = finish(held).await;
    assert_eq!(ran.code, Some(130), "sleep ended by SIGINT: {ran:?}");
    kv.ok(&["lock", "slow", "--wait", "0", "--", "true"]);
}
