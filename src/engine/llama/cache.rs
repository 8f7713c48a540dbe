//! One sequence's key/value cache and causal attention against it.
//!
//! Each layer keeps K and V as `[n_kv_head, capacity, head_dim]` tensors: head-major, so that
//! attention reads each head's keys and values as one contiguous run (which the CPU's
//! prefetchers follow; position-major rows left gaps between a head's columns, and attention
//! waited on memory). The cache grows by doubling (amortised O(1) per token, no O(n²)
//! re-copying at long contexts). The model picks the element type: f16 on the CPU, where
//! reading the cache bounds attention (eight sequences' caches at a few hundred positions
//! weigh as much as the weights), f32 elsewhere.
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
    dtype: DType,
}

struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl SequenceCache {
    pub(super) fn new(n_layer: usize, n_kv_head: usize, head_dim: usize, dtype: DType) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            n_layer,
            n_kv_head,
            head_dim,
            dtype,
        }
    }

    /// The element type of the keys and values.
    pub(super) fn dtype(&self) -> DType {
        self.dtype
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
            * self.dtype.size_in_bytes()
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
        let shape = (self.n_kv_head, capacity, self.head_dim);
        let mut layers = Vec::with_capacity(self.n_layer);
        for i in 0..self.n_layer {
            let k = Tensor::zeros(shape, self.dtype, device)?;
            let v = Tensor::zeros(shape, self.dtype, device)?;
            if let Some(old) = self.layers.get(i)
                && self.len > 0
            {
                k.slice_set(&old.k.narrow(1, 0, self.len)?, 1, 0)?;
                v.slice_set(&old.v.narrow(1, 0, self.len)?, 1, 0)?;
            }
            layers.push(LayerKv { k, v });
        }
        self.layers = layers;
        self.capacity = capacity;
        Ok(())
    }

    /// Stores the keys and values of positions `len .. len + n` for one layer.
    /// `k`, `v`: `[n_kv_head, n, head_dim]` (see [`head_major`]). Needs a prior `reserve(n)`.
    pub(super) fn write(&self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let kv = self.layer(layer)?;
        // A no-op when the step converted to this cache's type already.
        let fit = |t: &Tensor| t.to_dtype(self.dtype)?.contiguous();
        kv.k.slice_set(&fit(k)?, 1, self.len)?;
        kv.v.slice_set(&fit(v)?, 1, self.len)
    }

    /// Marks `n` positions, written in every layer, as part of the sequence.
    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// One layer's `[n_kv_head, capacity, head_dim]` key and value tensors.
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
        // so they become rows of one matmul against that head's keys. The used positions are
        // copied out contiguous: CUDA's batched matmul refuses the capacity's stride.
        let group = n_head / n_kv;
        let total = self.len + n;
        let kv = self.layer(layer)?;
        let read = |t: &Tensor| -> candle_core::Result<Tensor> {
            // [n_kv, total, d], in the queries' type.
            t.narrow(1, 0, total)?.contiguous()?.to_dtype(q.dtype())
        };
        let (k, v) = (read(&kv.k)?, read(&kv.v)?);

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

/// A step's keys or values, `[rows, n_kv_head, head_dim]`, as the caches hold them:
/// `[n_kv_head, rows, head_dim]` of `dtype`.
pub(super) fn head_major(t: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    t.to_dtype(dtype)?.transpose(0, 1)?.contiguous()
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
