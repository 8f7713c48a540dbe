//! The CPU matmul `x · Wᵀ` for Q8_0 weight matrices on x86_64 with AVX2: the weights are
//! re-laid out once at load, and a register-tiled kernel computes 4 weight rows × 2
//! activation rows per pass over k.
//!
//! Why not candle's `QMatMul`: on x86 its Q8_0 kernel takes one weight row and one activation
//! row per pass, converts two f16 scales per 32-value block inside the loop, and loads every
//! weight vector again for every activation row. Here the scales are f32, prepared at load
//! (weights) or once per call (activations), and each loaded weight vector serves two
//! activation rows, each activation vector four weight rows. The arithmetic per (weight row,
//! activation row) pair is candle's own (same activation quantization, same sign trick, same
//! accumulation order and final horizontal sum), so the result equals candle's bit for bit:
//! swapping kernels changes speed, not logits.
//!
//! The work is split over candle's own thread pool (`barrier_pool`), never a second one.
//!
//! Must not contain anything but the matmul: which matrices use it is `weights.rs`'s choice.

use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

/// Values per quantization block (Q8_0's).
const BLOCK: usize = 32;
/// Weight rows per group: the rows one kernel pass reads together.
const GROUP: usize = 4;

/// A Q8_0 matrix `[rows, cols]` laid out for the kernel: rows in groups of [`GROUP`] (the last
/// group padded with zero rows), each group block-major: for every 32-column block, the four
/// rows' 32 quants, and the four rows' scales as f32.
pub(super) struct Int8Matrix {
    rows: usize,
    cols: usize,
    /// `[groups][blocks][GROUP][BLOCK]`.
    quants: Vec<i8>,
    /// `[groups][blocks][GROUP]`.
    scales: Vec<f32>,
}

/// Whether this CPU runs the kernel.
fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Int8Matrix {
    /// The matrix re-laid out, or None when the kernel does not apply (not Q8_0, not on the
    /// CPU, or a CPU without AVX2/FMA): the caller keeps candle's matmul then.
    pub(super) fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q8_0 || !matches!(t.device(), Device::Cpu) || !supported() {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let data = t.data()?;
        Ok(Some(Self::from_q8_0_bytes(rows, cols, &data)?))
    }

    /// From GGML Q8_0 blocks (`f16` scale, then 32 `i8` quants; 34 bytes), row-major.
    fn from_q8_0_bytes(rows: usize, cols: usize, data: &[u8]) -> candle_core::Result<Self> {
        const BYTES: usize = 2 + BLOCK;
        let blocks = cols / BLOCK;
        if data.len() != rows * blocks * BYTES {
            candle_core::bail!(
                "Q8_0 data of {} bytes for a {rows}×{cols} matrix",
                data.len()
            );
        }
        let groups = rows.div_ceil(GROUP);
        let mut quants = vec![0i8; groups * blocks * GROUP * BLOCK];
        let mut scales = vec![0f32; groups * blocks * GROUP];
        for (row, row_data) in data.chunks_exact(blocks * BYTES).enumerate() {
            let (g, j) = (row / GROUP, row % GROUP);
            for (b, block) in row_data.chunks_exact(BYTES).enumerate() {
                let slot = (g * blocks + b) * GROUP + j;
                scales[slot] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (q, &byte) in quants[slot * BLOCK..(slot + 1) * BLOCK]
                    .iter_mut()
                    .zip(&block[2..])
                {
                    *q = byte as i8;
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            quants,
            scales,
        })
    }

    /// `x`: `[m, cols]` f32 on the CPU; returns `[m, rows]`.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.cols {
            candle_core::bail!("matmul of [{m}, {k}] by a [{}, {}] matrix", self.rows, k);
        }
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let out = self.matmul(super::cpu_f32(&storage, layout)?, m);
        Tensor::from_vec(out, (m, self.rows), x.device())
    }

    /// `x`: `[m, cols]` row-major; returns `[m, rows]` row-major.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let blocks = self.cols / BLOCK;
        let acts = Activations::quantize(x, m, blocks);
        let groups = self.rows.div_ceil(GROUP);
        // Each group's outputs for all m rows, `[groups][m][GROUP]`: one contiguous piece per
        // work item, so workers share nothing; transposed into place afterwards.
        let mut by_group = vec![0f32; groups * m * GROUP];
        let pieces: Vec<Mutex<&mut [f32]>> =
            by_group.chunks_mut(m * GROUP).map(Mutex::new).collect();
        let group_len = blocks * GROUP * BLOCK;
        let run = |g: usize| {
            let (Some(piece), Some(quants), Some(scales)) = (
                pieces.get(g),
                self.quants.get(g * group_len..(g + 1) * group_len),
                self.scales
                    .get(g * blocks * GROUP..(g + 1) * blocks * GROUP),
            ) else {
                return;
            };
            // A poisoned lock means another item panicked; that panic is re-raised by the pool.
            if let Ok(mut piece) = piece.lock() {
                group_times_rows(quants, scales, &acts, &mut piece);
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(groups, |range| range.for_each(&run));
        drop(pieces);

        let mut out = vec![0f32; m * self.rows];
        for (g, piece) in by_group.chunks_exact(m * GROUP).enumerate() {
            for (r, four) in piece.chunks_exact(GROUP).enumerate() {
                let col = g * GROUP;
                let n = GROUP.min(self.rows - col);
                out[r * self.rows + col..r * self.rows + col + n].copy_from_slice(&four[..n]);
            }
        }
        out
    }
}

