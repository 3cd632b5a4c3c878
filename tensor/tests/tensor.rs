//! Tensor views and conversions: dtype and alignment are checked, never trusted.

use lockstep_tensor::{bf16, f16, Buffer, DType, Error, Shape, Tensor};

#[test]
fn typed_views_check_dtype() {
    let t = Tensor::from_vec([2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert_eq!(
        t.as_slice::<f32>().unwrap(),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    match t.as_slice::<i32>() {
        Err(Error::DType {
            expected: DType::I32,
            actual: DType::F32,
        }) => {}
        other => panic!("expected a dtype error, got {other:?}"),
    }
    assert!(
        Tensor::from_vec([4], vec![1.0f32]).is_err(),
        "shape/length mismatch is an error"
    );
}

#[test]
fn misaligned_views_are_errors() {
    let buf = Buffer::zeroed(64);
    // An f32 tensor starting at byte 1 is misaligned.
    let t = Tensor::new(DType::F32, [4], buf.clone(), 1).unwrap();
    assert!(matches!(
        t.as_slice::<f32>(),
        Err(Error::Misaligned { align: 4, .. })
    ));
    // to_vec still works: it copies bytewise.
    assert_eq!(t.to_vec::<f32>().unwrap().len(), 4);
    // Past the end is an error, not a read out of bounds.
    assert!(Tensor::new(DType::F32, [16], buf, 4).is_err());
}

#[test]
fn views_do_not_copy() {
    let t = Tensor::from_vec([3], vec![1i64, 2, 3]).unwrap();
    let v = t.as_slice::<i64>().unwrap();
    assert_eq!(v.as_ptr() as *const u8, t.buffer().as_ptr());
    let c = t.clone();
    assert!(c.buffer().same_storage(t.buffer()));
}

#[test]
fn mutable_view_needs_unique_handle() {
    let mut t = Tensor::zeros(DType::F32, [4]);
    t.as_mut_slice::<f32>().unwrap()[2] = 5.0;
    let shared = t.clone();
    assert!(matches!(t.as_mut_slice::<f32>(), Err(Error::NotUnique)));
    assert_eq!(shared.as_slice::<f32>().unwrap()[2], 5.0);
}

#[test]
fn half_precision_round_trips() {
    let vals = vec![0.0f32, 1.0, -2.5, 0.333_251_95, 65504.0, 1e-3];
    let t = Tensor::from_vec([6], vals.clone()).unwrap();
    let h = t.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(h.as_slice::<f16>().unwrap()[1], f16::from_f32(1.0));
    let back = h.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
    for (a, b) in vals.iter().zip(&back) {
        assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-4, "{a} vs {b}");
    }
    let bt = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(bt.as_slice::<bf16>().unwrap()[2], bf16::from_f32(-2.5));
    let back = bt.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
    for (a, b) in vals.iter().zip(&back) {
        assert!((a - b).abs() <= a.abs() * 1e-2 + 1e-3, "{a} vs {b}");
    }
    // Values exactly representable survive both ways bit for bit.
    let exact = Tensor::from_vec([3], vec![1.5f32, -0.25, 8.0]).unwrap();
    for d in [DType::F16, DType::BF16] {
        let rt = exact.to_dtype(d).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(rt.to_vec::<f32>().unwrap(), vec![1.5, -0.25, 8.0]);
    }
}

#[test]
fn shape_fingerprint_is_stable_and_discriminating() {
    let a = Shape::new(vec![784, 256]);
    assert_eq!(a.fingerprint(), Shape::new(vec![784, 256]).fingerprint());
    assert_ne!(a.fingerprint(), Shape::new(vec![256, 784]).fingerprint());
    assert_ne!(
        Shape::new(vec![4]).fingerprint(),
        Shape::new(vec![4, 1]).fingerprint()
    );
    assert_eq!(a.to_string(), "[784, 256]");
}
