//! The scheduler against a scripted stand-in model: token `t` is the byte `t`, 0 ends a
//! sequence, `>` is a prompt token, and the model always predicts the next byte of a script
//! (by how many generated tokens the sequence has been fed).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;

const END: u32 = 0;

const PROMPT: u32 = b'>' as u32;

/// Predicts `script[position]`, recording every pass and the caches alive. `gate` holds every
/// pass that feeds prompt tokens until opened.
struct ScriptModel {
    script: Vec<u8>,
    context: usize,
    /// Rows fed to each sequence in each pass, by cache id.
    passes: Mutex<Vec<Vec<(usize, usize)>>>,
    next_id: std::sync::atomic::AtomicUsize,
    live: Arc<(Mutex<usize>, Condvar)>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

struct ScriptCache {
    id: usize,
    /// Generated tokens fed back so far: the script position.
    fed: usize,
    live: Arc<(Mutex<usize>, Condvar)>,
}

impl Drop for ScriptCache {
    fn drop(&mut self) {
        let (count, changed) = &*self.live;
        *count.lock().unwrap() -= 1;
        changed.notify_all();
    }
}

impl ScriptModel {
    fn new(script: &str, context: usize, gate_open: bool) -> Self {
        ScriptModel {
            script: script.as_bytes().to_vec(),
            context,
            passes: Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicUsize::new(0),
            live: Arc::new((Mutex::new(0), Condvar::new())),
            gate: Arc::new((Mutex::new(gate_open), Condvar::new())),
            entered: Mutex::new(None),
        }
    }

    fn logits_at(&self, position: usize) -> Vec<f32> {
        let mut l = vec![0.0; 256];
        let next = self.script.get(position).map_or(END, |&b| u32::from(b));
        l[next as usize] = 10.0;
        l
    }

    fn open_gate(&self) {
        let (open, cv) = &*self.gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    fn wait_no_live_caches(&self) {
        let (count, changed) = &*self.live;
        let guard = count.lock().unwrap();
        let (guard, timeout) = changed
            .wait_timeout_while(guard, Duration::from_secs(5), |n| *n > 0)
            .unwrap();
        assert!(!timeout.timed_out(), "{} caches still alive", *guard);
    }
}

impl DecoderModel for ScriptModel {
    type Cache = ScriptCache;

