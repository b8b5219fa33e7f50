//! Behaviour of the resolver: namesakes, mistyped numbers, ambiguity without disclosure, unavailable
//! sources, the cache — on hand-built in-memory sources — and every noise kind of the generator on
//! small seeded SQLite populations.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fedx_adapters::ident::{CitizenId, Sex};
use fedx_adapters::{
    Candidate, Department, IdQuality, NoiseConfig, RecordKey, SeedOptions, SourceLocationSet,
};
use prost::Message;
use time::macros::date;
use time::Date;

use super::compare::{Agreement, Field};
use super::eval::{evaluate, read_truth, EvalMode};
use super::memory::MemorySource;
use super::*;
use crate::sources::SourceSet;

/// One person's identifiers as a department would record them.
#[derive(Clone)]
struct Person {
    id: CitizenId,
    name: &'static str,
    phone: &'static str,
}

impl Person {
    fn new(region: &str, birth: Date, seq: u16, name: &'static str, phone: &'static str) -> Person {
        Person { id: CitizenId::from_parts(region, birth, seq).expect("valid parts"), name, phone }
    }

    fn record(&self, dept: Department, key: &str) -> Candidate {
        Candidate {
            dept,
            record_key: RecordKey(key.to_owned()),
            id: Some(self.id.as_str().to_owned()),
            id_quality: Some(IdQuality::Valid),
            name_norm: Some(self.name.to_owned()),
            birth_date: Some(self.id.birth_date()),
            sex: Some(self.id.sex()),
            phone: Some(self.phone.to_owned()),
            region: Some(self.id.region_code().to_owned()),
        }
    }

    fn subject(&self) -> SubjectInput {
        SubjectInput {
            citizen_id: self.id.as_str().into(),
            name: self.name.into(),
            ..SubjectInput::default()
        }
    }
}

fn resolver_with(records: Vec<Candidate>, config: IdentityConfig) -> (Resolver, Vec<Arc<MemorySource>>) {
    let mut by_dept: Vec<Arc<MemorySource>> = Vec::new();
    for dept in Department::ALL {
        let recs = records.iter().filter(|c| c.dept == dept).cloned().collect();
        by_dept.push(Arc::new(MemorySource::new(dept, recs)));
    }
    let sources =
        SourceSet::new(by_dept.iter().map(|s| s.clone() as Arc<dyn fedx_adapters::Source>).collect());
    let keys = Arc::new(KeyRing::single("test", &[5u8; 32]).unwrap());
    (Resolver::new(Model::new(config), sources, keys), by_dept)
}

fn small_config() -> IdentityConfig {
    IdentityConfig { population: 1_000, ..IdentityConfig::default() }
}

fn query(input: &SubjectInput) -> Query {
    Query::parse(input, "subject").unwrap()
}

/// Two people with the same name, birth date and sex (namesakes), and one unrelated person.
fn namesakes() -> (Person, Person, Person) {
    let b = date!(1988 - 03 - 14);
    (
        Person::new("532301", b, 123, "张伟", "13800000001"),
        Person::new("510104", b, 457, "张伟", "13900000002"),
        Person::new("430102", date!(1990 - 07 - 01), 88, "李娜", "13700000003"),
    )
}

#[tokio::test]
async fn namesakes_are_not_merged() {
    let (a, b, c) = namesakes();
    let records = vec![
        a.record(Department::PublicSecurity, "person/A"),
        a.record(Department::Tax, "taxpayer/A"),
        b.record(Department::PublicSecurity, "person/B"),
        b.record(Department::Tax, "taxpayer/B"),
        c.record(Department::PublicSecurity, "person/C"),
    ];
    let (resolver, _) = resolver_with(records, small_config());
    for (person, own) in [(&a, "A"), (&b, "B")] {
        let r = resolver.resolve(&query(&person.subject())).await.unwrap();
        assert_eq!(r.status, Status::Resolved);
        assert_eq!(r.citizen_id.as_ref(), Some(&person.id));
        let linked: Vec<&str> = r.linked().map(|(_, k)| k.as_str()).collect();
        assert_eq!(linked.len(), 2, "{linked:?}");
        assert!(linked.iter().all(|k| k.ends_with(own)), "{linked:?}");
    }
    // Different people get different references.
    let ra = resolver.resolve(&query(&a.subject())).await.unwrap();
    let rb = resolver.resolve(&query(&b.subject())).await.unwrap();
    assert_ne!(ra.worker_ref, rb.worker_ref);
    // Name + birth date cannot tell them apart.
    let by_name =
        SubjectInput { name: "张伟".into(), birth_date: "1988-03-14".into(), ..SubjectInput::default() };
    let r = resolver.resolve(&query(&by_name)).await.unwrap();
    assert_eq!(r.status, Status::Ambiguous);
    assert!(r.worker_ref.is_none() && r.linked().next().is_none());
    assert!(r.disambiguating_fields.contains(&"citizen_id"));
    // …and a phone settles it.
    let with_phone = SubjectInput { phone: b.phone.into(), ..by_name };
    let r = resolver.resolve(&query(&with_phone)).await.unwrap();
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.citizen_id.as_ref(), Some(&b.id));
}

