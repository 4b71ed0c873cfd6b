//! The attacker of `bench/run.py --only answers`: clients that ask for
//! large answers and never read them, as issue 15's table did.
//!
//! `cargo run --release -p kv-bench --bin unread_answers -- ADDR MODE CONNECTIONS`
//!
//! MODE is one of
//! - `h2-listings`: HTTP/2 (prior knowledge) connections with a zero
//!   flow-control window, each asking for 190 listings of `big/`;
//! - `batches`: HTTP/1.1 connections, each sending one batch of 64 GETs of
//!   `big/00`..`big/63`;
//! - `h1-listings`: HTTP/1.1 connections, each asking for one listing of
//!   `big/`.
//!
//! It prints `holding` once every request is sent, then holds every
//! connection without reading until it is killed: what the server does
//! meanwhile is for the harness to watch.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const LISTING: &str = "/store?prefix=big/&limit=10000";
const H2_STREAMS: usize = 190;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(mode), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: unread_answers ADDR h2-listings|batches|h1-listings CONNECTIONS");
        std::process::exit(2);
    };
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR is IP:PORT");
    let count: usize = count.parse().expect("CONNECTIONS is a number");
    let mut held = Vec::new();
    for _ in 0..count {
        match mode.as_str() {
            "h2-listings" => held.push(tokio::spawn(h2_listings(addr))),
            "batches" => {
                let gets: Vec<String> = (0..64)
                    .map(|n| format!(r#"{{"method":"GET","key":"big/{n:02}"}}"#))
                    .collect();
                let body = format!("[{}]", gets.join(","));
                let request = format!(
                    "POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                held.push(tokio::spawn(h1_hold(addr, request)));
            }
            "h1-listings" => {
                let request = format!("GET {LISTING} HTTP/1.1\r\nHost: x\r\n\r\n");
                held.push(tokio::spawn(h1_hold(addr, request)));
            }
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        }
    }
    println!("holding");
    for connection in held {
        let _ = connection.await;
    }
    std::future::pending::<()>().await;
}

/// One HTTP/1.1 connection with a small receive buffer: sends `request`,
/// then holds the connection, never reading.
async fn h1_hold(addr: std::net::SocketAddr, request: String) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    std::future::pending::<()>().await;
    drop(stream);
}

/// An HTTP/2 connection with a zero window: sends the listings and holds
/// the streams without reading.
async fn h2_listings(addr: std::net::SocketAddr) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for _ in 0..H2_STREAMS {
        let request = http::Request::get(format!("http://kv{LISTING}"))
            .body(())
            .expect("request");
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break,
        };
        match client.send_request(request, true) {
            Ok((response, _)) => streams.push(response),
            Err(_) => break,
        }
    }
    std::future::pending::<()>().await;
    drop(streams);
}
