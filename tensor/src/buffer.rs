//! `Buffer` and `BufferMut`: one handle over heap, shared-memory, file-mapped and externally
//! registered memory.
//!
//! The shape follows `bytes::Bytes`: a reference-counted storage plus an offset and a length, so
//! `clone` and `slice` are O(1) and never copy. A `Buffer` is immutable while shared; the only
//! handle to writable storage can get `&mut [u8]` ([`Buffer::get_mut`]) or become a
//! [`BufferMut`] again ([`Buffer::try_into_mut`]). Why one type rather than a trait object per
//! storage: the transport and the kernels then have a single concrete type on the hot path, and
//! a receive buffer from a shared-memory ring, a pool or an RDMA region flows upward unchanged.

use crate::alloc::AlignedAlloc;
use crate::error::{Error, Result};
use crate::shm::ShmMapping;
use bytes::Bytes;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::path::Path;
use std::sync::Arc;

/// Memory that Lockstep did not allocate, such as an RDMA-registered region or a `bytes::Bytes`.
///
/// Implementations must return the same address and length on every call.
pub trait ExternalMemory: Send + Sync + 'static {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes for writing, or `None` when the memory is read-only.
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        None
    }
}

impl ExternalMemory for Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl ExternalMemory for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        Some(self)
    }
}

/// A typed vector lent to a buffer without copying (see `Tensor::from_vec`).
pub(crate) struct TypedVec<T: bytemuck::Pod + Send + Sync + 'static>(pub(crate) Vec<T>);

impl<T: bytemuck::Pod + Send + Sync + 'static> ExternalMemory for TypedVec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        Some(bytemuck::cast_slice_mut(&mut self.0))
    }
}

/// Which memory a buffer lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// 64-byte aligned heap memory (possibly from a [`crate::BufferPool`]).
    Heap,
    /// A shared mapping of a file under `/dev/shm` (or another path) that other processes can map.
    SharedMemory,
    /// A read-only mapping of a regular file (e.g. a safetensors checkpoint).
    MappedFile,
    /// Memory registered from outside (RDMA regions, `bytes::Bytes`, vectors).
    External,
}

pub(crate) enum Storage {
    Heap(AlignedAlloc),
    Shm(ShmMapping),
    Mapped(memmap2::Mmap),
    External(Box<dyn ExternalMemory>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Heap(a) => a.as_slice(),
            Storage::Shm(m) => m.as_slice(),
            Storage::Mapped(m) => m,
            Storage::External(e) => e.bytes(),
        }
    }

    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            Storage::Heap(a) => Some(a.as_mut_slice()),
            Storage::Shm(m) => Some(m.as_mut_slice()),
            Storage::Mapped(_) => None,
            Storage::External(e) => e.bytes_mut(),
        }
    }

    fn backing(&self) -> Backing {
        match self {
            Storage::Heap(_) => Backing::Heap,
            Storage::Shm(_) => Backing::SharedMemory,
            Storage::Mapped(_) => Backing::MappedFile,
            Storage::External(_) => Backing::External,
        }
    }
}

