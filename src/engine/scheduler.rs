//! Continuous batching on a dedicated thread. Requests wait in a bounded queue; between steps
//! new sequences join and finished or abandoned ones leave, and one forward pass advances every
//! active sequence: a decoding sequence by its last sampled token, a new one by a chunk of its
//! prompt (chunked prefill), so that a long prompt arriving never stalls the streams already
//! running for the whole of its prefill. A full queue refuses at once (`EngineError::Busy`)
//! instead of letting requests wait without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::EngineError;
use super::sampler::{Sampler, SamplingParams};
use super::stop::{StopMatcher, StopScan};
use crate::telemetry::names;

/// A decoder-only model as the scheduler drives it. Implemented by the llama-family model;
/// the trait keeps the batching logic testable without weights.
pub trait DecoderModel: Send + Sync + 'static {
    type Cache: Send;
    fn new_cache(&self) -> Self::Cache;
    fn context_length(&self) -> usize;
    /// One forward pass: `chunks[i]` (a prompt chunk or one sampled token, never empty)
    /// extends the sequence owning `caches[i]`. Returns the logits after each chunk's last
    /// token, one vector per sequence, in order.
    fn step(
        &self,
        chunks: &[&[u32]],
        caches: &mut [&mut Self::Cache],
    ) -> Result<Vec<Vec<f32>>, EngineError>;
}

/// Prompt tokens fed per forward pass. A pass costs about its row count in time (the weight
/// matmuls are compute-bound at this size), so this bounds how long running streams wait for
/// their next token while a prompt is being prefilled (~0.2 s on 2 cores for SmolLM2-135M),
/// while staying well above candle's 16-row matmul tile so prefill keeps its efficiency.
pub const PREFILL_CHUNK: usize = 64;

/// Turns generated token ids into text. `start` gives a fresh incremental decoder per sequence
/// (it must hold back incomplete UTF-8 so that no chunk carries a broken character).
pub trait Detokenizer: Send + Sync + 'static {
    fn start(&self) -> Box<dyn TextStream>;
    /// End-of-sequence tokens: generation stops there with `stop`.
    fn is_end(&self, token: u32) -> bool;
}

pub trait TextStream: Send {
    fn push(&mut self, token: u32) -> Result<String, EngineError>;
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum GenEvent {
    /// The sequence left the queue and joined the batch (the request's traces time its
    /// queue wait and prefill from these phase events).
    Admitted(SystemTime),
    /// The whole prompt has been fed; decoding starts.
    Prefilled(SystemTime),
    /// New text, never splitting a character.
    Text(String),
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

struct Job {
    generation: Generation,
    events: UnboundedSender<GenEvent>,
}

/// The handle to one model's scheduling thread. Dropping it closes the queue; the thread ends
/// after finishing the sequences it holds.
pub struct Scheduler {
    name: String,
    queue: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    context_length: usize,
    _thread: JoinHandle<()>,
}

impl Scheduler {
    pub fn start<M: DecoderModel>(
        name: &str,
        model: Arc<M>,
        detokenizer: Arc<dyn Detokenizer>,
        max_batch: usize,
        queue_capacity: usize,
    ) -> Result<Scheduler, EngineError> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(queue_capacity);
        let waiting = Arc::new(AtomicUsize::new(0));
        let context_length = model.context_length();
        let worker = Worker {
            name: name.to_owned(),
            model,
            detokenizer,
            max_batch: max_batch.max(1),
            waiting: waiting.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("pasarela-llm-{name}"))
            .spawn(move || worker.run(jobs))
            .map_err(|e| {
                EngineError::Inference(format!("cannot start the scheduler thread: {e}"))
            })?;
        Ok(Scheduler {
            name: name.to_owned(),
            queue,
            waiting,
            context_length,
            _thread: thread,
        })
    }

    /// Queues a generation. Events arrive on the returned channel; dropping it cancels the
    /// sequence at its next step.
    pub fn submit(
        &self,
        generation: Generation,
    ) -> Result<UnboundedReceiver<GenEvent>, EngineError> {
        if generation.prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        if generation.prompt.len() >= self.context_length {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt has {} tokens; this model's context length is {}",
                generation.prompt.len(),
                self.context_length
            )));
        }
        let (events, rx) = unbounded_channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(Job { generation, events }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(EngineError::Busy {
                        model: self.name.clone(),
                        queued: self.waiting.load(Ordering::SeqCst),
                    }),
                    TrySendError::Disconnected(_) => Err(EngineError::Inference(
                        "the model's scheduler has stopped".into(),
                    )),
                }
            }
        }
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }
}

