//! Reduction kernels that read peer data as it arrives: little-endian f32 bytes, possibly in
//! several pieces whose boundaries may split an element (a shared-memory ring wraps anywhere),
//! possibly unaligned. They are the body of the `consume` callback of `Link::recv_with`, so over
//! shared memory the sum is computed straight out of the peer's ring without staging, and the
//! result they forward ([`Out`]) may be room reserved in the next peer's ring: one or two byte
//! pieces, again possibly unaligned or splitting an element.

use std::ops::Range;

/// Elements handled at a time where the data must go through a stack buffer (unaligned input or
/// output).
const BLOCK: usize = 256;

/// Where forwarded results go: the payload room of a `Reservation`, as little-endian f32 bytes
/// (a first piece and the rest).
pub(crate) struct Out<'a> {
    a: &'a mut [u8],
    b: &'a mut [u8],
}

impl<'a> Out<'a> {
    /// The room `a` followed by `b`.
    pub(crate) fn new(a: &'a mut [u8], b: &'a mut [u8]) -> Self {
        Out { a, b }
    }

    /// Let `f(elements, out)` write the results for `r` (element indices): `out` is the output
    /// of `elements`, in order; called for consecutive sub-ranges covering `r`.
    fn run(&mut self, r: Range<usize>, mut f: impl FnMut(Range<usize>, &mut [f32])) {
        let split = self.a.len() / 4;
        let aligned = self.a.len().is_multiple_of(4);
        if aligned {
            if let (Ok(a), Ok(b)) = (
                bytemuck::try_cast_slice_mut::<u8, f32>(self.a),
                bytemuck::try_cast_slice_mut::<u8, f32>(self.b),
            ) {
                if r.start < split {
                    let end = r.end.min(split);
                    f(r.start..end, &mut a[r.start..end]);
                }
                if r.end > split {
                    let start = r.start.max(split);
                    f(start..r.end, &mut b[start - split..r.end - split]);
                }
                return;
            }
        }
        let mut tmp = [0f32; BLOCK];
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(BLOCK);
            f(at..at + n, &mut tmp[..n]);
            let bytes: &[u8] = bytemuck::cast_slice(&tmp[..n]);
            self.write_bytes(at * 4, bytes);
            at += n;
        }
    }

    fn write_bytes(&mut self, off: usize, bytes: &[u8]) {
        let na = self.a.len();
        let in_a = na.saturating_sub(off).min(bytes.len());
        if in_a > 0 {
            self.a[off..off + in_a].copy_from_slice(&bytes[..in_a]);
        }
        let rest = &bytes[in_a..];
        if !rest.is_empty() {
            let ob = off + in_a - na;
            self.b[ob..ob + rest.len()].copy_from_slice(rest);
        }
    }
}

