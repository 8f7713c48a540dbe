//! Reading a llama-family model's tensors out of a GGUF file: shape checks against the config,
//! the optional re-quantisation of slow formats to Q8_0, and the fusion of projections that
//! share an input (q/k/v, gate/up) into one matrix so that each costs one matmul call.
//!
//! Must not contain the forward pass: it only builds the read-only `Weights`.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use super::config::LlamaConfig;
use super::int8_matmul::Int8Matrix;
use crate::engine::EngineError;

/// A weight matrix applied as `x · Wᵀ`: by `int8_matmul` where it applies (Q8_0 on an x86 CPU
/// with AVX2), else by candle.
pub(super) enum Matmul {
    Candle(QMatMul),
    Int8(Int8Matrix),
}

impl Matmul {
    /// `x`: `[rows, in]`; returns `[rows, out]`.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Matmul::Candle(m) => m.forward(x),
            Matmul::Int8(m) => m.forward(x),
        }
    }
}

/// A matrix applied as `x · Wᵀ` (+ bias), possibly several matrices stacked by rows whose
/// outputs come out side by side on the last dimension.
pub(super) struct Linear {
    /// One entry when the parts could be fused (the usual case), else one per part.
    parts: Vec<Matmul>,
    bias: Option<Tensor>,
}

impl Linear {
    /// `x`: `[rows, in]`, contiguous (the quantized matmul refuses strided inputs).
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match self.parts.as_slice() {
            [single] => single.forward(x)?,
            parts => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&outs, 1)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

pub(super) struct Layer {
    pub attn_norm: Tensor,
    /// Rows: q (`n_head · head_dim`), then k and v (`n_kv_head · head_dim` each).
    pub qkv: Linear,
    pub attn_output: Matmul,
    pub ffn_norm: Tensor,
    /// Rows: gate (`feed_forward_length`), then up.
    pub gate_up: Linear,
    pub down: Matmul,
}

pub(super) struct Weights {
    /// Token embeddings, kept quantized: rows are dequantized on lookup.
    pub token_embd: QMatMul,
    pub output_norm: Tensor,
    /// `output.weight`, or the token embeddings when the model ties them (SmolLM2).
    pub output: Matmul,
    pub layers: Vec<Layer>,
    /// Per-frequency divisors of the RoPE angles (`rope_freqs.weight`, Llama 3.1 scaling).
    pub rope_freq_factors: Option<Vec<f32>>,
}

/// How weight matrices are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precision {
    /// As the file stores them.
    AsStored,
    /// Slow formats re-quantized to Q8_0 (see `worth_requantizing`).
    Q8_0,
    /// Dequantized to f32: no activation quantization in the matmuls, so the output is a
    /// smooth function of the input, which lets tests compare two computations closely.
    #[cfg(test)]
    F32,
}

/// Formats without a SIMD dot-product kernel in candle 0.11 on x86 (Q4_1, Q5_*), plus Q4_0:
/// Q8_0 has the fastest kernel there and holds their values with less rounding error.
fn worth_requantizing(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    )
}

struct Reader<'a> {
    content: &'a Content,
    file: &'a mut File,
    path: &'a Path,
    device: &'a Device,
    precision: Precision,
}

impl Reader<'_> {
    fn error(&self, reason: impl std::fmt::Display) -> EngineError {
        EngineError::load(self.path, reason)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads a tensor after checking its shape, so that nothing sized by a corrupt header is
    /// allocated and no later op meets an unexpected shape.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, EngineError> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.error(format!("tensor {name} is missing")));
        };
        if info.shape.dims() != shape {
            return Err(self.error(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                info.shape.dims()
            )));
        }
        info.read(self.file, self.content.tensor_data_offset, self.device)
            .map_err(|e| self.error(format!("tensor {name}: {e}")))
    }

    /// A weight matrix, converted to the precision asked for when that is useful.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QTensor, EngineError> {
        let t = self.tensor(name, &[rows, cols])?;
        let target = match self.precision {
            Precision::AsStored => return Ok(t),
            Precision::Q8_0
                if worth_requantizing(t.dtype())
                    && cols.is_multiple_of(GgmlDType::Q8_0.block_size()) =>
            {
                GgmlDType::Q8_0
            }
            Precision::Q8_0 => return Ok(t),
            #[cfg(test)]
            Precision::F32 => GgmlDType::F32,
        };
        t.dequantize(self.device)
            .and_then(|w| QTensor::quantize(&w, target))
            .map_err(|e| self.error(format!("converting {name} to {target:?}: {e}")))
    }

    /// A 1-d tensor (norm weight, bias) as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor, EngineError> {
        let t = self.tensor(name, &[len])?;
        t.dequantize(self.device)
            .map_err(|e| self.error(format!("tensor {name}: {e}")))
    }

    fn qmatmul(&self, name: &str, t: QTensor) -> Result<QMatMul, EngineError> {
        QMatMul::from_qtensor(t).map_err(|e| self.error(format!("tensor {name}: {e}")))
    }

    /// A weight matrix for the forward pass: `int8_matmul`'s layout where it applies.
    fn matmul(&self, name: &str, t: QTensor) -> Result<Matmul, EngineError> {
        match Int8Matrix::from_qtensor(&t) {
            Ok(Some(m)) => Ok(Matmul::Int8(m)),
            Ok(None) => Ok(Matmul::Candle(self.qmatmul(name, t)?)),
            Err(e) => Err(self.error(format!("tensor {name}: {e}"))),
        }
    }

    /// Stacks matrices that multiply the same input, so one call computes them all.
    fn linear(
        &mut self,
        names: &[&str],
        parts: Vec<QTensor>,
        bias: Option<Tensor>,
    ) -> Result<Linear, EngineError> {
        let what = names.join("+");
        let parts = match concat_rows(&parts, self.device) {
            Ok(Some(fused)) => vec![self.matmul(&what, fused)?],
            Ok(None) => parts
                .into_iter()
                .zip(names)
                .map(|(t, name)| self.matmul(name, t))
                .collect::<Result<_, _>>()?,
            Err(e) => return Err(self.error(format!("fusing {what}: {e}"))),
        };
        Ok(Linear { parts, bias })
    }
}

