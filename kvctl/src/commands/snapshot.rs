//! `kvctl snapshot save FILE`: the server's online backup (`GET /backup`),
//! written beside FILE and moved into place only once its last line's
//! checksum matches what arrived: a cut or altered copy never takes FILE's
//! name.

use std::path::Path;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Ctx;
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::{Failure, chain};
use crate::output;

/// The backup's last line.
#[derive(Deserialize)]
struct End {
    end: bool,
    keys: u64,
    sha256: String,
}

/// The backup's first line.
#[derive(Deserialize)]
struct Header {
    revision: u64,
}

pub async fn save(ctx: &Ctx, file: &Path) -> Result<(), Failure> {
    let answer = ctx
        .endpoints
        .call(Patience::Streaming, async |client| client.backup().await)
        .await?;
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial);
    let written = write(answer.into_inner(), partial).await;
    let (revision, end, bytes) = match written {
        Ok(done) => done,
        Err(failure) => {
            let _ = tokio::fs::remove_file(partial).await;
            return Err(failure);
        }
    };
    tokio::fs::rename(partial, file)
        .await
        .map_err(|error| Failure::Local(format!("{}: {error}", file.display())))?;
    let name = file.display().to_string();
    match ctx.output {
        Output::Json => output::json(
            &json!({"file": name, "revision": revision, "keys": end.keys, "bytes": bytes}),
        ),
        Output::Table => output::table(
            &["FILE", "REVISION", "KEYS", "BYTES"],
            &[vec![
                name,
                revision.to_string(),
                end.keys.to_string(),
                bytes.to_string(),
            ]],
        ),
        Output::Simple => output::line(&format!(
            "saved {name}: revision {revision}, {} keys, {bytes} bytes",
            end.keys
        )),
    }
}

/// Streams the backup into `path`, checking it as it goes.
async fn write(
    stream: kv_store_client::ByteStream,
    path: &Path,
) -> Result<(u64, End, u64), Failure> {
    let local = |error: std::io::Error| Failure::Local(format!("{}: {error}", path.display()));
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(local)?);
    let mut digest = Sha256::new();
    let mut header: Option<Header> = None;
    // The last whole line, not yet in the checksum: it may be the end line.
    let mut last: Option<Vec<u8>> = None;
    let mut partial = Vec::new();
    let mut bytes = 0u64;
    let mut stream = stream.into_inner();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            Failure::Local(format!("the backup was cut short: {}", chain(&error)))
        })?;
        out.write_all(&chunk).await.map_err(local)?;
        bytes += chunk.len() as u64;
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if header.is_none() {
                header = serde_json::from_slice(&line).ok();
            }
            if let Some(before) = last.replace(line) {
                digest.update(&before);
            }
        }
    }
    out.flush().await.map_err(local)?;
    out.into_inner().sync_all().await.map_err(local)?;
    let cut = || Failure::Local("the backup was cut short (no last line)".to_owned());
    let header = header.ok_or_else(cut)?;
    let end: End = last
        .filter(|_| partial.is_empty())
        .and_then(|line| serde_json::from_slice(&line).ok())
        .filter(|end: &End| end.end)
        .ok_or_else(cut)?;
    let sum: String = digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    if sum != end.sha256 {
        return Err(Failure::Local(format!(
            "the backup's checksum does not match what arrived ({sum}, the server says {})",
            end.sha256
        )));
    }
    Ok((header.revision, end, bytes))
}
