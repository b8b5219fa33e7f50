//! The limits as configured: validation, the file and its reload, the statuses refusals are sent as.

use std::time::Duration;

use governor::clock::FakeRelativeClock;
use tonic::Code;
use tonic_types::StatusExt;

use super::*;

const WHO: &str = "/fedx.v1.GatewayService/WhoAmI";

fn departments() -> Vec<String> {
    ["tax", "education", "gateway_ops"].iter().map(|d| (*d).to_owned()).collect()
}

fn open(config: &LimitsConfig) -> Result<(Limits<FakeRelativeClock>, FakeRelativeClock), LimitsError> {
    let clock = FakeRelativeClock::default();
    let limits = Limits::with_clocks(config, departments(), clock.clone(), Arc::new(SystemWallClock))?;
    Ok((limits, clock))
}

fn paths(error: LimitsError) -> Vec<String> {
    error.violations().iter().map(|v| v.path.clone()).collect()
}

#[test]
fn the_defaults_are_valid_and_documented_in_the_example_config() {
    assert!(LimitsConfig::default().violations(&|_| true).is_empty());
    let example = crate::config::Config::from_toml(include_str!("../../../deploy/fedx.example.toml"))
        .expect("the example parses");
    assert_eq!(example.limits, LimitsConfig::default(), "the example shows the defaults");
}

#[test]
fn a_toml_section_parses_with_overrides_per_department_method_and_purpose() {
    let text = r#"
        replicas = 2
        per_second = 100
        burst = 200
        max_concurrent = 16
        [departments.tax]
        per_second = 10.5
        [methods."/fedx.v1.WorkerViewService/GetWorkerView"]
        per_second = 5
        burst = 10
        [methods."/fedx.v1.WorkerViewService/GetWorkerView".departments.education]
        per_second = 1
        burst = 2
        [harvest]
        subjects_per_hour = 100
        subjects_per_day = 400
        [harvest.purposes.employer_compliance]
        subjects_per_day = 1000
    "#;
    let config: LimitsConfig = toml::from_str(text).expect("parses");
    assert!(config.violations(&|d| departments().iter().any(|k| k == d)).is_empty());
    assert_eq!(config.departments["tax"].per_second, Some(10.5));
    assert_eq!(config.harvest.budget("employer_compliance"), Budget { per_hour: 100, per_day: 1000 });
    assert_eq!(config.harvest.budget("wage_arrears_investigation"), Budget { per_hour: 100, per_day: 400 });
    // Each of the 2 replicas: half of each budget, rounded up.
    let budgets = budgets(&config);
    assert_eq!(budgets.default, Budget { per_hour: 50, per_day: 200 });
    assert_eq!(budgets.purposes["employer_compliance"], Budget { per_hour: 50, per_day: 500 });
    assert_eq!(LimitsConfig { replicas: 3, ..config.clone() }.share(100), 34);
    assert!(toml::from_str::<LimitsConfig>("per_secnd = 1").is_err(), "unknown keys are refused");
}

