//! The CPU matmul `x · Wᵀ` for Q8_0 weight matrices on x86_64: the weights are re-laid out
//! once at load, and a register-tiled kernel computes 4 weight rows × several activation rows
//! per pass over k. Two kernels, picked once per matrix from what the CPU has:
//! AVX-512 VNNI (`avx512.rs`), else AVX2 + FMA (`avx2.rs`).
//!
//! Why not candle's `QMatMul`: on x86 its Q8_0 kernel takes one weight row and one activation
//! row per pass, converts two f16 scales per 32-value block inside the loop, and loads every
//! weight vector again for every activation row. Here the scales are f32, prepared at load
//! (weights) or once per call (activations), and each loaded weight vector serves several
//! activation rows, each activation vector four weight rows. The arithmetic per (weight row,
//! activation row) pair is candle's own (same activation quantization, the same exact integer
//! block sums, same accumulation order and final horizontal sum), so the result equals
//! candle's bit for bit: swapping kernels changes speed, not logits.
//!
//! The work is split over candle's own thread pool (`barrier_pool`), never a second one.
//!
//! Must not contain anything but the matmul: which matrices use it is `weights.rs`'s choice.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

/// Values per quantization block (Q8_0's).
const BLOCK: usize = 32;
/// Weight rows per group: the rows one kernel pass reads together.
const GROUP: usize = 4;
/// i32 lanes of one block's dot product (each sums 4 adjacent byte products).
const LANES: usize = BLOCK / 4;

/// The instruction set a matrix's kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx2,
    /// AVX-512 F + VNNI: `vpdpbusd` sums four u8×i8 products per i32 lane in one instruction.
    Avx512Vnni,
}

impl Isa {
    /// The fastest kernel this CPU runs, if any.
    fn best() -> Option<Self> {
        [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.supported())
    }

    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                Isa::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512vnni")
                        && Isa::Avx2.supported()
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Activation rows per kernel pass: as many as the registers hold accumulators for
    /// (4 weight rows × R rows; AVX2 has 16 vector registers, AVX-512 32).
    fn tile_rows(self) -> usize {
        match self {
            Isa::Avx2 => 2,
            Isa::Avx512Vnni => 4,
        }
    }
}

/// A Q8_0 matrix `[rows, cols]` laid out for the kernel: rows in groups of [`GROUP`] (the last
/// group padded with zero rows), each group block-major: for every 32-column block, the four
/// rows' 32 quants, and the four rows' scales as f32.
pub(super) struct Int8Matrix {
    rows: usize,
    cols: usize,
    isa: Isa,
    /// `[groups][blocks][GROUP × BLOCK]`: the i8 quants for AVX2; for AVX-512 VNNI, which
    /// multiplies unsigned by signed bytes, the quants plus 128 as u8 (see `avx512.rs`).
    quants: Vec<[u8; GROUP * BLOCK]>,
    /// `[groups][blocks]`.
    scales: Vec<[f32; GROUP]>,
}

