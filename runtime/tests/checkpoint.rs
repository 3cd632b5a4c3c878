//! Checkpoints round-trip exactly, the newest complete one wins, torn or corrupt ones are skipped.

use lockstep_runtime::checkpoint::{self, find_latest};
use lockstep_trainer::data::DataCursor;
use lockstep_trainer::model::{build_model, ModelKind, ModelSpec};
use lockstep_trainer::optim::{Optimizer, OptimizerKind, OptimizerSpec};

fn setup() -> (Box<dyn lockstep_trainer::model::Model>, Optimizer) {
    let model = build_model(&ModelSpec::new(ModelKind::Logistic), 5, 2, 42).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerSpec::new(OptimizerKind::Adam, 0.01),
        model.params().len(),
    )
    .unwrap();
    let mut params = model.params().to_vec();
    let grads: Vec<f32> = (0..params.len()).map(|i| i as f32 * 0.1 - 0.2).collect();
    opt.step(&mut params, &grads).unwrap();
    (model, opt)
}

#[test]
fn round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (model, opt) = setup();
    let cursor = DataCursor {
        epoch: 1,
        batch_in_epoch: 3,
    };
    let path = checkpoint::write(dir.path(), 17, cursor, 9, model.as_ref(), &opt, 3).unwrap();
    let r = checkpoint::read(&path, model.as_ref(), &opt).unwrap();
    assert_eq!(r.params, model.params());
    assert_eq!(r.optimizer, opt.state());
    assert_eq!(r.meta.round, 17);
    assert_eq!(r.meta.cursor, cursor);
    assert_eq!(r.meta.seed, 9);
}

#[test]
fn newest_complete_wins_and_torn_or_corrupt_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (model, opt) = setup();
    let c = DataCursor::default();
    for round in [10, 20, 30, 40] {
        checkpoint::write(dir.path(), round, c, 1, model.as_ref(), &opt, 3).unwrap();
    }
    // keep = 3: the oldest is gone.
    assert!(!checkpoint::dir_for(dir.path(), 10).exists());
    assert_eq!(find_latest(dir.path()).unwrap().1.round, 40);
    // Corrupt the newest: one flipped byte in the state file.
    let state = checkpoint::dir_for(dir.path(), 40).join("state.safetensors");
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    assert_eq!(find_latest(dir.path()).unwrap().1.round, 30);
    // Tear the next: no commit marker.
    std::fs::remove_file(checkpoint::dir_for(dir.path(), 30).join("meta.json")).unwrap();
    assert_eq!(find_latest(dir.path()).unwrap().1.round, 20);
    assert!(checkpoint::verify(&checkpoint::dir_for(dir.path(), 40))
        .unwrap_err()
        .to_string()
        .contains("checksum"));
}
