//! The typed errors render the texts users, scripts and tests know (the strings they replace).

use super::*;
use crate::stream::error::{Refusal, Silence, StreamFailure};
use std::time::Duration;

fn text(e: impl Into<RuntimeError>) -> String {
    e.into().to_string()
}

#[test]
fn launch_failures_name_the_node_and_how_it_ended() {
    let killed = NodeExit {
        node: "worker-1".into(),
        how: ExitHow::Signal(9),
        last_error: None,
    };
    let failed = NodeExit {
        node: "rank-1".into(),
        how: ExitHow::Status(3),
        last_error: Some("lockstep: error: boom".into()),
    };
    assert_eq!(
        text(LaunchError::NodeFailed(killed.clone())),
        "node worker-1 was killed by signal 9"
    );
    assert_eq!(
        text(LaunchError::NodesFailed {
            failed: vec![killed.clone(), failed.clone()],
            interrupted: true,
        }),
        "interrupted (before training started, or the stop failed): node worker-1 was killed \
         by signal 9\nnode rank-1 exited with status 3: lockstep: error: boom"
    );
    assert_eq!(
        text(LaunchError::ElasticRunStopped {
            left: 1,
            min: 2,
            dead: vec![killed],
        }),
        "elastic run stopped: 1 rank(s) left, fewer than --elastic 2; dead:\nnode worker-1 was \
         killed by signal 9"
    );
    assert_eq!(
        text(LaunchError::TooFewWorkers {
            left: 2,
            workers: vec!["worker-0".into(), "worker-3".into()],
            min: 3,
            dead: vec!["worker-1".into(), "worker-2".into()],
        }),
        "elastic job stopped: 2 worker(s) left (worker-0, worker-3), fewer than min_workers = 3; \
         dead: worker-1, worker-2"
    );
    assert_eq!(
        text(LaunchError::RunOptions(RunOptionsError::ElasticRange {
            min: 5,
            workers: 4
        })),
        "run: --elastic 5 must be between 1 and -n 4"
    );
}

#[test]
fn setup_errors_name_the_variable_directory_or_node() {
    assert_eq!(
        text(SetupError::EnvUnset {
            names: vec!["RANK", "SLURM_PROCID"]
        }),
        "no --node given and RANK / SLURM_PROCID is not set (set \
         RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, Slurm's SLURM_PROCID/SLURM_NTASKS, or a \
         Kubernetes Indexed Job's JOB_COMPLETION_INDEX with WORLD_SIZE)"
    );
    assert_eq!(
        text(SetupError::EnvNumber {
            name: "RANK".into(),
            value: "x".into()
        }),
        "RANK=\"x\" is not a number"
    );
    assert_eq!(
        text(SetupError::TlsEnvPartial {
            all: &["A", "B", "C"],
            missing: vec!["B", "C"],
        }),
        "TLS from the environment needs all of A, B, C; B, C not set"
    );
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let e = text(SetupError::NotWritable {
        dir: "/x/run".into(),
        source: denied,
    });
    assert!(
        e.starts_with("run directory /x/run is not writable: "),
        "{e}"
    );
    assert!(e.ends_with(" (checked at start, before training)"), "{e}");
    assert_eq!(
        text(SetupError::Fault {
            var: "LOCKSTEP_FAULT",
            value: "stall:x=1".into(),
            why: FaultSyntax::Part { part: "x=1".into() },
        }),
        "LOCKSTEP_FAULT=\"stall:x=1\": unknown part \"x=1\""
    );
}

