//! The CPU matmul `x · Wᵀ` for Q8_0 weight matrices on x86_64: the weights are re-laid out
//! once at load into groups of rows, and a register-tiled kernel computes one group × several
//! activation rows per pass over k. Two kernels, picked once per matrix from what the CPU has:
//! AVX-512 VNNI (`avx512.rs`), else AVX2 + FMA (`avx2.rs`).
//!
//! Why not candle's `QMatMul`: on x86 its Q8_0 kernel takes one weight row and one activation
//! row per pass, converts two f16 scales per 32-value block inside the loop, and loads every
//! weight vector again for every activation row. Here the scales are f32, prepared at load
//! (weights) or once per call (activations), and each loaded weight vector serves several
//! activation rows.
//!
//! Both kernels quantize activations as candle does and sum each block's integer products
//! exactly; they differ in the float steps after that:
//! - AVX2 keeps candle's own (eight partial sums per block, each scaled and accumulated in its
//!   lane, then one horizontal sum), so it equals candle bit for bit.
//! - AVX-512 holds sixteen weight rows per vector, one per lane, so a lane accumulates a whole
//!   block's integer dot product and adds it, scaled, with one FMA: `acc = fma(dw·da, Σ, acc)`
//!   block after block. That takes a third of the instructions per multiply-add (this is
//!   what makes batched decoding and prefill compute-cheap) and rounds once per block instead
//!   of once per eight values, so its results differ from candle's only in the last bits.
//!   The tests hold that arithmetic in scalar code, and the kernel equals it bit for bit.
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

use std::marker::PhantomData;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

/// Values per quantization block (Q8_0's).
const BLOCK: usize = 32;
/// Weight rows per group for AVX2: the rows one kernel pass reads together, each in its own
/// accumulators.
const AVX2_GROUP: usize = 4;
/// Weight rows per group for AVX-512: one per 32-bit lane.
const AVX512_GROUP: usize = 16;

/// How far ahead of the block being multiplied the kernels prefetch the weights, in blocks
/// (8 KiB for AVX-512, 2 KiB for AVX2). With several activation rows per pass the weights
/// stream in slower than the hardware prefetcher expects, and without this the kernel waited
/// on memory: a batch of eight ran at under a third of the bandwidth one row gets. The
/// distance past a group's last block reaches into the next group's, which is next in memory
/// and usually the next to be multiplied.
const PREFETCH_BLOCKS: usize = 16;

/// Asks for the cache lines of `*at` ahead of use. `at` may point anywhere, even past the
/// data (a prefetch never faults; its address is computed with `wrapping_add`).
#[cfg(target_arch = "x86_64")]
fn prefetch<T>(at: *const T) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let bytes = at.cast::<i8>();
    for line in 0..size_of::<T>().div_ceil(64) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees, and an address
        // outside any mapping is ignored.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.wrapping_add(line * 64)) };
    }
}

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

    /// Weight rows per group.
    fn group(self) -> usize {
        match self {
            Isa::Avx2 => AVX2_GROUP,
            Isa::Avx512Vnni => AVX512_GROUP,
        }
    }

    /// Activation rows per kernel pass: as many as the registers hold accumulators for
    /// (AVX2 has 16 vector registers, AVX-512 32, of which 8 hold a block's weights).
    fn tile_rows(self) -> usize {
        match self {
            Isa::Avx2 => 2,
            Isa::Avx512Vnni => 8,
        }
    }
}

