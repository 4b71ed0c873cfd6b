//! The project checks its own consistency under faults, as etcd's
//! robustness suite and Jepsen check etcd: eight clients read, write,
//! delete, compare-and-swap, write conditionally and batch on a few keys
//! (every value unique, one operation in flight each) while the harness
//! kills the server, the etcd leader or a kv-store node, or cuts a node
//! off from etcd; watchers follow the keys throughout. Then:
//! - each key's history is checked for linearizability (`checker.rs`, with
//!   its own tests of histories it must reject), an operation whose answer
//!   was lost counting as "may have happened";
//! - every watcher's stream is checked (`watchers.rs`): ordered, no
//!   duplicates, every acknowledged write there, a revision's events never
//!   split, all watchers agreeing, and resumable from any id.
//!
//! `KV_CONSISTENCY_SECONDS` sets how long the workload runs under faults
//! (4 s by default; CI runs 30), `KV_CONSISTENCY_SEED` replays the
//! clients' choices. The etcd cases need `--features etcd` and etcd; the
//! partition case needs root and `ip` (iproute2), and says so when it
//! cannot run.

// A binary of its own (it must run alone): it uses a part of the helpers.
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;

mod checker;
mod history;
mod watchers;
mod workload;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::{self, ServerProcess};
use history::History;
use watchers::{Segment, Stop};
use workload::{Nodes, Tally, Worker};

const CLIENTS: usize = 8;
const WATCHERS: usize = 2;

