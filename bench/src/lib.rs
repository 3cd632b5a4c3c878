//! `lockstep bench`, as a library the `lockstep` binary links with its `bench` feature (on by
//! default): the parent side spawns worker processes of that same binary (`lockstep
//! bench-worker`, which calls [`worker`]), the workers do the timed work, the parent prints the
//! table. `lockstep bench train` starts `lockstep launch` instead. Every bench measures its
//! subject and a reference interleaved, `--repeat` times, through [`repeat`]; docs/benchmarks.md
//! says what each measures and how to read the figures. The multi-process tests of the root
//! crate start the same workers (see [`link`] and [`allreduce`]).
//!
//! Failures are [`BenchError`]s, rendered by the binary.

pub mod allreduce;
mod allreduce_checks;
pub mod cli;
mod error;
pub mod ingest;
pub mod link;
mod link_checks;
pub mod placement;
mod reference;
pub mod repeat;
pub mod sparse;
mod spawn;
mod tcpinfo;
pub mod tls;
pub mod train;

pub use error::{BenchError, Result};

use cli::{BenchCommand, BenchWorkerArgs};
use lockstep_transport::TransportKind;
use std::sync::OnceLock;

/// Run `lockstep bench <cmd>`.
///
/// # Errors
/// What failed, naming the worker, size, CPU or file.
pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Link(a) => link::run(a),
        BenchCommand::Allreduce(a) => allreduce::run(a),
        BenchCommand::Train(a) => train::run(a),
        BenchCommand::Ingest(a) => ingest::run(a),
        BenchCommand::Sparse(a) => sparse::run(a),
    }
}

/// Parse `--transport`; for `rdma`, check this machine first, so a bench without RDMA stops
/// before spawning workers with the one missing piece named (the build feature, libibverbs,
/// kernel support, a device, an active port).
pub(crate) fn transport_arg(name: &str) -> Result<TransportKind> {
    let kind = name.parse::<TransportKind>()?;
    if kind == TransportKind::Rdma {
        lockstep_transport::rdma::open_device().map_err(|source| BenchError::Rdma { source })?;
    }
    Ok(kind)
}

/// The cluster token of this bench run: `LOCKSTEP_TOKEN` when set, else 32 random bytes (hex)
/// drawn once per parent process and handed to its workers in `LOCKSTEP_TOKEN`. Never a fixed
/// token: a bench listens on the host's loopback, where any local user could connect with it.
pub(crate) fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| match std::env::var("LOCKSTEP_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => random_token(),
    })
}

/// 32 bytes from the kernel's random source, as hex.
fn random_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom is readable");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Entry point of a benchmark worker process (`lockstep bench-worker`).
///
/// # Errors
/// What failed, naming the peer, round and operation for a link or collective.
pub fn worker(args: &BenchWorkerArgs) -> Result<()> {
    // First, before any thread starts: every thread of this worker inherits its CPU.
    placement::pin_worker(&args.config, args.rank)?;
    match args.kind.as_str() {
        "link" => link::worker(args),
        "allreduce" => allreduce::worker(args),
        other => Err(BenchError::UnknownKind { kind: other.into() }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_token_is_random_when_none_is_given() {
        let (a, b) = (super::random_token(), super::random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        if std::env::var("LOCKSTEP_TOKEN").is_err() {
            assert_ne!(super::token(), "lockstep-bench");
            assert_eq!(super::token(), super::token(), "one token per run");
        }
    }
}
