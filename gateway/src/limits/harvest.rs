//! The harvest guard: budgets of distinct workers per (department, purpose) per clock hour and per
//! calendar day.
//!
//! Fixed windows: the hour is the clock hour, the day the calendar day in China Standard Time (UTC+8, no
//! daylight saving), as the contract reckons dates. Each (department, purpose) keeps the set of workers
//! seen in the current hour and in the current day, as 64-bit SipHash values under a key drawn at
//! start-up — never the references themselves. A worker is admitted if each window has seen them already
//! or still has room; admitting adds them to both. So a set never holds more than its budget, and the
//! memory is bounded by departments × purposes × budgets.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// China Standard Time is UTC+08:00 all year.
const CST_OFFSET: u64 = 8 * HOUR;

/// Where the harvest guard reads the time (injectable so tests can cross windows).
pub trait WallClock: Send + Sync {
    /// Time since the Unix epoch.
    fn since_epoch(&self) -> Duration;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn since_epoch(&self) -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// Distinct workers allowed per window (this replica's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_hour: u32,
    pub per_day: u32,
}

/// Budgets per purpose, with a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    pub default: Budget,
    pub purposes: HashMap<String, Budget>,
}

impl Budgets {
    fn of(&self, purpose: &str) -> Budget {
        self.purposes.get(purpose).copied().unwrap_or(self.default)
    }
}

/// Which window is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// A new worker refused: the window that is full, its budget, and the time until it rolls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HarvestRefusal {
    pub window: Window,
    pub budget: u32,
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
struct Seen {
    index: u64,
    subjects: HashSet<u64>,
}

impl Seen {
    /// Empties the set when the window has moved on (freeing its memory).
    fn roll(&mut self, index: u64) {
        if self.index != index {
            self.index = index;
            self.subjects = HashSet::new();
        }
    }

    /// Whether `subject` may be counted in this window: seen already, or room for one more.
    fn admits(&self, subject: u64, budget: u32) -> bool {
        self.subjects.contains(&subject) || self.subjects.len() < budget as usize
    }
}

#[derive(Debug, Default)]
struct Windows {
    hour: Seen,
    day: Seen,
}

pub struct HarvestGuard {
    hasher: RandomState,
    budgets: ArcSwap<Budgets>,
    /// department → purpose → windows.
    windows: Mutex<HashMap<String, HashMap<String, Windows>>>,
    clock: Arc<dyn WallClock>,
}

