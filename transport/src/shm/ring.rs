//! A single-producer, single-consumer byte ring in a shared mapping under `/dev/shm`.
//!
//! Layout: a 4 KiB header, then `capacity` (a power of two) data bytes. The header holds a magic,
//! a random generation (so a reader never attaches to a segment of another run), the creator's
//! pid (so a segment left by a crashed run is recognised as stale), and, each on its own cache
//! line, `head` (bytes ever written, producer-owned), `tail` (bytes ever read, consumer-owned),
//! and two futex words with "someone is parked" flags.
//!
//! Waiting is adaptive: spin briefly (a spinning round trip costs ~0.1 us), then `yield` (more
//! processes than cores: let the other side run), then park on the futex (a wake-up costs
//! ~25 us, so only when idle). The spin phase is deliberately short (16 pauses, ~0.4 us): on a
//! busy 2-core machine the peer often shares this core, and then every spin only delays the
//! hand-off; measured 4 KiB ping-pong p50 grew linearly with the spin count (16: ~3 us,
//! 200: ~7.5 us, 1000: ~30 us), while `yield_now` on an otherwise idle core returns in ~0.7 us
//! and so still behaves like spinning when the peer has a core of its own. The futex is the process-shared kind (no `FUTEX_PRIVATE_FLAG`).
//!
//! The other end of a ring is another process, and the header is shared memory it can write:
//! nothing read from it is trusted. Each side keeps the counter it owns (`head` for the
//! producer, `tail` for the consumer) in its own memory and only publishes it to the header, and
//! every counter read from the header is checked before use: the peer's `head` may only move
//! forward and never more than `capacity` past our `tail`; the peer's `tail` may only move forward
//! and never past our `head`. A header that breaks this marks the ring corrupt
//! ([`Ring::corruption`]): it reads as empty (or full) from then on, and the link turns that into
//! a protocol error naming the peer. Every index is taken modulo the capacity, so no value in the
//! header can make either side touch memory outside the mapping.
//!
//! For benchmarks and tests only, `LOCKSTEP_SHM_SPINS=N` sets the spins before yielding, and
//! `LOCKSTEP_SHM_WAIT=spin` in the environment makes every wait spin without yielding or parking, so `lockstep bench link` can show what pure spinning would
//! give next to the adaptive wait (see the transport notes for both figures).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bytes before the data area.
pub const RING_HEADER: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"LKSPRING");
const OFF_GEN: usize = 8;
const OFF_PID: usize = 16;
const OFF_CAP: usize = 24;
const OFF_HEAD: usize = 64;
const OFF_TAIL: usize = 128;
const OFF_DATA_SEQ: usize = 192;
const OFF_DATA_WAIT: usize = 196;
const OFF_SPACE_SEQ: usize = 256;
const OFF_SPACE_WAIT: usize = 260;
const SPINS: u32 = 16;
const YIELDS: u32 = 100;

/// Spins before yielding: `LOCKSTEP_SHM_SPINS` (benchmark knob, read once) or [`SPINS`].
fn spins() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("LOCKSTEP_SHM_SPINS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SPINS)
    })
}

/// Whether `LOCKSTEP_SHM_WAIT=spin` asks for pure spinning (benchmark knob, read once).
pub fn spin_only() -> bool {
    static SPIN: OnceLock<bool> = OnceLock::new();
    *SPIN.get_or_init(|| std::env::var("LOCKSTEP_SHM_WAIT").is_ok_and(|v| v == "spin"))
}

/// A view of one ring. The mapping must outlive it (the owner keeps both together).
pub struct Ring {
    base: *mut u8,
    cap: usize,
    /// Producer: bytes ever written (the truth; the header's `head` is a published copy).
    head: AtomicU64,
    /// Consumer: bytes ever read (the truth; the header's `tail` is a published copy).
    tail: AtomicU64,
    /// The peer's counters as last validated (they never move backwards).
    seen_head: AtomicU64,
    seen_tail: AtomicU64,
    /// Set once the header broke the protocol; see [`Ring::corruption`].
    corrupt: AtomicBool,
    why: OnceLock<String>,
}