    fn new_cache(&self) -> ScriptCache {
        *self.live.0.lock().unwrap() += 1;
        ScriptCache {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            fed: 0,
            live: self.live.clone(),
        }
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn step(
        &self,
        chunks: &[&[u32]],
        caches: &mut [&mut ScriptCache],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        assert!(
            chunks.iter().all(|c| !c.is_empty()),
            "an empty chunk was fed"
        );
        if chunks.iter().any(|c| c.contains(&PROMPT)) {
            if let Some(tx) = self.entered.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let (open, cv) = &*self.gate;
            let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
        }
        self.passes.lock().unwrap().push(
            caches
                .iter()
                .zip(chunks)
                .map(|(c, t)| (c.id, t.len()))
                .collect(),
        );
        Ok(caches
            .iter_mut()
            .zip(chunks)
            .map(|(c, tokens)| {
                c.fed += tokens.iter().filter(|&&t| t != PROMPT).count();
                self.logits_at(c.fed)
            })
            .collect())
    }
}

struct Bytes;

impl Detokenizer for Bytes {
    fn start(&self) -> Box<dyn TextStream> {
        Box::new(ByteStream)
    }
    fn is_end(&self, token: u32) -> bool {
        token == END
    }
}

struct ByteStream;

impl TextStream for ByteStream {
    fn push(&mut self, token: u32) -> Result<String, EngineError> {
        Ok(char::from(token as u8).to_string())
    }
}

fn generation(max_tokens: usize, stop: &[&str]) -> Generation {
    Generation {
        // One prompt token: the script starts at position 0 for prefill's logits.
        prompt: vec![PROMPT],
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
    }
}

/// Collects a generation's text and its final event.
fn collect(mut rx: UnboundedReceiver<GenEvent>) -> (String, GenEvent) {
    let mut text = String::new();
    loop {
        match rx
            .blocking_recv()
            .expect("the scheduler ends every sequence with an event")
        {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Admitted(_) | GenEvent::Prefilled(_) => {}
            other => return (text, other),
        }
    }
}

/// The next event that is not a phase report (admission, end of prefill).
fn next_text(rx: &mut UnboundedReceiver<GenEvent>) -> Option<GenEvent> {
    loop {
        match rx.blocking_recv() {
            Some(GenEvent::Admitted(_) | GenEvent::Prefilled(_)) => {}
            other => return other,
        }
    }
}

#[test]
fn a_sequence_reports_admission_then_the_end_of_its_prefill_before_any_text() {
    let model = Arc::new(ScriptModel::new("abc", 1_000, true));
    let s = start(&model, 2, 2);
    let mut rx = s.submit(generation(2, &[])).unwrap();
    assert!(matches!(rx.blocking_recv(), Some(GenEvent::Admitted(_))));
    assert!(matches!(rx.blocking_recv(), Some(GenEvent::Prefilled(_))));
    assert!(matches!(rx.blocking_recv(), Some(GenEvent::Text(_))));
}

fn start(model: &Arc<ScriptModel>, max_batch: usize, queue: usize) -> Scheduler {
    Scheduler::start("test", model.clone(), Arc::new(Bytes), max_batch, queue).unwrap()
}

#[test]
fn generates_until_the_end_token_with_exact_usage() {
    let model = Arc::new(ScriptModel::new("hello", 100, true));
    let s = start(&model, 4, 4);
    let (text, done) = collect(s.submit(generation(50, &[])).unwrap());
    // Prefill predicts "h"; positions then follow the cache length (prompt of 1 token).
    assert_eq!(
        done,
        GenEvent::Done {
            finish: FinishReason::Stop,
            prompt_tokens: 1,
            completion_tokens: text.len()
        }
    );
    assert!(!text.is_empty());
}

#[test]
fn max_tokens_ends_with_length_and_exact_count() {
    let model = Arc::new(ScriptModel::new(&"x".repeat(100), 1000, true));
    let s = start(&model, 4, 4);
    let (text, done) = collect(s.submit(generation(7, &[])).unwrap());
    assert_eq!(text, "xxxxxxx");
    assert_eq!(
        done,
        GenEvent::Done {
            finish: FinishReason::Length,
            prompt_tokens: 1,
            completion_tokens: 7
        }
    );
}

#[test]
fn the_context_length_bounds_generation() {
    let model = Arc::new(ScriptModel::new(&"y".repeat(100), 10, true));
    let s = start(&model, 1, 1);
    let (text, done) = collect(s.submit(generation(1000, &[])).unwrap());
    assert_eq!(text.len(), 9);
    assert!(matches!(
        done,
        GenEvent::Done {
            finish: FinishReason::Length,
            completion_tokens: 9,
            ..
        }
    ));
    let err = s
        .submit(Generation {
            prompt: vec![1; 10],
            ..generation(1, &[])
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest(_)), "{err}");
}

#[test]
fn stop_strings_across_tokens_end_with_stop_and_are_not_emitted() {
    let model = Arc::new(ScriptModel::new("abcSTOPdef", 100, true));
    let s = start(&model, 1, 1);
    let (text, done) = collect(s.submit(generation(50, &["STOP"])).unwrap());
    assert!(!text.contains('S'), "{text}");
    assert!(matches!(
        done,
        GenEvent::Done {
            finish: FinishReason::Stop,
            ..
        }
    ));
}

#[test]
fn concurrent_requests_share_decode_steps() {
    let model = Arc::new(ScriptModel::new(&"z".repeat(64), 1000, false));
    let s = start(&model, 4, 8);
    let receivers: Vec<_> = (0..4)
        .map(|_| s.submit(generation(20, &[])).unwrap())
        .collect();
    model.open_gate();
    for rx in receivers {
        let (text, _) = collect(rx);
        assert_eq!(text, "z".repeat(20));
    }
    let passes = model.passes.lock().unwrap();
    let widest = passes.iter().map(Vec::len).max();
    assert_eq!(widest, Some(4), "{passes:?}");
}

#[test]
fn a_full_queue_refuses_at_once() {
    let model = Arc::new(ScriptModel::new(&"q".repeat(10), 1000, false));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    *model.entered.lock().unwrap() = Some(entered_tx);
    let s = start(&model, 1, 1);
    let first = s.submit(generation(3, &[])).unwrap();
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // The worker is busy with the first; one more fits in the queue, the next does not.
    let second = s.submit(generation(3, &[])).unwrap();
    let err = s.submit(generation(3, &[])).unwrap_err();
    assert!(matches!(err, EngineError::Busy { .. }), "{err}");
    model.open_gate();
    assert!(matches!(collect(first).1, GenEvent::Done { .. }));
    assert!(matches!(collect(second).1, GenEvent::Done { .. }));
}

#[test]
fn a_dropped_receiver_frees_its_sequence() {
    let model = Arc::new(ScriptModel::new(&"w".repeat(100_000), 1_000_000, true));
    let s = start(&model, 2, 2);
    let mut endless = s.submit(generation(usize::MAX, &[])).unwrap();
    assert!(matches!(next_text(&mut endless), Some(GenEvent::Text(_))));
    drop(endless);
    model.wait_no_live_caches();
    let (text, _) = collect(s.submit(generation(3, &[])).unwrap());
    assert_eq!(text, "www");
}

#[test]
fn a_long_prompt_is_fed_in_chunks_while_running_streams_keep_decoding() {
    // A script far longer than the test lasts, so the first stream is still running when the
    // long prompt arrives.
    let model = Arc::new(ScriptModel::new(&"r".repeat(1 << 22), 1 << 23, true));
    let s = start(&model, 4, 4);
    let mut running = s.submit(generation(usize::MAX, &[])).unwrap();
    // Once the first stream has produced text it is decoding; then a long prompt arrives.
    assert!(matches!(next_text(&mut running), Some(GenEvent::Text(_))));
    let prompt_len = 3 * PREFILL_CHUNK + 5;
    let long = s
        .submit(Generation {
            prompt: vec![PROMPT; prompt_len],
            ..generation(3, &[])
        })
        .unwrap();
    let (text, done) = collect(long);
    assert_eq!(text, "rrr");
    assert!(matches!(done, GenEvent::Done { prompt_tokens, .. } if prompt_tokens == prompt_len));
    drop(running);

    // The long prompt went in as chunks of at most PREFILL_CHUNK rows, each beside a decode
    // row of the running stream, never as one pass that stalls it.
    let passes = model.passes.lock().unwrap();
    let with_prompt: Vec<&Vec<(usize, usize)>> = passes
        .iter()
        .filter(|p| p.iter().any(|&(_, rows)| rows > 1))
        .collect();
    assert_eq!(with_prompt.len(), 4, "{with_prompt:?}");
    let fed: usize = with_prompt.iter().map(|p| p[1].1).sum();
    assert_eq!(fed, prompt_len);
    for pass in &with_prompt {
        assert_eq!(pass.len(), 2, "{pass:?}");
        assert_eq!(
            pass[0].1, 1,
            "the running stream decodes in the same pass: {pass:?}"
        );
        assert!(pass[1].1 <= PREFILL_CHUNK, "{pass:?}");
    }
}

#[test]
fn prefilling_sequences_share_the_chunk_budget_oldest_first() {
    let model = Arc::new(ScriptModel::new(&"p".repeat(50), 10_000, false));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    *model.entered.lock().unwrap() = Some(entered_tx);
    let s = start(&model, 4, 4);
    let long = Generation {
        prompt: vec![PROMPT; PREFILL_CHUNK + 10],
        ..generation(2, &[])
    };
    let first = s.submit(long.clone()).unwrap();
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // While the first chunk is held, two more long prompts queue up.
    let second = s.submit(long.clone()).unwrap();
    let third = s.submit(long).unwrap();
    model.open_gate();
    for rx in [first, second, third] {
        assert_eq!(collect(rx).0, "pp");
    }
    let passes = model.passes.lock().unwrap();
    for pass in passes.iter() {
        let prompt_rows: usize = pass.iter().map(|&(_, r)| r).filter(|&r| r > 1).sum();
        assert!(prompt_rows <= PREFILL_CHUNK, "a pass over budget: {pass:?}");
    }
    // The second pass finishes the first prompt (10 rows) and gives the rest to the second.
    assert_eq!(
        passes[1].iter().map(|&(_, r)| r).collect::<Vec<_>>(),
        [10, PREFILL_CHUNK - 10]
    );
}
