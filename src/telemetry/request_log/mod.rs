//! The request log: which API requests are logged (metadata at one rate, bodies at another,
//! per endpoint and per virtual key), and how their records leave the request path: each
//! finished [`Record`] is offered to a bounded buffer with `try_send`, and a writer task
//! redacts and stores them in batches. When the buffer is full the record is dropped and
//! counted (`pasarela_request_log_dropped_total`): the log never slows a request down.
//!
//! On the request path this costs a random draw, a hook and, for a logged request, a copy of
//! its small metadata fields; bodies are copied only when sampled.
//!
//! Must not contain SQL (see `store::RequestLogRows`) nor HTTP types.

mod export;
mod redact;
mod writer;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

pub use export::{CHAT_ENDPOINT, Skip, chat_example};
pub use redact::{REDACTED, Redactor};
pub use writer::LogWriter;

use super::{Exchange, Record, names};
use crate::config::{RequestLogConfig, SampleRates};
use crate::store::Store;

/// A finished request waiting to be written.
struct Pending {
    arrived: chrono::DateTime<Utc>,
    record: Record,
}

/// Metadata and body sample rates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    metadata: f64,
    body: f64,
}

/// The log's entrance, shared by every request.
#[derive(Debug)]
pub struct RequestLog {
    defaults: Rates,
    routes: Vec<(String, SampleRates)>,
    keys: Vec<(String, SampleRates)>,
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("request_id", &self.record.request_id)
            .finish_non_exhaustive()
    }
}

impl RequestLog {
    /// The log and its writer (started), or None when the log is disabled. The pruner stops
    /// with `shutdown`; the writer when [`LogWriter::flush`] is called.
    pub fn start(
        config: &RequestLogConfig,
        store: &Store,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Arc<RequestLog>, LogWriter)>, regex::Error> {
        if !config.enabled {
            return Ok(None);
        }
        let redactor = Redactor::new(&config.redact_keys, &config.redact_patterns)?;
        let (tx, rx) = mpsc::channel(config.buffer);
        let writer = LogWriter::spawn(
            rx,
            store.request_log(),
            config.batch,
            std::time::Duration::from_millis(config.flush_interval_ms),
            redactor,
        );
        if config.retention_days > 0 {
            writer::spawn_pruner(
                store.request_log(),
                TimeDelta::days(i64::from(config.retention_days)),
                std::time::Duration::from_secs(config.prune_interval_secs),
                shutdown.clone(),
            );
        }
        let log = RequestLog {
            defaults: Rates {
                metadata: config.metadata_sample_rate,
                body: config.body_sample_rate,
            },
            routes: config.routes.clone().into_iter().collect(),
            keys: config.keys.clone().into_iter().collect(),
            tx,
        };
        Ok(Some((Arc::new(log), writer)))
    }

    /// Offers the exchange's record to the log when its response is over.
    pub fn observe(self: &Arc<Self>, exchange: &Exchange) {
        let log = self.clone();
        exchange.on_finish(move |record| log.offer(record));
    }

    /// Draws whether a request to `endpoint` with `key` has its bodies kept.
    pub fn samples_bodies(&self, endpoint: &str, key: Option<&str>) -> bool {
        draw(self.rates(endpoint, key).body)
    }

    fn rates(&self, endpoint: &str, key: Option<&str>) -> Rates {
        let mut rates = self.defaults;
        let over = |rates: &mut Rates, r: &SampleRates| {
            rates.metadata = r.metadata_sample_rate.unwrap_or(rates.metadata);
            rates.body = r.body_sample_rate.unwrap_or(rates.body);
        };
        if let Some((_, r)) = self.routes.iter().find(|(e, _)| e == endpoint) {
            over(&mut rates, r);
        }
        if let Some(key) = key
            && let Some((_, r)) = self.keys.iter().find(|(k, _)| k == key)
        {
            over(&mut rates, r);
        }
        rates
    }

    /// Runs in the response body's end or drop: decides, copies and hands over, never waits.
    fn offer(&self, record: &Record) {
        // A request whose bodies were kept is always logged.
        if record.capture.is_none() {
            let key = record.key.as_ref().map(|k| k.name.as_str());
            if !draw(self.rates(&record.endpoint, key).metadata) {
                return;
            }
        }
        let arrived = Utc::now() - TimeDelta::from_std(record.duration).unwrap_or_default();
        let pending = Pending {
            arrived,
            record: record.clone(),
        };
        match self.tx.try_send(pending) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                metrics::counter!(names::REQUEST_LOG_DROPPED).increment(1);
            }
        }
    }
}

fn draw(rate: f64) -> bool {
    if rate >= 1.0 {
        true
    } else if rate <= 0.0 {
        false
    } else {
        rand::random::<f64>() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(config: &RequestLogConfig) -> RequestLog {
        let (tx, _rx) = mpsc::channel(1);
        RequestLog {
            defaults: Rates {
                metadata: config.metadata_sample_rate,
                body: config.body_sample_rate,
            },
            routes: config.routes.clone().into_iter().collect(),
            keys: config.keys.clone().into_iter().collect(),
            tx,
        }
    }

    #[test]
    fn a_key_overrides_its_endpoint_which_overrides_the_defaults() {
        let config = crate::config::Config::parse(
            "[request_log]\nbody_sample_rate = 0.25\n\
             [request_log.routes.\"/v1/embeddings\"]\nmetadata_sample_rate = 0.5\nbody_sample_rate = 0.0\n\
             [request_log.keys.team-a]\nbody_sample_rate = 1.0\n",
            "x.toml",
        )
        .unwrap();
        let log = log(&config.request_log);
        let rates = |e, k| log.rates(e, k);
        assert_eq!(
            rates("/v1/chat/completions", None),
            Rates {
                metadata: 1.0,
                body: 0.25
            }
        );
        assert_eq!(
            rates("/v1/embeddings", Some("team-b")),
            Rates {
                metadata: 0.5,
                body: 0.0
            }
        );
        assert_eq!(
            rates("/v1/embeddings", Some("team-a")),
            Rates {
                metadata: 0.5,
                body: 1.0
            }
        );
    }

    #[test]
    fn rates_of_zero_and_one_are_certain() {
        assert!((0..1000).all(|_| draw(1.0)));
        assert!((0..1000).all(|_| !draw(0.0)));
        let hits = (0..10_000).filter(|_| draw(0.5)).count();
        // Binomial(10 000, 0.5): 4 600 is more than 8 standard deviations away.
        assert!((4600..5400).contains(&hits), "{hits}");
    }
}
