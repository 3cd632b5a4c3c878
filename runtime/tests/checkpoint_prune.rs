//! Pruning counts only complete checkpoints towards `keep`.

use lockstep_runtime::checkpoint::{self, find_latest};
use lockstep_trainer::data::DataCursor;
use lockstep_trainer::model::{build_model, ModelKind, ModelSpec};
use lockstep_trainer::optim::{Optimizer, OptimizerKind, OptimizerSpec};

#[test]
fn torn_folders_do_not_count_towards_keep() {
    let dir = tempfile::tempdir().unwrap();
    let model = build_model(&ModelSpec::new(ModelKind::Logistic), 5, 2, 42).unwrap();
    let opt = Optimizer::new(
        &OptimizerSpec::new(OptimizerKind::Sgd, 0.1),
        model.params().len(),
    )
    .unwrap();
    let c = DataCursor::default();
    checkpoint::write(dir.path(), 10, c, 1, model.as_ref(), &opt, 2).unwrap();
    // Two torn folders after it (a crash while writing, twice): no commit marker.
    for round in [20, 30] {
        let d = checkpoint::dir_for(dir.path(), round);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state.safetensors"), b"half a file").unwrap();
    }
    checkpoint::write(dir.path(), 40, c, 1, model.as_ref(), &opt, 2).unwrap();
    // keep = 2 complete ones: 10 and 40. Counting the torn folders would have deleted 10.
    assert!(checkpoint::verify(&checkpoint::dir_for(dir.path(), 10)).is_ok());
    assert!(checkpoint::verify(&checkpoint::dir_for(dir.path(), 40)).is_ok());
    for round in [20, 30] {
        assert!(
            !checkpoint::dir_for(dir.path(), round).exists(),
            "torn {round} kept"
        );
    }
    // And with the newest complete one corrupted later, the older complete one is still there.
    std::fs::remove_file(checkpoint::dir_for(dir.path(), 40).join("meta.json")).unwrap();
    assert_eq!(find_latest(dir.path()).unwrap().1.round, 10);
}
