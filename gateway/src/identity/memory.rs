//! An in-memory `Source` for unit tests: records as candidates, look-ups by linear scan, optional
//! failure, and a call counter (to check the cache spares the sources).

use std::sync::atomic::{AtomicUsize, Ordering};

use fedx_adapters::{Candidate, Department, FactCategory, Facts, LookupKey, RecordKey, Source, SourceError};
use futures::future::BoxFuture;

pub struct MemorySource {
    pub dept: Department,
    pub records: Vec<Candidate>,
    pub fail: bool,
    pub calls: AtomicUsize,
}

impl MemorySource {
    pub fn new(dept: Department, records: Vec<Candidate>) -> MemorySource {
        MemorySource { dept, records, fail: false, calls: AtomicUsize::new(0) }
    }

    fn check(&self) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            Err(SourceError::Unavailable { dept: self.dept, reason: "test source is down".into() })
        } else {
            Ok(())
        }
    }
}

impl Source for MemorySource {
    fn department(&self) -> Department {
        self.dept
    }

    fn categories(&self) -> &'static [FactCategory] {
        &[]
    }

    fn lookup<'a>(&'a self, key: &'a LookupKey) -> BoxFuture<'a, Result<Vec<Candidate>, SourceError>> {
        Box::pin(async move {
            self.check()?;
            Ok(self
                .records
                .iter()
                .filter(|c| match key {
                    LookupKey::CitizenId(id) => c.id.as_deref() == Some(id),
                    LookupKey::NameBirth { name_norm, birth_date } => {
                        c.name_norm.as_deref() == Some(name_norm) && c.birth_date == Some(*birth_date)
                    }
                    LookupKey::Phone(p) => c.phone.as_deref() == Some(p),
                    LookupKey::Usci(_) => false,
                })
                .cloned()
                .collect())
        })
    }

    fn name_frequency<'a>(&'a self, name_norm: &'a str) -> BoxFuture<'a, Result<u64, SourceError>> {
        Box::pin(async move {
            self.check()?;
            Ok(self.records.iter().filter(|c| c.name_norm.as_deref() == Some(name_norm)).count() as u64)
        })
    }

    fn fetch_facts<'a>(
        &'a self,
        record_key: &'a RecordKey,
        _category: FactCategory,
    ) -> BoxFuture<'a, Result<Facts, SourceError>> {
        Box::pin(async move { Err(SourceError::NoSuchRecord { dept: self.dept, key: record_key.clone() }) })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move { self.check() })
    }
}
