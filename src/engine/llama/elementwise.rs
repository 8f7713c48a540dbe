//! Element-wise steps of the CPU forward pass, on plain f32 rows, and the vectorised `exp`
//! they and `cpu_attention` share.
//!
//! Why not candle's ops: its SiLU calls the scalar `expf` once per value and splits the work
//! over rayon, whose threads then compete for the two cores with candle's spinning matmul
//! pool. In a 64-row prefill pass that made the activation function a tenth of the pass, all
//! of it while the other core waited. Here it runs on the calling thread, sixteen values per
//! instruction.
//!
//! Must not contain anything but element-wise arithmetic.

/// The SwiGLU activation: `silu(gate) · up` for every row of `gate_up`, which holds `ffn`
/// gate values then `ffn` up values per row. Returns `[rows, ffn]`.
pub(super) fn swiglu(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = vec![0f32; gate_up.len() / 2];
    if ffn == 0 {
        return out;
    }
    for (row, out) in gate_up.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
        let (gate, up) = row.split_at(ffn);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F (checked just above).
            unsafe { avx512::swiglu(gate, up, out) };
            continue;
        }
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = silu(g) * u;
        }
    }
    out
}

/// `x · sigmoid(x)`, as candle computes it.
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::swiglu`] for one row.
    #[target_feature(enable = "avx512f")]
    pub(super) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = gate.len().min(up.len()).min(out.len());
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let mask: __mmask16 = match n - i {
                left if left >= 16 => 0xffff,
                left => (1u16 << left) - 1,
            };
            // SAFETY: the masked lanes are exactly those below `n - i`, within all three
            // slices; masked loads and stores touch no other memory.
            unsafe {
                let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
                let sig = _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
                let y = _mm512_mul_ps(_mm512_div_ps(g, sig), u);
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, y);
            }
            i += 16;
        }
    }

    /// `eˣ`, to within a few units in the last place: `eˣ = 2ⁿ · eʳ` with `n = round(x / ln 2)`
    /// and |r| ≤ ln 2 / 2, eʳ by its Taylor series to the 6th power (truncation error below
    /// 2⁻²³ there), and 2ⁿ applied by `vscalefps`, which goes to 0 below f32's range and to
    /// infinity above it instead of wrapping. NaN stays NaN.
    #[target_feature(enable = "avx512f")]
    pub(in crate::engine::llama) fn exp(x: __m512) -> __m512 {
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        // Far enough below f32's range that the result is 0, and n stays small. In this
        // operand order a NaN passes through.
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
        let x = _mm512_min_ps(_mm512_set1_ps(100.0), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_matches_the_scalar_definition() {
        // Two rows of 37 (a full vector, a partial one), across exp's whole range.
        let ffn = 37;
        let gate_up: Vec<f32> = (0..4 * ffn)
            .map(|i| ((i as f32 * 0.37).sin() * 12.0) + if i % 11 == 0 { 95.0 } else { 0.0 })
            .collect();
        let ours = swiglu(&gate_up, ffn);
        assert_eq!(ours.len(), 2 * ffn);
        for (r, row) in gate_up.chunks_exact(2 * ffn).enumerate() {
            for i in 0..ffn {
                let expected = silu(row[i]) * row[ffn + i];
                let got = ours[r * ffn + i];
                assert!(
                    (got - expected).abs() <= 8.0 * f32::EPSILON * expected.abs().max(1e-30),
                    "row {r}, {i}: {got} vs {expected}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_is_within_a_few_ulps_over_f32s_range() {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut x = -110.0f32;
        while x < 95.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.0137);
            let mut got = [0f32; 16];
            // SAFETY: the CPU has AVX-512 F (checked above); 16 f32 each way.
            unsafe {
                _mm512_storeu_ps(got.as_mut_ptr(), avx512::exp(_mm512_loadu_ps(xs.as_ptr())))
            };
            for (x, got) in xs.iter().zip(got) {
                let expected = (*x as f64).exp();
                let expected32 = expected as f32;
                if expected32.is_infinite() {
                    assert!(got.is_infinite(), "exp({x}) = {got}");
                } else if !expected32.is_normal() {
                    assert!(got.abs() <= f32::MIN_POSITIVE, "exp({x}) = {got}");
                } else {
                    let error = ((got as f64 - expected) / expected).abs();
                    assert!(
                        error < 4.0 * f32::EPSILON as f64,
                        "exp({x}) = {got}, not {expected}"
                    );
                }
            }
            x += 0.21;
        }
        let nan = [f32::NAN; 16];
        let mut got = [0f32; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(got.as_mut_ptr(), avx512::exp(_mm512_loadu_ps(nan.as_ptr()))) };
        assert!(got.iter().all(|v| v.is_nan()), "NaN must stay NaN");
    }
}
