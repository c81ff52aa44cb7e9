//! The network edge: one connection = a reader task and a writer. The reader checks each frame's
//! length before allocating, reads the body, and starts its handler; the writer sends responses
//! in request order (Kafka's guarantee). Up to `CONNECTION_INFLIGHT_MAX` requests may be in
//! flight, so a producer's pipelined acks=all requests share fdatasync rounds.
//!
//! Only consecutive Produce requests overlap. Their appends take each partition's FIFO write lock
//! at their first poll, which happens in request order, so records keep the order they were sent
//! in. Every other request waits until nothing is in flight and holds the connection alone,
//! which is Kafka's one-at-a-time behaviour.

pub mod send;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::BytesMut;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, Shared, poll_fn, select};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
use glommio::net::{Preallocated, TcpStream};
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;
use tracing::{debug, warn};

use crate::handler::{self, Context, Frame, HandlerError};
use crate::limits::CONNECTION_INFLIGHT_MAX;
use crate::protocol::frame::{frame_body_len, header_prefix};
use crate::protocol::response::Part;

/// Completes (with any result) when the shard shuts down.
pub type Stop = Shared<oneshot::Receiver<()>>;

type Stream = TcpStream<Preallocated>;
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
    let _connection = crate::handler::probe::connection_opened();
    let _ = stream.set_nodelay(true);
    send::set_nonblocking(&stream);
    let sock_fd = stream.as_raw_fd();
    let (rd, wr) = stream.buffered().split();
    let (tx, rx) = mpsc::channel(CONNECTION_INFLIGHT_MAX);
    let inflight = Rc::new(Inflight::default());
    let reader = read_requests(rd, ctx.clone(), stop, tx, inflight).boxed_local();
    let writer = write_responses(wr, sock_fd, ctx, rx).boxed_local();
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
    mut rd: ReadHalf<Stream>,
    ctx: Rc<Context>,
    stop: Stop,
    mut tx: mpsc::Sender<JoinHandle<Handled>>,
    inflight: Rc<Inflight>,
) -> Close {
    loop {
        let mut prefix = [0u8; 4];
        match select(rd.read_exact(&mut prefix).boxed_local(), stop.clone()).await {
            Either::Left((Ok(()), _)) => {}
            Either::Left((Err(e), _)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Close::Eof;
            }
            Either::Left((Err(e), _)) => return Close::Io(e),
            Either::Right(_) => return Close::Stop,
        }
        let len = match frame_body_len(prefix, ctx.config.request_size_max_bytes) {
            Ok(len) => len,
            Err(e) => return Close::Refused(e.to_string()),
        };
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = rd.read_exact(&mut body).await {
            return if e.kind() == io::ErrorKind::UnexpectedEof {
                Close::Eof
            } else {
                Close::Io(e)
            };
        }
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
            let result = handler::dispatch(&ctx, hp, body.freeze()).await;
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

async fn write_responses(
    mut wr: WriteHalf<Stream>,
    sock_fd: RawFd,
    ctx: Rc<Context>,
    mut rx: mpsc::Receiver<JoinHandle<Handled>>,
) -> Result<(), Close> {
    while let Some(task) = rx.next().await {
        let frame = match task.await {
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => continue, // acks=0: no response is owed.
            Some(Err(e)) => return Err(Close::Refused(e.to_string())),
            None => return Err(Close::Refused("request handler was cancelled".into())),
        };
        crate::handler::probe::bytes_out(frame.parts.iter().map(Part::len_bytes).sum());
        for part in frame.parts {
            match part {
                Part::Mem(b) => wr.write_all(&b).await.map_err(Close::Io)?,
                Part::Region(region, len) => {
                    send::send_region(&mut wr, sock_fd, &region, len, ctx.config.fetch_sendfile)
                        .await
                        .map_err(Close::Io)?
                }
            }
        }
    }
    Ok(())
}
