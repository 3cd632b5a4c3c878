//! [`BenchError`]: every way a benchmark (or a bench worker process) fails, one variant each,
//! with what failed and where (rank, size, CPU, file). `Display` gives the line the `lockstep`
//! binary prints after `lockstep: error: `; the errors of the layers below (links, collectives,
//! manifests, the runtime) are kept whole and shown as they render themselves.

use lockstep_collective::CollectiveError;
use lockstep_runtime::manifest::ManifestError;
use lockstep_runtime::RuntimeError;
use lockstep_trainer::data::DataError;
use lockstep_trainer::model::ModelError;
use lockstep_trainer::optim::OptimError;
use lockstep_transport::rdma::RdmaUnavailable;
use lockstep_transport::tls::gen::GenError;
use lockstep_transport::tls::TlsConfigError;
use std::path::PathBuf;
use std::process::ExitStatus;

/// A benchmark's failure. The large errors of the layers below are boxed, so a `Result` stays
/// small on the measured paths.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A message size (`--size`, `--sizes`, `LOCKSTEP_*_BYTES`) that is not a number.
    #[error("bad size {value:?}")]
    BadSize {
        /// The size as given.
        value: String,
    },
    /// A message size with a unit other than B, KiB, MiB, GiB, KB, MB or GB.
    #[error("bad size unit {unit:?} in {value:?}")]
    BadSizeUnit {
        /// The unit as given.
        unit: String,
        /// The whole size as given.
        value: String,
    },
    /// `--tls` with a transport other than tcp.
    #[error("--tls runs over tcp only (--transport tcp)")]
    TlsNeedsTcp,
    /// `bench allreduce --world 0`.
    #[error("need --world >= 1")]
    NoWorld,
    /// `bench allreduce --netns` without `--ranks-per-host`.
    #[error("--netns needs --ranks-per-host")]
    NetnsNeedsRanksPerHost,
    /// A `bench train --workers` entry that is not a count.
    #[error("bad --workers entry {entry:?}")]
    BadWorkers {
        /// The entry as given.
        entry: String,
    },
    /// `bench train` with a transport other than shm or tcp, or no rows per worker.
    #[error("need --transport shm|tcp and --rows-per-worker >= 1")]
    TrainArgs,
    /// `--transport rdma` on a machine or build without RDMA: the missing piece.
    #[error("--transport rdma: {source}")]
    Rdma {
        /// What is missing (the build feature, libibverbs, kernel support, a device, a port).
        source: RdmaUnavailable,
    },
    /// `--cpus` that is neither `auto`, `none` nor a list of CPU numbers.
    #[error("--cpus wants auto, none or a list like 0,1; got {spec:?}")]
    CpusSpec {
        /// The value as given.
        spec: String,
    },
    /// `--cpus` naming a CPU this process may not run on.
    #[error(
        "--cpus {spec}: CPU {cpu} is not among the CPUs this process may use ({})",
        join(.allowed)
    )]
    CpuNotAllowed {
        /// The value as given.
        spec: String,
        /// The CPU refused.
        cpu: usize,
        /// The CPUs this process may run on.
        allowed: Vec<usize>,
    },
    /// A CPU number past the kernel's CPU set.
    #[error("CPU {cpu} is out of range")]
    CpuOutOfRange {
        /// The CPU.
        cpu: usize,
    },
    /// The kernel refused to pin a thread to a CPU.
    #[error("sched_setaffinity(CPU {cpu}): {source}")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// `bench-worker --kind` other than link or allreduce.
    #[error("unknown bench worker kind {kind:?}")]
    UnknownKind {
        /// The kind as given.
        kind: String,
    },
    /// A worker config's `mode` that its kind does not have.
    #[error("unknown {kind} worker mode {mode:?}")]
    UnknownMode {
        /// `link` or `allreduce`.
        kind: &'static str,
        /// The mode as given.
        mode: String,
    },
    /// A worker's `--config` that is not the JSON its kind expects.
    #[error("bad worker config: {source}")]
    WorkerConfig {
        /// `link` or `allreduce`.
        kind: &'static str,
        /// What does not parse.
        source: serde_json::Error,
    },
    /// JSON that cannot be written or read back (a worker's config or result, a report).
    #[error("{source}")]
    Json {
        /// What was being encoded or decoded, e.g. `worker 0's result`.
        what: &'static str,
        /// The encoder's or parser's error.
        source: serde_json::Error,
    },
    /// Starting a worker process of this binary failed (the started ones are killed).
    #[error("spawning worker {rank}: {source}")]
    SpawnWorker {
        /// The worker's rank.
        rank: usize,
        /// Why.
        source: std::io::Error,
    },
    /// A worker process exited with a failure.
    #[error("worker {rank} failed: {status}")]
    WorkerFailed {
        /// The worker's rank.
        rank: usize,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Worker `rank` printed no `RESULT` line.
    #[error("worker {rank} gave no result")]
    NoResult {
        /// The worker's rank.
        rank: usize,
    },
    /// A link bench worker with neither a reference nor a plain twin (a bug).
    #[error("no reference")]
    NoReference,
    /// A message of the wrong length arrived.
    #[error("{op}: got {got} bytes, want {want}")]
    ShortMessage {
        /// `bench` (the throughput run) or `ping-pong`.
        op: &'static str,
        /// Bytes received.
        got: usize,
        /// Bytes sent.
        want: usize,
    },
    /// The `exchange` test mode received a payload that is not the peer's pattern.
    #[error("size {size}: got {got_bytes} bytes crc {got_crc:#x}, want crc {want_crc:#x}")]
    Corrupt {
        /// The size exchanged.
        size: usize,
        /// Bytes received.
        got_bytes: usize,
        /// Their checksum.
        got_crc: u32,
        /// The checksum of the peer's pattern.
        want_crc: u32,
    },
    /// A peer's address in the plain twin's set-up is not UTF-8.
    #[error("{source}")]
    PeerAddr {
        /// The peer's rank.
        peer: usize,
        /// The decoder's error.
        source: std::string::FromUtf8Error,
    },
    /// An operating-system call on a socket, a process or a file, shown as the system says.
    #[error("{source}")]
    Io {
        /// What was being done, e.g. `reference socket write`, `waiting for a worker`.
        op: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// A program (`lockstep launch`, the stream job) could not be started.
    #[error("starting {program}: {source}")]
    Start {
        /// The program, as shown.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A folder could not be made.
    #[error("creating {}: {source}", .path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("reading {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", .path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A launch's report that is not JSON.
    #[error("{}: {source}", .path.display())]
    BadReport {
        /// The report file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A launch's report without a figure the bench reads.
    #[error("{}: no {key}", .path.display())]
    ReportField {
        /// The report file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// One `lockstep launch` of `bench train` ran past its deadline (it was stopped).
    #[error("lockstep launch with {workers} workers timed out")]
    LaunchTimedOut {
        /// Its worker count.
        workers: usize,
    },
    /// One `lockstep launch` of `bench train` failed; the tail of its output.
    #[error("lockstep launch with {workers} workers failed ({status}):\n{log_tail}")]
    LaunchFailed {
        /// Its worker count.
        workers: usize,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log.
        log_tail: String,
    },
    /// `bench sparse` arguments that cannot make a run.
    #[error(
        "bench sparse: --workers, --servers and --dim must be at least 1 and --rows at least 100"
    )]
    SparseArgs,
    /// The direct loop of `bench train` diverged.
    #[error("direct loop: training loss is {loss}")]
    NonFiniteLoss {
        /// The loss of the round.
        loss: f64,
    },
    /// The data file of `bench ingest` has no rows.
    #[error("empty sample")]
    EmptySample,
    /// The stream job of `bench ingest` failed or ran past its deadline.
    #[error("the stream job failed (logs in {})", .dir.display())]
    StreamJobFailed {
        /// Its run directory.
        dir: PathBuf,
    },
    /// The stream job of `bench ingest` wrote no bootstrap address in time.
    #[error("no bootstrap in {} after {waited_s} s", .path.display())]
    NoBootstrap {
        /// The endpoints file waited for.
        path: PathBuf,
        /// How long.
        waited_s: u64,
    },
    /// A producer process of `bench ingest` failed.
    #[error("a producer process failed (producer {id}: {status})")]
    ProducerFailed {
        /// The producer's id.
        id: u32,
        /// Its exit status.
        status: ExitStatus,
    },
    /// A producer process of `bench ingest` printed no seconds.
    #[error("producer output: {source}")]
    ProducerOutput {
        /// The producer's id.
        id: u32,
        /// The parser's error.
        source: std::num::ParseFloatError,
    },
    /// A `bench ingest --produce` process started without `LOCKSTEP_TOKEN`.
    #[error("LOCKSTEP_TOKEN is not set")]
    NoToken,
    /// Encoding the sample as Arrow IPC failed.
    #[error("{source}")]
    Arrow {
        /// The encoder's error.
        source: arrow_schema::ArrowError,
    },
    /// A link, a mesh or the rendezvous failed (the error names the peer, round and operation).
    #[error("{0}")]
    Transport(Box<lockstep_transport::Error>),
    /// A collective failed.
    #[error("{0}")]
    Collective(Box<CollectiveError>),
    /// The certificates of a `--tls` run could not be made.
    #[error("{0}")]
    TlsGen(Box<GenError>),
    /// A process's TLS set-up from the run's certificates failed.
    #[error("{0}")]
    Tls(Box<TlsConfigError>),
    /// A manifest that does not load.
    #[error("{0}")]
    Manifest(Box<ManifestError>),
    /// The runtime failed (a job's data, model, report, a stream producer).
    #[error("{0}")]
    Runtime(Box<RuntimeError>),
    /// Reading a data file failed.
    #[error("{0}")]
    Data(Box<DataError>),
    /// The model of the direct loop failed.
    #[error("{0}")]
    Model(Box<ModelError>),
    /// The optimizer of the direct loop failed.
    #[error("{0}")]
    Optim(Box<OptimError>),
}

/// `0,1,2` (the CPUs of [`BenchError::CpuNotAllowed`]).
pub(crate) fn join(cpus: &[usize]) -> String {
    let v: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    v.join(",")
}

/// `From` for the boxed errors of the layers below, so `?` works on their results.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for BenchError {
            fn from(e: $ty) -> Self {
                BenchError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Transport(lockstep_transport::Error),
    Collective(CollectiveError),
    TlsGen(GenError),
    Tls(TlsConfigError),
    Manifest(ManifestError),
    Runtime(RuntimeError),
    Data(DataError),
    Model(ModelError),
    Optim(OptimError),
);

impl BenchError {
    /// [`BenchError::Io`] for `op` (for `map_err`).
    pub(crate) fn io(op: &'static str) -> impl Fn(std::io::Error) -> BenchError + Copy {
        move |source| BenchError::Io { op, source }
    }

    /// [`BenchError::Json`] for `what` (for `map_err`).
    pub(crate) fn json(what: &'static str) -> impl Fn(serde_json::Error) -> BenchError + Copy {
        move |source| BenchError::Json { what, source }
    }
}

/// The result of a benchmark step.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines users read stay as they were when these errors were strings.
    #[test]
    fn messages_read_as_before() {
        let e = BenchError::CpuNotAllowed {
            spec: "0,7".into(),
            cpu: 7,
            allowed: vec![0, 1],
        };
        assert_eq!(
            e.to_string(),
            "--cpus 0,7: CPU 7 is not among the CPUs this process may use (0,1)"
        );
        let e = BenchError::BadSizeUnit {
            unit: "XB".into(),
            value: "12XB".into(),
        };
        assert_eq!(e.to_string(), r#"bad size unit "XB" in "12XB""#);
        let e = BenchError::ShortMessage {
            op: "ping-pong",
            got: 3,
            want: 4,
        };
        assert_eq!(e.to_string(), "ping-pong: got 3 bytes, want 4");
        let e = BenchError::Corrupt {
            size: 8,
            got_bytes: 8,
            got_crc: 0xab,
            want_crc: 0xcd,
        };
        assert_eq!(e.to_string(), "size 8: got 8 bytes crc 0xab, want crc 0xcd");
        let e = BenchError::UnknownMode {
            kind: "link",
            mode: "x".into(),
        };
        assert_eq!(e.to_string(), r#"unknown link worker mode "x""#);
        assert_eq!(
            BenchError::NoResult { rank: 0 }.to_string(),
            "worker 0 gave no result"
        );
    }
}
