//! Sequential HTTP/2 (h2c, prior knowledge) requests on one connection, for
//! `bench/callgrind.py --h2`: `h2_client ADDR GET|PUT WARMUP COUNT`. It
//! sends WARMUP requests, says `warm` on stderr, waits for a line on stdin,
//! sends COUNT more (each after the last one's answer, as a keep-alive
//! HTTP/1.1 client does), and says `done`.

use bytes::Bytes;
use http::{Method, Request};

type Sender = h2::client::SendRequest<Bytes>;

async fn one(sender: &mut Sender, method: &Method, n: usize) -> std::io::Result<()> {
    let path = match *method {
        Method::PUT => format!("/store/bench-put-{}", n % 10_000),
        _ => "/store/bench-key".to_owned(),
    };
    let request = Request::builder()
        .method(method.clone())
        .uri(format!("http://bench{path}"))
        .body(())
        .map_err(std::io::Error::other)?;
    let with_body = *method == Method::PUT;
    let (answer, mut stream) = sender
        .send_request(request, !with_body)
        .map_err(std::io::Error::other)?;
    if with_body {
        stream
            .send_data(Bytes::from_static(&[b'v'; 100]), true)
            .map_err(std::io::Error::other)?;
    }
    let answer = answer.await.map_err(std::io::Error::other)?;
    if answer.status().as_u16() >= 400 {
        return Err(std::io::Error::other(format!(
            "{method} {path}: {}",
            answer.status()
        )));
    }
    let mut body = answer.into_body();
    while let Some(data) = body.data().await {
        let data = data.map_err(std::io::Error::other)?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, method, warmup, count] = args.as_slice() else {
        return Err(std::io::Error::other("h2_client ADDR GET|PUT WARMUP COUNT"));
    };
    let method: Method = method.parse().map_err(std::io::Error::other)?;
    let warmup: usize = warmup.parse().map_err(std::io::Error::other)?;
    let count: usize = count.parse().map_err(std::io::Error::other)?;
    let socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let (sender, connection) = h2::client::handshake(socket)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut sender = sender.ready().await.map_err(std::io::Error::other)?;
    if method == Method::GET {
        let put = Request::put("http://bench/store/bench-key")
            .body(())
            .map_err(std::io::Error::other)?;
        let (answer, mut stream) = sender
            .send_request(put, false)
            .map_err(std::io::Error::other)?;
        stream
            .send_data(Bytes::from_static(&[b'v'; 100]), true)
            .map_err(std::io::Error::other)?;
        answer.await.map_err(std::io::Error::other)?;
    }
    for n in 0..warmup {
        one(&mut sender, &method, n).await?;
    }
    eprintln!("warm");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    for n in warmup..warmup + count {
        one(&mut sender, &method, n).await?;
    }
    eprintln!("done");
    Ok(())
}
