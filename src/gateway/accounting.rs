//! What a reply tells the request's [`Exchange`]: the model that answered, token usage, finish
//! reasons and, for a stream, when its first content arrived and how it ended.
//!
//! Streams are always asked for their usage (`stream_options.include_usage`), since limits and
//! spend are settled on it; a client that did not ask for it does not see it: its usage-only
//! final chunk is dropped and any usage on other chunks removed.
//!
//! When the request log sampled a request's bodies, its response is kept too: a complete
//! reply as sent, a stream assembled chunk by chunk. Otherwise nothing is copied.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::openai::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Role, StreamOptions, Usage,
};
use crate::openai::completions::{Completion, CompletionRequest, Prompt};
use crate::openai::embeddings::EmbeddingResponse;
use crate::providers::{ChatStream, CompletionStream, ProviderError};
use crate::telemetry::{
    Capture, Captured, Content, Ending, Exchange, RequestParams, TokenCounts, gen_ai,
};

/// `stream_options` that ask for usage, keeping whatever else the client set.
pub(super) fn with_usage(options: Option<StreamOptions>) -> Option<StreamOptions> {
    let mut options = options.unwrap_or_default();
    options.include_usage = Some(true);
    Some(options)
}

fn counts(usage: &Usage) -> TokenCounts {
    TokenCounts {
        input: usage.prompt_tokens,
        output: usage.completion_tokens,
    }
}

/// What a chat request tells: the model asked for, whether it streams, its sampling
/// parameters, and its messages when the request's content is recorded.
pub(super) fn chat_request(exchange: &Exchange, req: &ChatCompletionRequest) {
    let content = exchange.records_content().then(|| Content {
        input: gen_ai::input_messages(req.messages.iter().map(|m| {
            (
                role_name(m.role),
                m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
            )
        })),
        output: String::new(),
    });
    exchange.update(|r| {
        r.model = Some(req.model.clone());
        r.stream = req.is_stream();
        r.params = RequestParams {
            temperature: req.temperature,
            max_tokens: req.max_output_tokens().map(u64::from),
            top_p: req.top_p,
        };
        r.content = content;
    });
}

/// The same for a legacy completion; its prompts count as user messages.
pub(super) fn completion_request(exchange: &Exchange, req: &CompletionRequest) {
    let content = exchange.records_content().then(|| Content {
        input: gen_ai::input_messages(prompt_texts(&req.prompt).map(|t| ("user", t))),
        output: String::new(),
    });
    exchange.update(|r| {
        r.model = Some(req.model.clone());
        r.stream = req.is_stream();
        r.params = RequestParams {
            temperature: req.temperature,
            max_tokens: req.max_tokens.map(u64::from),
            top_p: req.top_p,
        };
        r.content = content;
    });
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

/// The text prompts of a legacy completion (token prompts have no text to record).
fn prompt_texts(prompt: &Prompt) -> impl Iterator<Item = String> + '_ {
    let texts: &[String] = match prompt {
        Prompt::Text(t) => std::slice::from_ref(t),
        Prompt::Texts(v) => v,
        Prompt::Tokens(_) | Prompt::TokenLists(_) => &[],
    };
    texts.iter().cloned()
}

/// Keeps a complete reply for the request log, when its bodies were sampled.
fn keep<T: serde::Serialize>(exchange: &Exchange, reply: &T) {
    if exchange.captures_bodies()
        && let Ok(v) = serde_json::to_value(reply)
    {
        exchange.capture(|c| c.response = Captured::Json(v));
    }
}

pub(super) fn chat(exchange: &Exchange, reply: &ChatCompletion) {
    let reasons = reply.choices.iter().map(|c| c.finish_reason.as_ref());
    let text = || {
        reply
            .choices
            .iter()
            .filter_map(|ch| ch.message.content.as_deref())
            .collect()
    };
    complete(
        exchange,
        reply,
        &reply.model,
        reply.usage.as_ref(),
        reasons,
        text,
    );
}

pub(super) fn completion(exchange: &Exchange, reply: &Completion) {
    let reasons = reply.choices.iter().map(|c| c.finish_reason.as_ref());
    let text = || reply.choices.iter().map(|ch| ch.text.as_str()).collect();
    complete(
        exchange,
        reply,
        &reply.model,
        reply.usage.as_ref(),
        reasons,
        text,
    );
}

/// Records a whole (not streamed) generation; its text only for spans that record content.
fn complete<'a>(
    exchange: &Exchange,
    reply: &impl serde::Serialize,
    model: &str,
    usage: Option<&Usage>,
    finish_reasons: impl Iterator<Item = Option<&'a String>>,
    output_text: impl FnOnce() -> String,
) {
    keep(exchange, reply);
    let reasons: Vec<String> = finish_reasons.flatten().cloned().collect();
    exchange.update(|r| {
        if let Some(c) = &mut r.content {
            c.output = output_text();
        }
        r.response_model = Some(model.to_owned());
        r.usage = usage.map(counts);
        r.finish_reasons = reasons;
    });
}

