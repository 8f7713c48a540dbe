//! The llama-family forward pass over quantized GGUF weights, built for continuous batching:
//! weights are shared read-only, each sequence owns a [`SequenceCache`], and one call can
//! advance many sequences at different positions.
//!
//! The pass works on *rows*: every token being processed is one row of a `[rows, hidden]`
//! activation, whatever sequence it belongs to. Weight matmuls (q/k/v, attention output, MLP,
//! output head) run once over all rows, which reads each weight once per step however many
//! sequences are batched; only attention is done per sequence, against its own cache. RoPE
//! angles are computed per row from that row's own position (no table: any position below
//! the model's `context_length` works, at the cost of a few sin/cos per row and step).
//!
//! Attention has two implementations: `cpu_attention` (the CPU default, one pass over all
//! sequences on candle's matmul thread pool) and candle tensor ops in `cache.rs` (any device).
//! On a 2-core CPU the tensor-op path decodes ~20× slower: its f32 matmuls and softmax run on
//! rayon, whose threads fight candle's spinning matmul pool for the cores.
//!
//! Must not contain sampling, tokenization or scheduling policy: the scheduler drives this.

mod cache;
mod config;
mod cpu_attention;
mod elementwise;
mod int8_matmul;
mod weights;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{D, DType, Device, Tensor};

pub use cache::SequenceCache;
pub use config::{Architecture, LlamaConfig, RopeStyle};

use crate::engine::EngineError;

/// A loaded model. Immutable once loaded: share it between threads with `Arc`.
pub struct LlamaModel {
    config: LlamaConfig,
    weights: weights::Weights,
    /// `1 / base^(2i/d)` (divided by the model's frequency factors, if any), one per pair of
    /// head dimensions.
    inv_freqs: Vec<f32>,
    device: Device,
    /// Attention through `cpu_attention` (CPU) rather than candle tensor ops (any device).
    /// Tests switch it to compare the two.
    cpu_attention: bool,
    /// What new caches store: f16 on the CPU (see `cache.rs`), f32 elsewhere. Tests set f32
    /// to compare attention implementations exactly.
    kv_dtype: DType,
}

/// A run of rows belonging to one sequence: its cache and how many new tokens it gets.
struct Segment<'a> {
    cache: &'a mut SequenceCache,
    rows: usize,
}

impl LlamaModel {
    /// Opens and parses a GGUF file and loads the model in it. Every failure, a missing file
    /// included, is an [`EngineError::Load`] naming the file.
    pub fn open(path: &Path, device: &Device, requantize: bool) -> Result<Self, EngineError> {
        let mut file = File::open(path).map_err(|e| EngineError::load(path, e))?;
        let content = Content::read(&mut file)
            .map_err(|e| EngineError::load(path, format!("not a readable GGUF file: {e}")))?;
        Self::load(&content, &mut file, path, device, requantize)
    }

    /// Loads weights from parsed GGUF content. `requantize` converts Q4_0/Q4_1/Q5_x weight
    /// matrices to Q8_0 at load on the CPU: candle has no SIMD kernel for most of them on x86,
    /// and Q8_0 decodes about three times faster than Q4_1 (at twice the memory). On a GPU it
    /// does nothing: candle's CUDA kernels take every format, and the 4-bit weights are half
    /// the memory traffic. (candle 0.11's quantizing of a CUDA tensor also leaves the buffer's
    /// tail padding unset, which its prompt-sized kernels read: garbage logits.)
    pub fn load(
        content: &Content,
        file: &mut File,
        path: &Path,
        device: &Device,
        requantize: bool,
    ) -> Result<Self, EngineError> {
        let precision = match Self::requantizes(requantize, device) {
            true => weights::Precision::Q8_0,
            false => weights::Precision::AsStored,
        };
        Self::load_as(content, file, path, device, precision)
    }

    /// Whether [`LlamaModel::load`] re-quantizes: when asked to, on the CPU only.
    pub fn requantizes(requested: bool, device: &Device) -> bool {
        requested && device.is_cpu()
    }

