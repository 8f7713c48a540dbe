//! A loaded chat model: its GGUF weights, tokenizer and chat template, and the scheduler
//! thread that runs it. This is what `providers::local` talks to.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use tokio::sync::mpsc::UnboundedReceiver;

use super::EngineError;
use super::llama::{LlamaModel, SequenceCache};
use super::scheduler::{DecoderModel, Detokenizer, GenEvent, Generation, Scheduler, TextStream};
use super::template::{ChatTemplate, SpecialTokens, TemplateMessage};
use super::tokenizer::{self, StreamDecoder, TextTokenizer};
use crate::config::LocalModelConfig;

pub struct ChatModel {
    name: String,
    tokenizer: Arc<TextTokenizer>,
    template: ChatTemplate,
    scheduler: Scheduler,
    default_max_tokens: usize,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ChatModel {
    /// Loads a GGUF chat model and starts its scheduler. Blocking: seconds of I/O and weight
    /// conversion. Every failure names the file at fault.
    pub fn load(
        name: &str,
        gguf: &Path,
        tokenizer_json: Option<&Path>,
        config: &LocalModelConfig,
    ) -> Result<ChatModel, EngineError> {
        let mut file = std::fs::File::open(gguf).map_err(|e| EngineError::load(gguf, e))?;
        let content = Content::read(&mut file)
            .map_err(|e| EngineError::load(gguf, format!("not a readable GGUF file: {e}")))?;
        // Tokenizer and template first: loading the weights does not need the metadata, but
        // a bad tokenizer should fail before seconds of weight conversion.
        let tokenizer = match tokenizer_json {
            Some(path) => tokenizer::from_json(path)?,
            None => tokenizer::for_gguf(&content.metadata, gguf)?,
        };
        let spell = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
        let special = || SpecialTokens {
            bos: spell(tokenizer.bos()),
            eos: spell(tokenizer.eos()),
        };
        // The model's own template; ChatML for models that ship none.
        let template = match ChatTemplate::for_gguf(&content.metadata, gguf, special())? {
            Some(t) => t,
            None => ChatTemplate::chatml(special())?,
        };
        let device = super::device()?;
        let model = LlamaModel::load(&content, &mut file, gguf, &device, config.requantize)?;
        let declared = model.config().context_length;
        let context_length = config.context_length.map_or(declared, |c| c.min(declared));
        let tokenizer = Arc::new(tokenizer);
        let decoder = Arc::new(Decoder {
            model,
            context_length,
        });
        let scheduler = Scheduler::start(
            name,
            decoder,
            Arc::new(Detok(tokenizer.clone())),
            config.max_batch,
            config.queue_capacity,
        )?;
        tracing::info!(model = name, file = %gguf.display(), context_length, requantize = LlamaModel::requantizes(config.requantize, &device),
            device = %super::device_label(&device), "chat model loaded");
        Ok(ChatModel {
            name: name.to_owned(),
            tokenizer,
            template,
            scheduler,
            default_max_tokens: config.default_max_tokens,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn context_length(&self) -> usize {
        self.scheduler.context_length()
    }

    pub fn default_max_tokens(&self) -> usize {
        self.default_max_tokens
    }

    /// The prompt tokens for a conversation, through the model's chat template.
    pub fn chat_prompt(&self, messages: &[TemplateMessage]) -> Result<Vec<u32>, EngineError> {
        let text = self.template.render(messages, true, None)?;
        // The template writes the special tokens (BOS included, where the model wants one).
        self.tokenizer.encode(&text, false)
    }

    /// The tokens of a raw prompt, with BOS where the model expects one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.tokenizer.encode(text, true)
    }

    pub fn generate(
        &self,
        generation: Generation,
    ) -> Result<UnboundedReceiver<GenEvent>, EngineError> {
        self.scheduler.submit(generation)
    }
}

struct Decoder {
    model: LlamaModel,
    context_length: usize,
}

impl DecoderModel for Decoder {
    type Cache = SequenceCache;

    fn new_cache(&self) -> SequenceCache {
        self.model.new_cache()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn step(
        &self,
        chunks: &[&[u32]],
        caches: &mut [&mut SequenceCache],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.model.step(chunks, caches)
    }
}

struct Detok(Arc<TextTokenizer>);

impl Detokenizer for Detok {
    fn start(&self) -> Box<dyn TextStream> {
        Box::new(Pieces(self.0.stream_decoder()))
    }

    fn is_end(&self, token: u32) -> bool {
        self.0.is_eos(token)
    }
}

struct Pieces(StreamDecoder);

impl TextStream for Pieces {
    fn push(&mut self, token: u32) -> Result<String, EngineError> {
        Ok(self.0.step(token))
    }
}
