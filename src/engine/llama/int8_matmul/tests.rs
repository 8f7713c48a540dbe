use candle_core::quantized::GgmlType;
use candle_core::quantized::k_quants::{self, BlockQ8_0};
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

/// Candle's Q8_0 matmul through its `vec_dot_q8_0_q8_0`: what `QMatMul` runs on an AVX2 CPU.
/// With AVX-512 VNNI, this candle build sends shapes with k a multiple of 256 through a
/// repacked kernel that quantizes activations in 256-value blocks instead (different
/// rounding), so `QMatMul` itself is no bitwise reference there.
fn candle_vec_dot_matmul(w: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let mut blocks = vec![BlockQ8_0::zeros(); n * k / BLOCK];
    BlockQ8_0::from_float(w, &mut blocks);
    let mut out = vec![0f32; m * n];
    k_quants::matmul((m, k, n), x, &blocks, &mut out).unwrap();
    out.chunks_exact(n).map(<[f32]>::to_vec).collect()
}

/// Shapes of SmolLM2-135M's matrices: q/k/v fused (576 → 960), attention output,
/// gate/up fused (576 → 3072), down (1536 → 576); plus one with a partial last group.
const SHAPES: [(usize, usize); 5] = [(960, 576), (576, 576), (3072, 576), (576, 1536), (10, 64)];
/// Every remainder of both kernels' tiles (2 and 4 rows), and a prefill-sized count.
const ROWS: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33, 64];

/// The kernels this CPU runs; prints which are skipped, and why.
fn kernels() -> Vec<Isa> {
    let mut isas = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512Vnni] {
        if isa.supported() {
            isas.push(isa);
        } else {
            eprintln!("skipping the {isa:?} kernel: this CPU lacks its features");
        }
    }
    isas
}

/// The AVX-512 kernel's arithmetic in scalar code (see the module's doc): per block, the
/// exact integer dot product, scaled by the product of the scales and added with one FMA.
fn reference_dot(w: &[f32], k: usize, x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let quantize = |v: &[f32]| -> Vec<([i8; BLOCK], f32)> {
        v.as_chunks::<BLOCK>()
            .0
            .iter()
            .map(|xs| {
                let mut q = [0i8; BLOCK];
                let d = quantize_block(xs, &mut q);
                (q, d)
            })
            .collect()
    };
    let wq: Vec<_> = w.chunks_exact(k).map(quantize).collect();
    x.chunks_exact(k)
        .take(m)
        .map(|row| {
            let aq = quantize(row);
            wq.iter()
                .map(|wrow| {
                    wrow.iter()
                        .zip(&aq)
                        .fold(0f32, |acc, ((wq, dw), (aq, da))| {
                            let dot: i32 = wq
                                .iter()
                                .zip(aq)
                                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                                .sum();
                            (dw * da).mul_add(dot as f32, acc)
                        })
                })
                .collect()
        })
        .collect()
}

