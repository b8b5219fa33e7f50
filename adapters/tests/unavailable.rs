//! A source whose database is missing or unreachable reports `unavailable` within its timeout instead
//! of hanging the request.

use std::time::{Duration, Instant};

use fedx_adapters::{open_source, Department, LookupKey, SourceError, SourceLocation};

const TIMEOUT: Duration = Duration::from_millis(800);
const MARGIN: Duration = Duration::from_millis(700);

async fn assert_unavailable(loc: SourceLocation) {
    let src = open_source(Department::Tax, &loc, TIMEOUT).await.expect("lazy open succeeds");
    let started = Instant::now();
    let err = src.lookup(&LookupKey::CitizenId("11010519491231002X".into())).await.expect_err("no database");
    let took = started.elapsed();
    assert!(matches!(err, SourceError::Unavailable { .. }), "got {err}");
    assert!(took <= TIMEOUT + MARGIN, "took {took:?}");
    assert!(!err.to_string().contains("11010519491231002X"));
    let started = Instant::now();
    let err = src.health().await.expect_err("no database");
    assert_eq!(err.kind(), "unavailable");
    assert!(started.elapsed() <= TIMEOUT + MARGIN);
}

#[tokio::test]
async fn sqlite_missing_database_is_unavailable_within_timeout() {
    assert_unavailable(SourceLocation::Sqlite { path: "/nonexistent-fedx-dir/sub/tax.db".into() }).await;
}

#[tokio::test]
async fn sqlite_missing_file_in_existing_dir_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tax.db");
    assert_unavailable(SourceLocation::Sqlite { path: path.clone() }).await;
    assert!(!path.exists(), "the request path must not create an empty database");
}

#[tokio::test]
async fn postgres_unreachable_server_is_unavailable_within_timeout() {
    // Port 1: nothing listens there, connections are refused (and retried by the pool until the
    // acquire timeout).
    assert_unavailable(SourceLocation::Postgres {
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        schema: "fedx_src_tax".into(),
    })
    .await;
}

#[tokio::test]
async fn postgres_blackholed_server_is_unavailable_within_timeout() {
    // 10.255.255.1 is non-routable: the connection attempt hangs rather than being refused.
    assert_unavailable(SourceLocation::Postgres {
        url: "postgres://postgres@10.255.255.1:5432/test?connect_timeout=30".into(),
        schema: "fedx_src_tax".into(),
    })
    .await;
}