/// The matrices stacked by rows, or None when their formats or widths differ. Quantized rows
/// are whole blocks, so stacking is a concatenation of the raw data.
fn concat_rows(parts: &[QTensor], device: &Device) -> candle_core::Result<Option<QTensor>> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let dtype = first.dtype();
    let (_, cols) = first.shape().dims2()?;
    let mut rows = 0;
    for p in parts {
        let (r, c) = p.shape().dims2()?;
        if p.dtype() != dtype || c != cols {
            return Ok(None);
        }
        rows += r;
    }
    let mut data = Vec::new();
    for p in parts {
        data.extend_from_slice(&p.data()?);
    }
    let storage = QStorage::from_data(Cow::Owned(data), device, dtype)?;
    Ok(Some(QTensor::new(storage, (rows, cols))?))
}

pub(super) fn load(
    config: &LlamaConfig,
    content: &Content,
    file: &mut File,
    path: &Path,
    device: &Device,
    precision: Precision,
) -> Result<Weights, EngineError> {
    let mut r = Reader {
        content,
        file,
        path,
        device,
        precision,
    };
    let hidden = config.embedding_length;
    let q_dim = config.n_head * config.head_dim;
    let kv_dim = config.n_kv_head * config.head_dim;
    let ffn = config.feed_forward_length;

    let token_embd = r.matrix("token_embd.weight", config.vocab_size, hidden)?;
    let tied_output = match r.has("output.weight") {
        true => None,
        false => Int8Matrix::from_qtensor(&token_embd)
            .map_err(|e| r.error(format!("tensor token_embd.weight: {e}")))?,
    };
    let token_embd = r.qmatmul("token_embd.weight", token_embd)?;
    let output = if r.has("output.weight") {
        let t = r.matrix("output.weight", config.vocab_size, hidden)?;
        r.matmul("output.weight", t)?
    } else {
        match tied_output {
            Some(m) => Matmul::Int8(m),
            None => Matmul::Candle(token_embd.clone()),
        }
    };
    let output_norm = r.vector("output_norm.weight", hidden)?;
    let rope_freq_factors = if r.has("rope_freqs.weight") {
        let t = r.vector("rope_freqs.weight", config.head_dim / 2)?;
        let factors = t
            .to_vec1::<f32>()
            .map_err(|e| r.error(format!("tensor rope_freqs.weight: {e}")))?;
        if factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(r.error("tensor rope_freqs.weight holds a non-positive factor"));
        }
        Some(factors)
    } else {
        None
    };

    let mut layers = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let name = |part: &str| format!("blk.{i}.{part}");
        let (q, k, v) = (
            name("attn_q.weight"),
            name("attn_k.weight"),
            name("attn_v.weight"),
        );
        let qkv_parts = vec![
            r.matrix(&q, q_dim, hidden)?,
            r.matrix(&k, kv_dim, hidden)?,
            r.matrix(&v, kv_dim, hidden)?,
        ];
        // Qwen2 has biases on q, k and v; llama files may too (they are optional there).
        let bias_names = [
            name("attn_q.bias"),
            name("attn_k.bias"),
            name("attn_v.bias"),
        ];
        let qkv_bias = if bias_names.iter().any(|b| r.has(b)) {
            let biases = [
                r.vector(&bias_names[0], q_dim)?,
                r.vector(&bias_names[1], kv_dim)?,
                r.vector(&bias_names[2], kv_dim)?,
            ];
            Some(Tensor::cat(&biases, 0).map_err(|e| r.error(format!("{}: {e}", q)))?)
        } else if config.architecture == super::config::Architecture::Qwen2 {
            return Err(r.error(format!("tensor {} is missing", bias_names[0])));
        } else {
            None
        };
        let qkv = r.linear(&[&q, &k, &v], qkv_parts, qkv_bias)?;

        let wo_name = name("attn_output.weight");
        let attn_output = r.matrix(&wo_name, hidden, q_dim)?;
        let attn_output = r.matmul(&wo_name, attn_output)?;

        let (gate, up) = (name("ffn_gate.weight"), name("ffn_up.weight"));
        let gate_up_parts = vec![r.matrix(&gate, ffn, hidden)?, r.matrix(&up, ffn, hidden)?];
        let gate_up = r.linear(&[&gate, &up], gate_up_parts, None)?;

        let down_name = name("ffn_down.weight");
        let down = r.matrix(&down_name, hidden, ffn)?;
        let down = r.matmul(&down_name, down)?;

        layers.push(Layer {
            attn_norm: r.vector(&name("attn_norm.weight"), hidden)?,
            qkv,
            attn_output,
            ffn_norm: r.vector(&name("ffn_norm.weight"), hidden)?,
            gate_up,
            down,
        });
    }

    Ok(Weights {
        token_embd,
        output_norm,
        output,
        layers,
        rope_freq_factors,
    })
}
