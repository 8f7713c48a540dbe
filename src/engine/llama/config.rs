//! The hyper-parameters of a llama-family model, read from GGUF metadata under the
//! architecture's key prefix (`llama.block_count`, `qwen2.attention.head_count`, …) and checked
//! for consistency, so that the forward pass can rely on them.
//!
//! Must not read tensors: `weights` does, checking their shapes against this config.

use candle_core::quantized::gguf_file::{Content, Value};

/// The model families this forward pass implements. They share the block structure
/// (RMSNorm → attention with RoPE → RMSNorm → SwiGLU MLP) and differ in details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama, Mistral, SmolLM2 (`general.architecture = llama`).
    Llama,
    /// Qwen2 and Qwen2.5 (`qwen2`): biases on the q/k/v projections, NEOX-style RoPE.
    Qwen2,
}

impl Architecture {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The metadata key prefix, which is the GGUF architecture name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    /// How RoPE pairs the dimensions of a head, as llama.cpp does for each architecture:
    /// GGUF llama weights are permuted for adjacent pairs (2i, 2i+1); Qwen2 keeps the
    /// Hugging Face layout, pairing i with i + d/2.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Self::Llama => RopeStyle::Interleaved,
            Self::Qwen2 => RopeStyle::Halves,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotates the pairs (2i, 2i + 1) (ggml's "normal" RoPE).
    Interleaved,
    /// Rotates the pairs (i, i + d/2) (ggml's "NEOX" RoPE).
    Halves,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub embedding_length: usize,
    pub feed_forward_length: usize,
    /// The longest sequence (prompt plus generated tokens) the model was trained for; the
    /// forward pass refuses positions at or beyond it.
    pub context_length: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f32,
}

impl LlamaConfig {
    /// Reads and checks the hyper-parameters. The error is a reason without the file name;
    /// the caller adds it.
    pub fn from_gguf(content: &Content) -> Result<Self, String> {
        let arch_name = match content.metadata.get("general.architecture") {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err("metadata general.architecture is not a string".into()),
            None => return Err("metadata general.architecture is missing".into()),
        };
        let architecture = Architecture::parse(arch_name).ok_or_else(|| {
            format!(
                "unsupported architecture `{arch_name}`: this engine runs llama-family models \
                 (`llama`, `qwen2`)"
            )
        })?;
        let md = Metadata {
            content,
            prefix: architecture.name(),
        };

        let embedding_length = md.positive("embedding_length")?;
        let n_layer = md.positive("block_count")?;
        let feed_forward_length = md.positive("feed_forward_length")?;
        let context_length = md.positive("context_length")?;
        let n_head = md.positive("attention.head_count")?;
        let n_kv_head = md
            .optional_positive("attention.head_count_kv")?
            .unwrap_or(n_head);
        let rms_eps = md.float("attention.layer_norm_rms_epsilon")?;
        // The default of llama.cpp and of the original Llama when the key is absent.
        let rope_freq_base = md.optional_float("rope.freq_base")?.unwrap_or(10_000.0);

        if !embedding_length.is_multiple_of(n_head) && md.key_absent("attention.key_length") {
            return Err(format!(
                "embedding_length {embedding_length} is not a multiple of head_count {n_head}"
            ));
        }
        let head_dim = md
            .optional_positive("attention.key_length")?
            .unwrap_or(embedding_length / n_head);
        if let Some(value_length) = md.optional_positive("attention.value_length")?
            && value_length != head_dim
        {
            return Err(format!(
                "attention.value_length {value_length} differs from key_length {head_dim}, \
                 which this engine does not support"
            ));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(format!(
                "head dimension {head_dim} is odd: RoPE needs pairs"
            ));
        }
        if let Some(rope_dim) = md.optional_positive("rope.dimension_count")?
            && rope_dim != head_dim
        {
            return Err(format!(
                "rope.dimension_count {rope_dim} differs from the head dimension {head_dim}: \
                 partial rotary embeddings are not supported"
            ));
        }
        if !n_head.is_multiple_of(n_kv_head) {
            return Err(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_kv_head}"
            ));
        }
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(format!(
                "rope.freq_base {rope_freq_base} is not a positive number"
            ));
        }
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(format!(
                "layer_norm_rms_epsilon {rms_eps} is not a non-negative number"
            ));
        }

        // The vocabulary is the row count of the embedding matrix (the metadata key is
        // optional in GGUF and often absent).
        let vocab_size = match content.tensor_infos.get("token_embd.weight") {
            Some(info) => match info.shape.dims() {
                [rows, cols] if *cols == embedding_length && *rows > 0 => *rows,
                dims => {
                    return Err(format!(
                        "tensor token_embd.weight has shape {dims:?}, expected [vocab, \
                         {embedding_length}]"
                    ));
                }
            },
            None => return Err("tensor token_embd.weight is missing".into()),
        };

        Ok(Self {
            architecture,
            vocab_size,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            embedding_length,
            feed_forward_length,
            context_length,
            rope_freq_base,
            rms_eps,
        })
    }
}

/// Typed access to `<arch>.<key>` metadata, accepting any integer or float encoding (GGUF
/// writers differ: u32, i32 or u64 for the same key).
struct Metadata<'a> {
    content: &'a Content,
    prefix: &'static str,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> (String, Option<&Value>) {
        let full = format!("{}.{key}", self.prefix);
        let value = self.content.metadata.get(&full);
        (full, value)
    }

    fn key_absent(&self, key: &str) -> bool {
        self.get(key).1.is_none()
    }

    fn optional_positive(&self, key: &str) -> Result<Option<usize>, String> {
        let (full, value) = self.get(key);
        let Some(value) = value else {
            return Ok(None);
        };
        let n = match value {
            Value::U8(v) => Some(u64::from(*v)),
            Value::U16(v) => Some(u64::from(*v)),
            Value::U32(v) => Some(u64::from(*v)),
            Value::U64(v) => Some(*v),
            Value::I8(v) => u64::try_from(*v).ok(),
            Value::I16(v) => u64::try_from(*v).ok(),
            Value::I32(v) => u64::try_from(*v).ok(),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => return Err(format!("metadata {full} is not an integer: {value:?}")),
        };
        // Anything beyond u32 is a corrupt file, not a model: refusing it keeps every size
        // product computed from these values far from overflow.
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(format!(
                "metadata {full} = {value:?} is not a positive 32-bit integer"
            )),
        }
    }

    fn positive(&self, key: &str) -> Result<usize, String> {
        self.optional_positive(key)?
            .ok_or_else(|| format!("metadata {}.{key} is missing", self.prefix))
    }

    fn optional_float(&self, key: &str) -> Result<Option<f32>, String> {
        let (full, value) = self.get(key);
        match value {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(value) => Err(format!("metadata {full} is not a float: {value:?}")),
        }
    }

    fn float(&self, key: &str) -> Result<f32, String> {
        self.optional_float(key)?
            .ok_or_else(|| format!("metadata {}.{key} is missing", self.prefix))
    }
}
