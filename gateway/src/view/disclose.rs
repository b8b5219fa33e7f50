//! The one gate every value passes on its way into a view: granted or not, masked how, and recorded
//! as disclosed.
//!
//! Section builders never write a value into the response directly; they ask the [`Discloser`], which
//! returns the value as the purpose lets the requester see it (or nothing) and remembers the field name
//! for the audit record. So the audit's list of disclosed fields is, by construction, exactly the set of
//! fields that carry a value.

use std::collections::BTreeSet;

use fedx_adapters::Department;
use fedx_proto::v1 as pb;
use time::OffsetDateTime;

use crate::policy::{FieldCategory, MaskRule, Purpose, CITIZEN_ID_FIELD, MASK_FLOORS};

/// Applies a purpose's grants and masking to values and records what was disclosed.
pub struct Discloser<'p> {
    purpose: &'p Purpose,
    disclosed: BTreeSet<String>,
}

impl<'p> Discloser<'p> {
    pub fn new(purpose: &'p Purpose) -> Discloser<'p> {
        Discloser { purpose, disclosed: BTreeSet::new() }
    }

    /// How a granted field is shown; `None` when the purpose does not grant it.
    ///
    /// The catalogue's rule, but never weaker than the contract's floors (masked citizen ID unless the
    /// purpose has `full_citizen_id`; children's IDs and names always masked). Catalogue validation
    /// already refuses weaker rules; this guard keeps the contract even for a catalogue built without
    /// validation.
    fn rule(&self, name: &str) -> Option<MaskRule> {
        if !self.purpose.grants_field(name) {
            return None;
        }
        let rule = self.purpose.mask_rule(name);
        let floor = if name == CITIZEN_ID_FIELD && !self.purpose.full_citizen_id {
            Some(MaskRule::CitizenId)
        } else {
            MASK_FLOORS.iter().find(|(field, _)| *field == name).map(|(_, floor)| *floor)
        };
        Some(match floor {
            Some(floor) if !rule.no_weaker_than(floor) => floor,
            _ => rule,
        })
    }

    /// A text field: the value masked as the purpose says, or empty when the field is not granted or the
    /// source has no value. Surrounding whitespace from the source is dropped.
    pub fn text(&mut self, category: FieldCategory, field: &str, value: Option<&str>) -> String {
        let name = category.field_name(field);
        let (Some(rule), Some(value)) = (self.rule(&name), value.map(str::trim)) else {
            return String::new();
        };
        if value.is_empty() {
            return String::new();
        }
        self.disclosed.insert(name);
        rule.apply(value)
    }

    /// A text field carried as `SourcedText` (identity), with its provenance.
    pub fn sourced(
        &mut self,
        category: FieldCategory,
        field: &str,
        value: Option<&str>,
        provenance: &pb::Provenance,
    ) -> Option<pb::SourcedText> {
        let value = self.text(category, field, value);
        (!value.is_empty()).then(|| pb::SourcedText { value, provenance: Some(provenance.clone()) })
    }

    /// A structured field (a count, an enum, a flag, runs of months): shown only when granted and
    /// without a masking rule. Masking rules are written for text; one set on a structured field cannot
    /// be applied partially, so the field is withheld — the stricter reading of what the catalogue asked.
    /// `None` in (the source has no value) is `None` out.
    pub fn value<T>(&mut self, category: FieldCategory, field: &str, value: Option<T>) -> Option<T> {
        let name = category.field_name(field);
        if self.rule(&name) != Some(MaskRule::Clear) {
            return None;
        }
        let value = value?;
        self.disclosed.insert(name);
        Some(value)
    }

    /// The fields disclosed so far, `{category}.{field}`, sorted.
    pub fn into_disclosed(self) -> Vec<String> {
        self.disclosed.into_iter().collect()
    }
}

/// Provenance of a value.
pub fn provenance(dept: Department, as_of: OffsetDateTime) -> pb::Provenance {
    pb::Provenance {
        department: dept.code().to_owned(),
        as_of: Some(prost_types::Timestamp {
            seconds: as_of.unix_timestamp(),
            nanos: i32::try_from(as_of.nanosecond()).unwrap_or(0),
        }),
    }
}
