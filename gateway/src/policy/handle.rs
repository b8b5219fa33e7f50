//! The catalogue in force, swappable without stopping requests.
//!
//! Requests take a snapshot ([`PolicyHandle::current`]) and decide with it from start to end, so a reload
//! in the middle of a request cannot mix two catalogues in one decision. A reload validates the new file
//! completely before the swap; an invalid file changes nothing.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{KnownDepartments, PolicyError, PurposeCatalogue};

/// What a reload (or a validate-only check) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Version in force before the call.
    pub previous_version: String,
    /// Version of the file read: in force now after [`PolicyHandle::reload`], merely checked after
    /// [`PolicyHandle::check`].
    pub version: String,
    /// Purposes in the file read.
    pub purpose_count: usize,
}

pub struct PolicyHandle {
    current: ArcSwap<PurposeCatalogue>,
}

impl PolicyHandle {
    /// Wraps a catalogue the caller has validated (see [`PurposeCatalogue::load_validated`]).
    pub fn new(catalogue: PurposeCatalogue) -> PolicyHandle {
        PolicyHandle { current: ArcSwap::from_pointee(catalogue) }
    }

    /// Loads and validates the file for start-up.
    pub fn load<D: KnownDepartments + ?Sized>(
        path: &Path,
        departments: &D,
    ) -> Result<PolicyHandle, PolicyError> {
        PurposeCatalogue::load_validated(path, departments).map(PolicyHandle::new)
    }

    /// A snapshot of the catalogue in force; hold it for the whole of one request.
    pub fn current(&self) -> Arc<PurposeCatalogue> {
        self.current.load_full()
    }

    /// Version of the catalogue in force.
    pub fn version(&self) -> String {
        self.current.load().version.clone()
    }

    /// Re-reads the file and, if it is valid, puts it in force for new requests. On any error (unreadable
    /// file, any violation) the catalogue in force stays in force.
    pub fn reload<D: KnownDepartments + ?Sized>(
        &self,
        path: &Path,
        departments: &D,
    ) -> Result<ReloadOutcome, PolicyError> {
        let catalogue = PurposeCatalogue::load_validated(path, departments)?;
        let version = catalogue.version.clone();
        let purpose_count = catalogue.purposes.len();
        // `swap` returns what was in force at the instant of the swap, so concurrent reloads each report
        // the version they actually replaced.
        let previous = self.current.swap(Arc::new(catalogue));
        Ok(ReloadOutcome { previous_version: previous.version.clone(), version, purpose_count })
    }

    /// Validates the file without putting it in force (ReloadPolicy with `validate_only`).
    pub fn check<D: KnownDepartments + ?Sized>(
        &self,
        path: &Path,
        departments: &D,
    ) -> Result<ReloadOutcome, PolicyError> {
        let catalogue = PurposeCatalogue::load_validated(path, departments)?;
        Ok(ReloadOutcome {
            previous_version: self.version(),
            version: catalogue.version,
            purpose_count: catalogue.purposes.len(),
        })
    }
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle").field("version", &self.version()).finish()
    }
}