/// What to do with each incoming element `x`.
pub(crate) enum Sink<'a> {
    /// `out[i] = local[i] + x`.
    AddTo {
        /// This rank's contribution.
        local: &'a [f32],
        /// Where the sum goes.
        out: Out<'a>,
    },
    /// `v = (acc[i] + x) / div` (no division when `div` is `None`), stored in both `acc[i]` and
    /// `out[i]`: the final sum of a reduce-scatter, kept and forwarded in one pass.
    Finish {
        /// This rank's contribution; receives the result.
        acc: &'a mut [f32],
        /// Where the result is also written (the frame that is forwarded).
        out: Out<'a>,
        /// Divisor of a mean.
        div: Option<f32>,
    },
    /// `dst[i] += x`.
    Accumulate(&'a mut [f32]),
    /// `dst[i] = x`.
    Copy(&'a mut [f32]),
}

impl Sink<'_> {
    fn capacity(&self) -> usize {
        match self {
            Sink::AddTo { local, .. } => local.len(),
            Sink::Finish { acc, .. } => acc.len(),
            Sink::Accumulate(d) | Sink::Copy(d) => d.len(),
        }
    }

    /// Apply whole elements `src` (a multiple of 4 bytes) starting at element `at`.
    fn apply(&mut self, at: usize, src: &[u8]) {
        let n = (src.len() / 4).min(self.capacity().saturating_sub(at));
        let src = &src[..n * 4];
        match bytemuck::try_cast_slice::<u8, f32>(src) {
            Ok(x) => self.apply_aligned(at, x),
            Err(_) => {
                // Unaligned input: decode a block at a time, then the same arithmetic.
                let mut tmp = [0f32; BLOCK];
                for (k, block) in src.chunks(BLOCK * 4).enumerate() {
                    let m = block.len() / 4;
                    for (t, b) in tmp.iter_mut().zip(block.chunks_exact(4)) {
                        *t = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    self.apply_aligned(at + k * BLOCK, &tmp[..m]);
                }
            }
        }
    }

    fn apply_aligned(&mut self, at: usize, x: &[f32]) {
        let r = at..at + x.len();
        match self {
            Sink::Finish { acc, out, div } => {
                let div = *div;
                out.run(r, |e, o| {
                    let xs = &x[e.start - at..e.end - at];
                    finish(&mut acc[e], o, xs, div);
                });
            }
            Sink::AddTo { local, out } => out.run(r, |e, o| {
                let xs = &x[e.start - at..e.end - at];
                for ((o, &l), &v) in o.iter_mut().zip(&local[e]).zip(xs) {
                    *o = l + v;
                }
            }),
            Sink::Accumulate(d) => {
                for (o, &v) in d[r].iter_mut().zip(x) {
                    *o += v;
                }
            }
            Sink::Copy(d) => lockstep_tensor::kernels::copy_f32(&mut d[r], x),
        }
    }
}

/// `acc[i] = out[i] = (acc[i] + x[i]) / div`: the same operations, in the same order, as an
/// addition followed by [`divide`], so the bits do not depend on which path ran.
fn finish(acc: &mut [f32], out: &mut [f32], x: &[f32], div: Option<f32>) {
    let it = acc.iter_mut().zip(out.iter_mut()).zip(x);
    match div {
        None => it.for_each(|((a, o), &v)| {
            *a += v;
            *o = *a;
        }),
        Some(d) => it.for_each(|((a, o), &v)| {
            *a = (*a + v) / d;
            *o = *a;
        }),
    }
}

/// Feeds payload pieces into a [`Sink`], carrying an element split across two pieces.
pub(crate) struct Consumer<'a> {
    sink: Sink<'a>,
    /// Payload bytes seen so far.
    bytes: usize,
    carry: [u8; 4],
    carry_len: usize,
    /// A piece arrived at an offset other than the next expected one.
    pub(crate) gap: bool,
}

impl<'a> Consumer<'a> {
    /// A consumer writing into `sink`.
    pub(crate) fn new(sink: Sink<'a>) -> Self {
        Consumer {
            sink,
            bytes: 0,
            carry: [0; 4],
            carry_len: 0,
            gap: false,
        }
    }

    /// Payload bytes consumed.
    pub(crate) fn consumed(&self) -> usize {
        self.bytes
    }

