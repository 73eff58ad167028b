//! `x·W + b` for inputs of few rows (a sentence or two) on weights packed once per layer.
//!
//! With few rows each weight is used a handful of times, so such a product is bound by how fast
//! the weight streams from memory, not by arithmetic. A weight stored `[d_in, d_out]` row-major
//! is read by a product in column panels: each input row of the panel is a short piece, a whole
//! row of the matrix (kilobytes, a fresh memory page for the wide layers) away from the last,
//! which defeats the CPU's prefetchers. Measured on an Intel Xeon (2 cores, AVX-512) with
//! MiniLM's feed-forward weight and 21 rows, cold weights: the `gemm` crate 35-53 GFLOP/s,
//! this kernel on the packed weight 89-97 (about 9 GB/s of weight per core).
//!
//! The packed form holds the weight in panels of [`PANEL`] columns, each panel its `d_in` rows
//! one after the other, so a product streams the whole weight once, front to back, with
//! software prefetch ahead of it. Per output, the sum runs over the input in order from the
//! bias, one fused multiply-add per term (AVX-512 or AVX2 with FMA; the rows are then cut into
//! tiles that fit the vector registers).

use std::sync::Arc;

use burn::backend::ndarray::NdArrayTensor;
use ndarray::{s, ArrayView2};

use super::view2;
use crate::ops::Prepared;

/// Columns per panel: two AVX-512 vectors, four AVX2 vectors.
pub(super) const PANEL: usize = 32;

/// Products of at most this many rows take the packed path. Measured with cold weights: at 64
/// rows the packed kernel is 1.16x the `gemm` crate; at 128 rows (without prefetch) 0.89x.
const MAX_ROWS: usize = 96;

/// The weight's rows ahead of the one in use that are prefetched (each `PANEL` floats).
const PREFETCH_ROWS: usize = 24;

/// A weight `[d_in, d_out]` in panels, with the tensor it was packed from (held, so that its
/// memory can neither be freed and reused nor written in place while this form exists).
pub(super) struct Packed {
    source: NdArrayTensor,
    d_in: usize,
    d_out: usize,
    panels: Vec<f32>,
}

/// The vector instructions the packed kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
}

fn simd() -> Option<Simd> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Simd::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Simd::Avx2);
        }
    }
    None
}

/// Whether this CPU has the packed kernel's vector instructions.
pub(super) fn available() -> bool {
    simd().is_some()
}

/// Whether the product of `x` (`[rows, d_in]`) and a weight of `d_out` columns takes the
/// packed path on this CPU: few rows, each row contiguous, whole panels, vector instructions,
/// and `MTL_MATMUL` not naming one product for everything.
pub(super) fn takes(x: &ArrayView2<f32>, d_out: usize) -> bool {
    x.nrows() <= MAX_ROWS
        && rows_contiguous(x)
        && d_out.is_multiple_of(PANEL)
        && super::product::automatic()
        && available()
}

/// Whether each row of `x` lies contiguous, one after the other at a non-negative stride.
fn rows_contiguous(x: &ArrayView2<f32>) -> bool {
    x.nrows() < 2 || (x.strides()[1] == 1 && x.strides()[0] >= 0)
}

impl Packed {
    fn new(source: &NdArrayTensor) -> Self {
        let w = view2(source);
        let (d_in, d_out) = w.dim();
        let mut panels = Vec::with_capacity(d_in * d_out);
        for p in 0..d_out / PANEL {
            for row in w.rows() {
                panels.extend(row.slice(s![p * PANEL..(p + 1) * PANEL]));
            }
        }
        Self {
            source: source.clone(),
            d_in,
            d_out,
            panels,
        }
    }

    /// Whether this is the packed form of `weight` (the same memory, shape and strides).
    fn packs(&self, weight: &NdArrayTensor) -> bool {
        let (a, b) = (view2(&self.source), view2(weight));
        a.as_ptr() == b.as_ptr() && a.dim() == b.dim() && a.strides() == b.strides()
    }
}

