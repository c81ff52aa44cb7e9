//! The network edge: one task per connection on the shard that accepted it. Requests are read
//! one frame at a time (length checked before any allocation), answered in order, and Fetch
//! record data goes from the segment file to the socket with sendfile.

pub mod send;

use std::io;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::Shared;
use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
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
    let _ = stream.set_nodelay(true);
    send::set_nonblocking(&stream);
    let mut stream = stream.buffered();
    let reason = loop {
        match one_request(&mut stream, &ctx, stop.clone()).await {
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
