//! Request-body buffers handed back to the shard when their last `Bytes` drops, so the next
//! large body is read into memory that is already written: no zeroing, no page faults.
//!
//! Why: a body over the lookahead gets a buffer of its own, and safe Rust reads only into
//! initialised memory. Zeroing a fresh buffer for every Produce body (`BytesMut::zeroed`) was
//! 6 % of the broker's samples in a 1 KiB acks=1 produce profile, for bytes the recv overwrites
//! at once. Reading into uninitialised memory with our own `recv` was tried and cost more
//! syscalls than the memset (bench/README.md).
//!
//! Buffers come in size classes a quarter of a power of two apart, so bodies of similar size
//! reuse each other's buffers and a reused buffer is at most 25 % larger than needed. The pool
//! is per thread (a shard's bodies are freed on that shard) and bounded in count and bytes; a
//! buffer that does not fit is freed.

use std::cell::RefCell;

use bytes::Bytes;

/// Largest buffer kept for reuse; larger bodies are rare and get a fresh buffer each time.
pub const RECYCLE_BUFFER_MAX_BYTES: usize = 4 << 20;
/// Most bytes of idle buffers a shard keeps.
pub const RECYCLE_POOL_MAX_BYTES: usize = 16 << 20;
/// Most idle buffers a shard keeps: bounds the search for one that fits.
pub const RECYCLE_POOL_MAX_BUFFERS: usize = 64;
const _: () = assert!(RECYCLE_BUFFER_MAX_BYTES <= RECYCLE_POOL_MAX_BYTES);

#[derive(Default)]
struct Pool {
    /// Idle buffers, each initialised over its whole length, sorted by length.
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// The size class of `len`: the smallest of 2^k, 1.25·2^k, 1.5·2^k, 1.75·2^k that holds it.
fn class_bytes(len: usize) -> usize {
    if len <= 8 {
        return len.max(1);
    }
    let power = 1usize << (usize::BITS - 1 - len.leading_zeros());
    let step = power / 4;
    len.div_ceil(step) * step
}

/// A buffer of at least `len` initialised bytes: an idle one of `len`'s size class if the
/// shard has one, else a new zeroed one of that class.
pub fn take(len: usize) -> Vec<u8> {
    let want = class_bytes(len);
    if want <= RECYCLE_BUFFER_MAX_BYTES {
        let reused = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.buffers.partition_point(|b| b.len() < want);
            if pool.buffers.get(at).is_some_and(|b| b.len() == want) {
                let buffer = pool.buffers.remove(at);
                pool.bytes -= buffer.len();
                Some(buffer)
            } else {
                None
            }
        });
        if let Some(buffer) = reused {
            return buffer;
        }
    }
    vec![0; want]
}

/// The first `len` bytes of `buffer` (from `take`), which returns to the pool when the last
/// `Bytes` sharing it drops.
pub fn freeze(buffer: Vec<u8>, len: usize) -> Bytes {
    assert!(len <= buffer.len(), "a body fits the buffer read into");
    let mut bytes = Bytes::from_owner(Recycled(buffer));
    bytes.truncate(len);
    bytes
}

/// Owns a body's buffer for `Bytes::from_owner`, and hands it back on drop.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        let len = buffer.len();
        if len == 0 || len > RECYCLE_BUFFER_MAX_BYTES || len != class_bytes(len) {
            return;
        }
        // A thread being torn down has no pool any more: the buffer is simply freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.buffers.len() < RECYCLE_POOL_MAX_BUFFERS
                && pool.bytes + len <= RECYCLE_POOL_MAX_BYTES
            {
                let at = pool.buffers.partition_point(|b| b.len() < len);
                pool.bytes += len;
                pool.buffers.insert(at, buffer);
            }
        });
    }
}

#[cfg(test)]
fn idle() -> (usize, usize) {
    POOL.with(|pool| {
        let pool = pool.borrow();
        (pool.buffers.len(), pool.bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_hold_the_length_and_waste_at_most_a_quarter() {
        for len in (1..100_000).chain([1 << 20, (1 << 20) + 1, 5 << 20]) {
            let class = class_bytes(len);
            assert!(class >= len, "{len} -> {class}");
            assert!(class * 4 <= len * 5 + 4 * 8, "{len} -> {class}");
            assert_eq!(class_bytes(class), class, "a class is its own class");
        }
    }

    #[test]
    fn a_buffer_returns_when_its_last_bytes_drops_and_is_reused_without_zeroing() {
        let (count, bytes) = idle();
        let mut buffer = take(10_000);
        assert!(buffer.len() >= 10_000);
        buffer[..5].copy_from_slice(b"hello");
        let body = freeze(buffer, 10_000);
        let part = body.slice(0..5);
        drop(body);
        assert_eq!(idle(), (count, bytes), "a slice still holds it");
        assert_eq!(&part[..], b"hello");
        drop(part);
        assert_eq!(idle().0, count + 1);

        // The same class comes back as it was left, not zeroed again.
        let again = take(9_500);
        assert_eq!(&again[..5], b"hello");
        assert_eq!(idle(), (count, bytes));
        // Another class does not take it.
        drop(freeze(again, 9_500));
        let other = take(40_000);
        assert_eq!(&other[..5], &[0; 5]);
        assert_eq!(idle().0, count + 1);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_count() {
        let held: Vec<Bytes> = (0..RECYCLE_POOL_MAX_BUFFERS + 10)
            .map(|i| freeze(take(5_000 + i), 5_000))
            .collect();
        drop(held);
        assert_eq!(
            idle(),
            (RECYCLE_POOL_MAX_BUFFERS, RECYCLE_POOL_MAX_BUFFERS * 5_120)
        );
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bytes_nor_buffers_over_the_largest_size() {
        let big: Vec<Bytes> = (0..8)
            .map(|_| freeze(take(RECYCLE_BUFFER_MAX_BYTES), 1))
            .collect();
        drop(big);
        let full = RECYCLE_POOL_MAX_BYTES / RECYCLE_BUFFER_MAX_BYTES;
        assert_eq!(idle(), (full, full * RECYCLE_BUFFER_MAX_BYTES));
        let _reused = take(RECYCLE_BUFFER_MAX_BYTES);
        let before = idle();
        drop(freeze(take(RECYCLE_BUFFER_MAX_BYTES + 1), 1));
        assert_eq!(
            idle(),
            before,
            "over the largest kept size: freed, not pooled"
        );
    }
}
