//! Buffer behaviour: zero-copy clones and slices, uniqueness, pooling, `bytes` interop, and a
//! shared-memory buffer written by one OS process and read by another.

use lockstep_tensor::shm::{create_shared, open_shared, shm_path};
use lockstep_tensor::{Backing, Buffer, BufferMut, BufferPool, ALIGN};
use std::process::Command;

#[test]
fn clones_and_slices_share_memory() {
    let mut m = BufferMut::zeroed(4096);
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let a = m.freeze();
    let b = a.clone();
    assert_eq!(a.as_ptr(), b.as_ptr(), "clone must not copy");
    assert!(a.same_storage(&b));
    let s = a.slice(100..200).unwrap();
    assert_eq!(
        s.as_ptr(),
        a.as_ptr().wrapping_add(100),
        "slice must point into the original"
    );
    assert_eq!(&s[..], &a[100..200]);
    let ss = s.slice(10..).unwrap();
    assert_eq!(ss.as_ptr(), a.as_ptr().wrapping_add(110));
    assert!(a.slice(0..4097).is_err());
    assert_eq!(
        a.as_ptr() as usize % ALIGN,
        0,
        "heap buffers are 64-byte aligned"
    );
}

#[test]
fn writable_only_when_unique() {
    let mut a = Buffer::zeroed(16);
    assert!(a.get_mut().is_some());
    let b = a.clone();
    assert!(a.get_mut().is_none(), "shared buffers are immutable");
    drop(b);
    a.get_mut().unwrap()[0] = 9;
    assert_eq!(a[0], 9);
    let m = a.try_into_mut().expect("unique buffer converts back");
    assert_eq!(m[0], 9);
}

#[test]
fn bytes_round_trip_without_copy() {
    let a = Buffer::copy_from_slice(b"hello world");
    let ptr = a.as_ptr();
    let bytes = a.into_bytes();
    assert_eq!(bytes.as_ptr(), ptr);
    let back = Buffer::from_bytes(bytes.clone());
    assert_eq!(back.as_ptr(), ptr);
    assert_eq!(back.backing(), Backing::External);
    let mut back = back;
    assert!(back.get_mut().is_none(), "Bytes-backed memory is read-only");
}

#[test]
fn pool_reuses_once_unique() {
    let pool = BufferPool::new(1 << 20);
    let a = pool.take(1000).freeze();
    let ptr = a.as_ptr();
    let a2 = a.clone();
    drop(a);
    // Still referenced by a2: the next take must not get this memory.
    let other = pool.take(1000);
    assert_ne!(other.as_ptr(), ptr);
    drop(other);
    drop(a2);
    let again = pool.take(900);
    assert_eq!(again.len(), 900);
    let stats = pool.stats();
    assert!(stats.hits >= 1, "{stats:?}");
    // Size classes: a tiny request does not take a big block.
    let small = pool.take(10);
    assert_ne!(small.as_ptr(), again.as_ptr());
}

const CHILD_ENV: &str = "LOCKSTEP_SHM_CHILD_PATH";

#[test]
fn shared_memory_written_by_one_process_is_read_by_another() {
    let path = shm_path(&format!("lockstep-test-{}", std::process::id()));
    let mut m = create_shared(&path, 1 << 16).unwrap();
    assert_eq!(m.backing(), Backing::SharedMemory);
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    let buf = m.freeze();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "shm_child_reads_and_answers",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child wrote its answer into the last byte; we see it through our mapping.
    assert_eq!(buf[(1 << 16) - 1], 0xAB);
    drop(buf);
    assert!(
        !path.exists(),
        "the creator removes the segment when dropped"
    );
}

/// Runs only as the child of the test above.
#[test]
#[ignore = "child process of shared_memory_written_by_one_process_is_read_by_another"]
fn shm_child_reads_and_answers() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        panic!("run by the parent test only (needs {CHILD_ENV})");
    };
    let view = open_shared(&path).unwrap();
    for (i, &b) in view[..(1 << 16) - 1].iter().enumerate() {
        assert_eq!(b, (i * 7 % 256) as u8, "byte {i}");
    }
    let mut w = lockstep_tensor::shm::open_shared_mut(&path).unwrap();
    let n = w.len();
    w[n - 1] = 0xAB;
}

#[test]
fn split_pieces_are_independent_and_rejoin_without_copy() {
    let mut whole = BufferMut::zeroed(64);
    let base = whole.as_ptr();
    let mut a = whole.split_to(16);
    let mut b = whole.split_to(16);
    assert!(!a.is_whole());
    // Pieces move to other threads and are written there.
    let t = std::thread::spawn(move || {
        b.fill(2);
        b
    });
    a.fill(1);
    whole.fill(3);
    let b = t.join().unwrap();
    assert_eq!(b.as_ptr(), unsafe { base.add(16) });
    // Not adjacent: handed back.
    let whole = a.unsplit(whole).unwrap_err();
    a.unsplit(b).unwrap();
    a.unsplit(whole).unwrap();
    assert!(a.is_whole());
    assert_eq!(a.len(), 64);
    assert_eq!(a.as_ptr(), base);
    let want: Vec<u8> = [vec![1u8; 16], vec![2; 16], vec![3; 32]].concat();
    assert_eq!(&a[..], want.as_slice());
}

#[test]
fn pieces_of_other_storage_do_not_join() {
    let mut x = BufferMut::zeroed(8);
    let y = BufferMut::zeroed(8);
    assert!(x.unsplit(y).is_err());
    assert_eq!(x.len(), 8);
}

#[test]
fn frozen_unique_buffer_becomes_writable_again() {
    let mut m = BufferMut::zeroed(32);
    m[0] = 5;
    let b = m.freeze();
    let tail = b.slice(8..).unwrap();
    let b = b.try_into_mut().unwrap_err(); // tail still shares it
    drop(tail);
    let m = b.try_into_mut().unwrap();
    assert_eq!(m[0], 5);
    assert!(m.is_whole());
}
