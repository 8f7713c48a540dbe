//! Choosing the next token from logits: OpenAI's presence and frequency penalties, then
//! temperature, top-k and top-p (nucleus) sampling from a seeded generator, or greedy argmax at
//! temperature 0.

use std::collections::HashMap;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1 disables nucleus sampling.
    pub top_p: f32,
    /// `None` or 0 disables top-k.
    pub top_k: Option<usize>,
    /// Same seed, same prompt, same parameters ⇒ same tokens.
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token has been generated so far, for the penalties.
    counts: HashMap<u32, u32>,
    /// Reused between steps to avoid an allocation per token.
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Sampler {
            params,
            rng,
            counts: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Picks the next token and records it for the penalties.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let token = if self.params.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.sample_stochastic(logits)
        };
        *self.counts.entry(token).or_insert(0) += 1;
        token
    }

    /// OpenAI's definition: `logit -= count × frequency_penalty + (count > 0) × presence_penalty`,
    /// over the tokens generated so far (not the prompt).
    fn apply_penalties(&self, logits: &mut [f32]) {
        let (presence, frequency) = (self.params.presence_penalty, self.params.frequency_penalty);
        if presence == 0.0 && frequency == 0.0 {
            return;
        }
        for (&token, &count) in &self.counts {
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= count as f32 * frequency + presence;
            }
        }
    }

    fn sample_stochastic(&mut self, logits: &[f32]) -> u32 {
        let t = self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) / t).exp())),
        );
        let top_k = self.params.top_k.filter(|&k| k > 0 && k < scratch.len());
        let top_p = self.params.top_p;
        if top_k.is_some() || top_p < 1.0 {
            keep_top(scratch, top_k, top_p);
        }
        let total: f32 = scratch.iter().map(|&(_, p)| p).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax(logits);
        }
        let mut ticket = self.rng.random_range(0.0..total);
        for &(token, p) in scratch.iter() {
            if ticket < p {
                return token;
            }
            ticket -= p;
        }
        scratch.last().map_or(0, |&(token, _)| token)
    }
}

/// Keeps the `top_k` most likely tokens, then the smallest most-likely set whose mass reaches
/// `top_p`, leaving them sorted by weight. Sorting the whole vocabulary each step costs
/// milliseconds, so it partitions out a small head first and widens it only when the head
/// does not hold the nucleus.
fn keep_top(weights: &mut Vec<(u32, f32)>, top_k: Option<usize>, top_p: f32) {
    let total: f32 = weights.iter().map(|&(_, w)| w).sum();
    let by_weight = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
    let mut head = top_k.unwrap_or(64).min(weights.len());
    loop {
        if head < weights.len() {
            weights.select_nth_unstable_by(head - 1, by_weight);
        }
        let head_mass: f32 = weights[..head].iter().map(|&(_, w)| w).sum();
        let limited_by_k = top_k.is_some_and(|k| head >= k);
        if limited_by_k || head == weights.len() || head_mass >= top_p * total {
            weights.truncate(head);
            break;
        }
        head = (head * 4).min(weights.len());
    }
    weights.sort_unstable_by(by_weight);
    if top_p < 1.0 {
        let mass: f32 = weights.iter().map(|&(_, w)| w).sum();
        let mut running = 0.0;
        let mut keep = weights.len();
        for (i, &(_, w)) in weights.iter().enumerate() {
            running += w;
            if running >= top_p * mass {
                keep = i + 1;
                break;
            }
        }
        weights.truncate(keep.max(1));
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(42),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn same_seed_gives_same_tokens() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..params(1.0)
            });
            (0..50)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn sampling_follows_the_softmax_distribution() {
        // logits ln(1), ln(2), ln(7): probabilities 0.1, 0.2, 0.7.
        let logits = [1f32.ln(), 2f32.ln(), 7f32.ln()];
        let mut s = Sampler::new(params(1.0));
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[s.sample(&mut logits.clone()) as usize] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 20_000.0;
        assert!((share(0) - 0.1).abs() < 0.015, "{counts:?}");
        assert!((share(2) - 0.7).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()]; // 0.1 0.2 0.3 0.4
        let mut s = Sampler::new(SamplingParams {
            top_k: Some(2),
            ..params(1.0)
        });
        for _ in 0..500 {
            assert!(s.sample(&mut logits.clone()) >= 2);
        }
        // Nucleus 0.65: {3 (0.4), 2 (0.3)} reaches 0.7 ≥ 0.65.
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.65,
            ..params(1.0)
        });
        for _ in 0..500 {
            assert!(s.sample(&mut logits.clone()) >= 2);
        }
        // Nucleus 0.35 keeps only the top token.
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.35,
            ..params(1.0)
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&mut logits.clone()), 3);
        }
    }

    #[test]
    fn nucleus_is_exact_over_a_large_flat_vocabulary() {
        // 10,000 equal tokens: top_p 0.5 must keep 5,000 of them, more than the first head.
        let logits = vec![0.0f32; 10_000];
        let mut weights: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, _)| (i as u32, 1.0))
            .collect();
        keep_top(&mut weights, None, 0.5);
        assert_eq!(weights.len(), 5_000);
    }

    #[test]
    fn penalties_follow_openais_formula() {
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 1.0,
            frequency_penalty: 0.5,
            ..params(0.0)
        });
        assert_eq!(s.sample(&mut [5.0, 4.0, 0.0]), 0);
        // Token 0 now pays 1.0 + 0.5 = 1.5: 3.5 < 4.0.
        assert_eq!(s.sample(&mut [5.0, 4.0, 0.0]), 1);
        // Both seen once: 3.5 vs 2.5.
        assert_eq!(s.sample(&mut [5.0, 4.0, 0.0]), 0);
        // Token 0 seen twice: 5 - 2×0.5 - 1 = 3.0 vs 2.5.
        let mut logits = [5.0, 4.0, 0.0];
        s.apply_penalties(&mut logits);
        assert_eq!(logits, [3.0, 2.5, 0.0]);
    }
}