/// 64 bytes of quants, aligned so that a 512-bit load never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A Q8_0 matrix `[rows, cols]` laid out for its kernel: rows in groups of `isa.group()` (the
/// last group padded with zero rows), each group block-major, with the scales as f32.
/// Per group and 32-column block:
/// - AVX2: the four rows' 32 i8 quants one after another (2 lines);
/// - AVX-512: for each 4 columns of the block, the sixteen rows' 4 quants, plus 128 as u8
///   (`vpdpbusd` multiplies unsigned by signed bytes; see `avx512.rs`): 8 lines.
pub(super) struct Int8Matrix {
    rows: usize,
    cols: usize,
    isa: Isa,
    /// `[groups][blocks][lines per block]`.
    quants: Vec<Line>,
    /// `[groups][blocks][group]`.
    scales: Vec<f32>,
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
        let group = isa.group();
        let lines = group * BLOCK / 64;
        // Flipping the top bit of an i8 adds 128 and reads it as u8. Padding rows must be
        // zero weights either way.
        let flip = match isa {
            Isa::Avx2 => 0,
            Isa::Avx512Vnni => 0x80,
        };
        let groups = rows.div_ceil(group);
        let mut quants = vec![Line([flip; 64]); groups * blocks * lines];
        let mut scales = vec![0f32; groups * blocks * group];
        for (row, row_data) in data.chunks_exact(blocks * BYTES).enumerate() {
            let (g, j) = (row / group, row % group);
            for (b, block) in row_data.chunks_exact(BYTES).enumerate() {
                let slot = g * blocks + b;
                scales[slot * group + j] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let block_lines = &mut quants[slot * lines..(slot + 1) * lines];
                for (c, &byte) in block[2..].iter().enumerate() {
                    let at = match isa {
                        Isa::Avx2 => j * BLOCK + c,
                        Isa::Avx512Vnni => (c / 4) * 64 + j * 4 + c % 4,
                    };
                    block_lines[at / 64].0[at % 64] = byte ^ flip;
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
        let out = self.matmul(super::cpu_slice::<f32>(&storage, layout)?, m);
        Tensor::from_vec(out, (m, self.rows), x.device())
    }

    /// `x`: `[m, cols]` row-major; returns `[m, rows]` row-major.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let blocks = self.cols / BLOCK;
        let acts = Activations::quantize(x, m, blocks, self.isa);
        let group = self.isa.group();
        let lines = blocks * group * BLOCK / 64;
        let groups = self.rows.div_ceil(group);
        // Work items are runs of consecutive groups, about 8 per thread, as candle's
        // `execute_chunked` makes: enough to even out the threads' finishing times. Each group
        // owns `group` columns of the output, so items write to disjoint parts of it, straight
        // into place (a per-group buffer transposed afterwards was a tenth of a prefill pass,
        // all of it on one thread).
        let mut out = vec![0f32; m * self.rows];
        let shared = SharedOut::new(&mut out, self.rows);
        // The last group's padding rows have no columns: it goes through a buffer.
        let full_groups = self.rows / group;
        let pool = candle_core::utils::barrier_pool();
        // (`get_num_threads` would read the environment and the cgroup files on every call.)
        let per_item = groups.div_ceil(8 * (pool.n_workers() + 1)).max(1);
        let run = |item: usize| {
            for g in item * per_item..((item + 1) * per_item).min(groups) {
                let (Some(quants), Some(scales)) = (
                    self.quants.get(g * lines..(g + 1) * lines),
                    self.scales
                        .get(g * blocks * group..(g + 1) * blocks * group),
                ) else {
                    continue;
                };
                if g < full_groups {
                    // SAFETY: group `g` (columns `g·group ..` of every row) belongs to this
                    // item alone, and `out` is not read until the pool has finished.
                    unsafe { self.group_times_rows(quants, scales, &acts, &shared, g * group) };
                } else {
                    let mut buffer = vec![0f32; m * group];
                    let partial = SharedOut::new(&mut buffer, group);
                    // SAFETY: `buffer` is this call's own.
                    unsafe { self.group_times_rows(quants, scales, &acts, &partial, 0) };
                    let n = self.rows - g * group;
                    for (r, outs) in buffer.chunks_exact(group).enumerate() {
                        // SAFETY: as above.
                        unsafe { shared.write(r, g * group, &outs[..n]) };
                    }
                }
            }
        };
        pool.execute_chunked(groups.div_ceil(per_item), |range| range.for_each(&run));
        out
    }

    /// One weight group against every activation row, in tiles of the kernel's row count,
    /// into columns `col .. col + group` of `out`.
    ///
    /// # Safety
    /// Nothing else may read or write those columns of `out` during the call.
    unsafe fn group_times_rows(
        &self,
        w: &[Line],
        w_scales: &[f32],
        acts: &Activations,
        out: &SharedOut<'_>,
        col: usize,
    ) {
        let m = acts.m;
        if !out.holds(m, col + self.isa.group()) {
            return;
        }
        let tile = self.isa.tile_rows();
        // SAFETY (every `chunk` below): rows `first + i < m` and columns `col .. col + group`
        // are inside `out` (checked above) and are the caller's alone (this function's
        // contract); each call takes distinct rows.
        // SAFETY (every kernel call): matrices are built for an ISA only where
        // `isa.supported()` holds, which checks exactly the features each kernel enables.
        match self.isa {
            Isa::Avx2 => {
                let (w, _) = w.as_chunks::<2>();
                let (s, _) = w_scales.as_chunks::<AVX2_GROUP>();
                for first in (0..m).step_by(tile) {
                    let r = acts.rows::<2>(first);
                    let o = |i| unsafe { out.chunk::<AVX2_GROUP>(first + i, col) };
                    #[cfg(target_arch = "x86_64")]
                    match m - first {
                        1 => unsafe { avx2::tile(take::<1, 2>(r), w, s, [o(0)]) },
                        _ => unsafe { avx2::tile(r, w, s, [o(0), o(1)]) },
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (r, o, w, s);
                }
            }
            Isa::Avx512Vnni => {
                let (w, _) = w.as_chunks::<8>();
                let (s, _) = w_scales.as_chunks::<AVX512_GROUP>();
                for first in (0..m).step_by(tile) {
                    let r = acts.rows::<8>(first);
                    let o = |i| unsafe { out.chunk::<AVX512_GROUP>(first + i, col) };
                    macro_rules! tile {
                        ($rows:literal) => {{
                            #[cfg(target_arch = "x86_64")]
                            unsafe {
                                avx512::tile(take::<$rows, 8>(r), w, s, std::array::from_fn(o))
                            }
                            #[cfg(not(target_arch = "x86_64"))]
                            let _ = (r, &o, w, s);
                        }};
                    }
                    match m - first {
                        1 => tile!(1),
                        2 => tile!(2),
                        3 => tile!(3),
                        4 => tile!(4),
                        5 => tile!(5),
                        6 => tile!(6),
                        7 => tile!(7),
                        _ => tile!(8),
                    }
                }
            }
        }
    }
}

/// An `[m, stride]` output matrix that several threads write at once, each to its own
/// columns (see `Int8Matrix::matmul`). It borrows the matrix mutably for its lifetime, so
/// nothing else can touch it meanwhile.
struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    stride: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedOut` hands out references only through its unsafe methods, whose callers
// guarantee that no two threads touch the same elements.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    fn new(out: &'a mut [f32], stride: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            stride,
            _out: PhantomData,
        }
    }

    /// Whether `rows` rows of `columns` columns fit.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        columns <= self.stride && rows * self.stride <= self.len
    }

    /// Row `row`'s `G` values from column `col`.
    ///
    /// # Safety
    /// They must be inside the matrix (`holds(row + 1, col + G)`), and no other reference to
    /// them may be used while this one lives.
    #[expect(clippy::mut_from_ref, reason = "disjoint writes from several threads")]
    unsafe fn chunk<const G: usize>(&self, row: usize, col: usize) -> &mut [f32; G] {
        // SAFETY: in bounds and unaliased (the contract above); f32 arrays need only f32's
        // alignment.
        unsafe { &mut *self.ptr.add(row * self.stride + col).cast::<[f32; G]>() }
    }

    /// Copies `values` to row `row` from column `col`, if they fit.
    ///
    /// # Safety
    /// No other reference to those values may be in use.
    unsafe fn write(&self, row: usize, col: usize, values: &[f32]) {
        if col + values.len() <= self.stride && (row + 1) * self.stride <= self.len {
            // SAFETY: in bounds (checked) and unaliased (the contract above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    values.as_ptr(),
                    self.ptr.add(row * self.stride + col),
                    values.len(),
                )
            };
        }
    }
}

/// The first `R` of `N` rows.
#[cfg_attr(
    not(target_arch = "x86_64"),
    expect(dead_code, reason = "x86 kernels only")
)]
fn take<const R: usize, const N: usize>(rows: [ActRow<'_>; N]) -> [ActRow<'_>; R] {
    std::array::from_fn(|i| rows[i])
}

/// Activation rows quantized to Q8_0 exactly as candle's `BlockQ8_0::from_float` does, with
/// the (f16-rounded) scales kept as f32, plus what the chosen kernel needs besides.
struct Activations {
    /// Rows.
    m: usize,
    blocks: usize,
    /// `[m][blocks]`.
    quants: Vec<[i8; BLOCK]>,
    /// `[m][blocks]`, each scale repeated in 8 lanes: the AVX2 kernel multiplies by it straight
    /// from memory, which saves a register and a broadcast per use.
    scales: Vec<[f32; 8]>,
    /// `[m][blocks]`, AVX-512 only: −128 × the sum of the block's quants, the offset that
    /// biasing the weights by +128 adds to the block's dot product.
    offsets: Vec<i32>,
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
                .map(|q| -128 * q.iter().map(|&v| i32::from(v)).sum::<i32>())
                .collect(),
        };
        Self {
            m,
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

    /// Rows `first..first + N`.
    fn rows<const N: usize>(&self, first: usize) -> [ActRow<'_>; N] {
        std::array::from_fn(|i| self.row(first + i))
    }
}

/// One activation row's blocks, as the kernels read them.
#[derive(Clone, Copy)]
struct ActRow<'a> {
    quants: &'a [[i8; BLOCK]],
    scales: &'a [[f32; 8]],
    /// Empty unless the kernel is AVX-512's.
    offsets: &'a [i32],
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
