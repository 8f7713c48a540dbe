//! Stop sequences found in generated text even when they straddle token boundaries: text that
//! could still become a stop sequence is held back until it is known either way.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What the newest text allows to be emitted.
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Safe to emit; more may follow.
    Emit(String),
    /// A stop sequence matched: emit this text (everything before the match) and finish.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopScan {
        self.held.push_str(text);
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_match {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return StopScan::Stopped(before);
        }
        let keep = self.longest_partial_suffix();
        let emit_to = self.held.len() - keep;
        let emitted = self.held[..emit_to].to_owned();
        self.held.drain(..emit_to);
        StopScan::Emit(emitted)
    }

    /// What is still held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop
    /// sequence, on a character boundary.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let suffix = &self.held[start..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                best = best.max(suffix.len());
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopScan::Emit(t) => out.push_str(&t),
                StopScan::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_sequence_split_across_tokens_is_found() {
        assert_eq!(
            run(&["END"], &["Hello E", "N", "D and more"]),
            ("Hello ".into(), true)
        );
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        assert_eq!(
            run(&["END"], &["Hello EN", "d of text"]),
            ("Hello ENd of text".into(), false)
        );
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), true)
        );
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(
            run(&["🙂!"], &["ça va 🙂", "?"]),
            ("ça va 🙂?".into(), false)
        );
        assert_eq!(run(&["。"], &["你好", "。再见"]), ("你好".into(), true));
    }

    #[test]
    fn held_text_is_not_emitted_early() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Answer.\n"), StopScan::Emit("Answer.".into()));
        assert_eq!(m.push("\nUs"), StopScan::Emit(String::new()));
        assert_eq!(m.push("er:"), StopScan::Stopped(String::new()));
    }
}