pub(super) fn embeddings(exchange: &Exchange, reply: &EmbeddingResponse) {
    exchange.update(|r| {
        r.response_model = Some(reply.model.clone());
        r.usage = Some(TokenCounts {
            input: reply.usage.prompt_tokens,
            output: 0,
        });
    });
}

/// What the tracker needs to read from, and may strip off, one streamed item.
trait StreamItem {
    fn model(&self) -> &str;
    fn has_content(&self) -> bool;
    /// The generated text in this item, appended to `out`.
    fn text(&self, out: &mut String);
    fn finish_reasons(&self) -> impl Iterator<Item = &str>;
    /// Removes the item's usage, returning it; true when nothing else is left in it.
    fn take_usage(&mut self) -> (Option<Usage>, bool);
    fn usage(&self) -> Option<&Usage>;
    /// Adds the item to a sampled request's assembled response.
    fn capture_into(&self, capture: &mut Capture);
}

impl StreamItem for ChatCompletionChunk {
    fn model(&self) -> &str {
        &self.model
    }
    fn text(&self, out: &mut String) {
        out.extend(
            self.choices
                .iter()
                .filter_map(|c| c.delta.content.as_deref()),
        );
    }
    fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_ref().is_some_and(|t| !t.is_empty()) || c.delta.tool_calls.is_some()
        })
    }
    fn finish_reasons(&self) -> impl Iterator<Item = &str> {
        self.choices
            .iter()
            .filter_map(|c| c.finish_reason.as_deref())
    }
    fn take_usage(&mut self) -> (Option<Usage>, bool) {
        (self.usage.take(), self.choices.is_empty())
    }
    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }
    fn capture_into(&self, capture: &mut Capture) {
        capture.chat_chunk(self);
    }
}

impl StreamItem for Completion {
    fn model(&self) -> &str {
        &self.model
    }
    fn text(&self, out: &mut String) {
        out.extend(self.choices.iter().map(|c| c.text.as_str()));
    }
    fn has_content(&self) -> bool {
        self.choices.iter().any(|c| !c.text.is_empty())
    }
    fn finish_reasons(&self) -> impl Iterator<Item = &str> {
        self.choices
            .iter()
            .filter_map(|c| c.finish_reason.as_deref())
    }
    fn take_usage(&mut self) -> (Option<Usage>, bool) {
        (self.usage.take(), self.choices.is_empty())
    }
    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }
    fn capture_into(&self, capture: &mut Capture) {
        capture.completion_chunk(self);
    }
}

pub(super) fn chat_stream(
    stream: ChatStream,
    exchange: Arc<Exchange>,
    client_wants_usage: bool,
) -> ChatStream {
    track(stream, exchange, client_wants_usage)
}

pub(super) fn completion_stream(
    stream: CompletionStream,
    exchange: Arc<Exchange>,
    client_wants_usage: bool,
) -> CompletionStream {
    track(stream, exchange, client_wants_usage)
}

fn track<T: StreamItem + Send + 'static>(
    stream: Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send>>,
    exchange: Arc<Exchange>,
    client_wants_usage: bool,
) -> Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send>> {
    let ex = exchange.clone();
    let items = stream.filter_map(move |item| {
        let out = match item {
            Ok(mut chunk) => note_chunk(&ex, &mut chunk, client_wants_usage).then_some(Ok(chunk)),
            Err(e) => {
                let reason = crate::error_chain(&e);
                ex.update(|r| r.ending = Ending::Failed(reason));
                Some(Err(e))
            }
        };
        std::future::ready(out)
    });
    // The end of the upstream stream is the end of the answer, whatever the HTTP body does
    // after it.
    let end = futures::stream::once(async move {
        exchange.update(|r| {
            if r.ending == Ending::Open {
                r.ending = Ending::Complete;
            }
        });
        None
    })
    .filter_map(std::future::ready);
    items.chain(end).boxed()
}

/// Records what `chunk` says; false when the chunk should not reach the client.
fn note_chunk<T: StreamItem>(exchange: &Exchange, chunk: &mut T, client_wants_usage: bool) -> bool {
    if chunk.has_content() {
        exchange.first_token();
    }
    let reasons: Vec<String> = chunk.finish_reasons().map(str::to_owned).collect();
    let usage = chunk.usage().map(counts);
    let model = chunk.model();
    exchange.update(|r| {
        if let Some(c) = &mut r.content {
            chunk.text(&mut c.output);
        }
        if r.response_model.is_none() && !model.is_empty() {
            r.response_model = Some(model.to_owned());
        }
        r.finish_reasons.extend(reasons);
        if usage.is_some() {
            r.usage = usage;
        }
        if let Some(c) = r.capture.as_deref_mut() {
            chunk.capture_into(c);
        }
    });
    if client_wants_usage {
        return true;
    }
    let (_, now_empty) = chunk.take_usage();
    !(usage.is_some() && now_empty)
}
