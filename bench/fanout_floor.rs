//! The fan-out benchmark's floor: a server that holds its watchers'
//! sockets and nothing else, and writes one prebuilt SSE chunk to each,
//! from one loop, when a PUT arrives. No watch server on tokio can deliver
//! an event to its watchers with less work; `bench/run.py --only fanout`
//! measures kv-store (and the seed) against it, as `bench/ceiling.rs` is
//! the ceiling for single requests.
//!
//! It speaks just enough HTTP for `bench/fanout_client.rs`: a request whose first
//! byte is `P` is the PUT (answered 204), any other opens a watch.
//!
//! `cargo run --release -p kv-bench --bin fanout_floor -- 127.0.0.1:3203`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OPEN: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
transfer-encoding: chunked\r\n\r\n1A\r\nevent: snapshot\ndata: {}\n\n\r\n";
const EVENT: &[u8] = b"46\r\nid: 2\nevent: put\ndata: {\"key\":\"fanout\",\"value\":\"hello\",\"revision\":2}\n\n\r\n";

type Watchers = Rc<RefCell<Vec<TcpStream>>>;

async fn serve(mut stream: TcpStream, watchers: Watchers) -> std::io::Result<()> {
    let mut head = [0u8; 1024];
    let n = stream.read(&mut head).await?;
    if head[..n].first() != Some(&b'P') {
        stream.write_all(OPEN).await?;
        watchers.borrow_mut().push(stream);
        return Ok(());
    }
    // The body ("hello") comes with the head or right after it.
    let mut taken = watchers.take();
    for watcher in &mut taken {
        // Loopback sockets with an empty send buffer take a chunk at once.
        let _ = watcher.try_write(EVENT);
    }
    stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await?;
    watchers.borrow_mut().append(&mut taken);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .map_or("127.0.0.1:3203", |arg| arg.leak())
        .parse()
        .map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(addr).await?;
    let watchers: Watchers = Rc::default();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::task::spawn_local(serve(stream, watchers.clone()));
            }
        })
        .await
}
