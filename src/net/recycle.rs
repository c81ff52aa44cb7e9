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
//! is per thread (a shard's bodies are freed on that shard) and bounded in bytes; a
//! buffer that does not fit is freed.

use std::cell::RefCell;

use bytes::Bytes;

/// Largest buffer kept for reuse; larger bodies are rare and get a fresh buffer each time.
pub const RECYCLE_BUFFER_MAX_BYTES: usize = 4 << 20;
/// Most bytes of idle buffers a shard keeps.
pub const RECYCLE_POOL_MAX_BYTES: usize = 16 << 20;
const _: () = assert!(RECYCLE_BUFFER_MAX_BYTES <= RECYCLE_POOL_MAX_BYTES);

/// Size classes per power of two: 2^k, 1.25·2^k, 1.5·2^k and 1.75·2^k.
const CLASSES_PER_POWER: usize = 4;
/// Size classes up to `RECYCLE_BUFFER_MAX_BYTES`, indexed by `class_of`.
const CLASS_COUNT: usize = (RECYCLE_BUFFER_MAX_BYTES.ilog2() as usize + 1) * CLASSES_PER_POWER;

struct Pool {
    /// Idle buffers of each size class, each initialised over its whole length. A stack: the
    /// buffer freed last, likely still in the CPU's cache, is reused first.
    free: Vec<Vec<Vec<u8>>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool {
        free: (0..CLASS_COUNT).map(|_| Vec::new()).collect(),
        bytes: 0,
    });
}

/// The size class of `len`, the smallest class that holds it, with the index of its free list
/// if buffers of that class are pooled: lengths of at most `CLASSES_PER_POWER` bytes are their
/// own class, and classes over `RECYCLE_BUFFER_MAX_BYTES` are not pooled.
fn class_of(len: usize) -> (usize, Option<usize>) {
    if len <= CLASSES_PER_POWER {
        return (len, None);
    }
    let mut power = len.ilog2() as usize;
    let mut steps = len.div_ceil((1 << power) / CLASSES_PER_POWER);
    if steps == 2 * CLASSES_PER_POWER {
        power += 1;
        steps = CLASSES_PER_POWER;
    }
    let bytes = steps * ((1 << power) / CLASSES_PER_POWER);
    let index = power * CLASSES_PER_POWER + steps - CLASSES_PER_POWER;
    (bytes, (bytes <= RECYCLE_BUFFER_MAX_BYTES).then_some(index))
}

/// A buffer of at least `len` initialised bytes: an idle one of `len`'s size class if the
/// shard has one, else a new zeroed one of that class. A length whose class is not pooled gets
/// a buffer of exactly `len`: rounding it up would only cost memory.
pub fn take(len: usize) -> Vec<u8> {
    let (want, index) = class_of(len);
    let Some(index) = index else {
        return vec![0; len];
    };
    let reused = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let buffer = pool.free[index].pop()?;
        pool.bytes -= buffer.len();
        Some(buffer)
    });
    reused.unwrap_or_else(|| vec![0; want])
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
        let (class, Some(index)) = class_of(len) else {
            return;
        };
        if class != len {
            return;
        }
        // A thread being torn down has no pool any more: the buffer is simply freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.bytes + len <= RECYCLE_POOL_MAX_BYTES {
                pool.bytes += len;
                pool.free[index].push(buffer);
            }
        });
    }
}

#[cfg(test)]
fn idle() -> (usize, usize) {
    POOL.with(|pool| {
        let pool = pool.borrow();
        (pool.free.iter().map(Vec::len).sum(), pool.bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_hold_the_length_and_waste_at_most_a_quarter() {
        let mut indexes = std::collections::BTreeMap::new();
        for len in (1..100_000).chain([1 << 20, (1 << 20) + 1, 4 << 20]) {
            let (class, index) = class_of(len);
            assert!(class >= len, "{len} -> {class}");
            assert!(class * 4 <= len * 5 + 4, "{len} -> {class}");
            assert_eq!(class_of(class), (class, index), "a class is its own class");
            if let Some(index) = index {
                assert!(index < CLASS_COUNT, "{len} -> {index}");
                // One index per class, and one class per index.
                assert_eq!(*indexes.entry(index).or_insert(class), class, "{len}");
            }
        }
        assert_eq!(class_of(RECYCLE_BUFFER_MAX_BYTES + 1).1, None, "not pooled");
        let classes: Vec<usize> = indexes.values().copied().collect();
        assert!(
            classes.windows(2).all(|w| w[0] < w[1]),
            "indexes follow sizes"
        );
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
    fn many_connections_bodies_in_flight_all_come_back_up_to_the_bytes_limit() {
        // 2,000 bodies of 10,000 bytes in flight (10,240-byte class): 20 MB, over the limit.
        let held: Vec<Bytes> = (0..2_000).map(|_| freeze(take(10_000), 10_000)).collect();
        drop(held);
        let kept = RECYCLE_POOL_MAX_BYTES / 10_240;
        assert_eq!(idle(), (kept, kept * 10_240));
        let again: Vec<Vec<u8>> = (0..kept).map(|_| take(10_000)).collect();
        assert_eq!(idle(), (0, 0), "every one is reused");
        drop(again);
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
        let unpooled = take(RECYCLE_BUFFER_MAX_BYTES + 1);
        assert_eq!(
            unpooled.len(),
            RECYCLE_BUFFER_MAX_BYTES + 1,
            "not rounded up"
        );
        drop(freeze(unpooled, 1));
        assert_eq!(
            idle(),
            before,
            "over the largest kept size: freed, not pooled"
        );
    }
}
