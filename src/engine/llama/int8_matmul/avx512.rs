//! The AVX-512 VNNI kernel: sixteen weight rows × R activation rows, one weight row per i32
//! lane, so a lane holds one (weight row, activation row) dot product from start to end and
//! nothing is summed across lanes.
//!
//! For each 32-value block, eight `vpdpbusd` each add four columns' products of the sixteen
//! rows (the weights' 4 bytes per lane, against the activation's same 4 bytes broadcast to
//! every lane); the block's exact integer sum is then converted and added with one FMA,
//! scaled by the product of the two blocks' scales.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the weights are stored plus 128 (as u8)
//! and each block's sum starts from −128 × the sum of the activation block's quants, which
//! cancels the bias exactly (no i16 step, so nothing saturates).

use std::arch::x86_64::*;

use super::{AVX512_GROUP, ActRow, Line};

#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
pub(super) fn tile<const R: usize>(
    acts: [ActRow<'_>; R],
    w: &[[Line; 8]],
    w_scales: &[[f32; AVX512_GROUP]],
    out: [&mut [f32; AVX512_GROUP]; R],
) {
    let blocks = w.len();
    if w_scales.len() < blocks
        || acts
            .iter()
            .any(|a| a.quants.len() < blocks || a.scales.len() < blocks || a.offsets.len() < blocks)
    {
        return;
    }
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        super::prefetch(w.as_ptr().wrapping_add(b + super::PREFETCH_BLOCKS));
        super::prefetch(w_scales.as_ptr().wrapping_add(b + super::PREFETCH_BLOCKS));
        // SAFETY: `b < blocks`, and every slice indexed holds `blocks` items (checked above);
        // checked indexing kept a bounds check per load in the loop.
        let (wb, wd) = unsafe { (w.get_unchecked(b), w_scales.get_unchecked(b)) };
        // SAFETY: each line is 64 readable bytes, aligned.
        let wv: [__m512i; 8] =
            std::array::from_fn(|t| unsafe { _mm512_load_si512(wb[t].0.as_ptr().cast()) });
        // SAFETY: `wd` is 16 readable f32.
        let dw = unsafe { _mm512_loadu_ps(wd.as_ptr()) };
        for i in 0..R {
            // SAFETY: as above.
            let (q, offset, scale) = unsafe {
                (
                    acts[i].quants.get_unchecked(b),
                    *acts[i].offsets.get_unchecked(b),
                    acts[i].scales.get_unchecked(b)[0],
                )
            };
            let (fours, _) = q.as_chunks::<4>();
            let mut dot = _mm512_set1_epi32(offset);
            for (t, &wv) in wv.iter().enumerate() {
                let a = _mm512_set1_epi32(i32::from_le_bytes(fours[t].map(|v| v as u8)));
                dot = _mm512_dpbusd_epi32(dot, wv, a);
            }
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(scale));
            acc[i] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[i]);
        }
    }
    for (o, acc) in out.into_iter().zip(acc) {
        // SAFETY: `o` is 16 writable f32; the store has no alignment requirement.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
    }
}