struct Worker<M: DecoderModel> {
    name: String,
    model: Arc<M>,
    detokenizer: Arc<dyn Detokenizer>,
    max_batch: usize,
    waiting: Arc<AtomicUsize>,
}

struct Sequence<C> {
    cache: C,
    sampler: Sampler,
    text: Box<dyn TextStream>,
    stops: StopMatcher,
    /// Prompt tokens not yet fed to the model; empty once the sequence decodes.
    pending: Vec<u32>,
    /// How much of `pending` has been fed.
    fed: usize,
    last: u32,
    prompt_tokens: usize,
    generated: usize,
    max_tokens: usize,
    events: UnboundedSender<GenEvent>,
}

impl<C> Sequence<C> {
    fn prefilling(&self) -> bool {
        self.fed < self.pending.len()
    }
}

impl<M: DecoderModel> Worker<M> {
    fn run(self, jobs: Receiver<Job>) {
        let mut active: Vec<Sequence<M::Cache>> = Vec::new();
        loop {
            // Admit waiting requests while there is room; block only when idle.
            while active.len() < self.max_batch {
                let job = if active.is_empty() {
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                if let Some(seq) = self.admit(job) {
                    active.push(seq);
                }
            }
            // A client that went away frees its slot here, before the next step.
            active.retain(|s| !s.events.is_closed());
            metrics::gauge!(names::ENGINE_QUEUE_DEPTH, "model" => self.name.clone())
                .set(self.waiting.load(Ordering::SeqCst) as f64);
            metrics::gauge!(names::ENGINE_ACTIVE, "model" => self.name.clone())
                .set(active.len() as f64);
            if active.is_empty() {
                continue;
            }
            self.step(&mut active);
        }
    }

    /// One forward pass over the active sequences: every decoding sequence gets its last
    /// token; prefilling ones, oldest first, share `PREFILL_CHUNK` prompt tokens.
    fn step(&self, active: &mut Vec<Sequence<M::Cache>>) {
        let mut budget = PREFILL_CHUNK;
        let mut chunks: Vec<(usize, usize)> = Vec::with_capacity(active.len()); // (from, to)
        let mut decoding = 0;
        for seq in active.iter() {
            if seq.prefilling() {
                let take = budget.min(seq.pending.len() - seq.fed);
                budget -= take;
                chunks.push((seq.fed, seq.fed + take));
            } else {
                decoding += 1;
                chunks.push((0, 1));
            }
        }
        // Sequences whose turn is empty (prefill budget spent) sit this pass out.
        let in_pass: Vec<bool> = chunks.iter().map(|(from, to)| to > from).collect();
        let batch = in_pass.iter().filter(|t| **t).count();
        metrics::histogram!(names::BATCH_SIZE, "model" => self.name.clone()).record(batch as f64);
        metrics::counter!(names::ENGINE_TOKENS, "model" => self.name.clone(), "kind" => "completion")
            .increment(decoding as u64);
        let result = {
            let mut tokens: Vec<&[u32]> = Vec::with_capacity(active.len());
            let mut caches: Vec<&mut M::Cache> = Vec::with_capacity(active.len());
            for ((seq, &(from, to)), _) in active
                .iter_mut()
                .zip(&chunks)
                .zip(&in_pass)
                .filter(|(_, taking)| **taking)
            {
                match seq.prefilling() {
                    true => tokens.push(&seq.pending[from..to]),
                    false => tokens.push(std::slice::from_ref(&seq.last)),
                }
                caches.push(&mut seq.cache);
            }
            super::exclusive(|| self.model.step(&tokens, &mut caches))
        };
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                tracing::error!(model = %self.name, error = %e, "forward pass failed; failing its sequences");
                let mut taking = in_pass.iter();
                active.retain(|seq| {
                    let failed = taking.next().copied().unwrap_or(true);
                    if failed {
                        let _ = seq.events.send(GenEvent::Failed(e.to_string()));
                    }
                    !failed
                });
                return;
            }
        };
        let mut logits = logits.into_iter();
        let mut finished = vec![false; active.len()];
        for (((seq, &(_, to)), taking), done) in active
            .iter_mut()
            .zip(&chunks)
            .zip(&in_pass)
            .zip(finished.iter_mut())
        {
            if !taking {
                continue;
            }
            let Some(mut l) = logits.next() else {
                let _ = seq
                    .events
                    .send(GenEvent::Failed("the model returned too few logits".into()));
                *done = true;
                continue;
            };
            if seq.prefilling() {
                seq.fed = to;
                if seq.prefilling() {
                    continue; // mid-prompt: these logits predict nothing anyone asked for
                }
                seq.pending = Vec::new();
                seq.fed = 0;
                let _ = seq.events.send(GenEvent::Prefilled(SystemTime::now()));
            }
            *done = self.advance(seq, &mut l);
        }
        let mut flags = finished.into_iter();
        active.retain(|_| !flags.next().unwrap_or(true));
    }

    /// Turns a job into a sequence waiting for its prompt to be fed; `None` when it is already
    /// over (the client left, or it asked for no tokens).
    fn admit(&self, job: Job) -> Option<Sequence<M::Cache>> {
        if job.events.is_closed() {
            return None;
        }
        let Job { generation, events } = job;
        let _ = events.send(GenEvent::Admitted(SystemTime::now()));
        metrics::counter!(names::ENGINE_TOKENS, "model" => self.name.clone(), "kind" => "prompt")
            .increment(generation.prompt.len() as u64);
        let mut seq = Sequence {
            cache: self.model.new_cache(),
            sampler: Sampler::new(generation.sampling),
            text: self.detokenizer.start(),
            stops: StopMatcher::new(generation.stop),
            prompt_tokens: generation.prompt.len(),
            pending: generation.prompt,
            fed: 0,
            last: 0,
            generated: 0,
            max_tokens: generation.max_tokens,
            events,
        };
        if seq.max_tokens == 0 {
            self.finish(&mut seq, FinishReason::Length);
            return None;
        }
        Some(seq)
    }

    /// Samples the next token from `logits` and emits what it allows; true when finished.
    fn advance(&self, seq: &mut Sequence<M::Cache>, logits: &mut [f32]) -> bool {
        let token = seq.sampler.sample(logits);
        if self.detokenizer.is_end(token) {
            self.finish(seq, FinishReason::Stop);
            return true;
        }
        seq.generated += 1;
        seq.last = token;
        let piece = match seq.text.push(token) {
            Ok(p) => p,
            Err(e) => {
                let _ = seq.events.send(GenEvent::Failed(e.to_string()));
                return true;
            }
        };
        match seq.stops.push(&piece) {
            StopScan::Stopped(text) => {
                if !text.is_empty() {
                    let _ = seq.events.send(GenEvent::Text(text));
                }
                self.done(seq, FinishReason::Stop);
                return true;
            }
            StopScan::Emit(text) if !text.is_empty() => {
                let _ = seq.events.send(GenEvent::Text(text));
            }
            StopScan::Emit(_) => {}
        }
        let context_full = seq.prompt_tokens + seq.generated >= self.model.context_length();
        if seq.generated >= seq.max_tokens || context_full {
            self.finish(seq, FinishReason::Length);
            return true;
        }
        false
    }

    /// Releases held-back text, then reports the end.
    fn finish(&self, seq: &mut Sequence<M::Cache>, reason: FinishReason) {
        let rest = seq.stops.finish();
        if !rest.is_empty() {
            let _ = seq.events.send(GenEvent::Text(rest));
        }
        self.done(seq, reason);
    }

    fn done(&self, seq: &Sequence<M::Cache>, finish: FinishReason) {
        let _ = seq.events.send(GenEvent::Done {
            finish,
            prompt_tokens: seq.prompt_tokens,
            completion_tokens: seq.generated,
        });
    }
}

#[cfg(test)]
mod tests;
