//! The five department sources the gateway asks at request time, opened once at start-up.
//!
//! Opening is lazy (no connection is made until the first request), so a gateway starts even when a
//! source is down; that source then answers every call with `SourceError::Unavailable` within its
//! timeout, and results name it as unavailable instead of silently leaving it out.

use std::sync::Arc;
use std::time::Duration;

use fedx_adapters::{open_source, Department, Source, SourceError, SourceLocationSet};

/// Wraps each opened source, e.g. in a fault injector for resilience tests (see
/// [`crate::server::StartOptions`]).
pub type SourceWrapper = Arc<dyn Fn(Arc<dyn Source>) -> Arc<dyn Source> + Send + Sync>;

/// The opened sources, one per department, in department-code order.
#[derive(Clone)]
pub struct SourceSet {
    sources: Vec<Arc<dyn Source>>,
}

impl std::fmt::Debug for SourceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.sources.iter().map(|s| s.department())).finish()
    }
}

impl SourceSet {
    /// Opens every department's source at `locations`, each bounded by `timeout` per call.
    pub async fn open(locations: &SourceLocationSet, timeout: Duration) -> Result<SourceSet, SourceError> {
        let mut sources = Vec::with_capacity(Department::ALL.len());
        for dept in Department::ALL {
            sources.push(open_source(dept, &locations.for_dept(dept), timeout).await?);
        }
        Ok(SourceSet::new(sources))
    }

    /// A set of already-opened sources (tests use in-memory ones).
    pub fn new(mut sources: Vec<Arc<dyn Source>>) -> SourceSet {
        sources.sort_by_key(|s| s.department().code());
        SourceSet { sources }
    }

    /// The same sources, each wrapped by `wrapper`.
    pub fn wrapped(self, wrapper: &SourceWrapper) -> SourceSet {
        SourceSet::new(self.sources.into_iter().map(|s| wrapper(s)).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Source>> {
        self.sources.iter()
    }

    pub fn get(&self, dept: Department) -> Option<&Arc<dyn Source>> {
        self.sources.iter().find(|s| s.department() == dept)
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}
