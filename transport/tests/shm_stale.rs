//! Segments left in `/dev/shm` by other runs: one whose creator process is dead (a crashed run)
//! is detected and removed when a link starts, and the link then works on fresh rings; one whose
//! creator is alive (another run with the same cluster name) is refused with an error naming
//! the segment and the owner pid, and left untouched. A setup whose peer dies halfway does not
//! leave this side's fresh ring behind. Owners are real processes: a child that
//! has exited and been reaped, and a child that is still sleeping.

// The transport's `Error` is large by design (names, round, op); see lockstep-transport.
#![allow(clippy::result_large_err)]

use lockstep_tensor::Buffer;
use lockstep_transport::shm::ring::{read_info, RING_HEADER};
use lockstep_transport::shm::{pid_alive, segment_path};
use lockstep_transport::{
    connect_mesh, Error, Expect, FrameHeader, Group, Link, Listener, MeshConfig, Op, PeerAddr,
    TransportKind,
};
use std::path::Path;
use std::process::Command;

const CAP: usize = 4096;

/// Write a ring header (the layout documented in `shm::ring`) claiming `pid` as its owner.
fn plant_segment(path: &Path, pid: u32) {
    let mut b = vec![0u8; RING_HEADER + CAP];
    b[..8].copy_from_slice(b"LKSPRING");
    b[8..16].copy_from_slice(&0x5eed_u64.to_le_bytes());
    b[16..20].copy_from_slice(&pid.to_le_bytes());
    b[24..32].copy_from_slice(&(CAP as u64).to_le_bytes());
    std::fs::write(path, &b).unwrap();
    // As a creator leaves it (a ring that is not 0600 is refused when mapped).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let info = read_info(&b).expect("planted header parses as a ring");
    assert_eq!(info.owner_pid, pid, "ring header layout changed");
}

/// Build a two-node shm mesh with ranks as threads; each rank's result.
fn mesh(cluster: &str) -> Vec<Result<Group, Error>> {
    let ls: Vec<Listener> = (0..2)
        .map(|_| Listener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<PeerAddr> = ls
        .iter()
        .enumerate()
        .map(|(i, l)| PeerAddr {
            name: format!("n{i}"),
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let hs: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(rank, l)| {
            let mut m = MeshConfig::new(cluster, b"tok", &format!("n{rank}"), rank, peers.clone());
            m.transport = TransportKind::Shm;
            m.shm_ring_bytes = CAP;
            m.connect_timeout_ms = 10_000;
            std::thread::spawn(move || connect_mesh(&m, l))
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn segment_of_a_dead_owner_is_removed_at_start() {
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap(); // reaped: the pid no longer exists
    assert!(!pid_alive(dead));
    let cluster = format!("stale{}", std::process::id());
    let path = segment_path(&cluster, "n0", "n1");
    plant_segment(&path, dead);
    let mut groups: Vec<Group> = mesh(&cluster).into_iter().map(|g| g.unwrap()).collect();
    assert!(!path.exists(), "setup must leave nothing in /dev/shm");
    // The rings are fresh ones, not the planted segment: data moves both ways.
    let body = Buffer::copy_from_slice(&[7u8; 10_000]);
    for g in groups.iter_mut() {
        let peer = 1 - g.rank();
        let h = FrameHeader::data(Op::P2p, 1, 0, 0, 0, body.len() as u64);
        g.link(peer).send(h, body.clone()).unwrap();
    }
    for g in groups.iter_mut() {
        let peer = 1 - g.rank();
        let f = g.link(peer).recv(&Expect::op(Op::P2p, 1, 0)).unwrap();
        assert_eq!(&f.payload[..], &body[..]);
    }
}

#[test]
fn segment_of_a_live_owner_is_refused_and_kept() {
    let mut owner = Command::new("sleep").arg("30").spawn().unwrap();
    let live = owner.id();
    let cluster = format!("live{}", std::process::id());
    let path = segment_path(&cluster, "n0", "n1");
    plant_segment(&path, live);
    let results = mesh(&cluster);
    let kept = path.exists();
    let _ = std::fs::remove_file(&path);
    owner.kill().unwrap();
    owner.wait().unwrap();
    match &results[0] {
        Err(Error::Config(e)) => {
            let m = e.to_string();
            assert!(
                m.contains(&path.display().to_string())
                    && m.contains(&format!("live process {live}")),
                "unclear error: {m}"
            );
        }
        Err(e) => panic!("n0: expected a configuration error, got {e}"),
        Ok(_) => panic!("n0 reused a live run's segment"),
    }
    assert!(results[1].is_err(), "n1 must fail when n0 cannot set up");
    assert!(kept, "the live run's segment was removed");
}

/// A peer that created its ring and died (a dead pid owns it) during the setup, after reading
/// this side's announcement: `answers` says whether it sent its own first. This side's setup
/// fails; the dead peer's ring must not stay in /dev/shm (nobody else would remove it), and
/// neither may this side's.
fn peer_dies_halfway(tag: &str, answers: bool) {
    use lockstep_transport::shm::ShmLink;
    use lockstep_transport::tcp::Conn;
    use lockstep_transport::LinkConfig;
    use std::io::{Read, Write};
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let cluster = format!("{tag}{}", std::process::id());
    let theirs = segment_path(&cluster, "n1", "n0");
    plant_segment(&theirs, dead);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut announced = [0u8; 20];
        s.read_exact(&mut announced).unwrap();
        assert_eq!(&announced[..4], b"SHM1");
        if answers {
            let mut msg = *b"SHM1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
            msg[4..12].copy_from_slice(&0x5eed_u64.to_le_bytes());
            msg[12..20].copy_from_slice(&(CAP as u64).to_le_bytes());
            s.write_all(&msg).unwrap();
        }
    });
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let cfg = LinkConfig {
        shm_ring_bytes: CAP,
        ..LinkConfig::default()
    };
    let res = ShmLink::establish(Conn::Plain(stream), &cluster, "n0", "n1", true, cfg);
    peer.join().unwrap();
    let left = (theirs.exists(), segment_path(&cluster, "n0", "n1").exists());
    let _ = std::fs::remove_file(&theirs);
    assert!(
        res.is_err(),
        "{tag}: the setup cannot succeed without the peer"
    );
    assert_eq!(
        left,
        (false, false),
        "{tag}: segments left (the peer's, this side's)"
    );
}

#[test]
fn a_peer_dying_halfway_through_the_setup_leaves_no_segment() {
    peer_dies_halfway("half-quiet", false);
    peer_dies_halfway("half-answered", true);
}
