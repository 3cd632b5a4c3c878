//! `Tensor`: a dtype, a shape and a byte range of a [`Buffer`], with checked typed views.
//!
//! Views never copy and never trust: `as_slice::<f32>()` checks the dtype, the length and the
//! alignment of the underlying bytes and returns an error instead of undefined behaviour.

use crate::buffer::{Buffer, BufferMut, TypedVec};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::Shape;

/// A dense, row-major tensor over a shared buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    buffer: Buffer,
    offset: usize,
}

/// View `bytes` as `&[T]`, checking the length and the alignment.
///
/// # Errors
/// [`Error::Misaligned`] or [`Error::Shape`] (a length that is not a multiple of the size).
pub fn cast_slice<T: Element>(bytes: &[u8]) -> Result<&[T]> {
    check_cast::<T>(bytes.as_ptr() as usize, bytes.len())?;
    Ok(bytemuck::cast_slice(bytes))
}

/// Mutable counterpart of [`cast_slice`].
///
/// # Errors
/// As [`cast_slice`].
pub fn cast_slice_mut<T: Element>(bytes: &mut [u8]) -> Result<&mut [T]> {
    check_cast::<T>(bytes.as_ptr() as usize, bytes.len())?;
    Ok(bytemuck::cast_slice_mut(bytes))
}

fn check_cast<T: Element>(addr: usize, len: usize) -> Result<()> {
    let align = std::mem::align_of::<T>();
    if len > 0 && !addr.is_multiple_of(align) {
        return Err(Error::Misaligned {
            addr,
            align,
            dtype: T::DTYPE,
        });
    }
    if !len.is_multiple_of(std::mem::size_of::<T>()) {
        return Err(Error::Shape {
            op: "cast_slice",
            expected: format!("a multiple of {} bytes", std::mem::size_of::<T>()),
            actual: format!("{len} bytes"),
        });
    }
    Ok(())
}

impl Tensor {
    /// A tensor over `buffer[offset..offset + numel * dtype.size()]`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when the buffer is too short.
    pub fn new(
        dtype: DType,
        shape: impl Into<Shape>,
        buffer: Buffer,
        offset: usize,
    ) -> Result<Self> {
        let shape = shape.into();
        let end = offset + shape.numel() * dtype.size();
        if end > buffer.len() {
            return Err(Error::OutOfBounds {
                start: offset,
                end,
                len: buffer.len(),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            buffer,
            offset,
        })
    }

    /// Zeroes on the aligned heap.
    pub fn zeros(dtype: DType, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let buffer = Buffer::zeroed(shape.numel() * dtype.size());
        Tensor {
            dtype,
            shape,
            buffer,
            offset: 0,
        }
    }

    /// Take ownership of a vector without copying it.
    ///
    /// # Errors
    /// [`Error::Shape`] when the vector's length is not the shape's element count.
    pub fn from_vec<T: Element>(shape: impl Into<Shape>, data: Vec<T>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(Error::Shape {
                op: "Tensor::from_vec",
                expected: format!("{} elements for shape {shape}", shape.numel()),
                actual: format!("{} elements", data.len()),
            });
        }
        let buffer = Buffer::from_external(TypedVec(data));
        Ok(Tensor {
            dtype: T::DTYPE,
            shape,
            buffer,
            offset: 0,
        })
    }

    /// Copy a slice into an aligned heap tensor.
    ///
    /// # Errors
    /// As [`Tensor::from_vec`].
    pub fn from_slice<T: Element>(shape: impl Into<Shape>, data: &[T]) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(Error::Shape {
                op: "Tensor::from_slice",
                expected: format!("{} elements for shape {shape}", shape.numel()),
                actual: format!("{} elements", data.len()),
            });
        }
        let mut m = BufferMut::zeroed(std::mem::size_of_val(data));
        m.copy_from_slice(bytemuck::cast_slice(data));
        Ok(Tensor {
            dtype: T::DTYPE,
            shape,
            buffer: m.freeze(),
            offset: 0,
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Size of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The underlying buffer (the whole of it, see [`Tensor::offset`]).
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Byte offset of the data in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The data bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer[self.offset..self.offset + self.nbytes()]
    }

    /// A buffer handle over exactly the data bytes (no copy).
    pub fn data_buffer(&self) -> Buffer {
        // In bounds by construction.
        self.buffer
            .slice(self.offset..self.offset + self.nbytes())
            .unwrap_or_else(|_| Buffer::zeroed(0))
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        if self.dtype != T::DTYPE {
            return Err(Error::DType {
                expected: T::DTYPE,
                actual: self.dtype,
            });
        }
        Ok(())
    }

    /// A typed view; checks dtype and alignment, never copies.
    ///
    /// # Errors
    /// [`Error::DType`] or [`Error::Misaligned`].
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype::<T>()?;
        cast_slice(self.as_bytes())
    }

    /// A mutable typed view; needs the only handle to writable memory.
    ///
    /// # Errors
    /// [`Error::DType`], [`Error::Misaligned`] or [`Error::NotUnique`].
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype::<T>()?;
        let (start, end) = (self.offset, self.offset + self.nbytes());
        let bytes = self.buffer.get_mut().ok_or(Error::NotUnique)?;
        cast_slice_mut(&mut bytes[start..end])
    }

    /// Copy the data out into a vector.
    ///
    /// # Errors
    /// [`Error::DType`] (alignment is handled by copying bytewise).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_dtype::<T>()?;
        let mut out = vec![T::zeroed(); self.numel()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(self.as_bytes());
        Ok(out)
    }

    /// The same data under another shape with the same element count.
    ///
    /// # Errors
    /// [`Error::Shape`] when the counts differ.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::Shape {
                op: "reshape",
                expected: format!("{} elements", self.numel()),
                actual: format!("{shape} ({} elements)", shape.numel()),
            });
        }
        Ok(Tensor { shape, ..self })
    }

    /// Convert between float dtypes (f32, f64, f16, bf16); a same-dtype call is a cheap clone.
    ///
    /// # Errors
    /// [`Error::DType`] for integer dtypes.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        let f32s: Vec<f32> = match self.dtype {
            DType::F32 => self.to_vec::<f32>()?,
            DType::F64 => self
                .to_vec::<f64>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            DType::F16 => crate::kernels::f16_to_f32_vec(&self.to_vec::<half::f16>()?),
            DType::BF16 => crate::kernels::bf16_to_f32_vec(&self.to_vec::<half::bf16>()?),
            other => {
                return Err(Error::DType {
                    expected: DType::F32,
                    actual: other,
                })
            }
        };
        let shape = self.shape.clone();
        match dtype {
            DType::F32 => Tensor::from_vec(shape, f32s),
            DType::F64 => {
                Tensor::from_vec(shape, f32s.into_iter().map(f64::from).collect::<Vec<_>>())
            }
            DType::F16 => Tensor::from_vec(shape, crate::kernels::f32_to_f16_vec(&f32s)),
            DType::BF16 => Tensor::from_vec(shape, crate::kernels::f32_to_bf16_vec(&f32s)),
            other => Err(Error::DType {
                expected: DType::F32,
                actual: other,
            }),
        }
    }
}