/// The same ambiguous query in two worlds that differ only in which namesake has the richer record
/// set: the wire answers must be byte-identical.
#[tokio::test]
async fn ambiguous_answers_disclose_nothing() {
    let (a, b, _) = namesakes();
    let world = |real: &Person, other: &Person| {
        vec![
            real.record(Department::PublicSecurity, "person/1"),
            real.record(Department::Tax, "taxpayer/1"),
            real.record(Department::SocialInsurance, "insured_person/1"),
            other.record(Department::PublicSecurity, "person/2"),
        ]
    };
    let input = SubjectInput {
        name: "張 偉".into(),
        birth_date: "1988-03-14".into(),
        sex: Some(Sex::Male),
        ..SubjectInput::default()
    };
    let mut answers = Vec::new();
    for (real, other) in [(&a, &b), (&b, &a)] {
        let (resolver, _) = resolver_with(world(real, other), small_config());
        let r = resolver.resolve(&query(&input)).await.unwrap();
        assert_eq!(r.status, Status::Ambiguous);
        let wire = crate::rpc::identity::to_proto(&r);
        assert!(wire.links.is_empty() && wire.worker_ref.is_empty() && wire.confidence == 0.0);
        answers.push(wire.encode_to_vec());
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test]
async fn mistyped_id_is_linked_or_possible_by_threshold_and_shown_as_approximate() {
    let (a, _, _) = namesakes();
    // The tax bureau's copy: one digit of the sequence number mistyped (the check character now fails).
    let mut typo = a.id.as_str().to_owned();
    let d = typo.as_bytes()[15];
    typo.replace_range(15..16, &char::from(if d == b'9' { b'0' } else { d + 1 }).to_string());
    let mut tax = a.record(Department::Tax, "taxpayer/typo");
    tax.id = Some(typo);
    tax.id_quality = Some(IdQuality::Suspect);
    tax.phone = None;
    let records = vec![a.record(Department::PublicSecurity, "person/A"), tax];
    let input = SubjectInput { birth_date: "1988-03-14".into(), ..a.subject() };

    let tax_outcome = |r: &Resolution| r.sources.iter().find(|s| s.dept == Department::Tax).unwrap().clone();
    let (resolver, _) = resolver_with(records.clone(), small_config());
    let r = resolver.resolve(&query(&input)).await.unwrap();
    assert_eq!(r.status, Status::Resolved);
    let tax = tax_outcome(&r);
    let best = tax.best.clone().expect("the mistyped record is reported, not dropped");
    let id = best.fields.iter().find(|f| f.field == Field::CitizenId).unwrap();
    assert_eq!(id.agreement, Agreement::Approximate, "shown as approximate ID agreement");
    assert!(best.agreeing().contains(&"name"));
    assert_eq!(best.class, resolver.model().classify(best.score));
    assert_eq!(tax.linked.len(), usize::from(best.class == MatchClass::Linked));

    // Raise the link threshold just above the mistyped record's score: it must become POSSIBLE (shown
    // for review), while the exact-ID registry record still links.
    let strict = IdentityConfig { link_threshold: best.score + 1.0, ..small_config() };
    let (resolver, _) = resolver_with(records, strict);
    let r = resolver.resolve(&query(&input)).await.unwrap();
    assert_eq!(r.status, Status::Resolved);
    let tax = tax_outcome(&r);
    assert!(tax.linked.is_empty());
    assert_eq!(tax.possible.len(), 1, "below the link threshold it is POSSIBLE, never dropped");
    assert_eq!(tax.best.map(|b| b.class), Some(MatchClass::Possible));
}

#[tokio::test]
async fn stated_birth_date_contradicting_the_id_counts_against() {
    let (a, _, _) = namesakes();
    let (resolver, _) = resolver_with(vec![a.record(Department::PublicSecurity, "person/A")], small_config());
    let good = resolver.resolve(&query(&a.subject())).await.unwrap();
    let input = SubjectInput { birth_date: "1977-01-01".into(), ..a.subject() };
    let bad = resolver.resolve(&query(&input)).await.unwrap();
    let score = |r: &Resolution| r.sources.iter().find_map(|s| s.best.as_ref().map(|b| b.score)).unwrap();
    assert!(score(&bad) < score(&good));
    let ps = bad.sources.iter().find_map(|s| s.best.clone()).unwrap();
    assert!(ps.disagreeing().contains(&"birth_date"));
}

#[tokio::test]
async fn unavailable_sources_are_named_and_all_down_is_an_error() {
    let (a, _, _) = namesakes();
    let (resolver, sources) =
        resolver_with(vec![a.record(Department::PublicSecurity, "person/A")], small_config());
    drop(resolver);
    let mut sources: Vec<MemorySource> =
        sources.iter().map(|s| MemorySource::new(s.dept, s.records.clone())).collect();
    sources.iter_mut().filter(|s| s.dept == Department::Tax).for_each(|s| s.fail = true);
    let set =
        SourceSet::new(sources.into_iter().map(|s| Arc::new(s) as Arc<dyn fedx_adapters::Source>).collect());
    let keys = Arc::new(KeyRing::single("t", &[1u8; 32]).unwrap());
    let resolver = Resolver::new(Model::new(small_config()), set, keys.clone());
    let r = resolver.resolve(&query(&a.subject())).await.unwrap();
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.unavailable().collect::<Vec<_>>(), [Department::Tax]);

    let down: Vec<Arc<dyn fedx_adapters::Source>> = Department::ALL
        .iter()
        .map(|d| {
            let mut s = MemorySource::new(*d, Vec::new());
            s.fail = true;
            Arc::new(s) as Arc<dyn fedx_adapters::Source>
        })
        .collect();
    let resolver = Resolver::new(Model::new(small_config()), SourceSet::new(down), keys);
    assert!(matches!(
        resolver.resolve(&query(&a.subject())).await,
        Err(ResolveError::SourcesUnavailable { .. })
    ));
}

