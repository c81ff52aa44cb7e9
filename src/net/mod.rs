//! The network edge: one connection = a reader task and a writer. The reader checks each frame's
//! length before allocating, reads the body, and starts its handler; the writer sends responses
//! in request order (Kafka's guarantee). Up to `CONNECTION_INFLIGHT_MAX` requests may be in
//! flight, so a producer's pipelined acks=all requests share fdatasync rounds.
//!
//! Only consecutive Produce requests overlap. Their appends take each partition's FIFO write lock
//! at their first poll, which happens in request order, so records keep the order they were sent
//! in. Every other request waits until nothing is in flight and holds the connection alone,
//! which is Kafka's one-at-a-time behaviour.

pub mod congestion;
mod frames;
mod recycle;
pub mod send;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::{mpsc, oneshot};
use futures::future::{Either, Shared, poll_fn, select};
use futures::io::ReadHalf;
use futures::{AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;
use tracing::{debug, warn};

use crate::handler::{self, Context, Frame, HandlerError};
use crate::limits::CONNECTION_INFLIGHT_MAX;
use crate::protocol::frame::header_prefix;
use crate::protocol::response::Part;
use frames::{FrameReadError, FrameReader};

/// Completes (with any result) when the shard shuts down.
pub type Stop = Shared<oneshot::Receiver<()>>;

type Handled = Result<Option<Frame>, HandlerError>;

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    Eof,
    Stop,
    Io(io::Error),
    Refused(String),
}

/// Serves one client connection until EOF, an error, a request we refuse, or shutdown.
/// `stop` is observed only between requests, so requests already read are answered.
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
    serve(stream, ctx, stop, Some(bytes)).await;
    drop(slot);
}

async fn serve(
    stream: TcpStream,
    ctx: Rc<Context>,
    stop: Stop,
    request_bytes: Option<Rc<Semaphore>>,
) {
    let _connection = crate::handler::probe::connection_opened();
    // JoinGroup records it as the member's client host (DescribeGroups shows it).
    let client_ip = stream.peer_addr().ok().map(|a| a.ip());
    let _ = stream.set_nodelay(true);
    send::set_nonblocking(&stream);
    let sock_fd = stream.as_raw_fd();
    if let Some(name) = &ctx.config.tcp_congestion_control {
        // SAFETY: `sock_fd` is this connection's socket, open for as long as `stream` lives.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock_fd) };
        // Checked at start; a failure here leaves the system's algorithm, which still works.
        if let Err(e) = congestion::set(&fd, name) {
            tracing::debug!(error = %e, congestion = %name, "cannot set the congestion control");
        }
    }
    let (rd, wr) = stream.split();
    let (tx, rx) = mpsc::channel(CONNECTION_INFLIGHT_MAX);
    let inflight = Rc::new(Inflight::default());
    let reader = read_requests(
        FrameReader::new(rd),
        ctx.clone(),
        client_ip,
        stop,
        tx,
        inflight,
        request_bytes,
    )
    .boxed_local();
    let writer = write_responses(wr, sock_fd, ctx.config.fetch_sendfile, rx).boxed_local();
    let reason = match select(reader, writer).await {
        // The reader is done (EOF, stop, bad frame): answer what was read, then close.
        Either::Left((reason, writer)) => match writer.await {
            Ok(()) => reason,
            Err(e) => e,
        },
        // The writer failed: the socket is unusable; drop the reader.
        Either::Right((result, _)) => result.err().unwrap_or(Close::Eof),
    };
    match reason {
        Close::Eof | Close::Stop => debug!(?reason, "connection closed"),
        Close::Io(e) => debug!(%e, "connection error"),
        Close::Refused(why) => warn!(%why, "closing connection"),
    }
}

/// Requests started and not yet finished, and whether one of them must run alone.
#[derive(Default)]
struct Inflight {
    count: Cell<usize>,
    exclusive: Cell<bool>,
    idle_waker: RefCell<Option<Waker>>,
}

