//! The Prometheus endpoint (`--metrics-listen`): a tiny HTTP/1.1 responder on shard 0. One
//! request per connection, read with a size and time bound, answered with `Connection: close`.
//! A scrape collects a snapshot from every shard over the mesh (`ShardPeers::collect_metrics`).

use std::rc::Rc;
use std::time::Duration;

use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::peers::ShardPeers;
use crate::handler::probe;
use crate::net::Stop;

/// Largest request head read; scrapers send a few hundred bytes.
pub const METRICS_REQUEST_SIZE_MAX_BYTES: usize = 8 * 1024;
/// A scraper that has not sent its request head by then is dropped.
pub const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, peers: Rc<ShardPeers>, stop: Stop) {
    loop {
        match select(listener.accept().boxed_local(), stop.clone()).await {
            Either::Left((Ok(stream), _)) => {
                // One scrape at a time: scrapes are rare and cheap, and this bounds the work.
                let answer = select(
                    one_scrape(stream, &peers).boxed_local(),
                    glommio::timer::sleep(METRICS_REQUEST_TIMEOUT).boxed_local(),
                )
                .await;
                match answer {
                    Either::Left((Err(e), _)) => debug!(error = %e, "metrics connection"),
                    Either::Left((Ok(()), _)) => {}
                    Either::Right(_) => debug!("metrics request timed out"),
                }
            }
            Either::Left((Err(e), _)) => warn!(error = %e, "metrics accept"),
            Either::Right(_) => break,
        }
    }
}

async fn one_scrape(mut stream: TcpStream, peers: &Rc<ShardPeers>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > METRICS_REQUEST_SIZE_MAX_BYTES {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return respond(&mut stream, "405 Method Not Allowed", "").await;
    }
    if path != b"/metrics" && !path.starts_with(b"/metrics?") {
        return respond(&mut stream, "404 Not Found", "try /metrics\n").await;
    }
    let body = probe::render(&peers.collect_metrics().await);
    respond(&mut stream, "200 OK", &body).await
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}
