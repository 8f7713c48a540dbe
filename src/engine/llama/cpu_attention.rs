//! Causal attention on the CPU for a whole step (every sequence's new rows) in one pass, read
//! straight from the sequences' KV caches.
//!
//! Why not candle ops: at the sizes of one decode step (a handful of query rows per sequence,
//! head_dim 64) the work is a few microseconds, while the per-sequence chain of tensor ops
//! (two batched f32 matmuls through gemm's rayon pool, softmax through rayon, reshapes) costs
//! more in dispatch and allocation than in arithmetic, and rayon's threads compete for the
//! cores with candle's own (spinning) matmul pool. Here the work runs as (row, KV head) items on
//! that same candle pool.
//!
//! Must not contain anything but the attention arithmetic; the cache layout is `cache.rs`'s.

use std::sync::Mutex;

use half::f16;
use half::slice::HalfFloatSliceExt;

/// What a KV cache stores.
pub(super) trait KvValue: Copy + Sync {
    /// `data[at .. at + d]` as f32 (converted into `buf` if need be; empty if out of range).
    fn read<'a>(data: &'a [Self], at: usize, d: usize, buf: &'a mut [f32]) -> &'a [f32];

    /// [`attend_one`] through a kernel specific to this type and CPU, where there is one:
    /// false when there is none (and `out` is untouched).
    fn attend_fast(
        _q: &[f32],
        _d: usize,
        _k: &[Self],
        _v: &[Self],
        _visible: usize,
        _scale: f32,
        _out: &mut [f32],
    ) -> bool {
        false
    }
}

impl KvValue for f32 {
    fn read<'a>(data: &'a [f32], at: usize, d: usize, _: &'a mut [f32]) -> &'a [f32] {
        data.get(at..at + d).unwrap_or(&[])
    }
}

