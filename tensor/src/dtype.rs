//! Element types: the `DType` tag carried by tensors and frames, and the `Element` trait that ties
//! a Rust type to its tag so typed views can be checked instead of trusted.

use std::fmt;

/// The element type of a tensor. The discriminants are part of the wire format (frame headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// 32-bit IEEE float.
    F32 = 1,
    /// 64-bit IEEE float.
    F64 = 2,
    /// 16-bit IEEE float.
    F16 = 3,
    /// bfloat16.
    BF16 = 4,
    /// 32-bit signed integer.
    I32 = 5,
    /// 64-bit signed integer.
    I64 = 6,
    /// Unsigned byte.
    U8 = 7,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// The tag as it travels on the wire.
    pub const fn to_wire(self) -> u8 {
        self as u8
    }

    /// Decode a wire tag; `None` for an unknown value.
    pub const fn from_wire(v: u8) -> Option<DType> {
        Some(match v {
            1 => DType::F32,
            2 => DType::F64,
            3 => DType::F16,
            4 => DType::BF16,
            5 => DType::I32,
            6 => DType::I64,
            7 => DType::U8,
            _ => return None,
        })
    }

    /// Lower-case name, as in `f32`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that a tensor can be viewed as.
///
/// Sealed to the seven types above: a view is only sound when every bit pattern is a valid value,
/// which `bytemuck::Pod` guarantees.
pub trait Element: bytemuck::Pod + Send + Sync + 'static + private::Sealed {
    /// The dtype tag of this type.
    const DTYPE: DType;
}

mod private {
    pub trait Sealed {}
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl private::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = $d;
        }
    };
}
element!(f32, DType::F32);
element!(f64, DType::F64);
element!(half::f16, DType::F16);
element!(half::bf16, DType::BF16);
element!(i32, DType::I32);
element!(i64, DType::I64);
element!(u8, DType::U8);