impl HarvestGuard {
    pub fn new(budgets: Budgets, clock: Arc<dyn WallClock>) -> HarvestGuard {
        HarvestGuard {
            hasher: RandomState::new(),
            budgets: ArcSwap::from_pointee(budgets),
            windows: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// New budgets (a reload); the windows and what they have seen stay.
    pub fn set_budgets(&self, budgets: Budgets) {
        self.budgets.store(Arc::new(budgets));
    }

    /// Admits `worker_ref` for `dept` under `purpose` and remembers it, or refuses it.
    pub fn admit(&self, dept: &str, purpose: &str, worker_ref: &str) -> Result<(), HarvestRefusal> {
        let budget = self.budgets.load().of(purpose);
        let subject = self.hasher.hash_one(worker_ref);
        let now = self.clock.since_epoch();
        let secs = now.as_secs();
        let (hour, day) = (secs / HOUR, (secs + CST_OFFSET) / DAY);

        let mut all = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let by_purpose = match all.get_mut(dept) {
            Some(by_purpose) => by_purpose,
            None => all.entry(dept.to_owned()).or_default(),
        };
        let windows = match by_purpose.get_mut(purpose) {
            Some(windows) => windows,
            None => by_purpose.entry(purpose.to_owned()).or_default(),
        };
        windows.hour.roll(hour);
        windows.day.roll(day);
        // The day first: when both are full the caller has to wait for the day.
        if !windows.day.admits(subject, budget.per_day) {
            let end = Duration::from_secs((day + 1) * DAY - CST_OFFSET);
            return Err(HarvestRefusal {
                window: Window::Day,
                budget: budget.per_day,
                retry_after: end - now,
            });
        }
        if !windows.hour.admits(subject, budget.per_hour) {
            let end = Duration::from_secs((hour + 1) * HOUR);
            return Err(HarvestRefusal {
                window: Window::Hour,
                budget: budget.per_hour,
                retry_after: end - now,
            });
        }
        windows.hour.subjects.insert(subject);
        windows.day.subjects.insert(subject);
        Ok(())
    }

    /// Distinct workers seen by `dept` under `purpose` in the current hour and day windows (as of
    /// the last call; tests and diagnostics).
    pub fn seen(&self, dept: &str, purpose: &str) -> (usize, usize) {
        let all = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        all.get(dept)
            .and_then(|p| p.get(purpose))
            .map_or((0, 0), |w| (w.hour.subjects.len(), w.day.subjects.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock the test moves.
    #[derive(Default)]
    pub struct FakeWallClock(AtomicU64);

    impl FakeWallClock {
        fn at(secs: u64) -> Arc<FakeWallClock> {
            Arc::new(FakeWallClock(AtomicU64::new(secs * 1_000_000_000)))
        }

        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl WallClock for FakeWallClock {
        fn since_epoch(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    /// 2026-12-01T10:00:00Z = 18:00 in Beijing.
    const T0: u64 = 1_796_119_200;

    fn guard(per_hour: u32, per_day: u32, clock: Arc<FakeWallClock>) -> HarvestGuard {
        let budgets = Budgets {
            default: Budget { per_hour, per_day },
            purposes: [("employer_compliance".to_owned(), Budget { per_hour: 1, per_day: 1 })].into(),
        };
        HarvestGuard::new(budgets, clock)
    }

    const P: &str = "wage_arrears_investigation";

    #[test]
    fn repeats_pass_and_the_budget_plus_one_th_distinct_subject_is_refused_until_the_hour_rolls() {
        let clock = FakeWallClock::at(T0);
        let guard = guard(3, 10, clock.clone());
        for w in ["wr_a", "wr_b", "wr_c"] {
            guard.admit("tax", P, w).expect("within the budget");
        }
        clock.advance(Duration::from_secs(600));
        guard.admit("tax", P, "wr_a").expect("a worker already seen this hour always passes");
        let refused = guard.admit("tax", P, "wr_d").expect_err("the fourth distinct worker");
        assert_eq!(refused.window, Window::Hour);
        assert_eq!(refused.budget, 3);
        assert_eq!(refused.retry_after, Duration::from_secs(3000), "until 11:00Z");
        assert_eq!(guard.seen("tax", P), (3, 3), "a refused worker is not remembered");

        // Other departments and purposes have budgets of their own.
        guard.admit("education", P, "wr_d").expect("another department");
        guard.admit("tax", "social_insurance_enrolment", "wr_d").expect("another purpose");

        // The next hour: room again.
        clock.advance(Duration::from_secs(3000));
        guard.admit("tax", P, "wr_d").expect("the hour rolled over");
        assert_eq!(guard.seen("tax", P), (1, 4));
    }

    #[test]
    fn the_day_budget_holds_across_hours_and_rolls_at_midnight_in_beijing() {
        let clock = FakeWallClock::at(T0);
        let guard = guard(2, 3, clock.clone());
        guard.admit("tax", P, "wr_a").unwrap();
        guard.admit("tax", P, "wr_b").unwrap();
        clock.advance(Duration::from_secs(HOUR));
        guard.admit("tax", P, "wr_c").unwrap();
        guard.admit("tax", P, "wr_a").expect("seen today: counts in this hour, which has room");
        let refused = guard.admit("tax", P, "wr_d").unwrap_err();
        assert_eq!(refused.window, Window::Day);
        // 11:00Z is 19:00 in Beijing: five hours to midnight CST (16:00Z).
        assert_eq!(refused.retry_after, Duration::from_secs(5 * HOUR));
        clock.advance(Duration::from_secs(5 * HOUR - 1));
        assert!(guard.admit("tax", P, "wr_d").is_err(), "one second before midnight in Beijing");
        clock.advance(Duration::from_secs(1));
        guard.admit("tax", P, "wr_d").expect("a new day");
    }

    #[test]
    fn the_hour_budget_applies_to_subjects_seen_earlier_in_the_day() {
        let clock = FakeWallClock::at(T0);
        let guard = guard(1, 10, clock.clone());
        guard.admit("tax", P, "wr_a").unwrap();
        clock.advance(Duration::from_secs(HOUR));
        guard.admit("tax", P, "wr_b").unwrap();
        let refused = guard.admit("tax", P, "wr_a").expect_err("new for this hour, whose budget is used");
        assert_eq!(refused.window, Window::Hour);
    }

    #[test]
    fn per_purpose_budgets_and_reloads_keep_what_was_seen() {
        let clock = FakeWallClock::at(T0);
        let guard = guard(5, 5, clock);
        guard.admit("tax", "employer_compliance", "wr_a").unwrap();
        assert!(guard.admit("tax", "employer_compliance", "wr_b").is_err(), "its own budget of 1");
        guard.admit("tax", P, "wr_a").unwrap();
        guard.admit("tax", P, "wr_b").unwrap();
        guard.set_budgets(Budgets { default: Budget { per_hour: 2, per_day: 2 }, purposes: HashMap::new() });
        assert!(guard.admit("tax", P, "wr_c").is_err(), "the new, lower budget counts what was seen");
        guard.admit("tax", "employer_compliance", "wr_b").expect("now under the default of 2");
    }

    #[test]
    fn subjects_are_kept_as_keyed_hashes() {
        let a = guard(1, 1, FakeWallClock::at(T0));
        let b = guard(1, 1, FakeWallClock::at(T0));
        assert_ne!(a.hasher.hash_one("wr_x"), b.hasher.hash_one("wr_x"), "a key per process (per guard)");
    }
}