#[test]
fn training_errors_keep_the_round_and_the_step() {
    assert_eq!(
        text(TrainingError::InjectedFault { round: 5 }),
        "model: round 5: LOCKSTEP_FAULT failed forward_backward"
    );
    assert_eq!(
        text(TrainingError::NonFiniteLoss {
            round: 3,
            loss: f64::NAN
        }),
        "model: round 3: training loss is NaN"
    );
    let spec =
        lockstep_trainer::model::ModelError::Spec(lockstep_trainer::model::SpecError::NoFeatures {
            model: "mlp",
        });
    assert_eq!(
        text(TrainingError::key("job.model")(spec)),
        "model: job.model: [job.model] mlp: the data has no feature columns"
    );
    let nan = lockstep_trainer::model::ModelError::NonFiniteLoss { loss: 1.0, rows: 2 };
    assert_eq!(
        text(TrainingError::step(7, None)(nan)),
        "model: round 7: non-finite training loss 1 over a batch of 2 rows"
    );
    let e = text(TrainingError::TablesNotResumable { round: 4 });
    assert!(
        e.contains("round 4") && e.contains("only from a checkpoint"),
        "{e}"
    );
}

#[test]
fn protocol_and_mismatch_errors_name_both_sides() {
    assert_eq!(
        text(ProtocolError::HeldOutMissing { chunk: 1, of: 3 }),
        "control protocol: no worker evaluated held-out chunk 1 of 3"
    );
    assert_eq!(
        text(ProtocolError::Answered {
            node: "w1".into(),
            got: "Probe",
            command: "Finish"
        }),
        "control protocol: w1 answered Probe to Finish"
    );
    assert_eq!(
        text(ProtocolError::Refused {
            by: Refuser::Producer(0),
            reason: None
        }),
        "control protocol: producer 0 refused: no reason given"
    );
    assert_eq!(
        text(MismatchError::Diverged {
            node_a: "w0".into(),
            hash_a: "aa".into(),
            node_b: "w1".into(),
            hash_b: "bb".into(),
        }),
        "replicas diverged: w0 has weights aa, w1 has bb"
    );
    assert_eq!(
        text(MismatchError::Params {
            round: Some(2),
            verb: "pulled",
            got: 3,
            model: 4
        }),
        "round 2: pulled 3 parameters, model has 4"
    );
}

#[test]
fn actor_errors_name_the_actor() {
    assert_eq!(
        text(ActorError::Panicked {
            thread: "the worker thread".into(),
            text: None
        }),
        "actor system: the worker thread panicked"
    );
    assert_eq!(
        text(ActorError::Panicked {
            thread: "the worker's control loop".into(),
            text: Some("boom".into())
        }),
        "actor system: the worker's control loop panicked: boom"
    );
    assert_eq!(
        text(ActorError::Dropped {
            round: 4,
            actor: "the aggregator",
            what: "a table pull"
        }),
        "actor system: round 4: the aggregator dropped a table pull"
    );
}

#[test]
fn stream_errors_are_the_texts_producers_read() {
    assert_eq!(
        Refusal::AlreadyConnected { producer: 2 }.to_string(),
        "producer 2 is already connected (a second connection with a live producer's id)"
    );
    assert_eq!(
        Refusal::Gap {
            producer: 1,
            received: 10,
            offset: 20
        }
        .to_string(),
        "producer 1: rows 10..20 are missing (the batch starts at offset 20, the next expected \
         row is 10)"
    );
    assert_eq!(
        text(StreamFailure::NeverConnected {
            producers: vec![0, 1],
            worker: "w0".into(),
            timeout: Duration::from_millis(4000),
        }),
        "producers 0, 1 never connected to w0 within 4.0 s ([job.data.stream] \
         connect_timeout_ms = 4000); producers find the job through the bootstrap address in \
         <run dir>/endpoints.json"
    );
    let silence = Silence {
        producer: 0,
        quiet: Duration::from_millis(2500),
        peer_timeout: Duration::from_millis(2000),
        connected: true,
        offset: 64,
    };
    assert_eq!(
        text(StreamFailure::Silent(silence)),
        "producer 0 has sent nothing for 2.5 s (peer timeout 2000 ms; connected; next offset \
         64); [job.data.stream] on_silent = \"fail\""
    );
}