/// Activation rows quantized to Q8_0 exactly as candle's `BlockQ8_0::from_float` does, with
/// the (f16-rounded) scales kept as f32.
struct Activations {
    blocks: usize,
    /// `[m][blocks][BLOCK]`.
    quants: Vec<i8>,
    /// `[m][blocks]`.
    scales: Vec<f32>,
}

impl Activations {
    fn quantize(x: &[f32], m: usize, blocks: usize) -> Self {
        let mut quants = vec![0i8; m * blocks * BLOCK];
        let mut scales = vec![0f32; m * blocks];
        for ((xs, qs), scale) in x
            .chunks_exact(BLOCK)
            .zip(quants.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
        {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            *scale = f16::from_f32(d).to_f32();
            for (q, v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
            }
        }
        Self {
            blocks,
            quants,
            scales,
        }
    }

    fn rows(&self) -> usize {
        self.scales.len() / self.blocks.max(1)
    }

    /// Row `r`'s quants (`[blocks][BLOCK]`) and scales.
    fn row(&self, r: usize) -> (&[[i8; BLOCK]], &[f32]) {
        let quants = self
            .quants
            .get(r * self.blocks * BLOCK..(r + 1) * self.blocks * BLOCK)
            .unwrap_or_default();
        let scales = self
            .scales
            .get(r * self.blocks..(r + 1) * self.blocks)
            .unwrap_or_default();
        (quants.as_chunks::<BLOCK>().0, scales)
    }
}

/// One weight group against every activation row: `out` is `[m][GROUP]`.
fn group_times_rows(quants: &[i8], scales: &[f32], acts: &Activations, out: &mut [f32]) {
    let w: &[[i8; GROUP * BLOCK]] = quants.as_chunks().0;
    let m = acts.rows();
    let mut r = 0;
    let mut outs = out.chunks_exact_mut(2 * GROUP);
    while r + 2 <= m {
        let Some(pair) = outs.next() else {
            return;
        };
        let (o0, o1) = pair.split_at_mut(GROUP);
        tile([acts.row(r), acts.row(r + 1)], w, scales, [o0, o1]);
        r += 2;
    }
    if r < m
        && let Some(last) = out.get_mut(r * GROUP..(r + 1) * GROUP)
    {
        tile([acts.row(r)], w, scales, [last]);
    }
}

/// `R` activation rows against the four weight rows of a group.
fn tile<const R: usize>(
    acts: [(&[[i8; BLOCK]], &[f32]); R],
    w: &[[i8; GROUP * BLOCK]],
    w_scales: &[f32],
    out: [&mut [f32]; R],
) {
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { avx2::tile(acts, w, w_scales, out) };
        return;
    }
    // Unreachable in practice: matrices are only built where `supported()` holds.
    let _ = (acts, w, w_scales, out);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP};

    #[target_feature(enable = "avx2")]
    fn load(q: &[i8; BLOCK]) -> __m256i {
        // SAFETY: `q` is 32 readable bytes; the load has no alignment requirement.
        unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
    }

    /// Splits a group's block into its four rows' quants.
    fn rows(block: &[i8; GROUP * BLOCK]) -> &[[i8; BLOCK]; GROUP] {
        let (rows, _) = block.as_chunks::<BLOCK>();
        rows.first_chunk::<GROUP>().unwrap_or(&[[0; BLOCK]; GROUP])
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
        acts: [(&[[i8; BLOCK]], &[f32]); R],
        w: &[[i8; GROUP * BLOCK]],
        w_scales: &[f32],
        out: [&mut [f32]; R],
    ) {
        let blocks = w.len();
        if w_scales.len() < blocks * GROUP
            || acts
                .iter()
                .any(|(q, d)| q.len() < blocks || d.len() < blocks)
        {
            return;
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); GROUP]; R];
        for (b, (wb, wd)) in w.iter().zip(w_scales.chunks_exact(GROUP)).enumerate() {
            let a: [__m256i; R] = std::array::from_fn(|i| load(&acts[i].0[b]));
            let da: [__m256; R] = std::array::from_fn(|i| _mm256_set1_ps(acts[i].1[b]));
            for (j, wq) in rows(wb).iter().enumerate() {
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
}

#[cfg(test)]
mod tests {
    use candle_core::Module;
    use candle_core::quantized::QMatMul;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Weights with the spread of a real layer, and a few larger "outlier" activations.
    fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v: f32 = rng.random_range(-1.0..1.0) * scale;
                if i % 97 == 0 { v * 20.0 } else { v }
            })
            .collect()
    }

    fn q8_0(w: &[f32], n: usize, k: usize) -> QTensor {
        let t = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()
    }

    /// Shapes of SmolLM2-135M's matrices: q/k/v fused (576 → 960), attention output,
    /// gate/up fused (576 → 3072), down (1536 → 576); plus one with a partial last group.
    const SHAPES: [(usize, usize); 5] =
        [(960, 576), (576, 576), (3072, 576), (576, 1536), (10, 64)];
    const ROWS: [usize; 5] = [1, 3, 8, 17, 64];

    #[test]
    fn equals_candle_qmatmul_bit_for_bit() {
        if !supported() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(7);
        for (n, k) in SHAPES {
            let q = q8_0(&random(&mut rng, n * k, 0.05), n, k);
            let ours = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            let candle = QMatMul::from_qtensor(q).unwrap();
            for m in ROWS {
                let x =
                    Tensor::from_vec(random(&mut rng, m * k, 1.0), (m, k), &Device::Cpu).unwrap();
                let want = candle.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                let got = ours.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(got, want, "{m}×{k} by {n}×{k}");
            }
        }
    }

    #[test]
    fn agrees_with_an_f32_matmul() {
        if !supported() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(11);
        for (n, k) in SHAPES {
            let q = q8_0(&random(&mut rng, n * k, 0.05), n, k);
            // The reference uses the weights as quantized: what is checked is the kernel and
            // the activation quantization, whose error is ~1/254 of each block's largest value.
            let w = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let ours = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            for m in ROWS {
                let x = random(&mut rng, m * k, 1.0);
                let got = ours
                    .forward(&Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap())
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                for (r, got) in got.iter().enumerate() {
                    let xr = &x[r * k..(r + 1) * k];
                    // Every column of the small matrices, a sample of the large (debug builds
                    // run this reference slowly).
                    let step = if n > 1000 { 7 } else { 1 };
                    for (c, (&g, wc)) in got.iter().zip(&w).enumerate().step_by(step) {
                        let want: f32 = xr.iter().zip(wc).map(|(a, b)| a * b).sum();
                        // Rounding an activation moves it by at most half its block's step
                        // (amax / 127); plus f32 rounding of the sums.
                        let bound: f32 = xr
                            .chunks_exact(BLOCK)
                            .zip(wc.chunks_exact(BLOCK))
                            .map(|(xb, wb)| {
                                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                                let w_abs: f32 = wb.iter().map(|v| v.abs()).sum();
                                let a_w: f32 = xb.iter().zip(wb).map(|(a, b)| (a * b).abs()).sum();
                                amax / 127.0 * 0.501 * w_abs + 1e-3 * a_w
                            })
                            .sum();
                        assert!(
                            (g - want).abs() <= bound + 1e-6,
                            "[{r}, {c}] of {m}×{k} by {n}×{k}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_formats_and_devices_are_left_to_candle() {
        let t = Tensor::zeros((8, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q4 = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
        assert!(Int8Matrix::from_qtensor(&q4).unwrap().is_none());
    }
}