#[test]
fn every_problem_is_named_by_its_path() {
    let mut config =
        LimitsConfig { replicas: 0, per_second: 0.0, burst: 0, max_concurrent: 0, ..Default::default() };
    config.departments.insert("housing".into(), DepartmentLimits::default());
    config
        .departments
        .insert("tax".into(), DepartmentLimits { per_second: Some(f64::NAN), ..Default::default() });
    config.methods.insert(
        "/fedx.v1.Nope/Nope".into(),
        MethodLimits { per_second: Some(1.0), burst: Some(1), ..Default::default() },
    );
    config.methods.insert(
        "/grpc.health.v1.Health/Check".into(),
        MethodLimits { per_second: Some(1.0), burst: Some(1), ..Default::default() },
    );
    config.methods.insert(WHO.into(), MethodLimits { per_second: Some(1.0), ..Default::default() });
    config.harvest.subjects_per_hour = 10;
    config.harvest.subjects_per_day = 5;
    config.harvest.purposes.insert("Bad Code".into(), HarvestOverride::default());
    let found: Vec<String> =
        config.violations(&|d| departments().iter().any(|k| k == d)).into_iter().map(|v| v.path).collect();
    for expected in [
        "limits.replicas",
        "limits.per_second",
        "limits.burst",
        "limits.max_concurrent",
        "limits.departments.housing",
        "limits.departments.tax.per_second",
        "limits.methods.\"/fedx.v1.Nope/Nope\"",
        "limits.methods.\"/grpc.health.v1.Health/Check\"",
        "limits.methods.\"/fedx.v1.GatewayService/WhoAmI\"",
        "limits.harvest",
        "limits.harvest.purposes.Bad Code",
    ] {
        assert!(found.iter().any(|p| p == expected), "{expected} not in {found:?}");
    }
    let inline_and_file = LimitsConfig { file: Some("limits.toml".into()), burst: 5, ..Default::default() };
    assert_eq!(paths(LimitsError::Invalid(inline_and_file.violations(&|_| true))), ["limits.file"]);
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write the limits file");
}

#[test]
fn the_file_is_read_at_start_and_reloaded_only_when_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    write(&path, "[limits]\nper_second = 1\nburst = 2\n");
    let config = LimitsConfig { file: Some(path.clone()), ..Default::default() };
    let (limits, _clock) = open(&config).expect("a valid file");
    assert!(limits.reloadable());
    let v1 = limits.version();
    assert_eq!(v1.len(), 64, "SHA-256 of the file");
    assert!(limits.admit_call("tax", WHO).is_ok());
    assert!(limits.admit_call("tax", WHO).is_ok());
    assert!(limits.admit_call("tax", WHO).is_err(), "burst of 2 from the file");

    // Invalid: refused with the entries at fault; the limits in force stay.
    write(&path, "[limits]\nburst = 0\n[limits.departments.housing]\nburst = 1\n");
    let error = limits.prepare_reload().expect_err("invalid");
    assert_eq!(paths(error), ["limits.burst", "limits.departments.housing"]);
    write(&path, "[limits]\nburst = \"many\"\n");
    assert_eq!(paths(limits.prepare_reload().unwrap_err()), [FILE_ENTRY]);
    write(&path, "[limits]\nfile = \"other.toml\"\n");
    assert_eq!(paths(limits.prepare_reload().unwrap_err()), ["limits.file"]);
    assert_eq!(limits.version(), v1);
    assert!(limits.admit_call("tax", WHO).is_err(), "still the old limits, with their state");

    // Valid: in force at once, with fresh buckets.
    write(&path, "[limits]\nper_second = 1\nburst = 5\n");
    let prepared = limits.prepare_reload().expect("valid").expect("a file is configured");
    let reload = limits.apply(prepared);
    assert_eq!(reload.previous_version, v1);
    assert_eq!(limits.version(), reload.version);
    for _ in 0..5 {
        assert!(limits.admit_call("tax", WHO).is_ok());
    }
    assert!(limits.admit_call("tax", WHO).is_err());

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(limits.prepare_reload(), Err(LimitsError::Read { .. })));
    assert!(open(&config).is_err(), "a missing file stops start-up");
}

#[test]
fn limits_from_the_main_configuration_do_not_reload() {
    let (limits, _) = open(&LimitsConfig::default()).unwrap();
    assert!(!limits.reloadable());
    assert_eq!(limits.version(), "config");
    assert!(limits.prepare_reload().unwrap().is_none());
}

