//! The AVX2 + FMA kernel: candle's `vec_dot_q8_0_q8_0` arithmetic, 4 weight rows × R
//! activation rows at a time; and the activation quantization, vectorised.

use std::arch::x86_64::*;

use super::{AVX2_GROUP, ActRow, BLOCK, Line};

/// 32 bytes (i8 or u8 quants) into a vector.
#[target_feature(enable = "avx2")]
fn load<T: Copy>(q: &[T; BLOCK]) -> __m256i {
    const { assert!(size_of::<T>() == 1) };
    // SAFETY: `q` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

/// Candle's `hsum_float_8`, step for step (the order of the additions fixes the rounding).
#[target_feature(enable = "avx2,fma")]
fn hsum(x: __m256) -> f32 {
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
    w: &[[Line; 2]],
    w_scales: &[[f32; AVX2_GROUP]],
    out: [&mut [f32; AVX2_GROUP]; R],
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
    let mut acc = [[_mm256_setzero_ps(); AVX2_GROUP]; R];
    for b in 0..blocks {
        super::prefetch(w.as_ptr().wrapping_add(b + super::PREFETCH_BLOCKS));
        // SAFETY: `b < blocks`, and every slice indexed holds `blocks` items (checked above);
        // unchecked, the loop kept a bounds check per load.
        let (wb, wd) = unsafe { (w.get_unchecked(b), w_scales.get_unchecked(b)) };
        // SAFETY: as above.
        let a: [__m256i; R] =
            std::array::from_fn(|i| load(unsafe { acts[i].quants.get_unchecked(b) }));
        // SAFETY: as above.
        let da: [&[f32; 8]; R] =
            std::array::from_fn(|i| unsafe { acts[i].scales.get_unchecked(b) });
        // The group's four rows: two to a line.
        let (l0, _) = wb[0].0.as_chunks::<BLOCK>();
        let (l1, _) = wb[1].0.as_chunks::<BLOCK>();
        for (j, wq) in [&l0[0], &l0[1], &l1[0], &l1[1]].into_iter().enumerate() {
            let wv = load(wq);
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = _mm256_set1_ps(wd[j]);
            for i in 0..R {
                let sa = _mm256_sign_epi8(a[i], wv);
                let dot = _mm256_maddubs_epi16(aw, sa);
                let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
                // SAFETY: `da[i]` is 8 readable f32. Read at the multiply, the already
                // broadcast scale needs no register of its own across the block.
                let d = _mm256_mul_ps(dw, unsafe { _mm256_loadu_ps(da[i].as_ptr()) });
                acc[i][j] = _mm256_fmadd_ps(d, q, acc[i][j]);
            }
        }
    }
    for (o, acc) in out.into_iter().zip(&acc) {
        for (o, &v) in o.iter_mut().zip(acc) {
            *o = hsum(v);
        }
    }
}

/// Quantizes activation blocks as `super::quantize_block` does (candle's `from_float`), eight
/// values per instruction; each scale is stored in all 8 lanes. Equal to the scalar code for
/// finite inputs (a NaN may quantize differently; it poisons the output either way).
#[target_feature(enable = "avx2,fma")]
pub(super) fn quantize(xs: &[[f32; BLOCK]], quants: &mut [[i8; BLOCK]], scales: &mut [[f32; 8]]) {
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    // `packs` interleaves its inputs by 128-bit lane; this puts the 8 dwords back in order.
    let unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for ((x, q), s) in xs.iter().zip(quants).zip(scales) {
        let (eights, _) = x.as_chunks::<8>();
        // SAFETY: each chunk is 8 readable f32.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(eights[i].as_ptr()) });
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));

        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        *s = [half::f16::from_f32(d).to_f32(); 8];
        let id = _mm256_set1_ps(id);
        let ints = v.map(|v| {
            // `f32::round` rounds halves away from zero, which no rounding mode does:
            // truncate, then step away from zero when the (exact) fraction is ≥ ½.
            let y = _mm256_mul_ps(v, id);
            let t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
            let away = _mm256_or_ps(_mm256_and_ps(y, sign), one);
            let step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), away);
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        // Saturating packs, as `as i8` saturates.
        let lo = _mm256_packs_epi32(ints[0], ints[1]);
        let hi = _mm256_packs_epi32(ints[2], ints[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), unshuffle);
        // SAFETY: `q` is 32 writable bytes; the store has no alignment requirement.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes) };
    }
}
