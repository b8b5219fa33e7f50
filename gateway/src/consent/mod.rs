//! Consent records and their lifecycle (PIPL arts. 14–15; `proto/fedx/v1/consent.proto`).
//!
//! A worker consents, at a department's front desk, to one department using their data for one purpose,
//! for a period. The capturing department registers the consent here with the hash of the signed form
//! it keeps. Records are immutable: a change is a new consent superseding the old one, and a withdrawal
//! is a revocation, which takes effect for the next request on every gateway replica because every
//! request-time check reads the shared database ([`ConsentStore::check_basis`]).
//!
//! - [`model`]: the record, its status at a given time, the revocation reasons.
//! - [`store`]: grant (idempotent, atomic supersede), revoke (idempotent), get, list (keyset paging).
//! - [`check`]: may this department rely on this consent for this worker and purpose, now?
//!
//! Nothing here knows about gRPC: the RPC edge (`rpc::consent`) validates requests against the purpose
//! catalogue and maps refusals to statuses.

pub mod check;
pub mod model;
pub mod store;

pub use check::{check, CheckError, ConsentRefusal};
pub use model::{
    is_well_formed_consent_id, new_consent_id, Actor, Consent, ConsentStatus, ListCursor, NewConsent,
    Revocation, RevocationReason,
};
pub use store::{ConsentError, ConsentStore, Granted};
