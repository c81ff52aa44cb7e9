//! The network edge: one task per connection on the shard that accepted it. Requests are read
//! one frame at a time (length checked before any allocation), answered in order, and Fetch
//! record data goes from the segment file to the socket with sendfile.

pub mod send;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::Shared;
use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use tracing::{debug, warn};

use crate::handler::{self, Context};
use crate::protocol::frame::{frame_body_len, header_prefix};
use crate::protocol::response::Part;

/// Completes (with any result) when the shard shuts down.
pub type Stop = Shared<oneshot::Receiver<()>>;

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    Eof,
    Stop,
    Io(io::Error),
    Refused(String),
}

/// Serves one client connection until EOF, an error, a request we refuse, or shutdown.
/// `stop` completes when the shard shuts down; it is only observed between requests, so a
/// request in flight is always answered.
pub async fn serve_connection(stream: TcpStream, ctx: Rc<Context>, stop: Stop) {
    serve(stream, ctx, stop, None).await
}

/// `serve_connection` for a connection admitted by `ConnectionLimits`: the slot is held until
/// the connection ends, and request bodies are counted against the shard's byte budget.
pub async fn serve_limited_connection(
    stream: TcpStream,
    ctx: Rc<Context>,
    stop: Stop,
    slot: ConnectionSlot,
) {
    let bytes = Rc::clone(&slot.limits.request_bytes);
    serve(stream, ctx, stop, Some(&bytes)).await;
    drop(slot);
}

async fn serve(stream: TcpStream, ctx: Rc<Context>, stop: Stop, request_bytes: Option<&Semaphore>) {
    let _ = stream.set_nodelay(true);
    send::set_nonblocking(&stream);
    let mut stream = stream.buffered();
    let reason = loop {
        match one_request(&mut stream, &ctx, stop.clone(), request_bytes).await {
            Ok(()) => continue,
            Err(c) => break c,
        }
    };
    match reason {
        Close::Eof | Close::Stop => debug!(?reason, "connection closed"),
        Close::Io(e)
            if e.kind() == io::ErrorKind::ConnectionReset
                || e.kind() == io::ErrorKind::BrokenPipe =>
        {
            debug!(%e, "connection reset")
        }
        Close::Io(e) => debug!(%e, "connection error"),
        Close::Refused(why) => warn!(%why, "closing connection"),
    }
}

async fn one_request(
    stream: &mut TcpStream<glommio::net::Preallocated>,
    ctx: &Rc<Context>,
    stop: Stop,
    request_bytes: Option<&Semaphore>,
) -> Result<(), Close> {
    let mut prefix = [0u8; 4];
    match select(stream.read_exact(&mut prefix).boxed_local(), stop).await {
        Either::Left((Ok(()), _)) => {}
        Either::Left((Err(e), _)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(Close::Eof);
        }
        Either::Left((Err(e), _)) => return Err(Close::Io(e)),
        Either::Right(_) => return Err(Close::Stop),
    }
    let len = frame_body_len(prefix, ctx.config.request_size_max_bytes)
        .map_err(|e| Close::Refused(e.to_string()))?;
    // Held until the response is written: bodies read and not yet answered stay within
    // --queued-max-request-bytes per shard; a request over it waits here (backpressure).
    let _permit = match request_bytes {
        Some(budget) if len > 0 => Some(
            budget
                .acquire_permit(len as u64)
                .await
                .map_err(|e| Close::Io(io::Error::other(e.to_string())))?,
        ),
        _ => None,
    };
    let mut body = BytesMut::zeroed(len);
    stream.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Close::Eof
        } else {
            Close::Io(e)
        }
    })?;
    let hp = header_prefix(&body).map_err(|e| Close::Refused(e.to_string()))?;
    let frame = match handler::dispatch(ctx, hp, body.freeze()).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(()),
        Err(e) => return Err(Close::Refused(e.to_string())),
    };
    for part in frame.parts {
        match part {
            Part::Mem(b) => stream.write_all(&b).await.map_err(Close::Io)?,
            Part::Region(region, len) => {
                send::send_region(stream, &region, len, ctx.config.fetch_sendfile)
                    .await
                    .map_err(Close::Io)?
            }
        }
    }
    Ok(())
}

/// One shard's connection limits (Kafka: max.connections, max.connections.per.ip) and its budget
/// of buffered request bytes (queued.max.request.bytes). Shard-local, like everything mutable.
pub struct ConnectionLimits {
    connections_max: u32,
    connections_per_ip_max: u32,
    open: Cell<u32>,
    open_per_ip: RefCell<HashMap<IpAddr, u32>>,
    request_bytes: Rc<Semaphore>,
}

impl ConnectionLimits {
    pub fn new(
        connections_max: u32,
        connections_per_ip_max: u32,
        request_bytes_max: u64,
    ) -> Rc<Self> {
        Rc::new(ConnectionLimits {
            connections_max,
            connections_per_ip_max,
            open: Cell::new(0),
            open_per_ip: RefCell::new(HashMap::new()),
            request_bytes: Rc::new(Semaphore::new(request_bytes_max)),
        })
    }

    /// Takes a connection slot for a client at `ip`, or says which limit it is over.
    pub fn admit(self: &Rc<Self>, ip: IpAddr) -> Result<ConnectionSlot, &'static str> {
        if self.open.get() >= self.connections_max {
            return Err("over --max-connections");
        }
        let mut per_ip = self.open_per_ip.borrow_mut();
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.connections_per_ip_max {
            if *from_ip == 0 {
                per_ip.remove(&ip);
            }
            return Err("over --max-connections-per-ip");
        }
        *from_ip += 1;
        self.open.set(self.open.get() + 1);
        Ok(ConnectionSlot {
            limits: Rc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.get()
    }
}

/// A connection counted by `ConnectionLimits`; dropping it frees the slot.
pub struct ConnectionSlot {
    limits: Rc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let limits = &self.limits;
        limits.open.set(limits.open.get() - 1);
        let mut per_ip = limits.open_per_ip.borrow_mut();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_count_per_shard_and_per_ip_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2, 1 << 20);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some("over --max-connections-per-ip"));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some("over --max-connections"));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.admit(a).unwrap();
        assert!(limits.open_per_ip.borrow().len() == 2);
    }
}
