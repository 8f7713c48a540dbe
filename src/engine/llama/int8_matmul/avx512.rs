//! The AVX-512 VNNI kernel: 4 weight rows × R activation rows, two weight rows per 512-bit
//! vector (lanes 0–7 one row's block, 8–15 the next row's same block).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the weights are stored plus 128 (as
//! u8) and each lane's sum starts from −128 × the sum of its four activation quants, which
//! cancels the bias: the lane's i32 equals candle's `madd(1, maddubs(|w|, sign(a, w)))`
//! exactly (no i16 saturation there either, as quants lie in −127..=127). The float steps
//! per block are candle's: scale product, one FMA into each lane, then its horizontal sum of
//! each row's eight lanes. Two blocks per vector would halve the FMAs but reorder each lane's
//! additions, and with them the rounding.

use std::arch::x86_64::*;

use super::avx2::hsum;
use super::{ActRow, BLOCK, GROUP};

/// One block's activation quants (or lane offsets), repeated in both 256-bit halves.
#[target_feature(enable = "avx512f")]
fn both_halves<T: Copy, const N: usize>(v: &[T; N]) -> __m512i {
    const { assert!(size_of::<[T; N]>() == 32) };
    // SAFETY: `v` is 32 readable bytes; the load has no alignment requirement.
    _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(v.as_ptr().cast()) })
}

#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
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
            .any(|a| a.quants.len() < blocks || a.scales.len() < blocks || a.offsets.len() < blocks)
    {
        return;
    }
    // Lanes 0–7 take the scale of the pair's first row, 8–15 of its second.
    let pick = [
        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
    ];
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for b in 0..blocks {
        // SAFETY: `b < blocks`, and every slice indexed holds `blocks` items (checked above);
        // checked indexing kept a bounds check per load in the loop.
        let (wb, wd) = unsafe { (w.get_unchecked(b), w_scales.get_unchecked(b)) };
        let (pairs, _) = wb.as_chunks::<{ 2 * BLOCK }>();
        // SAFETY: each pair is 64 readable bytes; the load has no alignment requirement.
        let wv: [__m512i; 2] =
            std::array::from_fn(|h| unsafe { _mm512_loadu_si512(pairs[h].as_ptr().cast()) });
        // SAFETY: `wd` is 4 readable f32.
        let four = _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(wd.as_ptr()) });
        let dw = [
            _mm512_permutexvar_ps(pick[0], four),
            _mm512_permutexvar_ps(pick[1], four),
        ];
        for i in 0..R {
            // SAFETY: as above.
            let (q, offset, scale) = unsafe {
                (
                    acts[i].quants.get_unchecked(b),
                    acts[i].offsets.get_unchecked(b),
                    acts[i].scales.get_unchecked(b),
                )
            };
            let (a, offset) = (both_halves(q), both_halves(offset));
            let da = _mm512_set1_ps(scale[0]);
            for h in 0..2 {
                let q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(offset, wv[h], a));
                acc[i][h] = _mm512_fmadd_ps(_mm512_mul_ps(dw[h], da), q, acc[i][h]);
            }
        }
    }
    for (o, acc) in out.into_iter().zip(&acc) {
        for (h, &v) in acc.iter().enumerate() {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
            o[2 * h] = hsum(lo);
            o[2 * h + 1] = hsum(hi);
        }
    }
}
