//! Every member's control link feeds one channel: a reader thread per link (`lockstep-ctl-NAME`)
//! blocks in the link's own bounded receive and hands each message, or the link's failure, to
//! the control plane's [`Inbox`] with the member's id. The plane waits on that one channel, so a
//! message from any member (an `Abort` above all) is seen the moment it arrives, with no
//! periodic polling: waiting for member `i` files whatever the others send in their own queues,
//! in arrival order, for their turn.
//!
//! Every wait is bounded: by the caller's deadline where it has one, else by the links'
//! liveness (a dead or silent member's reader reports its failure within the peer timeout).
//! The plane sends on each link through its `TcpSender` (control links are always TCP), so the
//! reader never shares the link.

use super::{ControlPlane, Member};
use crate::control::protocol::{ControlMessage, ToCoordinator, ToWorker};
use crate::error::{ActorError, ProtocolError, RuntimeError};
use lockstep_transport::frame::Op;
use lockstep_transport::tcp::TcpSender;
use lockstep_transport::{AnyLink, Expect, Link};
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

/// What a member's reader delivered.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A control message, in the order the member sent it.
    Msg(ToCoordinator),
    /// The link ended; nothing follows.
    Failed(Failure),
}

/// Why a member's link ended (kept, so every later read of the member returns it again).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The transport failed: dead or silent peer, closed, garbage.
    Link(lockstep_transport::Error),
    /// A frame that is not a control message.
    Malformed(String),
    /// The link is not TCP, so it has no sending handle besides its reader.
    NotTcp(&'static str),
    /// The reader thread ended without a word (it panicked).
    ReaderGone,
    /// The member follows a newer coordinator term: this coordinator was replaced.
    Fenced {
        /// The message that showed it.
        message: &'static str,
        /// The member's term.
        theirs: u64,
        /// This coordinator's term.
        mine: u64,
        /// What it means.
        why: &'static str,
    },
}

impl Failure {
    /// The failure as the error of `node`, seen while the coordinator was `doing` in `round`.
    pub(crate) fn error(&self, node: &str, round: u64, doing: &'static str) -> RuntimeError {
        match self {
            Failure::Link(e) => RuntimeError::peer(node, round, doing, e.clone()),
            Failure::Malformed(why) => ProtocolError::Malformed {
                node: node.to_string(),
                reason: why.clone(),
            }
            .into(),
            Failure::NotTcp(kind) => ProtocolError::NotTcp {
                node: node.to_string(),
                kind,
            }
            .into(),
            Failure::Fenced {
                message,
                theirs,
                mine,
                why,
            } => ProtocolError::Fenced {
                node: node.to_string(),
                message,
                theirs: *theirs,
                mine: *mine,
                why,
            }
            .into(),
            Failure::ReaderGone => ActorError::ReaderGone {
                node: node.to_string(),
                doing,
                round,
            }
            .into(),
        }
    }
}

/// One delivery: which member (by id) and what.
struct Event {
    id: u64,
    what: Inbound,
}

/// The channel every reader feeds, and the next member id.
pub(crate) struct Inbox {
    rx: Receiver<Event>,
    tx: Sender<Event>,
    next_id: u64,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        let (tx, rx) = channel();
        Inbox { rx, tx, next_id: 0 }
    }
}

/// A member as the plane keeps it: its name, id, sending handle and what it sent that was not
/// taken yet.
pub(crate) struct Attached {
    pub(crate) name: String,
    id: u64,
    out: Option<TcpSender>,
    pub(crate) queue: VecDeque<Inbound>,
}

impl Attached {
    /// Send `msg` (flushed); `round` and `doing` name the moment in errors.
    pub(crate) fn send(
        &self,
        round: u64,
        doing: &'static str,
        msg: &ToWorker,
    ) -> Result<(), RuntimeError> {
        let Some(out) = &self.out else {
            return Err(Failure::NotTcp("not tcp").error(&self.name, round, doing));
        };
        let (header, payload) = crate::control::protocol::encode(round, msg)?;
        out.send(header, payload)
            .map_err(|source| RuntimeError::peer(&self.name, round, doing, source))
    }
}

/// Sends [`Failure::ReaderGone`] unless the reader ended with a word of its own.
struct LastWord {
    id: u64,
    tx: Sender<Event>,
    said: bool,
}

impl Drop for LastWord {
    fn drop(&mut self) {
        if !self.said {
            let what = Inbound::Failed(Failure::ReaderGone);
            let _ = self.tx.send(Event { id: self.id, what });
        }
    }
}

impl Inbox {
    /// Start reading `m`'s link; the plane keeps the returned handle.
    pub(crate) fn attach(&mut self, m: Member) -> Attached {
        let id = self.next_id;
        self.next_id += 1;
        let Member { name, link } = m;
        let Some(out) = link.tcp_sender() else {
            let mut queue = VecDeque::new();
            queue.push_back(Inbound::Failed(Failure::NotTcp(link.kind())));
            return Attached {
                name,
                id,
                out: None,
                queue,
            };
        };
        let tx = self.tx.clone();
        let thread = format!("lockstep-ctl-{name}");
        let spawned = std::thread::Builder::new()
            .name(thread)
            .spawn(move || read(link, id, tx));
        let mut queue = VecDeque::new();
        if spawned.is_err() {
            queue.push_back(Inbound::Failed(Failure::ReaderGone));
        }
        Attached {
            name,
            id,
            out: Some(out),
            queue,
        }
    }
}