// SAFETY: all shared state is accessed through atomics; data bytes are written only by the single
// producer in [tail+cap, head) order and read only by the single consumer after an Acquire load of
// `head`, the classic SPSC protocol.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// Fields of a ring header, read without attaching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// Random generation written by the creator.
    pub generation: u64,
    /// Creator's pid.
    pub owner_pid: u32,
    /// Data bytes.
    pub capacity: u64,
}

/// Parse a ring header from the first bytes of a segment (`None`: not a ring).
pub fn read_info(bytes: &[u8]) -> Option<RingInfo> {
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if u64_at(0)? != MAGIC {
        return None;
    }
    let pid = bytes.get(OFF_PID..OFF_PID + 4)?;
    Some(RingInfo {
        generation: u64_at(OFF_GEN)?,
        owner_pid: u32::from_le_bytes([pid[0], pid[1], pid[2], pid[3]]),
        capacity: u64_at(OFF_CAP)?,
    })
}

impl Ring {
    /// Initialise a fresh ring in `mem` (`RING_HEADER + cap` bytes, `cap` a power of two).
    ///
    /// # Safety
    /// `mem` must stay mapped while the returned ring (and any peer view) is used.
    pub unsafe fn init(mem: &mut [u8], generation: u64, cap: usize) -> Ring {
        mem[..RING_HEADER].fill(0);
        mem[OFF_GEN..OFF_GEN + 8].copy_from_slice(&generation.to_le_bytes());
        mem[OFF_PID..OFF_PID + 4].copy_from_slice(&std::process::id().to_le_bytes());
        mem[OFF_CAP..OFF_CAP + 8].copy_from_slice(&(cap as u64).to_le_bytes());
        mem[..8].copy_from_slice(&MAGIC.to_le_bytes());
        Ring::view(mem.as_mut_ptr(), cap, 0, 0)
    }

    fn view(base: *mut u8, cap: usize, head: u64, tail: u64) -> Ring {
        assert!(
            cap.is_power_of_two(),
            "ring capacity {cap} is not a power of two"
        );
        Ring {
            base,
            cap,
            head: AtomicU64::new(head),
            tail: AtomicU64::new(tail),
            seen_head: AtomicU64::new(head),
            seen_tail: AtomicU64::new(tail),
            corrupt: AtomicBool::new(false),
            why: OnceLock::new(),
        }
    }

    /// Attach to a ring another process initialised.
    ///
    /// # Safety
    /// As [`Ring::init`]; `mem` must hold a ring of `cap` bytes (`cap` a power of two and
    /// `mem.len() == RING_HEADER + cap`, checked by the caller). The counters are taken from
    /// the header as they are now (a fresh ring: both zero) and checked from then on.
    ///
    /// # Panics
    /// When `mem` is shorter than `RING_HEADER + cap` or `cap` is not a power of two (the
    /// caller's checks failed).
    pub unsafe fn attach(mem: &mut [u8], cap: usize) -> Ring {
        assert!(
            mem.len() >= RING_HEADER + cap,
            "mapping shorter than the ring"
        );
        let r = Ring::view(mem.as_mut_ptr(), cap, 0, 0);
        let head = r.atomic64(OFF_HEAD).load(Ordering::Acquire);
        let tail = r.atomic64(OFF_TAIL).load(Ordering::Acquire);
        let r = Ring::view(mem.as_mut_ptr(), cap, head, tail);
        if head < tail || head - tail > cap as u64 {
            r.mark_corrupt(format!("attached with head {head} and tail {tail}"));
        }
        r
    }

    /// Why the shared header was found to break the protocol (`None`: it has not).
    pub fn corruption(&self) -> Option<&str> {
        if self.corrupt.load(Ordering::Relaxed) {
            self.why.get().map(|s| s.as_str())
        } else {
            None
        }
    }

    fn mark_corrupt(&self, why: String) {
        let _ = self.why.set(format!("shared ring header corrupt: {why}"));
        self.corrupt.store(true, Ordering::Relaxed);
    }

