//! The frame header every backend puts in front of every payload.
//!
//! Fixed width (64 bytes), little-endian, with symmetric [`FrameHeader::write_to`] /
//! [`FrameHeader::try_read`] like timely's `MessageHeader`. The last four bytes are a CRC-32 of the
//! first sixty, so a torn or forged header is caught before its length field is believed.
//!
//! Layout (byte offsets):
//! ```text
//!  0 magic "LKSP"   4 version u8   5 kind u8   6 dtype u8   7 flags u8
//!  8 op u16        10 reserved u16            12 src_rank u32
//! 16 job u64       24 round u64   32 seq u64  40 shape fingerprint u64
//! 48 payload length u64           56 reserved u32           60 crc32 of bytes 0..60
//! ```

use std::fmt;

/// Size of an encoded header in bytes.
pub const HEADER_LEN: usize = 64;
/// Magic bytes at the start of every header.
pub const MAGIC: [u8; 4] = *b"LKSP";
/// Wire protocol version; the handshake refuses peers with another. Version 2: the handshake
/// binds the direction and the acceptor proves itself only after the initiator.
pub const PROTOCOL_VERSION: u8 = 2;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A payload for a collective or a point-to-point transfer.
    Data = 1,
    /// Liveness only; no payload. Never returned by `recv`.
    Heartbeat = 2,
    /// Orderly shutdown of the link.
    Close = 3,
    /// Control messages of the runtime (membership, round control), payload opaque here.
    Control = 4,
}

impl FrameKind {
    fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => FrameKind::Data,
            2 => FrameKind::Heartbeat,
            3 => FrameKind::Close,
            4 => FrameKind::Control,
            _ => return None,
        })
    }
}

/// The operation a frame belongs to; named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Point-to-point send/recv.
    P2p = 1,
    /// Allreduce (any algorithm).
    AllReduce = 2,
    /// Broadcast.
    Broadcast = 3,
    /// Barrier.
    Barrier = 4,
    /// Parameter-server gradient push.
    PsPush = 5,
    /// Parameter-server parameter pull.
    PsPull = 6,
    /// Runtime control traffic.
    Control = 7,
    /// Allgather.
    AllGather = 8,
    /// Benchmark traffic.
    Bench = 9,
    /// Parameter-server optimizer state, gathered for a checkpoint.
    PsState = 10,
}

impl Op {
    /// Decode a wire value.
    pub fn from_wire(v: u16) -> Option<Self> {
        Some(match v {
            1 => Op::P2p,
            2 => Op::AllReduce,
            3 => Op::Broadcast,
            4 => Op::Barrier,
            5 => Op::PsPush,
            6 => Op::PsPull,
            7 => Op::Control,
            8 => Op::AllGather,
            9 => Op::Bench,
            10 => Op::PsState,
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::P2p => "send/recv",
            Op::AllReduce => "allreduce",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
            Op::PsPush => "parameter-server push",
            Op::PsPull => "parameter-server pull",
            Op::Control => "control",
            Op::AllGather => "allgather",
            Op::Bench => "bench",
            Op::PsState => "parameter-server state",
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Element type tag (`lockstep_tensor::DType::to_wire`), 0 for untyped bytes.
    pub dtype: u8,
    /// Free bits for the algorithm (e.g. "last chunk").
    pub flags: u8,
    /// The operation.
    pub op: Op,
    /// The sender's rank.
    pub src_rank: u32,
    /// Job id (distinguishes runs sharing addresses).
    pub job: u64,
    /// Training round.
    pub round: u64,
    /// Collective sequence number within the job.
    pub seq: u64,
    /// Fingerprint of the full tensor's shape (`lockstep_tensor::Shape::fingerprint`).
    pub shape_fp: u64,
    /// Payload length in bytes.
    pub len: u64,
}

/// Why a header did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("truncated header: {0} of {HEADER_LEN} bytes")]
    Truncated(usize),
    /// Not our magic: not a Lockstep peer, or a desynchronised stream.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The CRC does not match.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// Another protocol version.
    #[error("protocol version {0}, expected {PROTOCOL_VERSION}")]
    BadVersion(u8),
    /// Unknown kind or op value.
    #[error("unknown {field} value {value}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The payload length exceeds the configured maximum.
    #[error("payload length {len} exceeds the maximum {max}")]
    TooLong {
        /// Claimed length.
        len: u64,
        /// Configured bound.
        max: u64,
    },
}

impl FrameHeader {
    /// A data header with everything but the routing fields zero.
    pub fn data(op: Op, round: u64, seq: u64, shape_fp: u64, dtype: u8, len: u64) -> Self {
        FrameHeader {
            kind: FrameKind::Data,
            dtype,
            flags: 0,
            op,
            src_rank: 0,
            job: 0,
            round,
            seq,
            shape_fp,
            len,
        }
    }

    /// A heartbeat header.
    pub fn heartbeat() -> Self {
        FrameHeader {
            kind: FrameKind::Heartbeat,
            ..FrameHeader::data(Op::Control, 0, 0, 0, 0, 0)
        }
    }

    /// Encode into exactly [`HEADER_LEN`] bytes.
    pub fn write_to(&self, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = PROTOCOL_VERSION;
        out[5] = self.kind as u8;
        out[6] = self.dtype;
        out[7] = self.flags;
        out[8..10].copy_from_slice(&(self.op as u16).to_le_bytes());
        out[12..16].copy_from_slice(&self.src_rank.to_le_bytes());
        out[16..24].copy_from_slice(&self.job.to_le_bytes());
        out[24..32].copy_from_slice(&self.round.to_le_bytes());
        out[32..40].copy_from_slice(&self.seq.to_le_bytes());
        out[40..48].copy_from_slice(&self.shape_fp.to_le_bytes());
        out[48..56].copy_from_slice(&self.len.to_le_bytes());
        let crc = crc32fast::hash(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Encode into a new array.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.write_to(&mut b);
        b
    }

    /// Decode and validate: magic, checksum, version, known kind and op, and `len <= max_len`.
    ///
    /// # Errors
    /// A [`HeaderError`] saying which check failed. Never panics, whatever the bytes.
    pub fn try_read(bytes: &[u8], max_len: u64) -> Result<FrameHeader, HeaderError> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Truncated(bytes.len()));
        }
        let b = &bytes[..HEADER_LEN];
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(HeaderError::BadMagic(magic));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let stored = u32_at(60);
        let computed = crc32fast::hash(&b[..60]);
        if stored != computed {
            return Err(HeaderError::BadChecksum { stored, computed });
        }
        if b[4] != PROTOCOL_VERSION {
            return Err(HeaderError::BadVersion(b[4]));
        }
        let kind = FrameKind::from_wire(b[5]).ok_or(HeaderError::BadField {
            field: "kind",
            value: u64::from(b[5]),
        })?;
        let op_raw = u16::from_le_bytes([b[8], b[9]]);
        let op = Op::from_wire(op_raw).ok_or(HeaderError::BadField {
            field: "op",
            value: u64::from(op_raw),
        })?;
        let len = u64_at(48);
        if len > max_len {
            return Err(HeaderError::TooLong { len, max: max_len });
        }
        Ok(FrameHeader {
            kind,
            dtype: b[6],
            flags: b[7],
            op,
            src_rank: u32_at(12),
            job: u64_at(16),
            round: u64_at(24),
            seq: u64_at(32),
            shape_fp: u64_at(40),
            len,
        })
    }
}