impl Int8Matrix {
    /// The matrix re-laid out, or None when the kernel does not apply (not Q8_0, not on the
    /// CPU, or a CPU without AVX2/FMA): the caller keeps candle's matmul then.
    pub(super) fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        match Isa::best() {
            Some(isa) => Self::from_qtensor_for(t, isa),
            None => Ok(None),
        }
    }

    /// As [`Self::from_qtensor`], for a given kernel (which the CPU must run).
    fn from_qtensor_for(t: &QTensor, isa: Isa) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q8_0 || !matches!(t.device(), Device::Cpu) || !isa.supported() {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let data = t.data()?;
        Ok(Some(Self::from_q8_0_bytes(rows, cols, &data, isa)?))
    }

    /// From GGML Q8_0 blocks (`f16` scale, then 32 `i8` quants; 34 bytes), row-major.
    fn from_q8_0_bytes(
        rows: usize,
        cols: usize,
        data: &[u8],
        isa: Isa,
    ) -> candle_core::Result<Self> {
        const BYTES: usize = 2 + BLOCK;
        let blocks = cols / BLOCK;
        if data.len() != rows * blocks * BYTES {
            candle_core::bail!(
                "Q8_0 data of {} bytes for a {rows}×{cols} matrix",
                data.len()
            );
        }
        // Flipping the top bit of an i8 adds 128 and reads it as u8. Padding rows must be
        // zero weights either way.
        let flip = match isa {
            Isa::Avx2 => 0,
            Isa::Avx512Vnni => 0x80,
        };
        let groups = rows.div_ceil(GROUP);
        let mut quants = vec![[flip; GROUP * BLOCK]; groups * blocks];
        let mut scales = vec![[0f32; GROUP]; groups * blocks];
        for (row, row_data) in data.chunks_exact(blocks * BYTES).enumerate() {
            let (g, j) = (row / GROUP, row % GROUP);
            for (b, block) in row_data.chunks_exact(BYTES).enumerate() {
                let slot = g * blocks + b;
                scales[slot][j] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (q, &byte) in quants[slot][j * BLOCK..(j + 1) * BLOCK]
                    .iter_mut()
                    .zip(&block[2..])
                {
                    *q = byte ^ flip;
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            isa,
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
        let acts = Activations::quantize(x, m, blocks, self.isa);
        let groups = self.rows.div_ceil(GROUP);
        // Each group's outputs for all m rows, `[groups][m][GROUP]`: one contiguous piece per
        // work item, so workers share nothing; transposed into place afterwards.
        let mut by_group = vec![[0f32; GROUP]; groups * m];
        let pieces: Vec<Mutex<&mut [[f32; GROUP]]>> =
            by_group.chunks_mut(m.max(1)).map(Mutex::new).collect();
        let run = |g: usize| {
            let (Some(piece), Some(quants), Some(scales)) = (
                pieces.get(g),
                self.quants.get(g * blocks..(g + 1) * blocks),
                self.scales.get(g * blocks..(g + 1) * blocks),
            ) else {
                return;
            };
            // A poisoned lock means another item panicked; that panic is re-raised by the pool.
            if let Ok(mut piece) = piece.lock() {
                self.group_times_rows(quants, scales, &acts, &mut piece);
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(groups, |range| range.for_each(&run));
        drop(pieces);

        let mut out = vec![0f32; m * self.rows];
        for (g, piece) in by_group.chunks_exact(m.max(1)).enumerate() {
            let col = g * GROUP;
            let n = GROUP.min(self.rows - col);
            for (out_row, four) in out.chunks_exact_mut(self.rows).zip(piece) {
                out_row[col..col + n].copy_from_slice(&four[..n]);
            }
        }
        out
    }

    /// One weight group against every activation row, in tiles of the kernel's row count.
    fn group_times_rows(
        &self,
        w: &[[u8; GROUP * BLOCK]],
        w_scales: &[[f32; GROUP]],
        acts: &Activations,
        out: &mut [[f32; GROUP]],
    ) {
        let tile = self.isa.tile_rows();
        let mut r = 0;
        for piece in out.chunks_mut(tile) {
            let rows = piece.len();
            match (self.isa, piece) {
                (Isa::Avx2, [a, b]) => kernel::<2>(self.isa, w, w_scales, acts, r, [a, b]),
                (Isa::Avx512Vnni, [a, b, c, d]) => {
                    kernel::<4>(self.isa, w, w_scales, acts, r, [a, b, c, d])
                }
                (_, [a, b, c]) => kernel::<3>(self.isa, w, w_scales, acts, r, [a, b, c]),
                (_, [a, b]) => kernel::<2>(self.isa, w, w_scales, acts, r, [a, b]),
                (_, [a]) => kernel::<1>(self.isa, w, w_scales, acts, r, [a]),
                // Longer pieces are never formed: `tile` is at most 4.
                _ => {}
            }
            r += rows;
        }
    }
}

/// `R` activation rows from `first` on against one weight group, through `isa`'s kernel.
fn kernel<const R: usize>(
    isa: Isa,
    w: &[[u8; GROUP * BLOCK]],
    w_scales: &[[f32; GROUP]],
    acts: &Activations,
    first: usize,
    out: [&mut [f32; GROUP]; R],
) {
    let rows: [ActRow<'_>; R] = std::array::from_fn(|i| acts.row(first + i));
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: matrices are built for an `isa` only where `isa.supported()` holds, which
        // checks exactly the features each kernel enables.
        Isa::Avx2 => unsafe { avx2::tile(rows, w, w_scales, out) },
        // SAFETY: as above.
        Isa::Avx512Vnni => unsafe { avx512::tile(rows, w, w_scales, out) },
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, w, w_scales, rows, out);
}

/// Activation rows quantized to Q8_0 exactly as candle's `BlockQ8_0::from_float` does, with
/// the (f16-rounded) scales kept as f32, plus what the chosen kernel needs besides.
struct Activations {
    blocks: usize,
    /// `[m][blocks]`.
    quants: Vec<[i8; BLOCK]>,
    /// `[m][blocks]`, each scale repeated in 8 lanes: the AVX2 kernel multiplies by it straight
    /// from memory, which saves a register and a broadcast per use.
    scales: Vec<[f32; 8]>,
    /// `[m][blocks]`, AVX-512 only: −128 × the sum of each lane's four quants, the offset
    /// that biasing the weights by +128 adds to each lane's dot product.
    offsets: Vec<[i32; LANES]>,
}

impl Activations {
    fn quantize(x: &[f32], m: usize, blocks: usize, isa: Isa) -> Self {
        let mut quants = vec![[0i8; BLOCK]; m * blocks];
        let mut scales = vec![[0f32; 8]; m * blocks];
        let xs = x.as_chunks::<BLOCK>().0;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: every kernel's ISA includes AVX2 and FMA (`Isa::supported`).
        unsafe {
            avx2::quantize(xs, &mut quants, &mut scales)
        };
        #[cfg(not(target_arch = "x86_64"))]
        for ((xs, qs), scale) in xs.iter().zip(&mut quants).zip(&mut scales) {
            *scale = [quantize_block(xs, qs); 8];
        }
        let offsets = match isa {
            Isa::Avx2 => Vec::new(),
            Isa::Avx512Vnni => quants
                .iter()
                .map(|q| {
                    std::array::from_fn(|l| {
                        -128 * q[4 * l..4 * l + 4]
                            .iter()
                            .map(|&v| i32::from(v))
                            .sum::<i32>()
                    })
                })
                .collect(),
        };
        Self {
            blocks,
            quants,
            scales,
            offsets,
        }
    }

    /// Row `r`'s blocks (empty slices beyond the last row, which kernels treat as nothing to
    /// do).
    fn row(&self, r: usize) -> ActRow<'_> {
        let range = r * self.blocks..(r + 1) * self.blocks;
        ActRow {
            quants: self.quants.get(range.clone()).unwrap_or_default(),
            scales: self.scales.get(range.clone()).unwrap_or_default(),
            offsets: self.offsets.get(range).unwrap_or_default(),
        }
    }
}

/// One activation row's blocks, as the kernels read them.
#[derive(Clone, Copy)]
struct ActRow<'a> {
    quants: &'a [[i8; BLOCK]],
    scales: &'a [[f32; 8]],
    /// Empty unless the kernel is AVX-512's.
    offsets: &'a [[i32; LANES]],
}

/// Candle's `BlockQ8_0::from_float` for one block: returns the f16-rounded scale. The
/// reference for `avx2::quantize`, and the code elsewhere.
#[cfg_attr(
    target_arch = "x86_64",
    cfg_attr(not(test), expect(dead_code, reason = "x86 uses avx2::quantize"))
)]
fn quantize_block(xs: &[f32; BLOCK], qs: &mut [i8; BLOCK]) -> f32 {
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round() as i8;
    }
    f16::from_f32(d).to_f32()
}
