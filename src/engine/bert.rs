//! The BERT encoder's forward pass for embedding models: weights from a safetensors tensor map,
//! token ids and an attention mask in, one hidden state per token out.
//!
//! It is written for inference speed on CPU rather than taken from candle-transformers: the
//! query, key and value projections are one matmul, the attention scale is folded into the
//! query weights at load, softmax is candle's fused last-dimension kernel, and the
//! feed-forward activation runs on all cores. Must not contain tokenization, pooling or any
//! knowledge of model directories: `embedder` owns those.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor, bail};
use serde::Deserialize;

/// The fields of a Hugging Face BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}

/// BERT's published default.
fn default_layer_norm_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// What this forward pass can run: BERT with absolute positions and exact (erf) GELU.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(kind) = &self.model_type
            && kind != "bert"
        {
            return Err(format!(
                "model_type `{kind}` is not supported (only `bert`)"
            ));
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            return Err(format!(
                "position_embedding_type `{kind}` is not supported (only `absolute`)"
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

struct Linear {
    /// `(out, in)`, as stored; used transposed.
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x` is `(tokens, in)`; the result is `(tokens, out)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    /// Query, key and value stacked: `(3 * hidden, hidden)`, queries pre-scaled.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

pub(crate) struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Every input is a single segment, so only the first token-type row is ever added.
    token_type: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    max_positions: usize,
}

/// Takes named tensors out of a safetensors map, checking their shapes, whichever of the
/// common prefixes (`bert.`, none) the checkpoint uses.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        Weights { tensors, prefix }
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let Some(tensor) = self.tensors.remove(&full) else {
            bail!("the tensor `{full}` is missing")
        };
        if tensor.dims() != shape {
            bail!(
                "the tensor `{full}` has shape {:?}, the config implies {shape:?}",
                tensor.dims()
            )
        }
        tensor.to_dtype(DType::F32)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.take(&format!("{name}.weight"), &[out, inp])?,
            bias: self.take(&format!("{name}.bias"), &[out])?,
        })
    }

    fn layer_norm(&mut self, name: &str, size: usize, eps: f64) -> Result<LayerNorm> {
        // Checkpoints converted from TensorFlow name these gamma and beta.
        let (w, b) = if self
            .tensors
            .contains_key(&format!("{}{name}.gamma", self.prefix))
        {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            weight: self.take(&format!("{name}.{w}"), &[size])?,
            bias: self.take(&format!("{name}.{b}"), &[size])?,
            eps: eps as f32,
        })
    }
}

impl Bert {
    /// `tensors` come from the checkpoint, already on the device to run on.
    pub fn load(tensors: HashMap<String, Tensor>, config: &BertConfig) -> Result<Self> {
        let mut w = Weights::new(tensors);
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_dim = h / heads;
        let eps = config.layer_norm_eps;
        let word_embeddings =
            w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position_embeddings = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_types = w.take_any_rows("embeddings.token_type_embeddings.weight", h)?;
        let token_type = token_types.get(0)?;
        let embeddings_norm = w.layer_norm("embeddings.LayerNorm", h, eps)?;
        // Scaling the query projection once here replaces a division of every attention score.
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = w.linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = w.linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = w.linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = Linear {
                weight: Tensor::cat(&[&(q.weight * scale)?, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&(q.bias * scale)?, &k.bias, &v.bias], 0)?,
            };
            layers.push(Layer {
                qkv,
                attention_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                ffn_in: w.linear(
                    &format!("{p}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?,
                ffn_out: w.linear(&format!("{p}.output.dense"), h, config.intermediate_size)?,
                ffn_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Bert {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
            heads,
            head_dim,
            hidden: h,
            max_positions: config.max_position_embeddings,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// `ids` is `(batch, seq)` u32; `mask` is `(batch, seq)` with 1 for tokens and 0 for
    /// padding, or `None` when no row is padded. Returns `(batch, seq, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        if seq > self.max_positions {
            bail!(
                "{seq} tokens exceed the model's {} positions",
                self.max_positions
            )
        }
        let positions = self
            .position_embeddings
            .narrow(0, 0, seq)?
            .broadcast_add(&self.token_type)?;
        let x = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, self.hidden))?
            .broadcast_add(&positions)?;
        let mut x = self
            .embeddings_norm
            .forward(&x)?
            .reshape((batch * seq, self.hidden))?;
        // 0 where attending is allowed, the most negative float where the key is padding: as in
        // transformers, so softmax gives padding exactly zero weight.
        let mask_bias = match mask {
            Some(mask) => {
                let keep = mask.to_dtype(DType::F32)?;
                Some(((keep - 1.0)? * f64::from(f32::MAX))?.reshape((batch, 1, 1, seq))?)
            }
            None => None,
        };
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, batch, seq, mask_bias.as_ref())?;
        }
        x.reshape((batch, seq, self.hidden))
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        batch: usize,
        seq: usize,
        mask_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (heads, head_dim) = (self.heads, self.head_dim);
        // (tokens, 3h) → (3, batch, heads, seq, head_dim) in one copy; q, k and v are then
        // contiguous slices of it.
        let qkv = layer
            .qkv
            .forward(x)?
            .reshape((batch, seq, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask_bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * seq, self.hidden))?;
        let attended = layer.attention_out.forward(&context)?;
        let x = layer.attention_norm.forward(&(attended + x)?)?;
        let inner = layer.ffn_in.forward(&x)?.gelu_erf()?;
        let out = layer.ffn_out.forward(&inner)?;
        layer.ffn_norm.forward(&(out + x)?)
    }
}

impl Weights {
    /// The token-type table, whose row count varies between checkpoints (2 for BERT).
    fn take_any_rows(&mut self, name: &str, hidden: usize) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let Some(tensor) = self.tensors.remove(&full) else {
            bail!("the tensor `{full}` is missing")
        };
        match tensor.dims() {
            [rows, h] if *rows > 0 && *h == hidden => tensor.to_dtype(DType::F32),
            dims => bail!("the tensor `{full}` has shape {dims:?}, expected (n, {hidden})"),
        }
    }
}