#[tokio::test]
async fn repeated_queries_are_answered_from_the_cache() {
    let (a, _, _) = namesakes();
    let (resolver, sources) =
        resolver_with(vec![a.record(Department::PublicSecurity, "person/A")], small_config());
    let calls = || sources.iter().map(|s| s.calls.load(Ordering::Relaxed)).sum::<usize>();
    let first = resolver.resolve(&query(&a.subject())).await.unwrap();
    let after_first = calls();
    // Another spelling of the same query.
    let variant =
        SubjectInput { citizen_id: a.id.as_str().to_lowercase(), name: " 張偉 ".into(), ..a.subject() };
    let second = resolver.resolve(&query(&variant)).await.unwrap();
    assert_eq!(calls(), after_first, "no source was asked again");
    assert!(Arc::ptr_eq(&first, &second));
}

/// Each noise kind of the generator on its own, at a high rate: every person resolved from ID + name,
/// no wrong-person link, and nearly every record found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_noise_kind_of_the_generator_is_resolved() {
    type Kind = (&'static str, fn(&mut NoiseConfig));
    let kinds: [Kind; 12] = [
        ("si_legacy_15", |n| n.si_legacy_15 = 0.8),
        ("tax_mistyped_id", |n| n.tax_mistyped_id = 0.5),
        ("edu_phone_only_guardian", |n| n.edu_phone_only_guardian = 0.5),
        ("edu_missing_guardian_id", |n| n.edu_missing_guardian_id = 0.8),
        ("full_width", |n| n.full_width = 0.5),
        ("stray_space", |n| n.stray_space = 0.5),
        ("lowercase_x", |n| n.lowercase_x = 1.0),
        ("homophone_typo", |n| n.homophone_typo = 0.5),
        ("traditional", |n| n.traditional = 0.5),
        ("phone_format", |n| n.phone_format = 0.5),
        ("stale_phone", |n| n.stale_phone = 0.3),
        ("namesake", |n| n.namesake = 0.2),
    ];
    for (kind, set) in kinds {
        let dir = tempfile::tempdir().unwrap();
        let mut noise = NoiseConfig::none();
        set(&mut noise);
        let opts = SeedOptions { noise, ..SeedOptions::new(300, 7) };
        let loc = SourceLocationSet::SqliteDir(dir.path().to_owned());
        let truth_path = dir.path().join("truth.jsonl");
        fedx_adapters::seed(&opts, &loc, &truth_path).await.unwrap();
        let truths = read_truth(&truth_path).unwrap();
        let config = IdentityConfig {
            population: truths.len() as u64,
            cache_capacity: 0,
            ..IdentityConfig::default()
        };
        let sources = SourceSet::open(&loc, std::time::Duration::from_secs(5)).await.unwrap();
        let keys = Arc::new(KeyRing::single("t", &[3u8; 32]).unwrap());
        let resolver = Resolver::new(Model::new(config), sources, keys);
        let r = evaluate(&resolver, &truths, EvalMode::IdName, 4).await;
        assert_eq!(r.resolved, r.queries, "{kind}: every person resolved");
        assert_eq!(r.wrong_person_resolutions, 0, "{kind}");
        assert_eq!(r.wrong_person_links, 0, "{kind}: no wrong-person link");
        assert!(r.recall() >= 0.95, "{kind}: recall {} ({:?})", r.recall(), r.per_dept);
        if kind == "namesake" {
            let rb = evaluate(&resolver, &truths, EvalMode::NameBirth, 4).await;
            assert_eq!(rb.wrong_person_links, 0, "name + birth date must never link a namesake");
            assert!(rb.ambiguous > 0, "deliberate namesakes are reported AMBIGUOUS");
        }
    }
}
