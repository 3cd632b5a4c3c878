//! 64-byte aligned heap allocations and the `BufferPool` that recycles them.
//!
//! An allocation taken from a pool remembers the pool; when the last `Buffer` handle over it is
//! dropped, the allocation goes back to the pool's free list instead of to the allocator. That is
//! how "hand a buffer out again once it is unique" works without the pool holding live handles
//! (which would make every handed-out buffer look shared).

use crate::buffer::{BufferMut, Storage};
use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Alignment of every heap buffer: one cache line, and enough for any SIMD load.
pub const ALIGN: usize = 64;

/// One aligned allocation, optionally owned by a pool.
pub(crate) struct AlignedAlloc {
    ptr: NonNull<u8>,
    cap: usize,
    pool: Option<Arc<PoolShared>>,
}

// SAFETY: the allocation is plain bytes owned by this value; access goes through `&`/`&mut`.
unsafe impl Send for AlignedAlloc {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedAlloc {}

impl AlignedAlloc {
    /// A zeroed allocation of `cap` bytes.
    pub(crate) fn zeroed(cap: usize) -> Self {
        AlignedAlloc {
            ptr: raw_alloc(cap),
            cap,
            pool: None,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap` initialised bytes (zeroed at allocation or written
        // through `as_mut_slice`), or dangling-but-aligned with `cap == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Drop for AlignedAlloc {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            if pool.give_back(self.ptr, self.cap) {
                return;
            }
        }
        raw_free(self.ptr, self.cap);
    }
}

fn layout(cap: usize) -> Layout {
    // ALIGN is a power of two and cap is bounded by isize::MAX in practice; a failure here is a
    // broken invariant (a request larger than the address space).
    Layout::from_size_align(cap, ALIGN).expect("allocation size overflows isize")
}

fn raw_alloc(cap: usize) -> NonNull<u8> {
    if cap == 0 {
        // SAFETY: ALIGN is non-zero; a dangling aligned pointer is valid for zero-length slices.
        return unsafe { NonNull::new_unchecked(ALIGN as *mut u8) };
    }
    let layout = layout(cap);
    // SAFETY: the layout has non-zero size.
    let p = unsafe { alloc::alloc_zeroed(layout) };
    NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

fn raw_free(ptr: NonNull<u8>, cap: usize) {
    if cap > 0 {
        // SAFETY: `ptr` came from `raw_alloc(cap)` with the same layout.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout(cap)) }
    }
}

/// Counters that show whether a pool is doing its job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served from the free list.
    pub hits: u64,
    /// Requests that needed a fresh allocation.
    pub misses: u64,
    /// Bytes currently parked in the free list.
    pub retained_bytes: usize,
}

pub(crate) struct PoolShared {
    free: Mutex<Vec<(NonNull<u8>, usize)>>,
    retained: AtomicUsize,
    max_retained: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

// SAFETY: the raw pointers in the free list are unowned allocations, touched only under the mutex.
unsafe impl Send for PoolShared {}
// SAFETY: as above.
unsafe impl Sync for PoolShared {}

impl PoolShared {
    fn give_back(&self, ptr: NonNull<u8>, cap: usize) -> bool {
        if cap == 0 || self.retained.load(Ordering::Relaxed) + cap > self.max_retained {
            return false;
        }
        let Ok(mut free) = self.free.lock() else {
            return false;
        };
        self.retained.fetch_add(cap, Ordering::Relaxed);
        free.push((ptr, cap));
        true
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        if let Ok(free) = self.free.get_mut() {
            for (p, c) in free.drain(..) {
                raw_free(p, c);
            }
        }
    }
}

/// A pool of aligned heap buffers for receive paths: `take` hands out a unique, writable
/// [`BufferMut`]; when every handle over it is gone the memory returns here.
///
/// A request is served by the smallest free allocation that holds it and is at most twice as big
/// (so a 4-byte request does not pin a 64 MiB block). The pool keeps at most `max_retained` bytes.
///
/// # Examples
/// ```
/// use lockstep_tensor::BufferPool;
/// let pool = BufferPool::new(1 << 20);
/// let mut b = pool.take(1024);
/// b[0] = 7;
/// let frozen = b.freeze();
/// let addr = frozen.as_ptr();
/// drop(frozen);
/// assert_eq!(pool.take(1024).as_ptr(), addr); // reused, not reallocated
/// ```
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

impl BufferPool {
    /// A pool that parks at most `max_retained` bytes of idle buffers.
    pub fn new(max_retained: usize) -> Self {
        BufferPool {
            shared: Arc::new(PoolShared {
                free: Mutex::new(Vec::new()),
                retained: AtomicUsize::new(0),
                max_retained,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// A unique, writable buffer of exactly `len` bytes. Its contents are unspecified (zeroes or
    /// bytes of an earlier use), never uninitialised.
    pub fn take(&self, len: usize) -> BufferMut {
        let reused = self.take_free(len);
        let (ptr, cap) = match reused {
            Some(pc) => {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                pc
            }
            None => {
                self.shared.misses.fetch_add(1, Ordering::Relaxed);
                (raw_alloc(len), len)
            }
        };
        let alloc = AlignedAlloc {
            ptr,
            cap,
            pool: Some(self.shared.clone()),
        };
        BufferMut::from_storage(Storage::Heap(alloc), len)
    }

    fn take_free(&self, len: usize) -> Option<(NonNull<u8>, usize)> {
        if len == 0 {
            return None;
        }
        let mut free = self.shared.free.lock().ok()?;
        let limit = len.saturating_mul(2);
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, &(_, c))| c >= len && c <= limit)
            .min_by_key(|(_, &(_, c))| c)
            .map(|(i, _)| i)?;
        let pc = free.swap_remove(best);
        self.shared.retained.fetch_sub(pc.1, Ordering::Relaxed);
        Some(pc)
    }

    /// Hit/miss counters and retained bytes.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            retained_bytes: self.shared.retained.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("stats", &self.stats())
            .finish()
    }
}
