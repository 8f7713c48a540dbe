//! One sequence's key/value cache and causal attention against it.
//!
//! Each layer keeps K and V as `[capacity, n_kv_head, head_dim]` tensors, rows in position
//! order, so that appending a step's rows is one contiguous copy and the cache grows by
//! doubling (amortised O(1) per token, no O(n²) re-copying at long contexts).
//!
//! Must not contain the weight matmuls: those belong to the batched forward pass in `mod.rs`.

use candle_core::{DType, Device, Tensor};

/// The smallest capacity a cache grows to, in positions: a short chat reply then needs no
/// re-allocation after its prompt.
const MIN_CAPACITY: usize = 64;

/// The key/value cache of one sequence: what the model has seen of it so far.
///
/// Created by [`super::LlamaModel::new_cache`]; only usable with that model.
pub struct SequenceCache {
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    n_layer: usize,
    n_kv_head: usize,
    head_dim: usize,
}

struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl SequenceCache {
    pub(super) fn new(n_layer: usize, n_kv_head: usize, head_dim: usize) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            n_layer,
            n_kv_head,
            head_dim,
        }
    }

    /// How many positions (prompt and generated tokens) the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the sequence while keeping the memory, so the cache can serve another one.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes held by the cache's tensors (for memory accounting by the scheduler).
    pub fn allocated_bytes(&self) -> usize {
        2 * self.n_layer
            * self.capacity
            * self.n_kv_head
            * self.head_dim
            * DType::F32.size_in_bytes()
    }

    pub(super) fn fits(&self, n_layer: usize, n_kv_head: usize, head_dim: usize) -> bool {
        (self.n_layer, self.n_kv_head, self.head_dim) == (n_layer, n_kv_head, head_dim)
    }

    /// Makes room for `extra` more positions, doubling the capacity when it must grow.
    pub(super) fn reserve(&mut self, extra: usize, device: &Device) -> candle_core::Result<()> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.max(2 * self.capacity).max(MIN_CAPACITY);
        let shape = (capacity, self.n_kv_head, self.head_dim);
        let mut layers = Vec::with_capacity(self.n_layer);
        for i in 0..self.n_layer {
            let k = Tensor::zeros(shape, DType::F32, device)?;
            let v = Tensor::zeros(shape, DType::F32, device)?;
            if let Some(old) = self.layers.get(i)
                && self.len > 0
            {
                k.slice_set(&old.k.narrow(0, 0, self.len)?, 0, 0)?;
                v.slice_set(&old.v.narrow(0, 0, self.len)?, 0, 0)?;
            }
            layers.push(LayerKv { k, v });
        }
        self.layers = layers;
        self.capacity = capacity;
        Ok(())
    }

    /// Stores the keys and values of positions `len .. len + n` for one layer.
    /// `k`, `v`: `[n, n_kv_head, head_dim]`, contiguous. Needs a prior `reserve(n)`.
    pub(super) fn write(&self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let kv = self.layer(layer)?;
        kv.k.slice_set(k, 0, self.len)?;
        kv.v.slice_set(v, 0, self.len)
    }

    /// Marks `n` positions, written in every layer, as part of the sequence.
    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// One layer's `[capacity, n_kv_head, head_dim]` key and value tensors.
    pub(super) fn layer_kv(&self, layer: usize) -> candle_core::Result<(&Tensor, &Tensor)> {
        self.layer(layer).map(|kv| (&kv.k, &kv.v))
    }

    fn layer(&self, layer: usize) -> candle_core::Result<&LayerKv> {
        self.layers
            .get(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("no KV cache for layer {layer}")))
    }

    /// Causal attention of the `n` newest positions (already written, not yet advanced over)
    /// against all of the sequence's positions.
    ///
    /// `q`: `[n, n_head, head_dim]`, contiguous. Returns `[n, n_head · head_dim]`.
    pub(super) fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
    ) -> candle_core::Result<Tensor> {
        let (n, n_head, head_dim) = q.dims3()?;
        let n_kv = self.n_kv_head;
        // Grouped-query attention: the `group` query heads sharing a KV head are adjacent,
        // so they become rows of one matmul against that head's keys. K and V are copied
        // head-major: CUDA's batched matmul refuses the cache's position-major strides (the
        // CPU's gemm would take them, but the CPU normally attends in `cpu_attention`).
        let group = n_head / n_kv;
        let total = self.len + n;
        let kv = self.layer(layer)?;
        let k = kv.k.narrow(0, 0, total)?.transpose(0, 1)?.contiguous()?; // [n_kv, total, d]
        let v = kv.v.narrow(0, 0, total)?.transpose(0, 1)?.contiguous()?;

        let q = if n == 1 {
            q.reshape((n_kv, group, head_dim))?
        } else {
            q.reshape((n, n_kv, group, head_dim))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((n_kv, group * n, head_dim))?
        };
        let scores = (q.matmul(&k.t()?)? * scale)?; // [n_kv, group·n, total]
        let scores = match mask {
            Some(mask) => scores
                .reshape((n_kv, group, n, total))?
                .broadcast_add(mask)?
                .reshape((n_kv, group * n, total))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?; // [n_kv, group·n, d]
        if n == 1 {
            out.reshape((1, n_head * head_dim))
        } else {
            out.reshape((n_kv, group, n, head_dim))?
                .permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((n, n_head * head_dim))
        }
    }
}

/// The additive causal mask `[n, start + n]` of `n` new positions after `start` cached ones:
/// position `start + i` sees keys `0 ..= start + i`.
pub(super) fn causal_mask(start: usize, n: usize, device: &Device) -> candle_core::Result<Tensor> {
    let total = start + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n, total), device)
}