impl KvValue for f16 {
    fn read<'a>(data: &'a [f16], at: usize, d: usize, buf: &'a mut [f32]) -> &'a [f32] {
        match (data.get(at..at + d), buf.get_mut(..d)) {
            (Some(src), Some(buf)) => {
                // Eight values per instruction (F16C, part of the x86-64-v3 target).
                src.convert_to_f32_slice(buf);
                buf
            }
            _ => &[],
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn attend_fast(
        q: &[f32],
        d: usize,
        k: &[f16],
        v: &[f16],
        visible: usize,
        scale: f32,
        out: &mut [f32],
    ) -> bool {
        avx512::attend(q, d, k, v, visible, scale, out)
    }
}

/// One sequence's part of a step.
pub(super) struct SegmentKv<'a, T> {
    /// Keys and values by head, then position: `[n_kv_head, capacity, head_dim]`, row-major.
    pub k: &'a [T],
    pub v: &'a [T],
    /// Positions cached before this step.
    pub start: usize,
    /// New rows in this step (already written to `k`/`v` at `start ..`).
    pub rows: usize,
}

pub(super) struct Shape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// `q`: `[rows, n_head, head_dim]` for all segments' rows in order. Returns
/// `[rows, n_head · head_dim]`.
pub(super) fn attention<T: KvValue>(
    q: &[f32],
    segments: &[SegmentKv<'_, T>],
    shape: &Shape,
) -> Vec<f32> {
    let d = shape.head_dim;
    let group = shape.n_head / shape.n_kv_head;
    let rows: usize = segments.iter().map(|s| s.rows).sum();
    let mut out = vec![0f32; rows * shape.n_head * d];

    // Work items are (row, KV head): the `group` query heads sharing a KV head are adjacent,
    // so each item reads one KV head's run of keys and values once and owns one contiguous
    // piece of the output.
    let mut row_segment = Vec::with_capacity(rows);
    for (i, s) in segments.iter().enumerate() {
        for r in 0..s.rows {
            row_segment.push((i, s.start + r + 1));
        }
    }
    let pieces: Vec<Mutex<&mut [f32]>> = out.chunks_mut(group * d).map(Mutex::new).collect();
    let run = |item: usize| {
        let (row, kv_head) = (item / shape.n_kv_head, item % shape.n_kv_head);
        let (Some(&(seg, visible)), Some(piece)) = (row_segment.get(row), pieces.get(item)) else {
            return;
        };
        let Some(s) = segments.get(seg) else {
            return;
        };
        let q_start = item * group * d;
        let Some(q) = q.get(q_start..q_start + group * d) else {
            return;
        };
        // A poisoned lock means another item panicked; that panic is re-raised by the pool.
        if let Ok(mut piece) = piece.lock() {
            attend_one(q, s, kv_head, visible, shape, &mut piece);
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(pieces.len(), |range| range.for_each(&run));
    drop(pieces);
    out
}

/// The `group` query heads of one row against the first `visible` positions of one KV head.
fn attend_one<T: KvValue>(
    q: &[f32],
    s: &SegmentKv<'_, T>,
    kv_head: usize,
    visible: usize,
    shape: &Shape,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let group = q.len() / d;
    // One head's run of positions.
    let run = s.k.len() / shape.n_kv_head.max(1);
    if let (Some(k), Some(v)) = (
        s.k.get(kv_head * run..(kv_head + 1) * run),
        s.v.get(kv_head * run..(kv_head + 1) * run),
    ) && T::attend_fast(q, d, k, v, visible, shape.scale, out)
    {
        return;
    }
    let at = |pos: usize| kv_head * run + pos * d;
    // Room for four columns converted to f32, when the cache holds another type.
    let mut buf = vec![0f32; 4 * d];

    // Scores `[group][visible]`, four positions at a time: one dot product is a chain of
    // dependent additions, so four run side by side to keep the FMA units busy.
    let mut scores = vec![0f32; group * visible];
    let mut pos = 0;
    while pos + 4 <= visible {
        let mut bufs = buf.chunks_exact_mut(d);
        let keys: [&[f32]; 4] =
            std::array::from_fn(|i| T::read(s.k, at(pos + i), d, bufs.next().unwrap_or_default()));
        for (h, q) in q.chunks_exact(d).enumerate() {
            let dots = dot4(q, keys);
            for (i, dot) in dots.into_iter().enumerate() {
                scores[h * visible + pos + i] = dot * shape.scale;
            }
        }
        pos += 4;
    }
    for pos in pos..visible {
        let k = T::read(s.k, at(pos), d, &mut buf);
        for (h, q) in q.chunks_exact(d).enumerate() {
            scores[h * visible + pos] = dot4(q, [k; 4])[0] * shape.scale;
        }
    }

    let inverse_sums: Vec<f32> = scores
        .chunks_exact_mut(visible)
        .map(super::elementwise::softmax_weights)
        .collect();

    // Values: position by position, every head, each value column read once.
    out.fill(0.0);
    for pos in 0..visible {
        let v = T::read(s.v, at(pos), d, &mut buf);
        for (h, o) in out.chunks_exact_mut(d).enumerate() {
            axpy(o, scores[h * visible + pos], v);
        }
    }
    for (o, inv) in out.chunks_exact_mut(d).zip(inverse_sums) {
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// `q` against four keys. Each product runs in eight lanes of fused multiply-adds, which the
/// compiler keeps in one vector register per key (float addition is not reassociated, so a
/// single running sum could not be vectorised).
fn dot4(q: &[f32], keys: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let q8 = q.chunks_exact(8);
    let tail = q8.remainder();
    for (c, q) in q8.enumerate() {
        for (acc, k) in acc.iter_mut().zip(keys) {
            let Some(k) = k.get(c * 8..c * 8 + 8) else {
                continue;
            };
            for l in 0..8 {
                acc[l] = q[l].mul_add(k[l], acc[l]);
            }
        }
    }
    let body = q.len() - tail.len();
    std::array::from_fn(|i| {
        let k_tail = keys[i].get(body..).unwrap_or(&[]);
        acc[i].iter().sum::<f32>() + tail.iter().zip(k_tail).map(|(a, b)| a * b).sum::<f32>()
    })
}

/// `y += a · x`, fused.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

/// AVX-512 attention over an f16 cache: the query heads and the output accumulators stay in
/// registers for the whole pass, and each key or value row is converted from f16 once, in
/// registers, for every head of the group (the portable code above goes through memory for
/// both). About a third of the portable code's instructions per position.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::elementwise::avx512::softmax_weights;

    /// Attends when the CPU has AVX-512 and the shape has a kernel (`q.len() / d` query
    /// heads of `d` values, as monomorphised below); false otherwise.
    pub(super) fn attend(
        q: &[f32],
        d: usize,
        k: &[f16],
        v: &[f16],
        visible: usize,
        scale: f32,
        out: &mut [f32],
    ) -> bool {
        if !std::is_x86_feature_detected!("avx512f") {
            return false;
        }
        macro_rules! kernels {
            ($(($g:literal, $nd:literal)),*) => {
                match (q.len() / d.max(1), d) {
                    $(($g, d) if d == 16 * $nd && out.len() == q.len() => {
                        // SAFETY: the CPU has AVX-512 F (checked above).
                        unsafe { kernel::<$g, $nd>(q, k, v, visible, scale, out) }
                    })*
                    _ => false,
                }
            };
        }
        // Every (group, head_dim) of llama-family GGUFs up to group 4: head_dim 64 or 128 in
        // practice (16 for tests).
        kernels!(
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (1, 4),
            (2, 4),
            (3, 4),
            (4, 4),
            (1, 8),
            (2, 8),
            (3, 8)
        )
    }

    /// `G` query heads of `16·ND` values (`q`, `out`: `[G, 16·ND]`) against positions
    /// `0..visible` of one KV head (`k`, `v`: `[positions, 16·ND]`). False, with `out`
    /// untouched, if the slices are shorter than that.
    #[target_feature(enable = "avx512f")]
    fn kernel<const G: usize, const ND: usize>(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        visible: usize,
        scale: f32,
        out: &mut [f32],
    ) -> bool {
        let d = 16 * ND;
        if q.len() < G * d || out.len() < G * d || k.len() < visible * d || v.len() < visible * d {
            return false;
        }
        // SAFETY (every load and store below): the offsets stay within the lengths checked
        // above; the loads and stores have no alignment requirement.
        let row = |data: &[f16], pos: usize| -> [__m512; ND] {
            std::array::from_fn(|c| unsafe {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    data.as_ptr().add(pos * d + c * 16).cast(),
                ))
            })
        };
        let qv: [[__m512; ND]; G] = std::array::from_fn(|h| {
            std::array::from_fn(|c| unsafe { _mm512_loadu_ps(q.as_ptr().add(h * d + c * 16)) })
        });

        // The rows are read front to back, but each item's run is short (a few hundred
        // positions) and the next item's is elsewhere, so the hardware prefetcher is still
        // ramping up when a run ends: fetch `AHEAD` positions ahead explicitly.
        let prefetch = |data: &[f16], pos: usize| {
            if pos < visible {
                for line in 0..d.div_ceil(32) {
                    // SAFETY: within the `visible · d` values checked above; a prefetch
                    // never faults anyway.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(pos * d + line * 32).cast())
                    };
                }
            }
        };
        const AHEAD: usize = 8;

        // Scores `[G][visible]`.
        let mut scores = vec![0f32; G * visible];
        for pos in 0..visible {
            prefetch(k, pos + AHEAD);
            // The values' first rows arrive while the scores are computed.
            prefetch(v, pos);
            let kv = row(k, pos);
            for h in 0..G {
                let mut acc = _mm512_mul_ps(qv[h][0], kv[0]);
                for c in 1..ND {
                    acc = _mm512_fmadd_ps(qv[h][c], kv[c], acc);
                }
                scores[h * visible + pos] = _mm512_reduce_add_ps(acc) * scale;
            }
        }
        let mut inverse_sums = [0f32; G];
        for (inv, head_scores) in inverse_sums
            .iter_mut()
            .zip(scores.chunks_exact_mut(visible.max(1)))
        {
            *inv = softmax_weights(head_scores);
        }

        let mut acc = [[_mm512_setzero_ps(); ND]; G];
        for pos in 0..visible {
            prefetch(v, pos + AHEAD);
            let vv = row(v, pos);
            for h in 0..G {
                let w = _mm512_set1_ps(scores[h * visible + pos]);
                for c in 0..ND {
                    acc[h][c] = _mm512_fmadd_ps(w, vv[c], acc[h][c]);
                }
            }
        }
        for (h, (acc, inv)) in acc.iter().zip(inverse_sums).enumerate() {
            let inv = _mm512_set1_ps(inv);
            for (c, &a) in acc.iter().enumerate() {
                let at = h * d + c * 16;
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at), _mm512_mul_ps(a, inv)) };
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention written out from its definition, one head at a time.
    fn naive(q: &[f32], segments: &[SegmentKv<'_, f32>], shape: &Shape) -> Vec<f32> {
        let (h_n, kv_n, d) = (shape.n_head, shape.n_kv_head, shape.head_dim);
        let mut out = Vec::new();
        for s in segments {
            let cap = s.k.len() / (kv_n * d);
            for r in 0..s.rows {
                let row = out.len() / (h_n * d);
                for h in 0..h_n {
                    let g = h / (h_n / kv_n);
                    let qh = &q[(row * h_n + h) * d..][..d];
                    let visible = s.start + r + 1;
                    let scores: Vec<f32> = (0..visible)
                        .map(|p| {
                            let k = &s.k[(g * cap + p) * d..][..d];
                            qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * shape.scale
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for i in 0..d {
                        out.push(
                            (0..visible)
                                .map(|p| e[p] / sum * s.v[(g * cap + p) * d + i])
                                .sum(),
                        );
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_for_ragged_segments() {
        let shape = Shape {
            n_head: 6,
            n_kv_head: 2,
            head_dim: 16,
            scale: 0.25,
        };
        let mut seed = 1u32;
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
                })
                .collect()
        };
        let cap = 40;
        let kv_len = cap * shape.n_kv_head * shape.head_dim;
        let (k1, v1, k2, v2) = (rand(kv_len), rand(kv_len), rand(kv_len), rand(kv_len));
        let segments = [
            SegmentKv {
                k: &k1,
                v: &v1,
                start: 3,
                rows: 9,
            },
            SegmentKv {
                k: &k2,
                v: &v2,
                start: 20,
                rows: 1,
            },
        ];
        let q = rand(10 * shape.n_head * shape.head_dim);
        let expected = naive(&q, &segments, &shape);
        let ours = attention(&q, &segments, &shape);
        assert_eq!(ours.len(), expected.len());
        assert!(max_diff(&ours, &expected) < 1e-5, "f32 cache differs");

        // An f16 cache: the same arithmetic on the values it holds (each rounded to f16).
        let halves = |v: &[f32]| -> Vec<f16> { v.iter().map(|&x| f16::from_f32(x)).collect() };
        let back = |v: &[f16]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let (hk1, hv1, hk2, hv2) = (halves(&k1), halves(&v1), halves(&k2), halves(&v2));
        let (rk1, rv1, rk2, rv2) = (back(&hk1), back(&hv1), back(&hk2), back(&hv2));
        fn with<'a, T>(
            k1: &'a [T],
            v1: &'a [T],
            k2: &'a [T],
            v2: &'a [T],
        ) -> [SegmentKv<'a, T>; 2] {
            [
                SegmentKv {
                    k: k1,
                    v: v1,
                    start: 3,
                    rows: 9,
                },
                SegmentKv {
                    k: k2,
                    v: v2,
                    start: 20,
                    rows: 1,
                },
            ]
        }
        let ours = attention(&q, &with(&hk1, &hv1, &hk2, &hv2), &shape);
        let rounded = naive(&q, &with(&rk1, &rv1, &rk2, &rv2), &shape);
        assert!(max_diff(&ours, &rounded) < 1e-5, "f16 cache differs");
        // f16 keeps ~3 significant digits, so the result moves by about that much.
        assert!(
            max_diff(&ours, &expected) < 2e-3,
            "f16 rounding moved the result"
        );
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}