#[test]
fn rate_refusals_are_resource_exhausted_with_retry_info_quota_failure_and_metadata() {
    let (limits, clock) = open(&LimitsConfig { per_second: 4.0, burst: 1, ..Default::default() }).unwrap();
    let admitted = limits.admit_call("tax", WHO).expect("first");
    assert_eq!(admitted.rate, Some(RateStatus { limit: 1, remaining: 0, reset: Duration::from_millis(250) }));
    drop(admitted);
    clock.advance(Duration::from_millis(100));
    let refusal = limits.admit_call("tax", WHO).expect_err("second");
    let status = refusal.into_status();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.get_details_error_info().map(|i| i.reason).as_deref(), Some("RATE_LIMITED"));
    let retry = status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert_eq!(retry, Duration::from_millis(150), "the exact GCRA wait");
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "department:tax");
    assert!(quota.violations[0].description.contains("4 calls per second, bursts of 1"));
    let meta = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(meta("x-ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(meta("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(meta("x-ratelimit-reset").as_deref(), Some("1"), "0.15 s, rounded up");
    // A batch item counts the same way, as an ApiError for its item error.
    assert!(matches!(
        limits.check_rate("tax", "/fedx.v1.VerificationService/JointVerify"),
        Err(ApiError::RateLimited { .. })
    ));
}

#[test]
fn harvest_refusals_are_budget_exhausted_naming_department_and_purpose() {
    let mut config = LimitsConfig::default();
    config.harvest.purposes.insert(
        "wage_arrears_investigation".into(),
        HarvestOverride { subjects_per_hour: Some(1), subjects_per_day: None },
    );
    let (limits, _) = open(&config).unwrap();
    limits.admit_subject("tax", "wage_arrears_investigation", "wr_a").unwrap();
    limits.admit_subject("tax", "wage_arrears_investigation", "wr_a").expect("a repeat");
    let error = limits.admit_subject("tax", "wage_arrears_investigation", "wr_b").unwrap_err();
    let status = error.status();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.get_details_error_info().map(|i| i.reason).as_deref(), Some("BUDGET_EXHAUSTED"));
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "department:tax/purpose:wage_arrears_investigation");
    let retry = status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(3600), "{retry:?}");
    assert!(!status.message().contains("wr_"), "no worker reference in the message: {}", status.message());
    limits.admit_subject("tax", "social_insurance_enrolment", "wr_b").expect("the default budget");

    // A reload keeps what the guard has seen.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    write(&path, "[limits.harvest.purposes.wage_arrears_investigation]\nsubjects_per_hour = 1\n");
    let (limits, _) = open(&LimitsConfig { file: Some(path.clone()), ..Default::default() }).unwrap();
    limits.admit_subject("tax", "wage_arrears_investigation", "wr_a").unwrap();
    write(&path, "[limits.harvest.purposes.wage_arrears_investigation]\nsubjects_per_hour = 2\n");
    limits.apply(limits.prepare_reload().unwrap().unwrap());
    assert_eq!(limits.harvest().seen("tax", "wage_arrears_investigation"), (1, 1));
    limits.admit_subject("tax", "wage_arrears_investigation", "wr_b").expect("room for a second");
    assert!(limits.admit_subject("tax", "wage_arrears_investigation", "wr_c").is_err());
}

#[test]
fn only_health_and_reflection_are_exempt() {
    assert!(is_limited(WHO));
    assert!(is_limited("/fedx.v1.AdminService/ReloadPolicy"));
    assert!(!is_limited("/grpc.health.v1.Health/Check"));
    assert!(!is_limited("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
}

#[test]
fn the_section_round_trips_through_toml_for_config_check() {
    let mut config = LimitsConfig { replicas: 2, ..Default::default() };
    config.departments.insert("tax".into(), DepartmentLimits { burst: Some(5), ..Default::default() });
    config.methods.insert(
        WHO.into(),
        MethodLimits {
            per_second: None,
            burst: None,
            departments: [("tax".to_owned(), Rate { per_second: 0.5, burst: 1 })].into(),
        },
    );
    config.harvest.purposes.insert("employer_compliance".into(), HarvestOverride::default());
    let text = toml::to_string(&config).expect("serialises");
    assert_eq!(toml::from_str::<LimitsConfig>(&text).expect("parses back"), config);
}
