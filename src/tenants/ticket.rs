//! What an admitted call holds of its tenant's limits: its [`Ticket`],
//! settled when the call ends with the tokens its streams counted on its
//! [`Meter`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Cost, Tenant};

/// What a call's response streams count of its tokens as they end (one
/// per stream: `n` choices are `n` streams): read when its ticket settles.
#[derive(Debug, Default)]
pub struct Meter {
    prompt: AtomicU64,
    output: AtomicU64,
    streams: AtomicU32,
}

impl Meter {
    /// A stream ended having used `prompt` tokens (`None`: it does not
    /// know) and generated `output`.
    pub fn add(&self, prompt: Option<u64>, output: u64) {
        if let Some(prompt) = prompt {
            self.prompt.fetch_max(prompt, Ordering::Relaxed);
        }
        self.output.fetch_add(output, Ordering::Relaxed);
        self.streams.fetch_add(1, Ordering::Release);
    }
}

/// An admitted call's charge, settled when dropped: with the tokens it
/// really used if told ([`Ticket::used`]) or metered ([`Ticket::meter`]),
/// else as charged.
#[derive(Debug)]
pub struct Ticket {
    pub(super) tenant: Arc<Tenant>,
    pub(super) charged: Cost,
    /// The call charged to the requests bucket (given back if refused).
    pub(super) requests: f64,
    pub(super) used: Option<Cost>,
    pub(super) meter: Option<Arc<Meter>>,
}

impl Ticket {
    /// Its tenant.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// What the call really used: its prompt's tokens (`None`: as
    /// charged) and the tokens it generated.
    pub fn used(&mut self, prompt: Option<u64>, output: u64) {
        self.used = Some(Cost {
            prompt: prompt.unwrap_or(self.charged.prompt),
            output,
        });
    }

    /// The meter its response streams count their tokens on.
    pub fn meter(&mut self) -> Arc<Meter> {
        self.meter.get_or_insert_with(Default::default).clone()
    }

    /// A call refused after admission (by the queue): nothing was used.
    pub fn refused(mut self) {
        self.give_back();
    }

    pub(super) fn give_back(&mut self) {
        self.tenant
            .requests
            .give(std::mem::take(&mut self.requests));
        let charged = std::mem::take(&mut self.charged);
        self.tenant.prompt.give(charged.prompt as f64);
        self.tenant.output.give(charged.output as f64);
        self.used = Some(Cost::default());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tenant.in_flight.fetch_sub(1, Ordering::AcqRel);
        let metered = self
            .meter
            .as_ref()
            .filter(|m| m.streams.load(Ordering::Acquire) > 0)
            .map(|m| {
                let prompt = m.prompt.load(Ordering::Relaxed);
                Cost {
                    prompt: if prompt > 0 {
                        prompt
                    } else {
                        self.charged.prompt
                    },
                    output: m.output.load(Ordering::Relaxed),
                }
            });
        let used = self.used.or(metered).unwrap_or(self.charged);
        // The difference goes back (or is taken: a call that generated
        // more than it asked for, or one that did not say).
        self.tenant
            .prompt
            .give(self.charged.prompt as f64 - used.prompt as f64);
        self.tenant
            .output
            .give(self.charged.output as f64 - used.output as f64);
        self.tenant.stats.used(used.prompt, used.output);
    }
}
