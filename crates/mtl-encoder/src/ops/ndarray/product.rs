//! The kernels' matrix product `c = α·a·b + β·c` on strided views, with the implementation
//! picked once at run time for the CPU: on a CPU with AVX-512 the `gemm` crate's AVX-512
//! kernels; elsewhere ndarray's product, which is matrixmultiply's AVX2/FMA kernels (or BLAS
//! in the `openblas` build, which keeps BLAS everywhere); products of few rows take the packed
//! kernel instead ([`super::packed`]). `MTL_MATMUL=gemm|ndarray` names one product for all of
//! them (for measuring and testing each).

use std::sync::OnceLock;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayBase, ArrayView2, Data, DataMut, Ix2};

/// The matrix product implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    /// The `gemm` crate (AVX-512 where the CPU has it).
    Gemm,
    /// ndarray's `general_mat_mul` (matrixmultiply, or BLAS).
    Ndarray,
}

/// The product `MTL_MATMUL` names, if it names one.
fn named() -> Option<Product> {
    static NAMED: OnceLock<Option<Product>> = OnceLock::new();
    *NAMED.get_or_init(|| match std::env::var("MTL_MATMUL").as_deref() {
        Ok("gemm") => Some(Product::Gemm),
        Ok("ndarray") => Some(Product::Ndarray),
        _ => None,
    })
}

/// Whether the kernels choose per product (`MTL_MATMUL` unset): then products of few rows
/// take the packed kernel ([`super::packed`]) where the CPU has its vector instructions.
pub(crate) fn automatic() -> bool {
    named().is_none()
}

/// The implementation this process uses for products the packed kernel does not take.
pub(crate) fn chosen() -> Product {
    match named() {
        Some(product) => product,
        None if cfg!(feature = "openblas") => Product::Ndarray,
        None if avx512() => Product::Gemm,
        None => Product::Ndarray,
    }
}

/// [`chosen`] and the packed kernel, in words.
pub(crate) fn product_name() -> &'static str {
    let packed = automatic() && super::packed::available();
    match (chosen(), packed) {
        (Product::Gemm, true) => "gemm crate (AVX-512), packed weights for up to 96 rows",
        (Product::Gemm, false) => "gemm crate (AVX-512 kernels where the CPU has them)",
        (Product::Ndarray, true) if cfg!(feature = "openblas") => {
            "OpenBLAS, packed weights for up to 96 rows"
        }
        (Product::Ndarray, false) if cfg!(feature = "openblas") => "OpenBLAS",
        (Product::Ndarray, true) => "matrixmultiply (AVX2/FMA), packed weights for up to 96 rows",
        (Product::Ndarray, false) => "matrixmultiply (AVX2/FMA kernels)",
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `c = alpha·a·b + beta·c` with [`chosen`]'s implementation.
pub(crate) fn product<A, B, S>(
    alpha: f32,
    a: &ArrayBase<A, Ix2>,
    b: &ArrayBase<B, Ix2>,
    beta: f32,
    c: &mut ArrayBase<S, Ix2>,
) where
    A: Data<Elem = f32>,
    B: Data<Elem = f32>,
    S: DataMut<Elem = f32>,
{
    product_with(chosen(), alpha, &a.view(), &b.view(), beta, c)
}

pub(super) fn product_with<S: DataMut<Elem = f32>>(
    how: Product,
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ArrayBase<S, Ix2>,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "matrix product of {m}x{k} and {k2}x{n} into {:?}",
        c.dim()
    );
    if how == Product::Ndarray || m == 0 || n == 0 {
        return general_mat_mul(alpha, a, b, beta, c);
    }
    let (cs, ds) = (c.strides().to_vec(), a.strides());
    let bs = b.strides();
    // SAFETY: the pointers and strides are those of views whose shapes were checked above
    // (`c` is borrowed mutably, so it overlaps neither `a` nor `b`); `gemm` reads `c` only
    // when `read_dst`, and its result is `beta·c + alpha·a·b` (its own `alpha` scales `c`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            cs[1],
            cs[0],
            beta != 0.0,
            a.as_ptr(),
            ds[1],
            ds[0],
            b.as_ptr(),
            bs[1],
            bs[0],
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn filled(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            (((i * 31 + j * 17 + seed * 7) % 23) as f32 - 11.0) / 7.0
        })
    }

    /// Both implementations give the same products (to float rounding) on plain, transposed
    /// and sliced views, with and without accumulating into `c`.
    #[test]
    fn gemm_and_ndarray_agree_on_strided_views() {
        let a = filled(37, 70, 1);
        let b = filled(70, 45, 2);
        let bt = filled(45, 70, 3);
        let cases: Vec<(ArrayView2<f32>, ArrayView2<f32>)> = vec![
            (a.view(), b.view()),
            (a.view(), bt.t()),
            (a.slice(s![3..30, 10..50]), b.slice(s![5..45, ..])),
            (a.slice(s![.., ..;2]), b.slice(s![..35, ..])),
        ];
        for (i, (x, y)) in cases.iter().enumerate() {
            for beta in [0.0f32, 1.0] {
                let start = filled(x.nrows(), y.ncols(), 4);
                let (mut one, mut two) = (start.clone(), start.clone());
                product_with(Product::Gemm, 0.5, x, y, beta, &mut one);
                product_with(Product::Ndarray, 0.5, x, y, beta, &mut two);
                for (u, v) in one.iter().zip(&two) {
                    assert!(
                        (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "case {i}: {u} vs {v}"
                    );
                }
            }
        }
        // Into a transposed (column-major) output view.
        let mut out = Array2::<f32>::zeros((45, 37));
        product_with(
            Product::Gemm,
            1.0,
            &a.view(),
            &b.view(),
            0.0,
            &mut out.view_mut().reversed_axes(),
        );
        let mut want = Array2::<f32>::zeros((37, 45));
        product_with(Product::Ndarray, 1.0, &a.view(), &b.view(), 0.0, &mut want);
        for (u, v) in out.t().iter().zip(&want) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()));
        }
    }
}
