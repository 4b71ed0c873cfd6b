//! Lock benchmark client (issue 24's figures). Prints one JSON line.
//!
//! `lock_client handoff URL WAITERS`: one holder and WAITERS waiters in
//! line on one lock, each on a lease of its own; each, once it holds the
//! lock, releases it at once. The handoff latency is the time from a
//! holder sending its release to the next holder receiving its answer
//! (p50 and p99 over the WAITERS handoffs).
//!
//! `lock_client loop URL NAMES WORKERS SECONDS`: WORKERS loops, each on a
//! lease of its own, of: acquire one of NAMES locks (picked at random) →
//! PUT a key fenced on the token → release. Prints cycles per second.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The number after `"field":` in a JSON answer (ids and tokens are all
/// this benchmark reads).
fn number(body: &str, field: &str) -> Option<u64> {
    let at = body.find(&format!("\"{field}\":"))? + field.len() + 3;
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The string after `"field":"` in a JSON answer.
fn text<'a>(body: &'a str, field: &str) -> Option<&'a str> {
    let at = body.find(&format!("\"{field}\":\""))? + field.len() + 4;
    body[at..].split('"').next()
}

async fn grant(client: &Client, url: &str) -> Result<String, Error> {
    let body = client
        .post(format!("{url}/leases"))
        .header("content-type", "application/json")
        .body(r#"{"ttl":600}"#)
        .send()
        .await?
        .text()
        .await?;
    Ok(text(&body, "id").ok_or("a grant answers an id")?.to_owned())
}

/// Acquires `name` on `lease`; answers the token.
async fn acquire(client: &Client, url: &str, name: &str, lease: &str) -> Result<u64, Error> {
    let response = client
        .post(format!("{url}/locks/{name}"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"lease":"{lease}"}}"#))
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if status != StatusCode::OK {
        return Err(format!("acquire answered {status}: {body}").into());
    }
    Ok(number(&body, "token").ok_or("an acquisition answers a token")?)
}

async fn release(client: &Client, url: &str, name: &str, token: u64) -> Result<(), Error> {
    let status = client
        .delete(format!("{url}/locks/{name}?token={token}"))
        .send()
        .await?
        .status();
    if status != StatusCode::NO_CONTENT {
        return Err(format!("release answered {status}").into());
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

async fn handoff(url: &str, waiters: usize) -> Result<(), Error> {
    let client = Client::new();
    let holder = grant(&client, url).await?;
    let first = acquire(&client, url, "handoff", &holder).await?;
    let mut tasks = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        let (client, url) = (client.clone(), url.to_owned());
        let lease = grant(&client, &url).await?;
        tasks.push(tokio::spawn(async move {
            let token = acquire(&client, &url, "handoff", &lease).await?;
            let held = Instant::now();
            release(&client, &url, "handoff", token).await?;
            Ok::<_, Error>((token, held))
        }));
    }
    // Everyone in line before the first release.
    loop {
        let body = client
            .get(format!("{url}/locks/handoff"))
            .send()
            .await?
            .text()
            .await?;
        if number(&body, "waiters") == Some(waiters as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    release(&client, url, "handoff", first).await?;
    let mut held = Vec::with_capacity(waiters);
    for task in tasks {
        held.push(task.await??);
    }
    let elapsed = started.elapsed();
    held.sort_by_key(|(token, _)| *token);
    // A holder's release is sent right after it is answered: the handoff
    // to the next is from that moment to the next answer.
    let mut previous = started;
    let mut gaps: Vec<f64> = Vec::with_capacity(waiters);
    for (_, at) in &held {
        gaps.push(at.duration_since(previous).as_secs_f64() * 1e3);
        previous = *at;
    }
    gaps.sort_by(f64::total_cmp);
    println!(
        "{{\"waiters\":{waiters},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"all_ms\":{:.1}}}",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(f64::NAN),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

async fn cycles(url: &str, names: u64, workers: usize, seconds: u64) -> Result<(), Error> {
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (client, url) = (client.clone(), url.to_owned());
        let lease = grant(&client, &url).await?;
        tasks.push(tokio::spawn(async move {
            // xorshift: the names each worker visits, without a crate.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (worker as u64 + 1);
            let mut done = 0u64;
            while Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let name = format!("name-{}", state % names);
                let token = acquire(&client, &url, &name, &lease).await?;
                let status = client
                    .put(format!("{url}/store/{name}-data"))
                    .header("If-Fence", format!("{name}={token}"))
                    .body("v")
                    .send()
                    .await?
                    .status();
                if !status.is_success() {
                    return Err(format!("a fenced PUT answered {status}").into());
                }
                release(&client, &url, &name, token).await?;
                done += 1;
            }
            Ok::<_, Error>(done)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"names\":{names},\"workers\":{workers},\"cycles\":{total},\"per_s\":{:.1}}}",
        total as f64 / elapsed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |n: usize| args.get(n).map(String::as_str).unwrap_or_default();
    let usage = "lock_client handoff URL WAITERS | lock_client loop URL NAMES WORKERS SECONDS";
    match arg(1) {
        "handoff" => handoff(arg(2), arg(3).parse()?).await,
        "loop" => cycles(arg(2), arg(3).parse()?, arg(4).parse()?, arg(5).parse()?).await,
        _ => Err(usage.into()),
    }
}
