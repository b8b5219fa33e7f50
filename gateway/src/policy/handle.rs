//! The catalogue in force, swappable without stopping requests.
//!
//! Requests take a snapshot ([`PolicyHandle::current`]) and decide with it from start to end, so a reload
//! in the middle of a request cannot mix two catalogues in one decision. A reload validates the new file
//! completely before the swap; an invalid file changes nothing.

use std::fmt;
use std::path::PathBuf;
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

/// Where the catalogue is read from, at start-up and on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogueSource {
    /// The copy of `deploy/purposes.toml` compiled into the binary: a gateway runs without any policy
    /// file, but changing the catalogue then needs a rebuild. Production configures a file.
    BuiltIn,
    /// A file, re-read on every reload.
    File(PathBuf),
}

impl CatalogueSource {
    /// Reads, parses and validates the catalogue.
    pub fn load_validated<D: KnownDepartments + ?Sized>(
        &self,
        departments: &D,
    ) -> Result<PurposeCatalogue, PolicyError> {
        match self {
            CatalogueSource::BuiltIn => {
                PurposeCatalogue::from_toml_validated(BUILT_IN_CATALOGUE, departments)
            }
            CatalogueSource::File(path) => PurposeCatalogue::load_validated(path, departments),
        }
    }
}

/// `deploy/purposes.toml` as shipped.
pub const BUILT_IN_CATALOGUE: &str = include_str!("../../../deploy/purposes.toml");

pub struct PolicyHandle {
    current: ArcSwap<PurposeCatalogue>,
    source: CatalogueSource,
}

impl PolicyHandle {
    /// Loads and validates the catalogue from `source` for start-up; reloads read the same source.
    pub fn open<D: KnownDepartments + ?Sized>(
        source: CatalogueSource,
        departments: &D,
    ) -> Result<PolicyHandle, PolicyError> {
        let catalogue = source.load_validated(departments)?;
        Ok(PolicyHandle { current: ArcSwap::from_pointee(catalogue), source })
    }

    /// Where reloads read from.
    pub fn source(&self) -> &CatalogueSource {
        &self.source
    }

    /// Re-reads the configured source and, if valid, puts it in force for new requests
    /// (AdminService.ReloadPolicy, SIGHUP). On any error (unreadable file, any violation) the catalogue
    /// in force stays in force.
    pub fn reload<D: KnownDepartments + ?Sized>(
        &self,
        departments: &D,
    ) -> Result<ReloadOutcome, PolicyError> {
        let catalogue = self.source.load_validated(departments)?;
        Ok(self.swap(catalogue))
    }

    /// Validates the configured source without putting it in force.
    pub fn check<D: KnownDepartments + ?Sized>(&self, departments: &D) -> Result<ReloadOutcome, PolicyError> {
        let catalogue = self.source.load_validated(departments)?;
        Ok(ReloadOutcome {
            previous_version: self.version(),
            version: catalogue.version,
            purpose_count: catalogue.purposes.len(),
        })
    }

    fn swap(&self, catalogue: PurposeCatalogue) -> ReloadOutcome {
        let version = catalogue.version.clone();
        let purpose_count = catalogue.purposes.len();
        // `swap` returns what was in force at the instant of the swap, so concurrent reloads each report
        // the version they actually replaced.
        let previous = self.current.swap(Arc::new(catalogue));
        ReloadOutcome { previous_version: previous.version.clone(), version, purpose_count }
    }

    /// A snapshot of the catalogue in force; hold it for the whole of one request.
    pub fn current(&self) -> Arc<PurposeCatalogue> {
        self.current.load_full()
    }

    /// Version of the catalogue in force.
    pub fn version(&self) -> String {
        self.current.load().version.clone()
    }
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle").field("version", &self.version()).finish()
    }
}
