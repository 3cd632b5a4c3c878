//! The RDMA send path copies nothing of a large payload: the plan of SENDs an `RdmaLink` posts
//! for a 64 MiB frame ([`FramePlan`], the same code `rdma/link/send.rs` runs between
//! registering the payload and `ibv_post_send`) points every payload SEND into the payload's own
//! memory, covers it exactly once, keeps at most the window in flight, and allocates nothing:
//! a counting global allocator sees zero allocations and zero bytes while it runs against a
//! fake completion queue. Runs everywhere (no device, no `rdma` feature needed).

use lockstep_transport::rdma::window::{FramePlan, Sge};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the allocations of the thread that turned counting on (other threads, such as
/// libtest's, are not counted).
struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    ON.try_with(Cell::get).unwrap_or(false)
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new, Ordering::Relaxed);
        }
        // SAFETY: as in `alloc` / `dealloc`.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The link's constants (`rdma::link::{SLOT, WINDOW}`, which exist only with the feature).
const SLOT: usize = 64 << 10;
const WINDOW: usize = 16;

#[test]
fn a_64_mib_frame_is_posted_from_its_own_memory_without_an_allocation() {
    let payload = vec![7u8; (64 << 20) + 3];
    let (base, len) = (payload.as_ptr() as u64, payload.len() as u64);
    let header: Sge = (1, 0x1000, 64);
    // Everything the loop records goes into memory allocated before counting starts.
    let mut posted: Vec<Sge> = Vec::with_capacity(len.div_ceil(SLOT as u64) as usize + 1);
    let mut batch = [(0u32, 0u64, 0u32); WINDOW];
    let (mut outstanding, mut peak, mut seed) = (0usize, 0usize, 1u64);

    ON.with(|c| c.set(true));
    let mut plan = FramePlan::new(header, 42, &payload, SLOT, WINDOW);
    while !plan.done() {
        let n = plan.next_batch(&mut batch);
        posted.extend_from_slice(&batch[..n]);
        outstanding += n;
        peak = peak.max(plan.in_flight());
        // A fake CQ: 0 to 4 completions per poll, in posting order.
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let done = ((seed >> 33) % 5) as usize;
        let done = done.min(outstanding);
        outstanding -= done;
        plan.completed(done);
    }
    ON.with(|c| c.set(false));

    assert_eq!(
        (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst)),
        (0, 0),
        "the send plan allocated"
    );
    assert_eq!(
        posted[0], header,
        "the header goes first, from the header slot"
    );
    let mut at = base;
    for &(lkey, addr, n) in &posted[1..] {
        assert_eq!(lkey, 42, "payload SENDs use the payload's registration");
        assert_eq!(
            addr, at,
            "pieces are consecutive addresses of the payload itself"
        );
        assert!(n as usize <= SLOT && n > 0);
        at += u64::from(n);
    }
    assert_eq!(at, base + len, "every payload byte is posted exactly once");
    assert_eq!(posted.len(), 1 + (len as usize).div_ceil(SLOT));
    assert_eq!(peak, WINDOW, "a long frame keeps the window full");
    assert_eq!(payload[0], 7);

    // The counter itself works: a copy of the payload, made while counting, is seen.
    ON.with(|c| c.set(true));
    let copy = payload.to_vec();
    ON.with(|c| c.set(false));
    assert_eq!(
        BYTES.load(Ordering::SeqCst),
        copy.len(),
        "the counter missed a copy"
    );
}