    fn load_as(
        content: &Content,
        file: &mut File,
        path: &Path,
        device: &Device,
        precision: weights::Precision,
    ) -> Result<Self, EngineError> {
        let config = LlamaConfig::from_gguf(content).map_err(|e| EngineError::load(path, e))?;
        let weights = weights::load(&config, content, file, path, device, precision)?;
        let half = config.head_dim / 2;
        let mut inv_freqs: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_freq_base
                    .powf(2.0 * i as f32 / config.head_dim as f32)
            })
            .collect();
        if let Some(factors) = &weights.rope_freq_factors {
            for (freq, factor) in inv_freqs.iter_mut().zip(factors) {
                *freq /= factor;
            }
        }
        Ok(Self {
            config,
            weights,
            inv_freqs,
            device: device.clone(),
            cpu_attention: device.is_cpu(),
            kv_dtype: match device.is_cpu() {
                true => DType::F16,
                false => DType::F32,
            },
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn new_cache(&self) -> SequenceCache {
        SequenceCache::new(
            self.config.n_layer,
            self.config.n_kv_head,
            self.config.head_dim,
            self.kv_dtype,
        )
    }

    /// Runs a prompt chunk for one sequence, appending to its cache; returns the logits of the
    /// last position (`vocab_size` values). A long prompt may be fed in several chunks.
    pub fn prefill(
        &self,
        tokens: &[u32],
        cache: &mut SequenceCache,
    ) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt chunk".into()));
        }
        let rows = tokens.len();
        let mut logits = self.forward(tokens, &mut [Segment { cache, rows }])?;
        logits
            .pop()
            .ok_or_else(|| EngineError::Inference("no logits for the prompt".into()))
    }

    /// One decode step for several sequences at once: `tokens[i]` is the next token of the
    /// sequence owning `caches[i]`. The sequences may be at different positions. Returns one
    /// logits vector per sequence, in order.
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut SequenceCache],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let chunks: Vec<&[u32]> = tokens.chunks(1).collect();
        self.step(&chunks, caches)
    }

    /// One forward pass over several sequences, each fed any number of new tokens:
    /// `chunks[i]` (a prompt chunk, or the one token just sampled) extends the sequence owning
    /// `caches[i]`. Returns the logits after each chunk's last token, in order. This is what
    /// lets a scheduler prefill a new prompt in the same pass that decodes running sequences.
    pub fn step(
        &self,
        chunks: &[&[u32]],
        caches: &mut [&mut SequenceCache],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if chunks.len() != caches.len() {
            return Err(EngineError::InvalidRequest(format!(
                "{} token chunks for {} sequences",
                chunks.len(),
                caches.len()
            )));
        }
        if chunks.iter().any(|c| c.is_empty()) {
            return Err(EngineError::InvalidRequest("empty token chunk".into()));
        }
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<u32> = chunks.concat();
        let mut segments: Vec<Segment<'_>> = caches
            .iter_mut()
            .zip(chunks)
            .map(|(cache, chunk)| Segment {
                cache,
                rows: chunk.len(),
            })
            .collect();
        self.forward(&tokens, &mut segments)
    }

    /// Checks a step before touching any cache, so that a refused step leaves every
    /// sequence as it was.
    fn check(&self, tokens: &[u32], segments: &[Segment<'_>]) -> Result<(), EngineError> {
        let c = &self.config;
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {t} is outside the vocabulary ({} tokens)",
                c.vocab_size
            )));
        }
        for s in segments {
            if !s.cache.fits(c.n_layer, c.n_kv_head, c.head_dim) {
                return Err(EngineError::InvalidRequest(
                    "the sequence cache belongs to another model".into(),
                ));
            }
            if s.cache.len() + s.rows > c.context_length {
                return Err(EngineError::InvalidRequest(format!(
                    "the sequence would reach {} tokens, beyond the model's context of {}",
                    s.cache.len() + s.rows,
                    c.context_length
                )));
            }
        }
        Ok(())
    }

    /// Runs all segments' new tokens (`tokens` in segment order) through the model; returns
    /// the logits of each segment's last row. Caches advance only when the whole step
    /// succeeds.
    fn forward(
        &self,
        tokens: &[u32],
        segments: &mut [Segment<'_>],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.check(tokens, segments)?;
        let c = &self.config;
        let dev = &self.device;
        let rows = tokens.len();
        let (n_head, n_kv, head_dim) = (c.n_head, c.n_kv_head, c.head_dim);
        let q_dim = n_head * head_dim;
        let kv_dim = n_kv * head_dim;
        let ffn = c.feed_forward_length;
        let scale = 1.0 / (head_dim as f64).sqrt();

        for s in segments.iter_mut() {
            s.cache.reserve(s.rows, dev)?;
        }
        let (cos, sin) = self.rope_angles(segments)?;
        let masks = segments
            .iter()
            .map(|s| match s.rows {
                n if n == 1 || self.cpu_attention => Ok(None),
                n => cache::causal_mask(s.cache.len(), n, dev).map(Some),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;

        let ids = Tensor::from_slice(tokens, rows, dev)?;
        let mut x = self.weights.token_embd.embedding(&ids)?; // [rows, hidden]
        for (l, layer) in self.weights.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let qkv = layer.qkv.forward(&h)?; // [rows, q_dim + 2 kv_dim]
            // Each row is a "batch" of one position for the RoPE kernel, so that every row
            // gets its own angles (cos/sin are [rows, 1, head_dim/2]).
            let q = self.rope(&qkv.narrow(1, 0, q_dim)?, n_head, &cos, &sin)?;
            let k = self.rope(&qkv.narrow(1, q_dim, kv_dim)?, n_kv, &cos, &sin)?;
            let v = qkv
                .narrow(1, q_dim + kv_dim, kv_dim)?
                .contiguous()?
                .reshape((rows, n_kv, head_dim))?;

            // Converted to the caches' layout once for the whole step, not per sequence.
            let k = cache::head_major(&k, self.kv_dtype)?;
            let v = cache::head_major(&v, self.kv_dtype)?;
            let mut start = 0;
            for s in segments.iter() {
                s.cache.write(
                    l,
                    &k.narrow(1, start, s.rows)?,
                    &v.narrow(1, start, s.rows)?,
                )?;
                start += s.rows;
            }
            let attn = if self.cpu_attention {
                self.attention_cpu(l, &q, segments, scale)?
            } else {
                let mut outs = Vec::with_capacity(segments.len());
                let mut start = 0;
                for (s, mask) in segments.iter().zip(&masks) {
                    let q = q.narrow(0, start, s.rows)?;
                    outs.push(s.cache.attend(l, &q, mask.as_ref(), scale)?);
                    start += s.rows;
                }
                Tensor::cat(&outs, 0)?
            };
            x = (x + layer.attn_output.forward(&attn)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let gate_up = layer.gate_up.forward(&h)?; // [rows, 2 ffn]
            let act = match dev.is_cpu() {
                true => {
                    let (storage, layout) = gate_up.storage_and_layout();
                    let act = elementwise::swiglu(cpu_slice(&storage, layout)?, ffn);
                    Tensor::from_vec(act, (rows, ffn), dev)?
                }
                false => {
                    (candle_nn::ops::silu(&gate_up.narrow(1, 0, ffn)?)?
                        * gate_up.narrow(1, ffn, ffn)?)?
                }
            };
            x = (x + layer.down.forward(&act)?)?;
        }

        // Only each segment's last row is needed: the output head is the largest matmul.
        let mut last_rows = Vec::with_capacity(segments.len());
        let mut end = 0;
        for s in segments.iter() {
            end += s.rows;
            last_rows.push((end - 1) as u32);
        }
        let x = if last_rows.len() == rows {
            x
        } else {
            x.index_select(&Tensor::new(last_rows.as_slice(), dev)?, 0)?
        };
        let x = candle_nn::ops::rms_norm(&x, &self.weights.output_norm, c.rms_eps)?;
        let logits = self.weights.output.forward(&x)?.to_dtype(DType::F32)?;
        let logits = logits.to_vec2::<f32>()?;

        for s in segments.iter_mut() {
            s.cache.advance(s.rows);
        }
        Ok(logits)
    }

    /// Attention of every segment's new rows through `cpu_attention`, reading the caches in
    /// place. `q`: `[rows, n_head, head_dim]`; returns `[rows, n_head · head_dim]`.
    fn attention_cpu(
        &self,
        layer: usize,
        q: &Tensor,
        segments: &[Segment<'_>],
        scale: f64,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let kvs = segments
            .iter()
            .map(|s| s.cache.layer_kv(layer))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (q_storage, q_layout) = q.storage_and_layout();
        let held = kvs
            .iter()
            .map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout()))
            .collect::<Vec<_>>();
        let shape = cpu_attention::Shape {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            scale: scale as f32,
        };
        let q_data = cpu_slice::<f32>(&q_storage, q_layout)?;
        // Every cache of a model holds the same type (`kv_dtype` at its creation).
        let held: Vec<[(&candle_core::Storage, &candle_core::Layout); 2]> = held
            .iter()
            .map(|((ks, kl), (vs, vl))| [(&**ks, *kl), (&**vs, *vl)])
            .collect();
        fn parts<'a, T: cpu_attention::KvValue + candle_core::WithDType>(
            segments: &[Segment<'_>],
            held: &[[(&'a candle_core::Storage, &'a candle_core::Layout); 2]],
        ) -> candle_core::Result<Vec<cpu_attention::SegmentKv<'a, T>>> {
            segments
                .iter()
                .zip(held)
                .map(|(s, [(ks, kl), (vs, vl)])| {
                    Ok(cpu_attention::SegmentKv {
                        k: cpu_slice(ks, kl)?,
                        v: cpu_slice(vs, vl)?,
                        start: s.cache.len(),
                        rows: s.rows,
                    })
                })
                .collect()
        }
        let out = match segments.first().map(|s| s.cache.dtype()) {
            Some(DType::F16) => {
                cpu_attention::attention(q_data, &parts::<half::f16>(segments, &held)?, &shape)
            }
            _ => cpu_attention::attention(q_data, &parts::<f32>(segments, &held)?, &shape),
        };
        let rows = q.dim(0)?;
        Tensor::from_vec(out, (rows, c.n_head * c.head_dim), &self.device)
    }

    /// cos and sin of every row's RoPE angles, `[rows, 1, head_dim/2]` each.
    fn rope_angles(&self, segments: &[Segment<'_>]) -> candle_core::Result<(Tensor, Tensor)> {
        let rows: usize = segments.iter().map(|s| s.rows).sum();
        let half = self.inv_freqs.len();
        let mut cos = Vec::with_capacity(rows * half);
        let mut sin = Vec::with_capacity(rows * half);
        for s in segments {
            for pos in s.cache.len()..s.cache.len() + s.rows {
                for f in &self.inv_freqs {
                    // The same f32 product as candle's table, so positions match the reference.
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (rows, 1, half), &self.device)?,
            Tensor::from_vec(sin, (rows, 1, half), &self.device)?,
        ))
    }

    /// Rotates `[rows, heads·head_dim]` by each row's angles; returns `[rows, heads, head_dim]`.
    fn rope(
        &self,
        x: &Tensor,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        let head_dim = self.config.head_dim;
        let x = x.contiguous()?.reshape((rows, heads, 1, head_dim))?;
        let y = match self.config.architecture.rope_style() {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        };
        y.squeeze(D::Minus2)
    }
}

/// The data of a contiguous tensor of `T` on the CPU.
fn cpu_slice<'a, T: candle_core::WithDType>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [T]> {
    let candle_core::Storage::Cpu(cpu) = storage else {
        candle_core::bail!("CPU attention on a tensor that is not on the CPU")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("CPU attention on a strided tensor")
    };
    cpu.as_slice::<T>()?
        .get(start..end)
        .ok_or_else(|| candle_core::Error::Msg("tensor layout beyond its storage".into()))
}
