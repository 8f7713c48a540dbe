//! The scheduler against a scripted stand-in model: token `t` is the byte `t`, 0 ends a
//! sequence, and the model always predicts the next byte of a script.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;

const END: u32 = 0;

/// Predicts `script[position]` (by the sequence's own length), recording batch sizes and the
/// caches alive. `gate` holds the first prefill until opened.
struct ScriptModel {
    script: Vec<u8>,
    context: usize,
    batches: Mutex<Vec<usize>>,
    live: Arc<(Mutex<usize>, Condvar)>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

struct ScriptCache {
    len: usize,
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
            batches: Mutex::new(Vec::new()),
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
            len: 0,
            live: self.live.clone(),
        }
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn prefill(&self, tokens: &[u32], cache: &mut ScriptCache) -> Result<Vec<f32>, EngineError> {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            let _ = tx.send(());
        }
        let (open, cv) = &*self.gate;
        let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
        cache.len += tokens.len();
        Ok(self.logits_at(cache.len - tokens.len()))
    }

    fn decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut ScriptCache],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.batches.lock().unwrap().push(tokens.len());
        Ok(caches
            .iter_mut()
            .map(|c| {
                c.len += 1;
                // The script restarts after the prompt: position = generated so far.
                self.logits_at(c.len - 1)
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
        prompt: vec![b'>' as u32],
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
            other => return (text, other),
        }
    }
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
    let batches = model.batches.lock().unwrap();
    assert_eq!(batches.iter().copied().max(), Some(4), "{batches:?}");
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
    assert!(matches!(endless.blocking_recv(), Some(GenEvent::Text(_))));
    drop(endless);
    model.wait_no_live_caches();
    let (text, _) = collect(s.submit(generation(3, &[])).unwrap());
    assert_eq!(text, "www");
}
