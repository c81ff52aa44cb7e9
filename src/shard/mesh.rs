//! The cross-shard mesh: one bounded channel per (from, to) pair of shards, built on the main
//! thread before any executor starts, and a start barrier.
//!
//! Why not glommio's `MeshBuilder`: its `join()` is a rendezvous over shared channels whose
//! `connect()` handshakes cross executors, and about 2 % of broker starts under load never got
//! past it (both shards parked in io_uring, neither woken). These channels need no handshake; a
//! receiver parked on one is woken through glommio's foreign-waker path, the same one the
//! oneshot replies use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures::channel::mpsc;
use futures::future::poll_fn;
use futures::{SinkExt, Stream};

use crate::types::ShardId;

/// The shard a message was for has stopped.
#[derive(Debug)]
pub struct PeerGone(pub ShardId);

/// One shard's ends of the mesh: a sender to every other shard.
pub struct MeshSenders<T> {
    me: ShardId,
    to: Vec<Option<mpsc::Sender<T>>>,
}

impl<T> MeshSenders<T> {
    pub fn me(&self) -> ShardId {
        self.me
    }

    pub fn shard_count(&self) -> usize {
        self.to.len()
    }

    /// Sends to another shard; waits while that channel is full (never drops). Fails only when
    /// the peer is gone (it stopped).
    pub async fn send_to(&self, to: ShardId, msg: T) -> Result<(), PeerGone> {
        let Some(sender) = self.to.get(to.index()).and_then(Option::as_ref) else {
            panic!(
                "shard {} has no channel to shard {}: local work is a call",
                self.me, to
            );
        };
        // A clone per send: `Sender::send` needs `&mut`. Each clone may add one slot of slack
        // while it lives, so the bound is the capacity plus the sends in progress.
        let mut sender = sender.clone();
        sender.send(msg).await.map_err(|_| PeerGone(to))
    }
}

/// Builds the mesh for `shards`: for shard i, its senders and the receivers of every channel
/// that ends at i (tagged with the sending shard).
#[allow(clippy::type_complexity)]
pub fn build<T>(
    shards: usize,
    capacity: usize,
) -> Vec<(MeshSenders<T>, Vec<(ShardId, mpsc::Receiver<T>)>)> {
    let mut senders: Vec<Vec<Option<mpsc::Sender<T>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut receivers: Vec<Vec<(ShardId, mpsc::Receiver<T>)>> =
        (0..shards).map(|_| Vec::new()).collect();
    for (from, row) in senders.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (tx, rx) = mpsc::channel(capacity);
                *slot = Some(tx);
                receivers[to].push((ShardId(from as u16), rx));
            }
        }
    }
    senders
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(i, (to, from))| {
            (
                MeshSenders {
                    me: ShardId(i as u16),
                    to,
                },
                from,
            )
        })
        .collect()
}

/// Every shard waits here until all have opened their partitions. Woken by the last arrival
/// (no polling timer).
pub struct StartBarrier {
    total: usize,
    arrived: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
}

impl StartBarrier {
    pub fn new(total: usize) -> Arc<StartBarrier> {
        Arc::new(StartBarrier {
            total,
            arrived: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
        })
    }

    pub async fn arrive_and_wait(&self) {
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.total {
            for w in self.waiting.lock().expect("barrier lock").drain(..) {
                w.wake();
            }
            return;
        }
        poll_fn(|cx| {
            let mut waiting = self.waiting.lock().expect("barrier lock");
            // Checked under the lock the last arrival drains, so no wake-up can slip between.
            if self.arrived.load(Ordering::SeqCst) == self.total {
                Poll::Ready(())
            } else {
                waiting.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Receives from one peer until it hangs up.
pub async fn next<T>(rx: &mut mpsc::Receiver<T>) -> Option<T> {
    poll_fn(|cx| std::pin::Pin::new(&mut *rx).poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_has_one_channel_and_messages_arrive_tagged() {
        let mesh = build::<u32>(3, 4);
        let mut shards: Vec<_> = mesh.into_iter().collect();
        futures::executor::block_on(async {
            shards[0].0.send_to(ShardId(2), 7).await.unwrap();
            shards[1].0.send_to(ShardId(2), 8).await.unwrap();
        });
        let (_, receivers) = &mut shards[2];
        assert_eq!(receivers.len(), 2);
        let got: Vec<(ShardId, Option<u32>)> = receivers
            .iter_mut()
            .map(|(from, rx)| (*from, futures::executor::block_on(next(rx))))
            .collect();
        assert_eq!(got, [(ShardId(0), Some(7)), (ShardId(1), Some(8))]);
    }

    #[test]
    fn the_barrier_opens_for_everyone_when_the_last_arrives() {
        let barrier = StartBarrier::new(3);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || futures::executor::block_on(b.arrive_and_wait()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