/// A reader thread: every frame of `link` as a message, until the link fails.
fn read(mut link: AnyLink, id: u64, tx: Sender<Event>) {
    let mut last = LastWord {
        id,
        tx: tx.clone(),
        said: false,
    };
    let expect = Expect {
        op: Some(Op::Control),
        ..Default::default()
    };
    loop {
        let what = match link.recv(&expect) {
            Ok(frame) => match crate::control::protocol::parse::<ToCoordinator>(&frame.payload) {
                Ok(msg) => fence(msg, frame.header.job),
                Err(e) => Inbound::Failed(Failure::Malformed(e.to_string())),
            },
            Err(e) => Inbound::Failed(Failure::Link(e)),
        };
        let end = matches!(what, Inbound::Failed(_));
        last.said = end;
        if tx.send(Event { id, what }).is_err() || end {
            return; // the plane is gone, or the link ended
        }
    }
}

/// `msg`, sent in coordinator term `theirs`, or the failure that fences this coordinator.
fn fence(msg: ToCoordinator, theirs: u64) -> Inbound {
    let mine = crate::control::protocol::term::current();
    match msg.fenced(theirs, mine) {
        Some(why) => Inbound::Failed(Failure::Fenced {
            message: msg.name(),
            theirs,
            mine,
            why,
        }),
        None => Inbound::Msg(msg),
    }
}

impl ControlPlane {
    /// The next message of member `i` that is not absorbed (traces, stream progress), waiting
    /// until `deadline` (then [`RuntimeError::Timeout`], the link still usable) or, without
    /// one, as long as the link lives. With `watch`, an `Abort` from any other member ends the
    /// wait at once as that member's error; other members' messages are kept for their turn.
    pub(super) fn next_of(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
        deadline: Option<Instant>,
        watch: bool,
    ) -> Result<ToCoordinator, RuntimeError> {
        loop {
            if let Some(got) = self.take(i, round, doing) {
                return got;
            }
            self.wait_one(Some(i), round, doing, deadline, watch)?;
        }
    }

    /// The first queued item of member `i`: a message, or its link's failure (kept queued).
    pub(super) fn take(
        &mut self,
        i: usize,
        round: u64,
        doing: &'static str,
    ) -> Option<Result<ToCoordinator, RuntimeError>> {
        let m = &mut self.members[i];
        match m.queue.pop_front()? {
            Inbound::Msg(ToCoordinator::Abort { reason }) => Some(Err(RuntimeError::Aborted {
                node: m.name.clone(),
                reason,
            })),
            Inbound::Msg(msg) => Some(Ok(msg)),
            Inbound::Failed(f) => {
                let e = f.error(&m.name, round, doing);
                m.queue.push_front(Inbound::Failed(f));
                Some(Err(e))
            }
        }
    }

    /// Wait for one delivery from any member and file it: traces and stream progress are
    /// absorbed at once, the rest goes to its member's queue. With `watch`, an `Abort` from a
    /// member other than `waiting_for` is returned as its error. Deliveries from members no
    /// longer in the job are dropped.
    pub(super) fn wait_one(
        &mut self,
        waiting_for: Option<usize>,
        round: u64,
        doing: &'static str,
        deadline: Option<Instant>,
        watch: bool,
    ) -> Result<(), RuntimeError> {
        let ev = match deadline {
            None => self.inbox.rx.recv().ok(),
            Some(d) => match self
                .inbox
                .rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
            {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => {
                    let who = waiting_for.map_or("the members", |i| self.members[i].name.as_str());
                    return Err(RuntimeError::Timeout {
                        doing: format!("{doing} from {who} (round {round})"),
                        ms: 0,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => None,
            },
        };
        // The plane holds a sender itself, so the channel cannot disconnect.
        let Some(Event { id, what }) = ev else {
            return Ok(());
        };
        let Some(j) = self.members.iter().position(|m| m.id == id) else {
            return Ok(());
        };
        match what {
            Inbound::Msg(ToCoordinator::Trace { sent_us, spans }) => {
                if let Some(t) = &self.traces {
                    t.add(&self.members[j].name, sent_us, spans);
                }
            }
            Inbound::Msg(ToCoordinator::StreamProgress {
                available,
                closed,
                rows,
                duplicates,
            }) => {
                if let Some(p) = self.stream.get_mut(j) {
                    *p = (available, closed, rows, duplicates);
                }
            }
            Inbound::Msg(ToCoordinator::Abort { reason }) if watch && Some(j) != waiting_for => {
                return Err(RuntimeError::Aborted {
                    node: self.members[j].name.clone(),
                    reason,
                });
            }
            other => self.members[j].queue.push_back(other),
        }
        Ok(())
    }
}