    /// Producer: the consumer's published `tail`, checked (`None`: corrupt).
    fn peer_tail(&self, head: u64) -> Option<u64> {
        if self.corrupt.load(Ordering::Relaxed) {
            return None;
        }
        let tail = self.atomic64(OFF_TAIL).load(Ordering::Acquire);
        let seen = self.seen_tail.load(Ordering::Relaxed);
        if tail < seen || tail > head {
            self.mark_corrupt(format!(
                "consumer's tail {tail} outside [{seen}, {head}] (last seen, producer's head)"
            ));
            return None;
        }
        self.seen_tail.store(tail, Ordering::Relaxed);
        Some(tail)
    }

    /// Consumer: the producer's published `head`, checked (`None`: corrupt).
    fn peer_head(&self, tail: u64) -> Option<u64> {
        if self.corrupt.load(Ordering::Relaxed) {
            return None;
        }
        let head = self.atomic64(OFF_HEAD).load(Ordering::Acquire);
        let seen = self.seen_head.load(Ordering::Relaxed);
        let max = tail.saturating_add(self.cap as u64);
        if head < seen || head < tail || head > max {
            self.mark_corrupt(format!(
                "producer's head {head} outside [{}, {max}] (last seen, consumer's tail + capacity)",
                seen.max(tail)
            ));
            return None;
        }
        self.seen_head.store(head, Ordering::Relaxed);
        Some(head)
    }

    fn atomic64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is an 8-aligned offset inside the header of a page-aligned mapping.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn atomic32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as above, 4-aligned.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes the producer may write now (0 once the header is corrupt).
    pub fn free(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        match self.peer_tail(head) {
            Some(tail) => self.cap - (head - tail) as usize,
            None => 0,
        }
    }