/// The packed form of `weight` kept in `prepared`, packed now if it holds none or one of
/// another weight.
pub(super) fn packed(weight: &NdArrayTensor, prepared: &Prepared) -> Arc<Packed> {
    let mut slot = prepared.lock();
    if let Some(p) = slot
        .as_ref()
        .and_then(|p| p.clone().downcast::<Packed>().ok())
    {
        if p.packs(weight) {
            return p;
        }
    }
    let p = Arc::new(Packed::new(weight));
    *slot = Some(p.clone());
    p
}

/// `out = x·W + bias` (`out` row-major `[rows, d_out]`). Called when [`takes`] said so.
pub(super) fn product(x: &ArrayView2<f32>, w: &Packed, bias: &[f32], out: &mut [f32]) {
    let simd = simd().expect("`takes` checks for vector instructions");
    product_on(simd, x, w, bias, out)
}

fn product_on(simd: Simd, x: &ArrayView2<f32>, w: &Packed, bias: &[f32], out: &mut [f32]) {
    let rows = x.nrows();
    let x_row = if rows < 2 {
        w.d_in
    } else {
        x.strides()[0] as usize
    };
    assert!(
        x.ncols() == w.d_in
            && bias.len() == w.d_out
            && out.len() == rows * w.d_out
            && rows_contiguous(x),
        "packed product of {:?} (strides {:?}) and {}x{} into {} values",
        x.dim(),
        x.strides(),
        w.d_in,
        w.d_out,
        out.len()
    );
    let operands = Operands {
        x: x.as_ptr(),
        x_row,
        k: w.d_in,
        n: w.d_out,
    };
    let panels = w.panels.chunks_exact(w.d_in * PANEL);
    for (p, (panel, bias)) in panels.zip(bias.chunks_exact(PANEL)).enumerate() {
        // SAFETY: the caller checked the CPU's features (`simd()`); the shapes were checked
        // above, so every row of `x`, of the panel and of `out` read or written is within its
        // slice.
        unsafe {
            match simd {
                Simd::Avx512 => avx512::panel(&operands, panel, bias, out, p * PANEL),
                Simd::Avx2 => avx2::panel(&operands, panel, bias, out, p * PANEL),
            }
        }
    }
}

/// The input and the product's widths, for the kernels.
struct Operands {
    /// `x[r][i]` at `x + r·x_row + i`.
    x: *const f32,
    x_row: usize,
    /// `d_in`, `d_out`.
    k: usize,
    n: usize,
}

/// Rows `row0..row0 + MR` of `out[.., col..col + V·L]` (L lanes per vector), from `panel`'s
/// columns `first..first + V·L`: `bias + Σ_i x[r][i]·panel[i]`, in order of `i`.
macro_rules! tile_kernel {
    ($feature:literal, $vec:ty, $lanes:expr, $zero:path, $load:path, $splat:path, $fma:path,
     $store:path; $tile:literal rows, [$($mr:literal)+], columns from $starts:expr) => {
        #[target_feature(enable = $feature)]
        unsafe fn tile<const MR: usize, const V: usize>(
            o: &super::Operands,
            row0: usize,
            panel: &[f32],
            first: usize,
            bias: &[f32],
            out: &mut [f32],
            col: usize,
        ) {
            use std::arch::x86_64::*;
            let mut acc: [[$vec; V]; MR] = [[$zero(); V]; MR];
            for row in acc.iter_mut() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = $load(bias.as_ptr().add(first + v * $lanes));
                }
            }
            let stride = super::PANEL;
            let w = panel.as_ptr().add(first);
            let x = o.x.add(row0 * o.x_row);
            for i in 0..o.k {
                let ahead = w.wrapping_add((i + super::PREFETCH_ROWS) * stride) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let mut wv = [$zero(); V];
                for (v, slot) in wv.iter_mut().enumerate() {
                    *slot = $load(w.add(i * stride + v * $lanes));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let xv = $splat(*x.add(r * o.x_row + i));
                    for (a, &wv) in row.iter_mut().zip(&wv) {
                        *a = $fma(xv, wv, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add((row0 + r) * o.n + col + first);
                for (v, a) in row.iter().enumerate() {
                    $store(dst.add(v * $lanes), *a);
                }
            }
        }

        /// One panel for every row: from each of the panel's column starts, 2 vectors wide,
        /// the rows in tiles of the given height.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn panel(
            o: &super::Operands,
            panel: &[f32],
            bias: &[f32],
            out: &mut [f32],
            col: usize,
        ) {
            let rows = out.len() / o.n;
            for first in $starts {
                for row0 in (0..rows).step_by($tile) {
                    match (rows - row0).min($tile) {
                        $($mr => tile::<$mr, 2>(o, row0, panel, first, bias, out, col),)+
                        _ => unreachable!("tiles of 1 to {} rows", $tile),
                    }
                }
            }
        }
    };
}