    /// Take the piece `(offset, bytes)`; bytes beyond the sink's capacity are ignored (the
    /// caller reports the length mismatch from the header).
    pub(crate) fn feed(&mut self, offset: usize, mut piece: &[u8]) {
        if offset != self.bytes {
            self.gap = true;
            return;
        }
        self.bytes += piece.len();
        if self.carry_len > 0 {
            let take = (4 - self.carry_len).min(piece.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
            self.carry_len += take;
            piece = &piece[take..];
            if self.carry_len < 4 {
                return;
            }
            let at = (self.bytes - piece.len()) / 4 - 1;
            let c = self.carry;
            self.sink.apply(at, &c);
            self.carry_len = 0;
        }
        let whole = piece.len() / 4 * 4;
        let at = (self.bytes - piece.len()) / 4;
        self.sink.apply(at, &piece[..whole]);
        let rest = &piece[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }
}

/// `x /= n` for every element (the mean of `n` contributions), the same division on every rank.
pub(crate) fn divide(x: &mut [f32], n: usize) {
    let d = n as f32;
    for v in x {
        *v /= d;
    }
}

/// The `i`-th of `parts` balanced contiguous ranges of `0..len` (the first `len % parts` ranges
/// are one longer).
pub(crate) fn split(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let base = len / parts;
    let extra = len % parts;
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn pieces_split_inside_elements_and_unaligned() {
        let src: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let local: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let wire = bytes(&src);
        // Unaligned copy of the wire bytes.
        let mut shifted = vec![0u8; wire.len() + 1];
        shifted[1..].copy_from_slice(&wire);
        let wire = &shifted[1..];
        let mut out = vec![0f32; 37];
        let mut c = Consumer::new(Sink::AddTo {
            local: &local,
            out: Out::new(bytemuck::cast_slice_mut(&mut out), &mut []),
        });
        let mut off = 0;
        for cut in [3usize, 1, 7, 13, 0, 50, 148] {
            let end = cut.min(wire.len() - off) + off;
            c.feed(off, &wire[off..end]);
            off = end;
        }
        assert!(!c.gap);
        assert_eq!(c.consumed(), wire.len());
        for i in 0..37 {
            assert_eq!(out[i], local[i] + src[i]);
        }
    }

    #[test]
    fn finish_matches_add_then_divide_bit_for_bit() {
        let src: Vec<f32> = (0..29).map(|i| i as f32 * 0.37 - 3.1).collect();
        let local: Vec<f32> = (0..29).map(|i| 1.0 / (i as f32 + 0.7)).collect();
        let wire = bytes(&src);
        for div in [None, Some(3.0f32)] {
            let mut expect = vec![0f32; 29];
            let mut c = Consumer::new(Sink::AddTo {
                local: &local,
                out: Out::new(bytemuck::cast_slice_mut(&mut expect), &mut []),
            });
            c.feed(0, &wire);
            if let Some(d) = div {
                divide(&mut expect, d as usize);
            }
            let (mut acc, mut out) = (local.clone(), vec![0f32; 29]);
            let mut c = Consumer::new(Sink::Finish {
                acc: &mut acc,
                out: Out::new(bytemuck::cast_slice_mut(&mut out), &mut []),
                div,
            });
            // Cut inside an element so both the aligned and the unaligned path run.
            c.feed(0, &wire[..18]);
            c.feed(18, &wire[18..]);
            assert_eq!(bits(&acc), bits(&expect));
            assert_eq!(bits(&out), bits(&expect));
        }
    }

    #[test]
    fn output_in_two_pieces_unaligned_or_split_inside_an_element() {
        let src: Vec<f32> = (0..37).map(|i| i as f32 * 0.29 - 4.0).collect();
        let local: Vec<f32> = (0..37).map(|i| 1.0 / (i as f32 + 0.3)).collect();
        let wire = bytes(&src);
        let expect: Vec<u32> = local
            .iter()
            .zip(&src)
            .map(|(l, x)| ((l + x) / 2.0).to_bits())
            .collect();
        // Room at an odd address and at an aligned one, cut before, inside and after elements.
        for shift in [0usize, 1] {
            for cut in [0usize, 3, 48, 50, 147, 148] {
                let mut room = [0u8; 148 + 1];
                let (a, b) = room[shift..shift + 148].split_at_mut(cut);
                let mut acc = local.clone();
                let mut c = Consumer::new(Sink::Finish {
                    acc: &mut acc,
                    out: Out::new(a, b),
                    div: Some(2.0),
                });
                c.feed(0, &wire[..70]);
                c.feed(70, &wire[70..]);
                assert_eq!(bits(&acc), expect, "shift {shift} cut {cut}");
                let got: Vec<u32> = room[shift..shift + 148]
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                assert_eq!(got, expect, "shift {shift} cut {cut}");
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn gap_is_reported_and_overflow_ignored() {
        let mut d = vec![1f32; 2];
        let mut c = Consumer::new(Sink::Accumulate(&mut d));
        c.feed(0, &bytes(&[1.0, 2.0, 3.0]));
        c.feed(99, &[0; 4]);
        assert!(c.gap);
        assert_eq!(d, vec![2.0, 3.0]);
    }

    #[test]
    fn split_is_balanced_and_covers() {
        for len in [0usize, 1, 5, 17] {
            for parts in 1..6 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split(len, parts, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= len / parts + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
