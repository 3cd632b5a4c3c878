//! The `Communicator`: one rank's handle for running collectives over a [`Group`]. It owns the
//! round and the collective sequence number (advanced identically on every rank, one per call),
//! the algorithm settings, and it turns link failures into [`CollectiveError`]s: how a failed
//! link becomes an error every rank sees is in [`failure`].

mod failure;

use super::chooser::Chooser;
use super::error::{CollectiveError, ConfigError};
use super::kernels::{Consumer, Out, Sink};
use super::traffic::Traffic;
use super::waiting::Waiting;
use super::{CollectiveConfig, LinkCosts, Topology};
use lockstep_tensor::Buffer;
use lockstep_transport::{
    Context, Error as TransportError, Expect, FrameHeader, Group, Link, Op, HEADER_LEN,
};

/// Flag bit of an abort notice.
const FLAG_ABORT: u8 = 0x80;

/// One collective call in progress: what every frame of it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// The operation.
    pub op: Op,
    /// Its sequence number.
    pub seq: u64,
    /// Fingerprint of the full tensor's shape.
    pub shape_fp: u64,
    /// Dtype tag of the caller's tensor.
    pub dtype: u8,
}

/// The reduction of [`Communicator::reduce_forward`].
pub(crate) enum Reduce<'a> {
    /// Forward `local[i] + x[i]`.
    AddTo(&'a [f32]),
    /// `acc[i] = (acc[i] + x[i]) / div`, kept and forwarded.
    Finish(&'a mut [f32], Option<f32>),
}

/// One rank's handle for collectives over a group of links. See the module docs.
pub struct Communicator {
    group: Group,
    round: u64,
    seq: u64,
    config: CollectiveConfig,
    poisoned: Option<CollectiveError>,
    traffic: Traffic,
    waiting: Waiting,
    topology: Topology,
    chooser: Chooser,
}

impl Communicator {
    /// A communicator over `group`, at round 0 and sequence number 0.
    pub fn new(group: Group, config: CollectiveConfig) -> Communicator {
        Communicator {
            traffic: Traffic::new(group.world()),
            waiting: Waiting::default(),
            topology: Topology::one_per_host(group.world()),
            group,
            round: 0,
            seq: 0,
            config,
            poisoned: None,
            chooser: Chooser::default(),
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.group.world()
    }

    /// The group underneath.
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// The current round (carried by every frame).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Set the round; every rank must set the same value before the round's collectives.
    pub fn set_round(&mut self, round: u64) {
        self.round = round;
    }

    /// The sequence number the next collective will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The algorithm settings.
    pub fn config(&self) -> &CollectiveConfig {
        &self.config
    }

    /// Change the algorithm settings (the same on every rank, between collectives).
    pub fn config_mut(&mut self) -> &mut CollectiveConfig {
        self.chooser.forget();
        &mut self.config
    }

    /// Bytes sent to and received from each peer so far (a shared handle).
    pub fn traffic(&self) -> Traffic {
        self.traffic.clone()
    }

    /// Which peer this communicator is blocked on right now (a shared handle, for a hang
    /// diagnosis from another thread).
    pub fn waiting(&self) -> Waiting {
        self.waiting.clone()
    }

    /// Which host every rank runs on (every rank on its own host unless set).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Set the hosts of the ranks (the same on every rank, between collectives).
    ///
    /// # Errors
    /// [`CollectiveError::Config`] when `topology` is for another world size.
    pub fn set_topology(&mut self, topology: Topology) -> Result<(), CollectiveError> {
        if topology.world() != self.world() {
            return Err(ConfigError::TopologyWorld {
                topology: topology.world(),
                group: self.world(),
            }
            .into());
        }
        self.topology = topology;
        self.chooser.forget();
        Ok(())
    }

    /// The link costs `Algo::Auto` chooses by, if measured or set.
    pub fn costs(&self) -> Option<&LinkCosts> {
        self.chooser.costs()
    }

    /// Set the link costs (identical on every rank, or ranks would choose differently: use what
    /// [`Communicator::probe_links`] returns, which every rank shares).
    pub fn set_costs(&mut self, costs: Option<LinkCosts>) {
        self.chooser.set_costs(costs);
    }

    /// `Algo::Auto`'s pick for `bytes` from the measured link costs (`None` without).
    pub(crate) fn pick(&mut self, bytes: usize) -> Option<super::Algo> {
        self.chooser.pick(bytes, &self.topology, &self.config)
    }

    /// The first error this communicator returned, if any.
    pub fn poisoned(&self) -> Option<&CollectiveError> {
        self.poisoned.as_ref()
    }

    /// Start a collective: check the poison and take the next sequence number.
    pub(crate) fn begin(
        &mut self,
        op: Op,
        shape_fp: u64,
        dtype: u8,
    ) -> Result<Call, CollectiveError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let seq = self.seq;
        self.seq += 1;
        Ok(Call {
            op,
            seq,
            shape_fp,
            dtype,
        })
    }

    /// An `Invalid` error for `call`, poisoning nothing (no frame was exchanged yet).
    pub(crate) fn invalid(&self, call: &Call, reason: String) -> CollectiveError {
        CollectiveError::Invalid {
            rank: self.rank(),
            node: self.group.my_name().to_string(),
            round: self.round,
            op: call.op,
            seq: call.seq,
            reason,
        }
    }

    /// The header of a frame of `call` with `len` payload bytes.
    fn header(&self, call: &Call, len: usize) -> FrameHeader {
        let mut h = FrameHeader::data(
            call.op,
            self.round,
            call.seq,
            call.shape_fp,
            call.dtype,
            len as u64,
        );
        h.src_rank = self.rank() as u32;
        h
    }

    /// Send `payload` to `peer` as a frame of `call`.
    pub(crate) fn send(
        &mut self,
        call: &Call,
        peer: usize,
        payload: Buffer,
    ) -> Result<(), CollectiveError> {
        let h = self.header(call, payload.len());
        let bytes = HEADER_LEN + payload.len();
        match self.group.link(peer).send(h, payload) {
            Ok(()) => {
                self.traffic.sent(peer, bytes);
                Ok(())
            }
            Err(e) => Err(self.fail_link(call, peer, e)),
        }
    }

    /// Send `payload` (which this rank keeps) to `peer` as a frame of `call`: straight into the
    /// ring or the socket where it has room, copied only for what does not fit.
    pub(crate) fn send_from(
        &mut self,
        call: &Call,
        peer: usize,
        payload: &[u8],
    ) -> Result<(), CollectiveError> {
        let h = self.header(call, payload.len());
        match self.group.link(peer).send_from(h, payload) {
            Ok(()) => {
                self.traffic.sent(peer, HEADER_LEN + payload.len());
                Ok(())
            }
            Err(e) => Err(self.fail_link(call, peer, e)),
        }
    }

    /// Receive the next frame of `call` from `from` (`len` bytes), reduce it with `how`, and
    /// send the result to `to` as a frame of `call`, written in place: over shared memory
    /// straight out of one ring into the other. The frame to `to` is committed only once the
    /// received one has fully arrived and checked out; on any failure nothing is sent and the
    /// room is released before the abort notices go out.
    pub(crate) fn reduce_forward(
        &mut self,
        call: &Call,
        from: usize,
        to: usize,
        len: usize,
        how: Reduce<'_>,
    ) -> Result<(), CollectiveError> {
        let h = self.header(call, len);
        self.waiting.on(to, call.op, call.seq, self.round);
        let reserved = self.group.link(to).reserve(h);
        self.waiting.on(from, call.op, call.seq, self.round);
        let mut room = match reserved {
            Ok(r) => r,
            Err(e) => {
                self.waiting.clear();
                return Err(self.fail_link(call, to, e));
            }
        };
        let (received, whole, consumed) = {
            let (a, b) = room.pieces();
            let out = Out::new(a, b);
            let mut consumer = Consumer::new(match how {
                Reduce::AddTo(local) => Sink::AddTo { local, out },
                Reduce::Finish(acc, div) => Sink::Finish { acc, out, div },
            });
            let received = self
                .group
                .link(from)
                .recv_with(&Expect::at_most(len as u64), &mut |off, p| {
                    consumer.feed(off, p)
                });
            let whole = !consumer.gap && consumer.consumed() == len;
            (received, whole, consumer.consumed())
        };
        self.waiting.clear();
        let header = match received {
            Ok(h) => h,
            Err(e) => {
                drop(room);
                return Err(self.fail_link(call, from, e));
            }
        };
        if self.mismatch(call, len, &header) {
            drop(room);
            return self.check(call, from, len, &header);
        }
        if !whole {
            drop(room);
            return Err(self.out_of_order(call, from, len, consumed));
        }
        self.traffic.received(from, HEADER_LEN + len);
        match self.group.link(to).commit(room) {
            Ok(()) => {
                self.traffic.sent(to, HEADER_LEN + len);
                Ok(())
            }
            Err(e) => Err(self.fail_link(call, to, e)),
        }
    }

    /// Receive the next frame of `call` from `peer` straight into `dst` (its payload must be
    /// `dst.len()` bytes).
    pub(crate) fn recv_slice(
        &mut self,
        call: &Call,
        peer: usize,
        dst: &mut [u8],
    ) -> Result<(), CollectiveError> {
        self.waiting.on(peer, call.op, call.seq, self.round);
        let received = self
            .group
            .link(peer)
            .recv_into(&Expect::at_most(dst.len() as u64), dst);
        self.waiting.clear();
        let header = match received {
            Ok(h) => h,
            Err(e) => return Err(self.fail_link(call, peer, e)),
        };
        self.traffic.received(peer, HEADER_LEN + dst.len());
        self.check(call, peer, dst.len(), &header)
    }

    /// Receive the next frame of `call` from `peer` (payload of `len` bytes) into `consumer`.
    pub(crate) fn recv_into(
        &mut self,
        call: &Call,
        peer: usize,
        len: usize,
        consumer: &mut Consumer<'_>,
    ) -> Result<(), CollectiveError> {
        // Loose but bounded: the fields are checked below (an abort notice is no mismatch).
        let loose = Expect::at_most(len as u64);
        self.waiting.on(peer, call.op, call.seq, self.round);
        let received = self
            .group
            .link(peer)
            .recv_with(&loose, &mut |off, b| consumer.feed(off, b));
        self.waiting.clear();
        let header = match received {
            Ok(h) => h,
            Err(e) => return Err(self.fail_link(call, peer, e)),
        };
        self.traffic
            .received(peer, HEADER_LEN + consumer.consumed());
        self.check(call, peer, len, &header)?;
        if consumer.gap || consumer.consumed() != len {
            return Err(self.out_of_order(call, peer, len, consumer.consumed()));
        }
        Ok(())
    }

    fn out_of_order(
        &mut self,
        call: &Call,
        peer: usize,
        len: usize,
        consumed: usize,
    ) -> CollectiveError {
        let reason = format!("payload delivered out of order ({consumed} of {len} bytes)");
        let ctx = self.ctx(call, peer);
        self.fail_link(call, peer, TransportError::Protocol { ctx, reason })
    }

    /// Receive the next frame of `call` from `peer` (payload of `len` bytes) as a buffer.
    pub(crate) fn recv_buf(
        &mut self,
        call: &Call,
        peer: usize,
        len: usize,
    ) -> Result<Buffer, CollectiveError> {
        self.waiting.on(peer, call.op, call.seq, self.round);
        let received = self.group.link(peer).recv(&Expect::at_most(len as u64));
        self.waiting.clear();
        let frame = match received {
            Ok(f) => f,
            Err(e) => return Err(self.fail_link(call, peer, e)),
        };
        self.traffic
            .received(peer, HEADER_LEN + frame.payload.len());
        self.check(call, peer, len, &frame.header)?;
        Ok(frame.payload)
    }

    fn ctx(&self, call: &Call, peer: usize) -> Context {
        Context {
            peer: self.group.name(peer).to_string(),
            round: Some(self.round),
            op: Some(call.op),
        }
    }

    /// Whether `check` would fail for `h` (an abort notice or a mismatch).
    fn mismatch(&self, call: &Call, len: usize, h: &FrameHeader) -> bool {
        (h.flags & FLAG_ABORT != 0 && h.op == Op::Control)
            || Expect::op(call.op, self.round, call.seq)
                .with_payload(call.shape_fp, call.dtype, len as u64)
                .check(h)
                .is_some()
    }

    /// Check a received header against `call`: an abort notice or a mismatch becomes the error.
    fn check(
        &mut self,
        call: &Call,
        peer: usize,
        len: usize,
        h: &FrameHeader,
    ) -> Result<(), CollectiveError> {
        if h.flags & FLAG_ABORT != 0 && h.op == Op::Control {
            return Err(self.aborted(call, peer, h));
        }
        let expect = Expect::op(call.op, self.round, call.seq).with_payload(
            call.shape_fp,
            call.dtype,
            len as u64,
        );
        let Some((field, expected, actual)) = expect.check(h) else {
            return Ok(());
        };
        let e = TransportError::Mismatch {
            ctx: self.ctx(call, peer),
            field,
            local_node: self.group.my_name().to_string(),
            remote_node: self.group.name(peer).to_string(),
            expected,
            actual,
        };
        Err(self.fail_link(call, peer, e))
    }
}