fn kernel_output(isa: Isa, w: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> Vec<Vec<f32>> {
    Int8Matrix::from_qtensor_for(&q8_0(w, n, k), isa)
        .unwrap()
        .unwrap()
        .forward(&Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn the_avx2_kernel_equals_candles_q8_0_dot_product_bit_for_bit() {
    for isa in kernels().into_iter().filter(|&isa| isa == Isa::Avx2) {
        let mut rng = StdRng::seed_from_u64(7);
        for (n, k) in SHAPES {
            let w = random(&mut rng, n * k, 0.05);
            let ours = Int8Matrix::from_qtensor_for(&q8_0(&w, n, k), isa)
                .unwrap()
                .unwrap();
            for m in ROWS {
                let x = random(&mut rng, m * k, 1.0);
                let want = candle_vec_dot_matmul(&w, n, k, &x, m);
                let got = ours
                    .forward(&Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap())
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                assert_eq!(got, want, "{isa:?}: {m}×{k} by {n}×{k}");
            }
        }
    }
}

#[test]
fn the_avx512_kernel_equals_its_scalar_arithmetic_bit_for_bit() {
    for isa in kernels().into_iter().filter(|&isa| isa == Isa::Avx512Vnni) {
        let mut rng = StdRng::seed_from_u64(5);
        for (n, k) in SHAPES {
            let w = random(&mut rng, n * k, 0.05);
            for m in ROWS {
                let x = random(&mut rng, m * k, 1.0);
                let want = reference_dot(&w, k, &x, m);
                let got = kernel_output(isa, &w, n, k, &x, m);
                assert_eq!(got, want, "{isa:?}: {m}×{k} by {n}×{k}");
            }
        }
    }
}

#[test]
fn every_kernel_is_within_a_few_roundings_of_candle() {
    // Candle rounds each block's eight partial sums, the AVX-512 kernel each block's total:
    // a handful of f32 roundings of the running sum apart, never more.
    for isa in kernels() {
        let mut rng = StdRng::seed_from_u64(9);
        for (n, k) in SHAPES {
            let w = random(&mut rng, n * k, 0.05);
            for m in [1, 8, 33] {
                let x = random(&mut rng, m * k, 1.0);
                let want = candle_vec_dot_matmul(&w, n, k, &x, m);
                let got = kernel_output(isa, &w, n, k, &x, m);
                for (r, (got, want)) in got.iter().zip(&want).enumerate() {
                    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for (c, (g, t)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (g - t).abs() <= 1e-5 * scale,
                            "{isa:?} [{r}, {c}] of {m}×{k} by {n}×{k}: {g} vs candle's {t}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_best_kernel_is_the_widest_the_cpu_runs() {
    let want = kernels().last().copied();
    assert_eq!(Isa::best(), want);
}

#[test]
fn every_kernel_agrees_with_an_f32_matmul() {
    for isa in kernels() {
        agrees_with_an_f32_matmul(isa);
    }
}

fn agrees_with_an_f32_matmul(isa: Isa) {
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
        let ours = Int8Matrix::from_qtensor_for(&q, isa).unwrap().unwrap();
        for m in [1, 3, 8, 17] {
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

#[test]
fn vectorised_activation_quantization_equals_candles() {
    if !Isa::Avx2.supported() {
        eprintln!("skipping: this CPU lacks AVX2");
        return;
    }
    let mut rng = StdRng::seed_from_u64(3);
    let mut x = random(&mut rng, 64 * BLOCK, 1.0);
    // A block scaled by exactly 2 (amax 63.5) whose other values land on halves, which
    // round away from zero; a zero block; a block with a single non-zero value.
    x[0] = 63.5;
    for (i, v) in x[1..BLOCK].iter_mut().enumerate() {
        *v = (i as f32 - 15.0) / 2.0;
    }
    x[BLOCK..3 * BLOCK].fill(0.0);
    x[2 * BLOCK + 5] = -3.0;
    let blocks = x.len() / BLOCK;
    let acts = Activations::quantize(&x, 1, blocks, Isa::Avx2);
    // Candle's own quantization of the same values, as GGML blocks (f16 scale, 32 quants).
    let candle = q8_0(&x, 1, x.len()).data().unwrap().to_vec();
    for (b, ((q, s), theirs)) in acts
        .quants
        .iter()
        .zip(&acts.scales)
        .zip(candle.chunks_exact(2 + BLOCK))
        .enumerate()
    {
        let d = f16::from_le_bytes([theirs[0], theirs[1]]).to_f32();
        let q: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        assert_eq!((q.as_slice(), s), (&theirs[2..], &[d; 8]), "block {b}");
        let mut scalar = [0i8; BLOCK];
        let xs = x[b * BLOCK..(b + 1) * BLOCK].try_into().unwrap();
        assert_eq!(quantize_block(xs, &mut scalar), d, "block {b}");
    }
}