/// A cheaply clonable, sliceable, immutable-while-shared byte buffer. See the module docs.
///
/// # Examples
/// ```
/// use lockstep_tensor::Buffer;
/// let b = Buffer::copy_from_slice(&[1, 2, 3, 4]);
/// let tail = b.slice(2..).unwrap();
/// assert_eq!(&tail[..], &[3, 4]);
/// assert_eq!(tail.as_ptr(), unsafe { b.as_ptr().add(2) }); // same memory, no copy
/// ```
#[derive(Clone)]
pub struct Buffer {
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl Buffer {
    /// A zeroed, 64-byte aligned heap buffer.
    pub fn zeroed(len: usize) -> Buffer {
        BufferMut::zeroed(len).freeze()
    }

    /// An aligned heap copy of `data`.
    pub fn copy_from_slice(data: &[u8]) -> Buffer {
        let mut m = BufferMut::zeroed(data.len());
        m.copy_from_slice(data);
        m.freeze()
    }

    /// Wrap external memory without copying.
    pub fn from_external(mem: impl ExternalMemory) -> Buffer {
        let len = mem.bytes().len();
        Buffer {
            storage: Arc::new(Storage::External(Box::new(mem))),
            offset: 0,
            len,
        }
    }

    /// Wrap a `bytes::Bytes` without copying (read-only).
    pub fn from_bytes(bytes: Bytes) -> Buffer {
        Buffer::from_external(bytes)
    }

    /// A `bytes::Bytes` over the same memory, without copying; the storage lives as long as
    /// the returned value.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// Map a file read-only (no copy; the page cache backs the buffer).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped.
    pub fn map_file(path: impl AsRef<Path>) -> Result<Buffer> {
        let path = path.as_ref();
        let io = |op, source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
        // SAFETY: the mapping is read-only; Lockstep writes checkpoint files by rename, never in
        // place, so a mapped file is not modified underneath us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("map", e))?;
        let len = map.len();
        Ok(Buffer {
            storage: Arc::new(Storage::Mapped(map)),
            offset: 0,
            len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// Start address of the bytes.
    pub fn as_ptr(&self) -> *const u8 {
        self.as_bytes().as_ptr()
    }

    /// Which memory backs this buffer.
    pub fn backing(&self) -> Backing {
        self.storage.backing()
    }

    /// The file behind a shared-memory buffer.
    pub fn shm_path(&self) -> Option<&Path> {
        match &*self.storage {
            Storage::Shm(m) => Some(m.path()),
            _ => None,
        }
    }

    /// A sub-range sharing the same storage.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when the range does not lie inside the buffer.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<Buffer> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        };
        if start > end || end > self.len {
            return Err(Error::OutOfBounds {
                start,
                end,
                len: self.len,
            });
        }
        Ok(Buffer {
            storage: self.storage.clone(),
            offset: self.offset + start,
            len: end - start,
        })
    }

    /// True when this is the only handle to its storage.
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.storage) == 1
    }

    /// True when both handles share one storage (clones and slices of each other).
    pub fn same_storage(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Mutable access, if this is the only handle and the memory is writable.
    pub fn get_mut(&mut self) -> Option<&mut [u8]> {
        let (off, len) = (self.offset, self.len);
        Arc::get_mut(&mut self.storage)?
            .bytes_mut()
            .map(|b| &mut b[off..off + len])
    }

    /// Turn the only handle over writable storage back into a [`BufferMut`] (over the same
    /// bytes); otherwise hand the buffer back unchanged.
    pub fn try_into_mut(self) -> std::result::Result<BufferMut, Buffer> {
        if self.storage.backing() == Backing::MappedFile {
            return Err(self);
        }
        let (offset, len) = (self.offset, self.len);
        BufferMut::from_unique(self.storage, offset, len).map_err(|storage| Buffer {
            storage,
            offset,
            len,
        })
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("backing", &self.backing())
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// The unique, writable form of a buffer: fill it, then [`freeze`](BufferMut::freeze) it into a
/// shareable [`Buffer`] without copying.
///
/// Like `bytes::BytesMut`, a `BufferMut` can be cut into disjoint pieces ([`split_to`]) that are
/// owned, sent and written independently (a gradient bucket travels to the aggregator while
/// backprop fills the next one), and joined again without copying ([`unsplit`]) when they are
/// adjacent pieces of one storage. Each piece is the only handle to its bytes.
///
/// # Examples
/// ```
/// use lockstep_tensor::BufferMut;
/// let mut whole = BufferMut::zeroed(8);
/// let mut head = whole.split_to(3);
/// head[0] = 7;
/// whole[0] = 9;
/// head.unsplit(whole).unwrap();
/// assert_eq!(&head[..4], &[7, 0, 0, 9]);
/// ```
///
/// [`split_to`]: BufferMut::split_to
/// [`unsplit`]: BufferMut::unsplit
pub struct BufferMut {
    storage: Arc<Storage>,
    /// Start of this piece inside the storage's writable bytes.
    ptr: *mut u8,
    offset: usize,
    len: usize,
}

// SAFETY: a `BufferMut` is the only handle to the bytes `ptr..ptr + len` (pieces made by
// `split_to` are disjoint, and `Buffer`s over the storage exist only after `freeze`, which
// consumes the piece); the storage itself is `Send + Sync`.
unsafe impl Send for BufferMut {}
// SAFETY: as above; `&BufferMut` only gives shared access to its own bytes.
unsafe impl Sync for BufferMut {}

impl BufferMut {
    /// A zeroed, 64-byte aligned heap buffer.
    pub fn zeroed(len: usize) -> BufferMut {
        BufferMut::from_storage(Storage::Heap(AlignedAlloc::zeroed(len)), len)
    }

    /// `storage` must be writable (every caller passes heap or shared memory).
    pub(crate) fn from_storage(mut storage: Storage, len: usize) -> BufferMut {
        let ptr = match storage.bytes_mut() {
            Some(b) => {
                assert!(len <= b.len(), "BufferMut longer than its storage");
                b.as_mut_ptr()
            }
            None => panic!("BufferMut over read-only storage"),
        };
        BufferMut {
            storage: Arc::new(storage),
            ptr,
            offset: 0,
            len,
        }
    }

    /// The unique handle over the writable bytes `offset..offset + len` of `storage`, whose
    /// strong count is one.
    fn from_unique(
        mut storage: Arc<Storage>,
        offset: usize,
        len: usize,
    ) -> std::result::Result<BufferMut, Arc<Storage>> {
        let Some(ptr) = Arc::get_mut(&mut storage)
            .and_then(|s| s.bytes_mut())
            .map(|b| b.as_mut_ptr())
        else {
            return Err(storage);
        };
        Ok(BufferMut {
            storage,
            // SAFETY: `offset + len` lies inside the storage (it came from a valid `Buffer`).
            ptr: unsafe { ptr.add(offset) },
            offset,
            len,
        })
    }

    /// Which memory backs this buffer.
    pub fn backing(&self) -> Backing {
        self.storage.backing()
    }

    /// Shorten to `len` bytes (no effect if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Cut off the first `at` bytes as their own piece; `self` keeps the rest. O(1), no copy.
    ///
    /// # Panics
    /// When `at > self.len()`.
    pub fn split_to(&mut self, at: usize) -> BufferMut {
        assert!(at <= self.len, "split_to({at}) past the end ({})", self.len);
        let head = BufferMut {
            storage: self.storage.clone(),
            ptr: self.ptr,
            offset: self.offset,
            len: at,
        };
        // SAFETY: `at <= len`, so the new start stays inside this piece.
        self.ptr = unsafe { self.ptr.add(at) };
        self.offset += at;
        self.len -= at;
        head
    }

    /// Join `next` back onto the end of `self` when it is the adjacent piece of the same
    /// storage (O(1), no copy); otherwise hand `next` back unchanged.
    ///
    /// # Errors
    /// `Err(next)` when the pieces are not adjacent parts of one storage.
    pub fn unsplit(&mut self, next: BufferMut) -> std::result::Result<(), BufferMut> {
        if !Arc::ptr_eq(&self.storage, &next.storage) || self.offset + self.len != next.offset {
            return Err(next);
        }
        self.len += next.len;
        Ok(())
    }

    /// True when no other piece of the storage exists (every split was joined back).
    pub fn is_whole(&self) -> bool {
        Arc::strong_count(&self.storage) == 1
    }

    /// Share it: O(1), no copy.
    pub fn freeze(self) -> Buffer {
        Buffer {
            storage: self.storage,
            offset: self.offset,
            len: self.len,
        }
    }
}

impl Deref for BufferMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` lies inside the storage, which `self.storage` keeps alive,
        // and no other handle writes these bytes (see the `Send` impl).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for BufferMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access to these bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for BufferMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferMut")
            .field("backing", &self.backing())
            .field("len", &self.len)
            .finish()
    }
}