/// What a receiver expects of the next data frame. `None` fields are not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expect {
    /// The operation.
    pub op: Option<Op>,
    /// The round.
    pub round: Option<u64>,
    /// The collective sequence number.
    pub seq: Option<u64>,
    /// The shape fingerprint.
    pub shape_fp: Option<u64>,
    /// The dtype tag.
    pub dtype: Option<u8>,
    /// The payload length.
    pub len: Option<u64>,
    /// An upper bound on the payload length, checked with the header before anything is
    /// allocated for the payload or read into the caller's buffers (a receiver that knows how
    /// much it can take sets it even where it checks the other fields itself later).
    pub max_len: Option<u64>,
}

impl Expect {
    /// Expect a frame of `op` in `round` with sequence number `seq`.
    pub fn op(op: Op, round: u64, seq: u64) -> Self {
        Expect {
            op: Some(op),
            round: Some(round),
            seq: Some(seq),
            ..Default::default()
        }
    }

    /// Accept payloads of at most `max` bytes (checked before the payload is read).
    pub fn at_most(max: u64) -> Self {
        Expect {
            max_len: Some(max),
            ..Default::default()
        }
    }

    /// Also check the shape fingerprint, dtype and length.
    pub fn with_payload(mut self, shape_fp: u64, dtype: u8, len: u64) -> Self {
        self.shape_fp = Some(shape_fp);
        self.dtype = Some(dtype);
        self.len = Some(len);
        self
    }

    /// The first field where `h` differs: `(field, expected, actual)`.
    pub fn check(&self, h: &FrameHeader) -> Option<(&'static str, String, String)> {
        fn cmp<T: PartialEq + fmt::Display>(
            f: &'static str,
            e: Option<T>,
            a: T,
        ) -> Option<(&'static str, String, String)> {
            match e {
                Some(e) if e != a => Some((f, e.to_string(), a.to_string())),
                _ => None,
            }
        }
        cmp("op", self.op, h.op)
            .or_else(|| cmp("round", self.round, h.round))
            .or_else(|| cmp("seq", self.seq, h.seq))
            .or_else(|| cmp("shape fingerprint", self.shape_fp.map(Hex), Hex(h.shape_fp)))
            .or_else(|| cmp("dtype", self.dtype, h.dtype))
            .or_else(|| cmp("payload length", self.len, h.len))
            .or_else(|| match self.max_len {
                Some(max) if h.len > max => Some((
                    "payload length",
                    format!("at most {max}"),
                    h.len.to_string(),
                )),
                _ => None,
            })
    }
}

#[derive(PartialEq)]
struct Hex(u64);
impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}
