//! `lockstep bench`: the parent side spawns worker processes of this same binary
//! (`lockstep bench-worker`), the workers do the timed work, the parent prints the table.
//! `lockstep bench train` starts `lockstep launch` instead. Every bench measures its subject
//! and a reference interleaved, `--repeat` times, through [`repeat`]; docs/benchmarks.md says
//! what each measures and how to read the figures.

pub mod allreduce;
mod allreduce_checks;
pub mod ingest;
pub mod link;
mod link_checks;
pub mod placement;
mod reference;
pub mod repeat;
mod spawn;
mod tcpinfo;
pub mod tls;
pub mod train;

use crate::cli::BenchWorkerArgs;
use lockstep_transport::TransportKind;
use std::sync::OnceLock;

/// Parse `--transport`; for `rdma`, check this machine first, so a bench without RDMA stops
/// before spawning workers with the one missing piece named (the build feature, libibverbs,
/// kernel support, a device, an active port).
pub(crate) fn transport_arg(name: &str) -> Result<TransportKind, String> {
    let kind = name
        .parse::<TransportKind>()
        .map_err(|e: lockstep_transport::Error| e.to_string())?;
    if kind == TransportKind::Rdma {
        lockstep_transport::rdma::open_device()
            .map_err(|why| format!("--transport rdma: {why}"))?;
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

/// Entry point of a benchmark worker process.
///
/// # Errors
/// A message naming what failed.
pub fn worker(args: &BenchWorkerArgs) -> Result<(), String> {
    // First, before any thread starts: every thread of this worker inherits its CPU.
    placement::pin_worker(&args.config, args.rank)?;
    match args.kind.as_str() {
        "link" => link::worker(args),
        "allreduce" => allreduce::worker(args),
        other => Err(format!("unknown bench worker kind {other:?}")),
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
