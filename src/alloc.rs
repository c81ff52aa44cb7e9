//! The process allocator: mimalloc, except that very large allocations are served by lazily
//! committed anonymous mappings (`MAP_NORESERVE`).
//!
//! Why mimalloc rather than glibc's: with 1,000 producer connections a shard holds thousands of
//! ~10 KB request bodies at once, freed in another order than they came. glibc's heap
//! fragmented to ~26 KB per body in flight and kept growing, page-faulting every new page
//! (31,000 faults in an 8 s run against mimalloc's 2,600); mimalloc's per-thread, size-classed
//! pages do not, and its frees are cheaper. Measured side by side in `bench/README.md`.
//!
//! Why the lazy mappings: the `kafka-protocol` decoder sizes a `Vec` from an array count read off
//! the wire before it checks that the bytes are there. A 20-byte request claiming 2^31 topics
//! would ask for hundreds of GiB, and a refused allocation aborts the process. With a lazy mapping
//! the reservation costs only address space; the decoder fails on the missing bytes a few elements
//! later and the mapping is returned whole. Legitimate large buffers (a 100 MiB request) behave as
//! before: pages are committed as they are touched.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

use crate::limits::ALLOC_LAZY_MIN_BYTES;

const PAGE_BYTES: usize = 4096;

pub struct LazyLargeAlloc;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= ALLOC_LAZY_MIN_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: every method forwards to `MiMalloc` or to mmap/munmap with matching sizes; `is_lazy`
// depends only on the layout, so an allocation is always freed by the path that made it.
unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { MiMalloc.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_lazy(&layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { MiMalloc.dealloc(ptr, layout) };
        }
        // SAFETY: `ptr` came from the mmap above with this very size.
        unsafe { libc::munmap(ptr.cast(), layout.size()) };
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { MiMalloc.alloc_zeroed(layout) };
        }
        // SAFETY: anonymous mappings are zero-filled.
        unsafe { self.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block of `new_size`; the copy covers the smaller of both sizes, and the
        // old block is freed by the same rule that allocated it.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_lazy_and_returned() {
        let a = LazyLargeAlloc;
        let layout = Layout::from_size_align(512 << 30, 8).unwrap(); // 512 GiB, more than RAM
        // SAFETY: layout is non-zero; the block is freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write(7);
            assert_eq!(p.read(), 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn realloc_across_the_threshold_keeps_bytes() {
        let a = LazyLargeAlloc;
        let small = Layout::from_size_align(1024, 8).unwrap();
        // SAFETY: sizes and layouts match at every step.
        unsafe {
            let p = a.alloc(small);
            for i in 0..1024 {
                p.add(i).write(i as u8);
            }
            let big = a.realloc(p, small, ALLOC_LAZY_MIN_BYTES * 2);
            for i in 0..1024 {
                assert_eq!(big.add(i).read(), i as u8);
            }
            let back = a.realloc(
                big,
                Layout::from_size_align(ALLOC_LAZY_MIN_BYTES * 2, 8).unwrap(),
                512,
            );
            for i in 0..512 {
                assert_eq!(back.add(i).read(), i as u8);
            }
            a.dealloc(back, Layout::from_size_align(512, 8).unwrap());
        }
    }
}