fn seconds() -> Duration {
    let seconds = std::env::var("KV_CONSISTENCY_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(seconds)
}

fn seed() -> u64 {
    std::env::var("KV_CONSISTENCY_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |elapsed| elapsed.as_nanos() as u64)
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A running workload: clients and watchers on `nodes`.
struct Run {
    history: Arc<History>,
    tally: Arc<Tally>,
    stop: Arc<Stop>,
    nodes: Nodes,
    clients: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<Vec<Segment>>>,
    until: Instant,
    seed: u64,
}

impl Run {
    fn start(nodes: Nodes, running: Duration) -> Self {
        let history = Arc::new(History::new());
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(Stop::default());
        let until = Instant::now() + running;
        let seed = seed();
        let clients = (0..CLIENTS)
            .map(|id| {
                let worker = Worker::new(id, nodes.clone(), history.clone(), seed);
                tokio::spawn(worker.run(move || Instant::now() >= until, tally.clone()))
            })
            .collect();
        let watchers = (0..WATCHERS)
            .map(|n| tokio::spawn(watchers::watch(nodes.clone(), n, stop.clone())))
            .collect();
        Self {
            history,
            tally,
            stop,
            nodes,
            clients,
            watchers,
            until,
            seed,
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.until
    }

    /// Waits for the clients, lets the watchers catch up with the last
    /// revision, then checks everything; panics with what failed, or
    /// prints the closing line.
    async fn finish(self, faults: &str) {
        for client in self.clients {
            client.await.expect("a client ran to the end");
        }
        // Every node serves again after the last fault.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        let deadline = Instant::now() + common::PATIENCE;
        for node in self.nodes.0.iter() {
            loop {
                let ready = client.get(format!("{node}/readyz")).send().await;
                if ready.is_ok_and(|ready| ready.status() == reqwest::StatusCode::OK) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{node} is ready after the faults"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let node = &self.nodes.0[0];
        let status: serde_json::Value = client
            .get(format!("{node}/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        let final_revision = status["revision"].as_u64().expect("a revision");
        self.stop
            .final_revision
            .store(final_revision, Ordering::Release);
        self.stop.stopping.store(true, Ordering::Release);
        let mut recorded = Vec::new();
        for watcher in self.watchers {
            let segments = tokio::time::timeout(common::PATIENCE, watcher)
                .await
                .expect("the watchers catch up with the last revision")
                .expect("a watcher ran to the end");
            recorded.push(segments);
        }

        let verdict = self.history.check();
        let watched = watchers::validate(
            &recorded,
            &self.history.acked_writes(),
            &self.history.writes_at(),
        );
        let mut failures = verdict.failures;
        failures.extend(watched.failures);
        // Resume from ids of the last segments, where the history still
        // reaches.
        for segments in &recorded {
            let Some(last) = segments.last() else {
                continue;
            };
            let ids: Vec<watchers::Position> = last
                .events
                .iter()
                .step_by((last.events.len() / 8).max(1))
                .map(|seen| seen.position)
                .collect();
            failures.extend(watchers::check_resumes(node, last, &ids, final_revision).await);
        }
        assert!(
            failures.is_empty(),
            "seed {} ({faults}):\n{}",
            self.seed,
            failures.join("\n")
        );
        eprintln!(
            "consistency: {} operations ({} with a lost answer, {} refused connections or \
             errors) on {} keys linearizable, and {} watch events in {} streams ({} resumes) \
             valid, under {faults}; seed {}",
            verdict.operations,
            verdict.unknown,
            self.tally.lost.load(Ordering::Relaxed),
            verdict.keys,
            watched.events,
            watched.segments,
            watched.resumes,
            self.seed,
        );
    }
}

/// A pause between faults: 0.5 to 1.5 s.
async fn pause(rng: &mut workload::Rng) {
    let millis = 500 + rng.below(1000);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_memory_store_killed_again_and_again_stays_linearizable() {
    let dir = tempfile::tempdir().expect("a data dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--listen",
        &listen,
        "--fsync",
        "always",
        "--watch-heartbeat",
        "1s",
    ];
    let mut server = ServerProcess::spawn(process::command(dir.path(), &flags));
    let nodes = Nodes(Arc::new(vec![format!("http://{listen}")]));
    let run = Run::start(nodes, seconds());
    let mut rng = workload::Rng::new(run.seed);
    let mut kills = 0;
    while run.running() {
        pause(&mut rng).await;
        server.kill();
        kills += 1;
        server = ServerProcess::spawn(process::command(dir.path(), &flags));
    }
    run.finish(&format!(
        "{kills} kill -9 of the server (--data-dir, --fsync always)"
    ))
    .await;
    drop(server);
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use common::etcd::Cluster;

    /// The member that is the cluster's leader now.
    async fn leader(cluster: &Cluster) -> usize {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a client");
        let deadline = Instant::now() + common::PATIENCE;
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
                let Ok(status) = answer.json::<serde_json::Value>().await else {
                    continue;
                };
                let leader = status["leader"].as_str().unwrap_or("0");
                if leader != "0" && Some(leader) == status["header"]["member_id"].as_str() {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "the cluster elects a leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    const NODE_FLAGS: &[&str] = &["--etcd-timeout", "2s", "--watch-heartbeat", "1s"];

    fn node(endpoints: &str, listen: &str) -> ServerProcess {
        let mut flags = vec!["--listen", listen];
        flags.extend_from_slice(NODE_FLAGS);
        ServerProcess::spawn(process::on_etcd(endpoints, &flags))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_over_etcd_with_leader_and_node_kills_stay_linearizable() {
        let mut cluster = Cluster::start(3);
        let endpoints = cluster.endpoints();
        let listens: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut nodes: Vec<Option<ServerProcess>> = listens
            .iter()
            .map(|listen| Some(node(&endpoints, listen)))
            .collect();
        let urls = listens.iter().map(|listen| format!("http://{listen}"));
        let run = Run::start(Nodes(Arc::new(urls.collect())), seconds());
        let mut rng = workload::Rng::new(run.seed);
        let (mut leader_kills, mut node_kills) = (0, 0);
        let mut round = 0;
        while run.running() {
            pause(&mut rng).await;
            if round % 2 == 0 {
                let killed = leader(&cluster).await;
                cluster.members[killed].kill();
                leader_kills += 1;
                pause(&mut rng).await;
                cluster.restart(killed);
                cluster.wait_healthy();
            } else {
                let killed = (round / 2) % nodes.len();
                if let Some(running) = nodes[killed].take() {
                    running.kill();
                }
                nodes[killed] = Some(node(&endpoints, &listens[killed]));
                node_kills += 1;
            }
            round += 1;
        }
        run.finish(&format!(
            "{leader_kills} kills of the etcd leader and {node_kills} kill -9 of a kv-store node \
             (3 etcd members, 2 nodes)"
        ))
        .await;
    }

    /// Runs `ip` with `args`; panics if it fails.
    fn ip(args: &[&str]) {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("ip runs");
        assert!(status.success(), "ip {}", args.join(" "));
    }

    /// A network namespace for one kv-store node, with two links to the
    /// root namespace: one the clients reach it by, one it reaches etcd
    /// by, which the test cuts and heals. Removed when dropped.
    struct Cut {
        ns: String,
        to_etcd: String,
    }

    /// The node's address on the clients' link, and etcd's on the other.
    const NODE_ADDR: &str = "10.231.1.2";
    const ETCD_ADDR: &str = "10.231.2.1";

    impl Cut {
        /// `None` (and why) where namespaces cannot be made: not root, or
        /// no iproute2.
        fn new() -> Result<Self, String> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not root".to_owned());
            }
            if std::process::Command::new("ip").arg("-V").output().is_err() {
                return Err("no `ip` (apt-get install iproute2)".to_owned());
            }
            let ns = format!("kvp{}", std::process::id());
            let (clients, to_etcd) = (format!("{ns}a"), format!("{ns}b"));
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .status();
            let made = std::process::Command::new("ip")
                .args(["netns", "add", &ns])
                .status()
                .map_err(|err| err.to_string())?;
            if !made.success() {
                return Err("`ip netns add` failed (no CAP_SYS_ADMIN?)".to_owned());
            }
            let cut = Self {
                ns: ns.clone(),
                to_etcd: to_etcd.clone(),
            };
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            for (link, root, inner) in [
                (&clients, "10.231.1.1/30", "10.231.1.2/30"),
                (&to_etcd, "10.231.2.1/30", "10.231.2.2/30"),
            ] {
                let peer = format!("{link}n");
                ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
                ip(&["link", "set", &peer, "netns", &ns]);
                ip(&["addr", "add", root, "dev", link]);
                ip(&["link", "set", link, "up"]);
                ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", inner, "dev", &peer,
                ]);
                ip(&["netns", "exec", &ns, "ip", "link", "set", &peer, "up"]);
            }
            Ok(cut)
        }

        fn sever(&self) {
            ip(&["link", "set", &self.to_etcd, "down"]);
        }

        fn heal(&self) {
            ip(&["link", "set", &self.to_etcd, "up"]);
        }
    }

    impl Drop for Cut {
        fn drop(&mut self) {
            // The namespace's ends go with it, and each pair with its end.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.ns])
                .status();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_node_cut_off_from_etcd_says_so_and_nothing_is_lost_or_repeated() {
        let cut = match Cut::new() {
            Ok(cut) => cut,
            Err(why) => {
                eprintln!(
                    "SKIPPED a_node_cut_off_from_etcd_says_so_and_nothing_is_lost_or_repeated: \
                     {why}; it needs root and iproute2 for network namespaces (CI runs it)"
                );
                return;
            }
        };
        let cluster = Cluster::start_also_on(3, Some(ETCD_ADDR));
        let cut_off_listen = format!("{NODE_ADDR}:{}", free_port());
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", &cut.ns, env!("CARGO_BIN_EXE_kv-store")])
            .args(["--listen", &cut_off_listen, "--rate-limit", "0"])
            .args(["--backend", "etcd", "--etcd-endpoints"])
            .arg(cluster.endpoints_also_on())
            .args(NODE_FLAGS)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let cut_off = ServerProcess::spawn(command);
        let other_listen = format!("127.0.0.1:{}", free_port());
        let _other = node(&cluster.endpoints(), &other_listen);
        let cut_off_url = format!("http://{cut_off_listen}");
        let urls = vec![cut_off_url.clone(), format!("http://{other_listen}")];
        let run = Run::start(Nodes(Arc::new(urls)), seconds().max(Duration::from_secs(6)));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");

        // A watch through the node, open before the cut.
        let watch = client
            .get(format!("{cut_off_url}/watch?prefix=lin/"))
            .send()
            .await
            .expect("a watch");
        assert_eq!(watch.status(), reqwest::StatusCode::OK);
        let mut watch = watch.bytes_stream();
        tokio::time::sleep(seconds() / 3).await;

        cut.sever();
        let severed = Instant::now();
        let started = Instant::now();
        let answer = client
            .get(format!("{cut_off_url}/store/lin%2Fk0"))
            .send()
            .await
            .expect("an answer, not a hang");
        let answered_in = started.elapsed();
        let body = common::problem(answer, reqwest::StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(body["type"], "urn:kv-store:problem:unavailable", "{body}");
        let ready = client
            .get(format!("{cut_off_url}/readyz"))
            .send()
            .await
            .expect("readyz");
        let body = common::problem(ready, reqwest::StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            body["detail"].as_str().unwrap_or_default().contains("etcd"),
            "readyz says why: {body}"
        );
        // The watch does not stall silently: it ends.
        let ended = tokio::time::timeout(common::PATIENCE, async {
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut watch).await {}
        })
        .await;
        assert!(ended.is_ok(), "the watch through the cut-off node ended");
        let watch_ended_in = severed.elapsed();
        tokio::time::sleep(seconds() / 3).await;

        cut.heal();
        let healed = Instant::now();
        let deadline = Instant::now() + common::PATIENCE;
        loop {
            let ready = client.get(format!("{cut_off_url}/readyz")).send().await;
            if ready.is_ok_and(|ready| ready.status() == reqwest::StatusCode::OK) {
                break;
            }
            assert!(Instant::now() < deadline, "the node is ready once healed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready_in = healed.elapsed();
        while run.running() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.finish(&format!(
            "a kv-store node cut off from etcd (network namespace, link down) and healed: 503 in \
             {answered_in:.1?} (--etcd-timeout 2s), its watch ended {watch_ended_in:.1?} after the \
             cut, ready again {ready_in:.1?} after the link came back"
        ))
        .await;
        drop(cut_off);
    }
}
