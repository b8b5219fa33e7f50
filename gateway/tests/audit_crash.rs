//! The exchange log survives a crash: the real `fedx` binary serving mTLS clients is killed with SIGKILL
//! while calls are in flight. Every call that was answered OK must be in the log afterwards, the chain
//! must verify (`fedx audit verify`), and a restarted gateway continues the same chain.
//!
//! Runs on SQLite, and on PostgreSQL when the server named by `FEDX_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is reachable; with `FEDX_REQUIRE_PG=1` an unreachable
//! server is a failure instead of a skip.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::process::{seqs_are_contiguous, wait_until_serving, who_am_i, with_fresh_pg_database, Fedx};

const CLIENTS: usize = 16;

async fn crash_and_restart(fedx: Fedx) {
    let started = Instant::now();
    fedx.ok(&["certs", "init"]);
    let client = Arc::new(fedx.issue("tax", "consumer"));

    let mut server = fedx.serve("first");
    let addr = server.addr;
    let ready_id = wait_until_serving(&fedx, &mut server, &client).await;

    // 16 clients, each on its own connection, calling as fast as they are answered.
    let answered = Arc::new(Mutex::new(vec![ready_id]));
    let errors_before_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, answered, errors, killed) =
            (client.clone(), answered.clone(), errors_before_kill.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let channel = client.channel(addr);
            for n in 0u64.. {
                let id = format!("c{c:02}-{n:06}");
                match who_am_i(channel.clone(), &id).await {
                    Ok(_) => answered.lock().expect("lock").push(id),
                    Err(_) if killed.load(Ordering::SeqCst) => break,
                    Err(status) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        eprintln!("call {id} failed before the kill: {status:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight_at_kill = answered.lock().expect("lock").len();
    killed.store(true, Ordering::SeqCst);
    server.kill(); // SIGKILL on Unix: no shutdown, no flush
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("clients notice the gateway is gone")
            .expect("client task");
    }
    let answered = std::mem::take(&mut *answered.lock().expect("lock"));
    assert!(in_flight_at_kill >= 50, "too few calls answered before the kill: {in_flight_at_kill}");
    assert_eq!(errors_before_kill.load(Ordering::SeqCst), 0, "calls failed before the kill");

    // The log verifies and holds every answered call, exactly once.
    let verify = fedx.ok(&["audit", "verify"]);
    assert!(verify.contains("valid"), "{verify}");
    let records = fedx.records();
    seqs_are_contiguous(&records);
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *by_id.entry(r["request_id"].as_str().expect("request_id")).or_default() += 1;
        assert_eq!(r["method"], "/fedx.v1.GatewayService/WhoAmI", "{r}");
        assert_eq!(r["outcome_code"], 0, "{r}");
    }
    let missing: Vec<&String> = answered.iter().filter(|id| !by_id.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} calls answered OK are not in the log after the crash, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    let repeated: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "request ids recorded more than once: {repeated:?}");
    let answered_set: BTreeSet<&str> = answered.iter().map(String::as_str).collect();
    assert_eq!(answered_set.len(), answered.len());
    let head_before = records.last().expect("records").clone();

    // Save a checkpoint outside the database, restart on the same data, and continue the chain.
    let checkpoint_file = fedx.root().join("checkpoint.txt");
    fedx.ok(&["audit", "checkpoint", "--out", checkpoint_file.to_str().expect("utf-8 path")]);
    let mut server = fedx.serve("second");
    let after_id = wait_until_serving(&fedx, &mut server, &client).await;
    who_am_i(client.channel(server.addr), "after-restart").await.expect("served after restart");
    server.kill();

    let verify = fedx.ok(&["audit", "verify", "--checkpoint", checkpoint_file.to_str().expect("utf-8 path")]);
    assert!(verify.contains("valid"), "{verify}");
    let records = fedx.records();
    seqs_are_contiguous(&records);
    let n = head_before["seq"].as_u64().expect("seq") as usize;
    assert_eq!(records[n - 1], head_before, "records before the restart are unchanged");
    let new_ids: Vec<&str> = records[n..].iter().map(|r| r["request_id"].as_str().expect("id")).collect();
    assert!(new_ids.contains(&after_id.as_str()) && new_ids.contains(&"after-restart"), "{new_ids:?}");
    assert_eq!(records[n]["prev_hash"], head_before["record_hash"], "the chain continues across the crash");

    // And the verifier is not a rubber stamp: alter one record and it names it.
    let bad_seq = (n / 2).max(1);
    let database_url = fedx
        .database_url()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}?mode=rw", fedx.data_dir().join("fedx.db").display()));
    let store = fedx_gateway::store::Store::open(&database_url).await.expect("open the store");
    sqlx::query(&format!("UPDATE audit_records SET cert_serial = 'ffff' WHERE seq = {bad_seq}"))
        .execute(store.pool())
        .await
        .expect("tamper");
    store.close().await;
    let out = fedx.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "verify must fail on a tampered log: {out:?}");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("first bad seq {bad_seq}")), "{text}");

    eprintln!(
        "crash test: {} calls answered before SIGKILL, {} records after restart, {:.1} s",
        answered.len(),
        records.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_log_survives_sigkill_with_calls_in_flight() {
    crash_and_restart(Fedx::new(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_log_survives_sigkill_with_calls_in_flight() {
    with_fresh_pg_database(|url| crash_and_restart(Fedx::new(Some(url)))).await;
}