/// 12 rows of 2 vectors: 24 of the 32 registers accumulate.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    tile_kernel!(
        "avx512f",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps;
        12 rows, [1 2 3 4 5 6 7 8 9 10 11 12], columns from [0]
    );
}

/// The panel as two halves of 2 vectors, 6 rows at a time: 12 of the 16 registers accumulate.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    tile_kernel!(
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps;
        6 rows, [1 2 3 4 5 6], columns from [0, super::PANEL / 2]
    );
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) unsafe fn panel(_: &super::Operands, _: &[f32], _: &[f32], _: &mut [f32], _: usize) {
        unreachable!("x86-64 only")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub(super) use super::avx512::panel;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::ndarray::{product::product_with, product::Product, wrap2};
    use ndarray::Array2;

    fn filled(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            (((i * 31 + j * 17 + seed * 7) % 23) as f32 - 11.0) / 7.0
        })
    }

    fn on_this_cpu() -> Vec<Simd> {
        match simd() {
            Some(Simd::Avx512) => vec![Simd::Avx512, Simd::Avx2],
            Some(Simd::Avx2) => vec![Simd::Avx2],
            None => vec![],
        }
    }

    /// Every vector path against ndarray's product, for row counts that leave partial tiles,
    /// an odd input width, several panels, and input rows read through a stride.
    #[test]
    fn packed_products_equal_the_plain_product() {
        let weight = wrap2(filled(37, 96, 1));
        let w = Packed::new(&weight);
        let bias: Vec<f32> = (0..96).map(|j| j as f32 / 10.0 - 3.0).collect();
        let wide = filled(96, 50, 2);
        for simd in on_this_cpu() {
            for rows in [1, 5, 6, 7, 12, 13, 21, 96] {
                let x = wide.slice(s![..rows, 3..40]);
                let mut want = Array2::from_shape_fn((rows, 96), |(_, j)| bias[j]);
                product_with(Product::Ndarray, 1.0, &x, &view2(&weight), 1.0, &mut want);
                let mut got = vec![f32::NAN; rows * 96];
                product_on(simd, &x, &w, &bias, &mut got);
                for (k, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{simd:?}, {rows} rows, value {k}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// The slot keeps one packed form and packs again when handed another weight, even one
    /// of the same shape.
    #[test]
    fn the_packed_form_follows_the_weight() {
        let prepared = Prepared::default();
        let (one, two) = (wrap2(filled(8, 32, 1)), wrap2(filled(8, 32, 2)));
        let first = packed(&one, &prepared);
        assert!(Arc::ptr_eq(&first, &packed(&one, &prepared)));
        let second = packed(&two, &prepared);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.packs(&two) && !second.packs(&one));
        assert_eq!(second.panels[..32], view2(&two).row(0).to_vec()[..]);
        // A copy of the same values is another tensor: packed again.
        let copy = wrap2(filled(8, 32, 2));
        assert!(!packed(&copy, &prepared).packs(&two));
    }
}