impl Inflight {
    fn finish(&self) {
        self.count.set(self.count.get() - 1);
        if self.count.get() == 0 {
            self.exclusive.set(false);
            if let Some(w) = self.idle_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    async fn idle(&self) {
        poll_fn(|cx| {
            if self.count.get() == 0 {
                Poll::Ready(())
            } else {
                *self.idle_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

async fn read_requests(
    mut rd: FrameReader<ReadHalf<TcpStream>>,
    ctx: Rc<Context>,
    client_ip: Option<std::net::IpAddr>,
    stop: Stop,
    mut tx: mpsc::Sender<JoinHandle<Handled>>,
    inflight: Rc<Inflight>,
    request_bytes: Option<Rc<Semaphore>>,
) -> Close {
    loop {
        let limit = ctx.config.request_size_max_bytes;
        let len = match select(rd.next_len(limit).boxed_local(), stop.clone()).await {
            Either::Left((Ok(len), _)) => len,
            Either::Left((Err(FrameReadError::Eof), _)) => return Close::Eof,
            // Closed inside a length prefix: an end like one inside a body (below).
            Either::Left((Err(FrameReadError::Io(e)), _))
                if e.kind() == io::ErrorKind::UnexpectedEof =>
            {
                return Close::Eof;
            }
            Either::Left((Err(FrameReadError::Refused(e)), _)) => {
                return Close::Refused(e.to_string());
            }
            Either::Left((Err(FrameReadError::Io(e)), _)) => return Close::Io(e),
            Either::Right(_) => return Close::Stop,
        };
        // Held while the body is buffered and handled: bodies in memory stay within
        // --queued-max-request-bytes per shard; a request over it waits here (backpressure).
        let permit = match &request_bytes {
            Some(budget) if len > 0 => match budget.acquire_static_permit(len as u64).await {
                Ok(permit) => Some(permit),
                Err(e) => return Close::Io(io::Error::other(e.to_string())),
            },
            _ => None,
        };
        let body = match rd.body(len).await {
            Ok(body) => body,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Close::Eof,
            Err(e) => return Close::Io(e),
        };
        let hp = match header_prefix(&body) {
            Ok(hp) => hp,
            Err(e) => return Close::Refused(e.to_string()),
        };
        let exclusive = hp.api_key != ApiKey::Produce as i16;
        if exclusive || inflight.exclusive.get() {
            inflight.idle().await;
        }
        inflight.count.set(inflight.count.get() + 1);
        inflight.exclusive.set(exclusive);
        let (ctx, done) = (ctx.clone(), inflight.clone());
        let task = glommio::spawn_local(async move {
            let result = handler::dispatch(&ctx, hp, body, client_ip).await;
            drop(permit);
            done.finish();
            result
        })
        .detach();
        // Waits while CONNECTION_INFLIGHT_MAX responses are pending: TCP pushes back on the client.
        if tx.send(task).await.is_err() {
            return Close::Eof;
        }
    }
}

/// Largest response part copied into the gathered output; bigger ones are sent on their own.
const GATHER_PART_BYTES_MAX: usize = 4 * 1024;
/// Output gathered before it is sent even though more responses are ready.
const GATHER_BYTES_MAX: usize = 16 * 1024;

/// Sends responses in request order. Small responses that are ready together (pipelined Produce
/// requests whose appends finished in the same turn) go out in one send: each send is a pass
/// through the TCP stack, on loopback the peer's receive too, a quarter of the broker's CPU in a
/// produce profile. A response is never held back for one that is not ready.
async fn write_responses<W: AsyncWrite + Unpin>(
    mut wr: W,
    sock_fd: RawFd,
    fetch_sendfile: bool,
    mut rx: mpsc::Receiver<JoinHandle<Handled>>,
) -> Result<(), Close> {
    let mut gathered: Vec<u8> = Vec::new();
    loop {
        let mut task = match rx.try_recv() {
            Ok(task) => task,
            Err(mpsc::TryRecvError::Closed) => break,
            // Nothing more started: send what is gathered, then wait.
            Err(mpsc::TryRecvError::Empty) => {
                send_gathered(&mut wr, &mut gathered).await?;
                match rx.next().await {
                    Some(task) => task,
                    None => break,
                }
            }
        };
        let handled = match (&mut task).now_or_never() {
            Some(handled) => handled,
            None => {
                send_gathered(&mut wr, &mut gathered).await?;
                task.await
            }
        };
        let frame = match handled {
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => continue, // acks=0: no response is owed.
            Some(Err(e)) => return Err(Close::Refused(e.to_string())),
            None => return Err(Close::Refused("request handler was cancelled".into())),
        };
        crate::handler::probe::bytes_out(frame.parts.iter().map(Part::len_bytes).sum());
        for part in frame.parts {
            match part {
                Part::Mem(b) if b.len() <= GATHER_PART_BYTES_MAX => {
                    gathered.extend_from_slice(&b);
                    if gathered.len() >= GATHER_BYTES_MAX {
                        send_gathered(&mut wr, &mut gathered).await?;
                    }
                }
                Part::Mem(b) => {
                    send_gathered(&mut wr, &mut gathered).await?;
                    wr.write_all(&b).await.map_err(Close::Io)?
                }
                Part::Region(region, len) => {
                    send_gathered(&mut wr, &mut gathered).await?;
                    send::send_region(&mut wr, sock_fd, &region, len, fetch_sendfile)
                        .await
                        .map_err(Close::Io)?
                }
            }
        }
    }
    send_gathered(&mut wr, &mut gathered).await
}

/// Sends and empties the gathered output, if any.
async fn send_gathered<W: AsyncWrite + Unpin>(
    wr: &mut W,
    gathered: &mut Vec<u8>,
) -> Result<(), Close> {
    if !gathered.is_empty() {
        wr.write_all(gathered).await.map_err(Close::Io)?;
        gathered.clear();
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
    use std::pin::Pin;
    use std::task::Context as TaskContext;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::protocol::response::ResponseFrame;

    /// A socket that records each write it is asked for.
    #[derive(Clone, Default)]
    struct Recorder(Rc<RefCell<Vec<Vec<u8>>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.borrow_mut().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A request handler that answers `response` once `go` fires (at once without one).
    fn handler(response: &'static [u8], go: Option<oneshot::Receiver<()>>) -> JoinHandle<Handled> {
        glommio::spawn_local(async move {
            if let Some(go) = go {
                let _ = go.await;
            }
            Ok(Some(ResponseFrame::from_bytes(Bytes::from_static(
                response,
            ))))
        })
        .detach()
    }

    #[test]
    fn responses_ready_together_share_one_write_and_none_waits_for_a_later_one() {
        crate::shard::keep_awake::run_local(async {
            let socket = Recorder::default();
            let (mut tx, rx) = mpsc::channel(CONNECTION_INFLIGHT_MAX);
            let mut writer = Box::pin(write_responses(socket.clone(), -1, false, rx));
            // The first waits; the two behind it finish first but must not overtake it.
            let (go_a, a) = oneshot::channel();
            tx.send(handler(b"a", Some(a))).await.unwrap();
            tx.send(handler(b"b", None)).await.unwrap();
            tx.send(handler(b"c", None)).await.unwrap();
            let (go_d, d) = oneshot::channel();
            tx.send(handler(b"d", Some(d))).await.unwrap();
            glommio::timer::sleep(Duration::from_millis(1)).await;
            assert!(futures::poll!(writer.as_mut()).is_pending());
            assert!(socket.0.borrow().is_empty(), "b and c wait for a");
            go_a.send(()).unwrap();
            glommio::timer::sleep(Duration::from_millis(1)).await;
            assert!(futures::poll!(writer.as_mut()).is_pending());
            // a, b and c were ready together: one write. d is not ready and holds nothing back.
            assert_eq!(*socket.0.borrow(), vec![b"abc".to_vec()]);
            go_d.send(()).unwrap();
            drop(tx);
            assert!(writer.await.is_ok());
            assert_eq!(*socket.0.borrow(), vec![b"abc".to_vec(), b"d".to_vec()]);
        });
    }

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
