//! Department sources that fail on command, for resilience tests: each opened source is wrapped in a
//! [`FaultySource`] whose behaviour the test switches while the gateway runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedx_adapters::{
    Candidate, Department, EmployerContributions, FactCategory, Facts, LookupKey, RecordKey, Source,
    SourceError,
};
use fedx_gateway::sources::SourceWrapper;
use futures::future::BoxFuture;

/// How a wrapped source behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answers as the real source does.
    #[default]
    None,
    /// Fails at once, as a source whose database refuses connections.
    Down,
    /// Answers fact questions (record facts and employer contribution status) only after this long
    /// (look-ups stay fast, so identity still resolves and the view is what times out).
    SlowFacts(Duration),
}

/// The switches, shared between the test and the wrapped sources.
#[derive(Debug, Clone, Default)]
pub struct SourceFaults {
    faults: Arc<Mutex<HashMap<Department, Fault>>>,
    /// Calls that reached each wrapped source (whatever its fault), so tests can tell a source the
    /// gateway stopped asking (an open circuit) from one it asks and that fails.
    calls: Arc<Mutex<HashMap<Department, u64>>>,
}

impl SourceFaults {
    pub fn set(&self, dept: Department, fault: Fault) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).insert(dept, fault);
    }

    pub fn clear(&self) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many calls have reached `dept`'s source so far.
    pub fn calls(&self, dept: Department) -> u64 {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).get(&dept).copied().unwrap_or_default()
    }

    /// The fault in force for `dept`, counting the call that asks.
    fn get(&self, dept: Department) -> Fault {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()).entry(dept).or_default() += 1;
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).get(&dept).copied().unwrap_or_default()
    }

    /// The wrapper to start a gateway with.
    pub fn wrapper(&self) -> SourceWrapper {
        let faults = self.clone();
        Arc::new(move |inner: Arc<dyn Source>| -> Arc<dyn Source> {
            Arc::new(FaultySource { inner, faults: faults.clone() })
        })
    }
}

pub struct FaultySource {
    inner: Arc<dyn Source>,
    faults: SourceFaults,
}

impl FaultySource {
    fn down(&self) -> SourceError {
        SourceError::Unavailable { dept: self.inner.department(), reason: "switched off by the test".into() }
    }
}

impl Source for FaultySource {
    fn department(&self) -> Department {
        self.inner.department()
    }

    fn categories(&self) -> &'static [FactCategory] {
        self.inner.categories()
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        match self.faults.get(self.department()) {
            Fault::Down => Box::pin(async move { Err(self.down()) }),
            _ => self.inner.lookup(key),
        }
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        match self.faults.get(self.department()) {
            Fault::Down => Box::pin(async move { Err(self.down()) }),
            _ => self.inner.name_frequency(name_norm),
        }
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        match self.faults.get(self.department()) {
            Fault::Down => Box::pin(async move { Err(self.down()) }),
            Fault::SlowFacts(delay) => Box::pin(async move {
                tokio::time::sleep(delay).await;
                self.inner.fetch_facts(record_key, category).await
            }),
            Fault::None => self.inner.fetch_facts(record_key, category),
        }
    }

    fn employer_contributions<'a>(
        &'a self,
        usci: &'a str,
        months: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Result<EmployerContributions, SourceError>> {
        match self.faults.get(self.department()) {
            Fault::Down => Box::pin(async move { Err(self.down()) }),
            Fault::SlowFacts(delay) => Box::pin(async move {
                tokio::time::sleep(delay).await;
                self.inner.employer_contributions(usci, months).await
            }),
            Fault::None => self.inner.employer_contributions(usci, months),
        }
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        match self.faults.get(self.department()) {
            Fault::Down => Box::pin(async move { Err(self.down()) }),
            _ => self.inner.health(),
        }
    }
}
