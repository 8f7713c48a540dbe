//! Element-wise steps of the CPU forward pass on plain f32 rows: the SwiGLU activation and
//! the softmax of attention scores, with a vectorised `exp` (AVX-512, else AVX2 + FMA, else
//! the standard library's).
//!
//! Why not candle's ops: its SiLU calls the scalar `expf` once per value and splits the work
//! over rayon, whose threads then compete for the two cores with candle's spinning matmul
//! pool. In a 64-row prefill pass that made the activation a tenth of the pass, all of it
//! while the other core waited. Here it runs on the calling thread, 8 or 16 values per
//! instruction.
//!
//! Must not contain anything but element-wise arithmetic.

/// The vector instructions a function here uses, the best the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

impl Isa {
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }
}

/// The SwiGLU activation: `silu(gate) · up` for every row of `gate_up`, which holds `ffn`
/// gate values then `ffn` up values per row. Returns `[rows, ffn]`.
pub(super) fn swiglu(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    swiglu_with(Isa::best(), gate_up, ffn)
}

fn swiglu_with(isa: Isa, gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = vec![0f32; gate_up.len() / 2];
    if ffn == 0 {
        return out;
    }
    for (row, out) in gate_up.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
        let (gate, up) = row.split_at(ffn);
        // SAFETY (both calls): `isa` is one the CPU has (`Isa::best`, or a test that checked).
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::swiglu(gate, up, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::swiglu(gate, up, out) },
            _ => swiglu_scalar(gate, up, out),
        }
    }
    out
}

fn swiglu_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Turns one head's attention scores into softmax weights short of the division:
/// `exp(score − max)` in place. Returns 1 / their sum, which the weighted values are scaled by
/// once at the end.
pub(super) fn softmax_weights(scores: &mut [f32]) -> f32 {
    softmax_weights_with(Isa::best(), scores)
}

fn softmax_weights_with(isa: Isa, scores: &mut [f32]) -> f32 {
    // SAFETY (both calls): as in `swiglu_with`.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::softmax_weights(scores) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::softmax_weights(scores) },
        _ => {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            1.0 / scores.iter_mut().fold(0f32, |sum, x| {
                *x = (*x - max).exp();
                sum + *x
            })
        }
    }
}