    /// Bytes the consumer may read now (0 once the header is corrupt).
    pub fn available(&self) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        match self.peer_head(tail) {
            Some(head) => (head - tail) as usize,
            None => 0,
        }
    }

    /// Producer: make bytes up to position `pos` visible to the consumer.
    fn set_head(&self, pos: u64) {
        self.head.store(pos, Ordering::Relaxed);
        self.atomic64(OFF_HEAD).store(pos, Ordering::Release);
    }

    /// Producer: copy as much of `parts` (skipping the first `skip` bytes) as fits; bytes written.
    pub fn write_some(&self, parts: &[&[u8]], skip: usize) -> usize {
        let mut room = self.free();
        let start = self.head.load(Ordering::Relaxed);
        let mut pos = start;
        let mut skip = skip;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            let mut src = &p[skip..];
            skip = 0;
            while !src.is_empty() && room > 0 {
                let at = (pos as usize) & (self.cap - 1);
                let n = src.len().min(room).min(self.cap - at);
                // SAFETY: [at, at+n) lies in the data area and is free (not yet published to the
                // consumer), so only this producer touches it.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(self.base.add(RING_HEADER + at), n) };
                lockstep_tensor::kernels::copy(dst, &src[..n]);
                src = &src[n..];
                room -= n;
                pos += n as u64;
            }
        }
        if pos != start {
            self.set_head(pos);
            self.wake(OFF_DATA_SEQ, OFF_DATA_WAIT);
        }
        (pos - start) as usize
    }

    /// Producer: where the next write starts when `n` bytes are free now (`None`: not yet).
    /// Nothing is published; see [`Ring::reserved`] and [`Ring::publish`].
    pub fn try_reserve(&self, n: usize) -> Option<u64> {
        (n <= self.free()).then(|| self.head.load(Ordering::Relaxed))
    }

    /// Producer: the bytes `[pos + off, pos + off + len)` of the ring as two slices, the second
    /// empty unless they wrap around the end of the data area.
    ///
    /// # Safety
    /// The range must lie within room obtained from [`Ring::try_reserve`] (`pos` its result,
    /// `off + len` at most the reserved size) with nothing published since, and the caller must
    /// be the ring's only producer and hold no other slices of that room: only it writes there,
    /// and the consumer does not read past `head`.
    #[allow(clippy::mut_from_ref)] // the ring's memory is shared; exclusivity is the contract
    pub unsafe fn reserved(&self, pos: u64, off: usize, len: usize) -> (&mut [u8], &mut [u8]) {
        debug_assert!(off + len <= self.cap);
        let at = ((pos as usize).wrapping_add(off)) & (self.cap - 1);
        let first = len.min(self.cap - at);
        // SAFETY: both ranges lie in the data area (`at + first <= cap`, `len - first < cap`)
        // and do not overlap (`len <= cap`); exclusive use is the caller's contract.
        unsafe {
            let data = self.base.add(RING_HEADER);
            (
                std::slice::from_raw_parts_mut(data.add(at), first),
                std::slice::from_raw_parts_mut(data, len - first),
            )
        }
    }

    /// Producer: publish everything written up to position `end` (the consumer may read it).
    pub fn publish(&self, end: u64) {
        debug_assert!(end >= self.head.load(Ordering::Relaxed));
        self.set_head(end);
        self.wake(OFF_DATA_SEQ, OFF_DATA_WAIT);
    }

    /// Consumer: the readable bytes from the tail up to the wrap point (at most `max`).
    pub fn readable(&self, max: usize) -> &[u8] {
        let tail = self.tail.load(Ordering::Relaxed);
        let at = (tail as usize) & (self.cap - 1);
        let n = self.available().min(max).min(self.cap - at);
        // SAFETY: [at, at+n) was published by the producer (Acquire on head in `available`) and
        // is not reused until `consume` moves the tail past it.
        unsafe { std::slice::from_raw_parts(self.base.add(RING_HEADER + at), n) }
    }

    /// Consumer: release `n` bytes (at most what [`Ring::readable`] returned) to the producer.
    pub fn consume(&self, n: usize) {
        let tail = self.tail.load(Ordering::Relaxed) + n as u64;
        self.tail.store(tail, Ordering::Relaxed);
        self.atomic64(OFF_TAIL).store(tail, Ordering::Release);
        self.wake(OFF_SPACE_SEQ, OFF_SPACE_WAIT);
    }

    fn wake(&self, seq: usize, waiting: usize) {
        self.atomic32(seq).fetch_add(1, Ordering::SeqCst);
        if self.atomic32(waiting).load(Ordering::SeqCst) != 0 {
            futex_wake(self.atomic32(seq));
        }
    }

    /// Consumer: wait until `ready(self)` or for one park slice; `true` when ready.
    pub fn wait_data(&self, ready: impl Fn(&Ring) -> bool, slice: Duration) -> bool {
        self.wait(ready, OFF_DATA_SEQ, OFF_DATA_WAIT, slice)
    }

    /// Producer: wait until at least one byte is free or for one park slice.
    pub fn wait_space(&self, slice: Duration) -> bool {
        self.wait_space_for(1, slice)
    }

    /// Producer: wait until at least `n` bytes are free or for one park slice.
    pub fn wait_space_for(&self, n: usize, slice: Duration) -> bool {
        self.wait(|r| r.free() >= n, OFF_SPACE_SEQ, OFF_SPACE_WAIT, slice)
    }

    fn wait(
        &self,
        ready: impl Fn(&Ring) -> bool,
        seq: usize,
        waiting: usize,
        slice: Duration,
    ) -> bool {
        if spin_only() {
            return self.spin_for(&ready, slice);
        }
        let spins = spins();
        for i in 0..spins + YIELDS {
            if ready(self) {
                return true;
            }
            if i < spins {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let word = self.atomic32(seq);
        self.atomic32(waiting).store(1, Ordering::SeqCst);
        let seen = word.load(Ordering::SeqCst);
        if !ready(self) {
            futex_wait(word, seen, slice);
        }
        self.atomic32(waiting).store(0, Ordering::SeqCst);
        ready(self)
    }
}

impl Ring {
    /// Spin (never yield, never park) until `ready` or `slice` has passed.
    fn spin_for(&self, ready: &impl Fn(&Ring) -> bool, slice: Duration) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..1024 {
                if ready(self) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= slice {
                return ready(self);
            }
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in a shared mapping with a valid timeout; the
    // kernel only reads these. Spurious returns are handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32; wakes at most every waiter, touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

#[cfg(test)]
mod tests;
