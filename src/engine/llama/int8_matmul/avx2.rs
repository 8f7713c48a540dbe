//! The AVX2 + FMA kernel: candle's `vec_dot_q8_0_q8_0` arithmetic, 4 weight rows × R
//! activation rows at a time.

use std::arch::x86_64::*;

use super::{ActRow, BLOCK, GROUP};

/// 32 bytes (i8 or u8 quants) into a vector.
#[target_feature(enable = "avx2")]
fn load<T: Copy>(q: &[T; BLOCK]) -> __m256i {
    const { assert!(size_of::<T>() == 1) };
    // SAFETY: `q` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

/// Candle's `hsum_float_8`, step for step (the order of the additions fixes the rounding).
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(x: __m256) -> f32 {
    let res = _mm256_extractf128_ps(x, 1);
    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

/// Per block and (weight row, activation row) pair, candle's `vec_dot_q8_0_q8_0` step:
/// `acc += (dw·da) · i32→f32(madd(1, maddubs(|w|, sign(a, w))))`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn tile<const R: usize>(
    acts: [ActRow<'_>; R],
    w: &[[u8; GROUP * BLOCK]],
    w_scales: &[[f32; GROUP]],
    out: [&mut [f32; GROUP]; R],
) {
    let blocks = w.len();
    if w_scales.len() < blocks
        || acts
            .iter()
            .any(|a| a.quants.len() < blocks || a.scales.len() < blocks)
    {
        return;
    }
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); GROUP]; R];
    for (b, (wb, wd)) in w.iter().zip(w_scales).enumerate() {
        let a: [__m256i; R] = std::array::from_fn(|i| load(&acts[i].quants[b]));
        let da: [__m256; R] = std::array::from_fn(|i| _mm256_set1_ps(acts[i].scales[b][0]));
        for (j, wq) in wb.as_chunks::<BLOCK>().0.iter().enumerate() {
            let wv = load(wq);
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = _mm256_set1_ps(wd[j]);
            for i in 0..R {
                let sa = _mm256_sign_epi8(a[i], wv);
                let dot = _mm256_maddubs_epi16(aw, sa);
                let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
                acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, da[i]), q, acc[i][j]);
            }
        }
    }
    for (o, acc) in out.into_iter().zip(&acc) {
        for (o, &v) in o.iter_mut().zip(acc) {
            *o = hsum(v);
        }
    }
}