// `eˣ` below, in both instruction sets: `eˣ = 2ⁿ · eʳ` with `n = round(x / ln 2)` and
// |r| ≤ ln 2 / 2, eʳ by its Taylor series to the 6th power (truncation error below 2⁻²³
// there), to within a few units in the last place. ln 2 is split in two so that `n · ln 2`
// is exact in its first part.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// The Taylor coefficients of eʳ from the 5th power down (the 6th's is 1/720).
const EXP_TAYLOR: [f32; 6] = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::swiglu`] for one row.
    #[target_feature(enable = "avx512f")]
    pub(super) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = gate.len().min(up.len()).min(out.len());
        let one = _mm512_set1_ps(1.0);
        for i in (0..n).step_by(16) {
            let mask = mask(n - i);
            // SAFETY: the masked lanes are exactly those below `n - i`, within all three
            // slices; masked loads and stores touch no other memory.
            unsafe {
                let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
                let sig = _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
                let y = _mm512_mul_ps(_mm512_div_ps(g, sig), u);
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, y);
            }
        }
    }

    /// [`super::softmax_weights`].
    #[target_feature(enable = "avx512f")]
    pub(in crate::engine::llama) fn softmax_weights(scores: &mut [f32]) -> f32 {
        let n = scores.len();
        let ptr = scores.as_mut_ptr();
        // SAFETY (every load and store): masked to the lanes below `n - i`, within `scores`.
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            let x = unsafe { _mm512_maskz_loadu_ps(mask(n - i), ptr.add(i)) };
            max = _mm512_mask_max_ps(max, mask(n - i), max, x);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut sum = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let x = unsafe { _mm512_maskz_loadu_ps(mask(n - i), ptr.add(i)) };
            let e = exp(_mm512_sub_ps(x, max));
            sum = _mm512_mask_add_ps(sum, mask(n - i), sum, e);
            unsafe { _mm512_mask_storeu_ps(ptr.add(i), mask(n - i), e) };
        }
        1.0 / _mm512_reduce_add_ps(sum)
    }

    /// The first `left` lanes, all sixteen if `left` ≥ 16.
    fn mask(left: usize) -> __mmask16 {
        match left {
            16.. => 0xffff,
            left => (1u16 << left) - 1,
        }
    }

    /// `eˣ` (see `LN2_HI` above); `vscalefps` applies 2ⁿ, going to 0 below f32's range and
    /// to infinity above it instead of wrapping. NaN stays NaN.
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp(x: __m512) -> __m512 {
        // Clamped so that n stays small; in this operand order a NaN passes through.
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
        let x = _mm512_min_ps(_mm512_set1_ps(100.0), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in super::EXP_TAYLOR {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::swiglu`] for one row: eight values at a time, the last few in scalar code.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = gate.len().min(up.len()).min(out.len());
        let body = n - n % 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..body).step_by(8) {
            // SAFETY: `i + 8 ≤ body ≤` every slice's length.
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let sig = _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), g)));
                let y = _mm256_mul_ps(_mm256_div_ps(g, sig), u);
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::swiglu_scalar(&gate[body..n], &up[body..n], &mut out[body..n]);
    }

    /// [`super::softmax_weights`]: eight values at a time, the last few in scalar code.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn softmax_weights(scores: &mut [f32]) -> f32 {
        let body = scores.len() - scores.len() % 8;
        let (head, tail) = scores.split_at_mut(body);
        let (chunks, _) = head.as_chunks_mut::<8>();
        // SAFETY (every load and store): each chunk is 8 f32.
        let mut max8 = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in chunks.iter() {
            max8 = _mm256_max_ps(max8, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        let mut lanes = [0f32; 8];
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max8) };
        let max = lanes
            .iter()
            .chain(tail.iter())
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let max8 = _mm256_set1_ps(max);
        let mut sum8 = _mm256_setzero_ps();
        for c in chunks.iter_mut() {
            let e = exp(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, max8));
            sum8 = _mm256_add_ps(sum8, e);
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
        }
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum8) };
        let mut sum: f32 = lanes.iter().sum();
        for x in tail.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        1.0 / sum
    }

    /// `eˣ` (see `LN2_HI` above), 2ⁿ built in the exponent bits: x is clamped to where
    /// that is a normal f32 (below, the result is 0; above, infinity). NaN stays NaN.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp(x: __m256) -> __m256 {
        const LOWEST: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
        let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST));
        // In this operand order a NaN passes through.
        let x = _mm256_max_ps(_mm256_set1_ps(LOWEST), x);
        let x = _mm256_min_ps(_mm256_set1_ps(89.0), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_LO), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in super::EXP_TAYLOR {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // n ∈ [-126, 129], but 127 + n is a normal biased exponent only up to n = 127:
        // above it, 2ⁿ is applied as 2¹²⁷ · 2 · p (which overflows to infinity where eˣ does).
        let n = _mm256_cvtps_epi32(n);
        let high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, _mm256_set1_epi32(127)));
        let p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), high);
        let n = _mm256_min_epi32(n, _mm256_set1_epi32(127));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            n,
            _mm256_set1_epi32(127),
        )));
        let y = _mm256_mul_ps(p, scale);
        _mm256_andnot_ps(underflow, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instruction sets this CPU runs, scalar included.
    fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    fn close(got: f32, expected: f64, ulps: f32) -> bool {
        (got as f64 - expected).abs() <= (ulps * f32::EPSILON) as f64 * expected.abs()
    }

    #[test]
    fn swiglu_matches_its_definition_on_every_isa() {
        // Rows of 37 (whole vectors and a partial one), values across exp's range.
        let ffn = 37;
        let gate_up: Vec<f32> = (0..4 * ffn)
            .map(|i| (i as f32 * 0.37).sin() * 12.0 + if i % 11 == 0 { 95.0 } else { 0.0 })
            .collect();
        for isa in isas() {
            let ours = swiglu_with(isa, &gate_up, ffn);
            assert_eq!(ours.len(), 2 * ffn);
            for (r, row) in gate_up.chunks_exact(2 * ffn).enumerate() {
                for i in 0..ffn {
                    let (g, u) = (row[i] as f64, row[ffn + i] as f64);
                    let expected = g / (1.0 + (-g).exp()) * u;
                    let got = ours[r * ffn + i];
                    assert!(
                        close(got, expected, 8.0),
                        "{isa:?}, row {r}, {i}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_weights_match_their_definition_on_every_isa() {
        for len in [1, 7, 8, 16, 23, 300] {
            let scores: Vec<f32> = (0..len).map(|i| (i as f32 * 0.71).cos() * 30.0).collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            // The subtraction in f32, as the code does it: its rounding is not exp's error.
            let expected: Vec<f64> = scores
                .iter()
                .map(|&s| ((s - max as f32) as f64).exp())
                .collect();
            let expected_inv = 1.0 / expected.iter().sum::<f64>();
            for isa in isas() {
                let mut ours = scores.clone();
                let inv = softmax_weights_with(isa, &mut ours);
                for (i, (got, e)) in ours.iter().zip(&expected).enumerate() {
                    // Below f32's normal range a value may come out 0 or subnormal.
                    let ok = close(*got, *e, 8.0) || (*e < 1e-37 && got.abs() < 1e-37);
                    assert!(ok, "{isa:?}, {len} scores, {i}: {got} vs {e}");
                }
                assert!(
                    close(inv, expected_inv, 8.0 * len as f32),
                    "{isa:?}: 1/sum {inv}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_a_few_ulps_over_f32s_range() {
        use std::arch::x86_64::*;
        let check = |isa: Isa, x: f32, got: f32| {
            let expected = (x as f64).exp();
            let expected32 = expected as f32;
            if expected32.is_infinite() {
                assert!(got.is_infinite(), "{isa:?}: exp({x}) = {got}");
            } else if !expected32.is_normal() {
                assert!(got.abs() <= f32::MIN_POSITIVE, "{isa:?}: exp({x}) = {got}");
            } else {
                assert!(
                    close(got, expected, 4.0),
                    "{isa:?}: exp({x}) = {got}, not {expected}"
                );
            }
        };
        let xs: Vec<f32> = (0..1000).map(|i| -110.0 + i as f32 * 0.2137).collect();
        for isa in isas() {
            for chunk in xs.chunks_exact(16) {
                let mut got = [0f32; 16];
                // SAFETY: `isas` lists only what the CPU has; 16 f32 each way.
                unsafe {
                    match isa {
                        Isa::Avx512 => _mm512_storeu_ps(
                            got.as_mut_ptr(),
                            avx512::exp(_mm512_loadu_ps(chunk.as_ptr())),
                        ),
                        Isa::Avx2 => {
                            for h in 0..2 {
                                let y = avx2::exp(_mm256_loadu_ps(chunk.as_ptr().add(8 * h)));
                                _mm256_storeu_ps(got.as_mut_ptr().add(8 * h), y);
                            }
                        }
                        Isa::Scalar => continue,
                    }
                }
                for (x, got) in chunk.iter().zip(got) {
                    check(isa, *x, got);
                }
            }
            let out = swiglu_with(isa, &[f32::NAN; 32], 16);
            assert!(out.iter().all(|v| v.is_nan()), "{isa:?}: NaN must stay NaN");
        }
    }
}
