//! safetensors round trips, zero-copy reading, and interoperability with Python's `safetensors`.

use lockstep_tensor::{read_safetensors, write_safetensors, Backing, DType, Tensor};
use std::collections::HashMap;
#[path = "../../tests/common/python.rs"]
mod python;

fn sample() -> Vec<(String, Tensor)> {
    vec![
        (
            "dense.weight".into(),
            Tensor::from_vec([2, 3], vec![0.5f32, -1.0, 2.0, 3.5, 0.0, -7.25]).unwrap(),
        ),
        (
            "dense.bias".into(),
            Tensor::from_vec([3], vec![1.0f64, 2.0, 3.0]).unwrap(),
        ),
        ("step".into(), Tensor::from_vec([1], vec![42i64]).unwrap()),
        (
            "half".into(),
            Tensor::from_vec([2], vec![1.5f32, -2.0])
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
    ]
}

#[test]
fn round_trip_and_zero_copy_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors = sample();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([("round".to_string(), "7".to_string())]);
    write_safetensors(&path, &refs, Some(meta)).unwrap();

    let back = read_safetensors(&path).unwrap();
    assert_eq!(back.metadata.get("round").map(String::as_str), Some("7"));
    for (name, t) in &tensors {
        let r = back.get(name).unwrap();
        assert_eq!(r.dtype(), t.dtype(), "{name}");
        assert_eq!(r.shape(), t.shape(), "{name}");
        assert_eq!(r.as_bytes(), t.as_bytes(), "{name}");
        assert_eq!(
            r.buffer().backing(),
            Backing::MappedFile,
            "{name} is read from the mapping"
        );
    }
    let w = back.get("dense.weight").unwrap();
    assert_eq!(w.as_slice::<f32>().unwrap()[5], -7.25);
    // All tensors share one mapping: no per-tensor copy.
    assert!(w.buffer().same_storage(back.get("step").unwrap().buffer()));
}

#[test]
fn corrupt_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let err = read_safetensors(&path).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(read_safetensors(dir.path().join("missing.safetensors")).is_err());
}

/// A file Lockstep writes is read by Python's `safetensors` with numpy.
#[test]
fn python_reads_our_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.safetensors");
    let tensors = sample();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_safetensors(&path, &refs, None).unwrap();
    let script = r#"
import sys
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
w = d["dense.weight"]
assert w.dtype.name == "float32" and w.shape == (2, 3), (w.dtype, w.shape)
assert w.tolist() == [[0.5, -1.0, 2.0], [3.5, 0.0, -7.25]], w.tolist()
assert d["dense.bias"].dtype.name == "float64" and d["dense.bias"].tolist() == [1.0, 2.0, 3.0]
assert d["step"].tolist() == [42]
assert d["half"].dtype.name == "float16" and d["half"].tolist() == [1.5, -2.0]
print("ok")
"#;
    // safetensors and numpy come from the tests' Python environment (tests/requirements.txt).
    let out = python::python_cmd()
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
