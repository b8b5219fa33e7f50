//! The synthetic world: enterprises, then workers one by one, each producing the rows every department
//! would hold about them (with that department's kind of noise) and a ground-truth record.
//!
//! Determinism: every worker draws from its own RNG streams seeded from (seed, worker index), so a
//! worker's data does not depend on how many random numbers earlier workers used. The only shared
//! state is the set of issued ID numbers, which keeps IDs unique; it is filled in index order, so the
//! output is a pure function of the seed and the worker count.

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::{Date, Month};

use super::names;
use super::noise::NoiseConfig;
use super::regions::{destinations, is_uyghur_area, is_yi_area, Region, REGIONS};
use super::truth::TruthRecord;
use crate::dept::Department;
use crate::ident::citizen_id::{CitizenId, Sex};
use crate::ident::noise as inoise;
use crate::ident::usci::usci_check_char;
use crate::keys::iso_date;

/// One raw row, aligned with its table's columns; `None` is an empty cell.
pub type Raw = Vec<Option<String>>;

/// Rows for the five departments, each tagged with its table's index in
/// [`crate::sql_source::tables`]`(dept)`.
#[derive(Debug, Default)]
pub struct Rows {
    pub per_dept: [Vec<(usize, Raw)>; 5],
}

impl Rows {
    fn push(&mut self, dept: Department, table: usize, raw: Raw) {
        self.per_dept[dept.index()].push((table, raw));
    }

    /// Total rows across departments.
    pub fn len(&self) -> usize {
        self.per_dept.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// Table indexes, in the order of each department's `tables` list.
const PS_PERSON: usize = 0;
const PS_PERMIT: usize = 1;
const TAX_TAXPAYER: usize = 0;
const TAX_WITHHOLDING: usize = 1;
const SI_PERSON: usize = 0;
const SI_CONTRIBUTION: usize = 1;
const EDU_STUDENT: usize = 0;
const IC_ENTERPRISE: usize = 0;
const IC_INDIVIDUAL: usize = 1;
const IC_ABNORMAL: usize = 2;

/// First month of the generated employment window (2024-11) and its length.
const WINDOW_START_YEAR: i32 = 2024;
const WINDOW_START_MONTH0: u32 = 10;
pub const WINDOW_MONTHS: u32 = 24;

/// Contribution rates (employer + employee) per insurance type, per mille.
const RATES: [(&str, i64); 5] =
    [("pension", 240), ("medical", 85), ("unemployment", 10), ("work_injury", 4), ("maternity", 8)];

const PHONE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155", "156", "157",
    "158", "159", "166", "176", "177", "180", "181", "182", "183", "185", "186", "187", "188", "189", "191",
    "198", "199",
];

const ABNORMAL_REASONS: &[&str] = &[
    "未按照《企业信息公示暂行条例》规定的期限公示年度报告",
    "通过登记的住所或者经营场所无法联系",
    "公示企业信息隐瞒真实情况、弄虚作假",
    "未在责令的期限内公示有关企业信息",
];

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// `(year, month)` of window month `m`.
fn window_month(m: u32) -> (i32, u8) {
    let t = WINDOW_START_MONTH0 + m;
    (WINDOW_START_YEAR + (t / 12) as i32, (t % 12 + 1) as u8)
}

fn month_str(m: u32) -> String {
    let (y, mo) = window_month(m);
    format!("{y:04}-{mo:02}")
}

fn date(y: i32, m: u8, d: u8) -> Date {
    Date::from_calendar_date(y, Month::try_from(m).unwrap_or(Month::January), d).unwrap_or(Date::MIN)
}

fn month_day(m: u32, day: u8) -> Date {
    let (y, mo) = window_month(m);
    date(y, mo, day)
}

fn random_date<R: Rng>(rng: &mut R, from: Date, to: Date) -> Date {
    let a = from.to_julian_day();
    let b = to.to_julian_day();
    Date::from_julian_day(rng.gen_range(a..=b)).unwrap_or(from)
}

/// SplitMix64 finaliser: decorrelates (seed, index, stream) into an RNG seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)) ^ index))
}

/// GB 11714 organisation code: 8 digits + check character.
fn org_code(body: u64) -> String {
    const W: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let digits = format!("{:08}", body % 100_000_000);
    let sum: u32 = digits.bytes().zip(W).map(|(b, w)| u32::from(b - b'0') * w).sum();
    let c = match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from(b'0' + n as u8),
    };
    format!("{digits}{c}")
}

/// A valid USCI: 2-char registration authority/type, 6-digit region, organisation code, check char.
/// `serial` must be unique per (kind, region) for the codes to be unique; multiplying by a number
/// coprime to 10⁸ spreads consecutive serials over the space without collisions.
fn make_usci(kind: &str, region: &str, serial: u64) -> String {
    let body = format!("{kind}{region}{}", org_code(serial.wrapping_mul(7919) % 100_000_000));
    let bytes: [u8; 17] = body.as_bytes().try_into().expect("17 ASCII characters");
    let check = usci_check_char(&bytes).expect("USCI alphabet");
    format!("{body}{}", char::from(check))
}

fn phone<R: Rng>(rng: &mut R) -> String {
    let p = PHONE_PREFIXES[rng.gen_range(0..PHONE_PREFIXES.len())];
    format!("{p}{:08}", rng.gen_range(0..100_000_000u32))
}

fn sex_zh(male: bool) -> &'static str {
    if male {
        "男"
    } else {
        "女"
    }
}

struct Enterprise {
    usci: String,
    name: String,
    /// First window month whose contributions are unpaid, if the employer is in arrears.
    arrears_from: Option<u32>,
}

/// A worker's stable attributes: what a namesake copies.
struct Base {
    origin: &'static Region,
    male: bool,
    birth: Date,
    surname: String,
    name: String,
    ethnicity: &'static str,
}

struct Spell {
    employer: u32,
    start: u32,
    end: u32,
    income_yuan: i64,
    taxed: bool,
    insured: bool,
    full_insurance: bool,
}

/// The generator's state.
pub struct World {
    seed: u64,
    noise: NoiseConfig,
    dests: Vec<usize>,
    origins: Vec<usize>,
    enterprises: Vec<Enterprise>,
    /// Enterprise indexes per destination (parallel to `dests`).
    by_dest: Vec<Vec<u32>>,
    /// First 17 digits of every issued ID number.
    issued: HashSet<u64>,
}

impl World {
    /// Creates the world for `workers` workers; enterprises (about one per 15 workers) and their rows
    /// are produced by [`World::enterprise_rows`].
    pub fn new(seed: u64, noise: NoiseConfig, workers: u64) -> Self {
        let dests = destinations();
        let origins = (0..REGIONS.len()).filter(|&i| !REGIONS[i].destination).collect();
        let n_ent = (workers / 15).max(dests.len() as u64 * 3);
        let mut w = World {
            seed,
            noise,
            by_dest: vec![Vec::new(); dests.len()],
            dests,
            origins,
            enterprises: Vec::with_capacity(n_ent as usize),
            issued: HashSet::with_capacity((workers as usize) * 3 / 2 + n_ent as usize),
        };
        w.enterprises_skeleton(n_ent);
        w
    }

    fn enterprises_skeleton(&mut self, n: u64) {
        for k in 0..n {
            let mut rng = rng_for(self.seed, 1, k);
            let d = (k as usize) % self.dests.len();
            let region = &REGIONS[self.dests[d]];
            let (_, suffix) = names::INDUSTRIES[rng.gen_range(0..names::INDUSTRIES.len())];
            let trade = names::TRADE_NAMES[rng.gen_range(0..names::TRADE_NAMES.len())];
            let arrears_from = rng.gen_bool(0.08).then(|| rng.gen_range(WINDOW_MONTHS - 8..WINDOW_MONTHS));
            self.enterprises.push(Enterprise {
                usci: make_usci("91", region.code, k),
                name: format!("{}{trade}{suffix}", region.name),
                arrears_from,
            });
            self.by_dest[d].push(k as u32);
        }
    }

    /// Issues a unique valid ID number.
    fn issue_id(&mut self, rng: &mut StdRng, region: &str, birth: Date, male: bool) -> CitizenId {
        let mut seq: u16 = rng.gen_range(0..500u16) * 2 + u16::from(male);
        for _ in 0..500 {
            if let Some(id) = CitizenId::from_parts(region, birth, seq) {
                let key: u64 = id.as_str()[..17].parse().unwrap_or(0);
                if self.issued.insert(key) {
                    return id;
                }
            }
            seq = (seq + 2) % 1000;
        }
        // 500 people of one sex born on one day in one county: not reachable at provincial scale.
        panic!("ID sequence space exhausted for one county and day");
    }

    /// The industry-commerce rows for all enterprises (with legal representatives and the
    /// abnormal-operation list).
    pub fn enterprise_rows(&mut self, rows: &mut Rows) {
        for k in 0..self.enterprises.len() {
            let mut rng = rng_for(self.seed, 2, k as u64);
            let region = &REGIONS[self.dests[k % self.dests.len()]];
            let (industry, _) = names::INDUSTRIES[rng.gen_range(0..names::INDUSTRIES.len())];
            let status = match rng.gen_range(0..100) {
                0..=84 => "存续",
                85..=92 => "吊销",
                _ => "注销",
            };
            let male = rng.gen_bool(0.75);
            let rep_birth = random_date(&mut rng, date(1960, 1, 1), date(1992, 12, 31));
            let origin = &REGIONS[self.origins[rng.gen_range(0..self.origins.len())]];
            let surname = names::surname(&mut rng);
            let rep_name = names::han_name(&mut rng, surname, male);
            let rep_id = self.issue_id(&mut rng, origin.code, rep_birth, male);
            let established = random_date(&mut rng, date(2000, 1, 1), date(2023, 12, 31));
            let e = &self.enterprises[k];
            rows.push(
                Department::IndustryCommerce,
                IC_ENTERPRISE,
                vec![
                    s(&e.usci),
                    s(&e.name),
                    s(status),
                    s(&rep_name),
                    rng.gen_bool(0.9).then(|| rep_id.as_str().to_owned()),
                    s(region.code),
                    s(industry),
                    s(iso_date(established)),
                ],
            );
            let listed = if status == "吊销" { rng.gen_bool(0.7) } else { rng.gen_bool(0.04) };
            if listed {
                let on = random_date(&mut rng, date(2020, 1, 1), date(2026, 9, 30));
                let removed = (status == "存续" && rng.gen_bool(0.3)).then(|| {
                    iso_date(random_date(
                        &mut rng,
                        on.saturating_add(time::Duration::days(30)),
                        date(2026, 10, 31),
                    ))
                });
                rows.push(
                    Department::IndustryCommerce,
                    IC_ABNORMAL,
                    vec![
                        s(&e.usci),
                        s(iso_date(on)),
                        s(ABNORMAL_REASONS[rng.gen_range(0..ABNORMAL_REASONS.len())]),
                        s(format!("{}市场监督管理局", region.name)),
                        removed,
                    ],
                );
            }
        }
    }

    fn base(&self, i: u64) -> Base {
        let mut rng = rng_for(self.seed, 3, i);
        // Most workers come from the labour-exporting counties; some work near home.
        let origin = if rng.gen_bool(0.85) {
            &REGIONS[self.origins[rng.gen_range(0..self.origins.len())]]
        } else {
            &REGIONS[self.dests[rng.gen_range(0..self.dests.len())]]
        };
        let male = rng.gen_bool(0.65);
        let birth = random_date(&mut rng, date(1966, 1, 1), date(2005, 12, 31));
        let (surname, name, ethnicity) = if is_uyghur_area(origin.code) {
            let n = names::uyghur_name(&mut rng, male);
            (String::new(), n, "维吾尔")
        } else {
            let sn = names::surname(&mut rng);
            let n = names::han_name(&mut rng, sn, male);
            let eth = if is_yi_area(origin.code) && rng.gen_bool(0.3) { "彝" } else { "汉" };
            (sn.to_owned(), n, eth)
        };
        Base { origin, male, birth, surname, name, ethnicity }
    }

    // ---- noise -------------------------------------------------------------------------------

    /// An ID as typed outside public security: lower-case x, full-width digits, stray spaces.
    fn noisy_id(&self, rng: &mut StdRng, id: &str) -> String {
        let mut out = id.to_owned();
        if out.ends_with('X') && rng.gen_bool(self.noise.lowercase_x) {
            out = inoise::lowercase_x(&out);
        }
        if rng.gen_bool(self.noise.full_width) {
            out = inoise::to_full_width(&out);
        }
        if rng.gen_bool(self.noise.stray_space) {
            out = inoise::insert_stray_space(&out, rng);
        }
        out
    }

    /// A name as typed outside public security: homophone typo, traditional characters, stray space.
    fn noisy_name(&self, rng: &mut StdRng, name: &str) -> String {
        let mut out = name.to_owned();
        if rng.gen_bool(self.noise.homophone_typo) {
            if let Some(t) = inoise::homophone_typo(&out, rng) {
                out = t;
            }
        }
        if rng.gen_bool(self.noise.traditional) {
            out = inoise::to_traditional(&out);
        }
        if rng.gen_bool(self.noise.stray_space) {
            out = inoise::insert_stray_space(&out, rng);
        }
        out
    }

    /// A phone as recorded outside public security: sometimes an old number, sometimes formatted.
    fn noisy_phone(&self, rng: &mut StdRng, current: &str, old: &str) -> String {
        let p = if rng.gen_bool(self.noise.stale_phone) { old } else { current };
        if rng.gen_bool(self.noise.phone_format) {
            match rng.gen_range(0..3) {
                0 => format!("+86 {p}"),
                1 => format!("{}-{}-{}", &p[..3], &p[3..7], &p[7..]),
                _ => format!("{} {} {}", &p[..3], &p[3..7], &p[7..]),
            }
        } else {
            p.to_owned()
        }
    }

    /// A mistyped ID: an adjacent transposition or one wrong digit; never equal to the original.
    fn mistyped_id(rng: &mut StdRng, id: &str) -> String {
        for _ in 0..8 {
            let t = if rng.gen_bool(0.5) {
                inoise::transpose_adjacent_digits(id, rng)
            } else {
                inoise::substitute_one_digit(id, rng)
            };
            if t != id {
                return t;
            }
        }
        inoise::substitute_one_digit(id, rng)
    }

    // ---- workers -------------------------------------------------------------------------------

    fn spells(&self, rng: &mut StdRng, dest: usize) -> Vec<Spell> {
        let employers = &self.by_dest[dest];
        let mut out = Vec::new();
        let mut m: i64 = rng.gen_range(-6..8);
        while m < i64::from(WINDOW_MONTHS) && out.len() < 4 {
            let len = rng.gen_range(2..=14);
            let start = m.max(0) as u32;
            let end = (m + len).clamp(0, i64::from(WINDOW_MONTHS)) as u32;
            if end > start {
                out.push(Spell {
                    employer: employers[rng.gen_range(0..employers.len())],
                    start,
                    end,
                    income_yuan: rng.gen_range(3_500..9_500),
                    taxed: rng.gen_bool(0.9),
                    insured: rng.gen_bool(0.55),
                    full_insurance: rng.gen_bool(0.5),
                });
            }
            // Gaps between jobs: going home for the harvest or Spring Festival, looking for work.
            m += len + rng.gen_range(0..=5);
        }
        out
    }

    /// Generates worker `i` (call with i = 0, 1, 2… in order) and returns their ground truth.
    pub fn worker(&mut self, i: u64, rows: &mut Rows) -> TruthRecord {
        let mut rng = rng_for(self.seed, 4, i);
        let mut base = self.base(i);
        let mut namesake_of = None;
        if i > 0 && rng.gen_bool(self.noise.namesake) {
            let j = rng.gen_range(i.saturating_sub(5_000)..i);
            let other = self.base(j);
            base.male = other.male;
            base.birth = other.birth;
            base.surname = other.surname;
            base.name = other.name;
            namesake_of = Some(format!("W{j:09}"));
        }
        let id = self.issue_id(&mut rng, base.origin.code, base.birth, base.male);
        let cur_phone = phone(&mut rng);
        let old_phone = phone(&mut rng);
        let d = rng.gen_range(0..self.dests.len());
        let dest = &REGIONS[self.dests[d]];
        let spells = self.spells(&mut rng, d);
        let pref = format!("{i:09}");
        let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut add =
            |dept: Department, key: String| records.entry(dept.code().to_owned()).or_default().push(key);

        // 公安: household registration and residence permits.
        let person_no = format!("R{pref}");
        rows.push(
            Department::PublicSecurity,
            PS_PERSON,
            vec![
                s(&person_no),
                s(id.as_str()),
                s(&base.name),
                s(sex_zh(base.male)),
                s(iso_date(base.birth)),
                s(base.ethnicity),
                s(base.origin.code),
                s(format!(
                    "{}{}镇{}村{}组{}号",
                    base.origin.name,
                    names::TRADE_NAMES[rng.gen_range(0..names::TRADE_NAMES.len())],
                    names::TRADE_NAMES[rng.gen_range(0..names::TRADE_NAMES.len())],
                    rng.gen_range(1..12),
                    rng.gen_range(1..80)
                )),
                rng.gen_bool(0.7).then(|| cur_phone.clone()),
                s(iso_date(random_date(&mut rng, date(2015, 1, 1), date(2026, 10, 31)))),
            ],
        );
        add(Department::PublicSecurity, format!("person/{person_no}"));
        if rng.gen_bool(0.45) {
            let mut from = month_day(rng.gen_range(0..12), 1);
            for k in 0..rng.gen_range(1..=2) {
                let until = from.replace_year(from.year() + 1).unwrap_or(from).previous_day().unwrap_or(from);
                rows.push(
                    Department::PublicSecurity,
                    PS_PERMIT,
                    vec![
                        s(format!("JZ{}{pref}{k}", dest.code)),
                        s(&person_no),
                        s(dest.code),
                        s(format!("{}某街道{}号", dest.name, rng.gen_range(1..500))),
                        s(iso_date(from)),
                        s(iso_date(until)),
                    ],
                );
                from = until.next_day().unwrap_or(until);
            }
        }

        self.tax_rows(&mut rng, &pref, &id, &base, &spells, (&cur_phone, &old_phone), rows, &mut add);
        self.si_rows(&mut rng, &pref, &id, &base, dest, &spells, (&cur_phone, &old_phone), rows, &mut add);
        self.education_rows(&mut rng, &pref, &id, &base, dest, (&cur_phone, &old_phone), rows, &mut add);

        // 市场监管: some workers run an individual business.
        if rng.gen_bool(0.03) {
            let usci = make_usci("92", dest.code, 50_000_000 + i);
            let trade = names::TRADE_NAMES[rng.gen_range(0..names::TRADE_NAMES.len())];
            let kind =
                ["五金店", "小吃店", "便利店", "装修队", "理发店", "摩托车修理部"][rng.gen_range(0..6)];
            let shop_owner =
                if base.surname.is_empty() { trade.to_owned() } else { format!("{}记", base.surname) };
            rows.push(
                Department::IndustryCommerce,
                IC_INDIVIDUAL,
                vec![
                    s(&usci),
                    s(format!("{}{shop_owner}{kind}", dest.name)),
                    s(if rng.gen_bool(0.85) { "存续" } else { "注销" }),
                    s(&base.name),
                    rng.gen_bool(0.85).then(|| self.noisy_id(&mut rng, id.as_str())),
                    rng.gen_bool(0.9).then(|| self.noisy_phone(&mut rng, &cur_phone, &old_phone)),
                    s(dest.code),
                    s(iso_date(random_date(&mut rng, date(2015, 1, 1), date(2026, 6, 30)))),
                ],
            );
            add(Department::IndustryCommerce, format!("individual_business/{usci}"));
        }

        TruthRecord {
            person: format!("W{pref}"),
            citizen_id: id.as_str().to_owned(),
            name: base.name,
            birth_date: iso_date(base.birth),
            sex: if base.male { "M" } else { "F" }.to_owned(),
            phone: cur_phone,
            hukou_region: base.origin.code.to_owned(),
            namesake_of,
            records,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tax_rows(
        &self,
        rng: &mut StdRng,
        pref: &str,
        id: &CitizenId,
        base: &Base,
        spells: &[Spell],
        phones: (&str, &str),
        rows: &mut Rows,
        add: &mut impl FnMut(Department, String),
    ) {
        let taxed: Vec<&Spell> = spells.iter().filter(|s| s.taxed).collect();
        let Some(first) = taxed.first() else { return };
        // One employer typed the ID wrong: its declarations went to a second taxpayer record.
        let typo_employer = rng.gen_bool(self.noise.tax_mistyped_id).then(|| taxed[taxed.len() - 1].employer);
        let mut taxpayer = |no: String, id_raw: String, employer: u32, start: u32, rng: &mut StdRng| {
            rows.push(
                Department::Tax,
                TAX_TAXPAYER,
                vec![
                    s(&no),
                    s(id_raw),
                    s(self.noisy_name(rng, &base.name)),
                    rng.gen_bool(0.6).then(|| self.noisy_phone(rng, phones.0, phones.1)),
                    s(&self.enterprises[employer as usize].usci),
                    s(iso_date(month_day(start, rng.gen_range(1..=28)))),
                ],
            );
            add(Department::Tax, format!("taxpayer/{no}"));
        };
        let main_no = format!("T{pref}0");
        let typo_no = format!("T{pref}1");
        let main_used = taxed.iter().any(|s| Some(s.employer) != typo_employer);
        if main_used {
            let first_main = taxed.iter().find(|s| Some(s.employer) != typo_employer).unwrap_or(first);
            let raw = self.noisy_id(rng, id.as_str());
            taxpayer(main_no.clone(), raw, first_main.employer, first_main.start, rng);
        }
        if let Some(emp) = typo_employer {
            let start = taxed.iter().find(|s| s.employer == emp).map_or(0, |s| s.start);
            let raw = Self::mistyped_id(rng, id.as_str());
            taxpayer(typo_no.clone(), raw, emp, start, rng);
        }
        for sp in &taxed {
            let e = &self.enterprises[sp.employer as usize];
            let no = if Some(sp.employer) == typo_employer { &typo_no } else { &main_no };
            for m in sp.start..sp.end {
                let income = sp.income_yuan * 100 + rng.gen_range(-30_000..30_000);
                rows.push(
                    Department::Tax,
                    TAX_WITHHOLDING,
                    vec![
                        s(no),
                        s(&e.usci),
                        s(month_str(m)),
                        s(income),
                        s(monthly_tax_fen(income)),
                        s(iso_date(month_day(m + 1, rng.gen_range(1..=15)))),
                    ],
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn si_rows(
        &self,
        rng: &mut StdRng,
        pref: &str,
        id: &CitizenId,
        base: &Base,
        dest: &Region,
        spells: &[Spell],
        phones: (&str, &str),
        rows: &mut Rows,
        add: &mut impl FnMut(Department, String),
    ) {
        let insured: Vec<&Spell> = spells.iter().filter(|s| s.insured).collect();
        let Some(first) = insured.first() else { return };
        let si_no = format!("S{pref}");
        // Pre-1999 enrolments kept the 15-digit number of the first-generation ID card.
        let legacy = (base.birth.year() < 1984 && rng.gen_bool(self.noise.si_legacy_15))
            .then(|| inoise::to_legacy_15(id))
            .flatten();
        let id_raw = match legacy {
            Some(l) => l,
            None => self.noisy_id(rng, id.as_str()),
        };
        rows.push(
            Department::SocialInsurance,
            SI_PERSON,
            vec![
                s(&si_no),
                s(id_raw),
                s(self.noisy_name(rng, &base.name)),
                s(sex_zh(base.male)),
                rng.gen_bool(0.8).then(|| iso_date(base.birth)),
                rng.gen_bool(0.8).then(|| self.noisy_phone(rng, phones.0, phones.1)),
                s(dest.code),
                s(iso_date(month_day(first.start, rng.gen_range(1..=28)))),
            ],
        );
        add(Department::SocialInsurance, format!("insured_person/{si_no}"));
        for sp in insured {
            let e = &self.enterprises[sp.employer as usize];
            let base_fen = sp.income_yuan.clamp(4_000, 24_000) * 100;
            let types: &[(&str, i64)] = if sp.full_insurance { &RATES } else { &RATES[3..4] };
            for m in sp.start..sp.end {
                let status = match e.arrears_from {
                    Some(from) if m >= from => "arrears",
                    _ => "paid",
                };
                for (ty, rate) in types {
                    rows.push(
                        Department::SocialInsurance,
                        SI_CONTRIBUTION,
                        vec![
                            s(&si_no),
                            s(&e.usci),
                            s(month_str(m)),
                            s(ty),
                            s(base_fen),
                            s(base_fen * rate / 1000),
                            s(status),
                        ],
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn education_rows(
        &mut self,
        rng: &mut StdRng,
        pref: &str,
        id: &CitizenId,
        base: &Base,
        dest: &Region,
        phones: (&str, &str),
        rows: &mut Rows,
        add: &mut impl FnMut(Department, String),
    ) {
        let age = 2026 - base.birth.year();
        if !(25..=50).contains(&age) || !rng.gen_bool(0.3) {
            return;
        }
        let n = if rng.gen_bool(0.7) { 1 } else { 2 };
        for k in 0..n {
            let cmale = rng.gen_bool(0.52);
            let cbirth = random_date(rng, date(2011, 9, 1), date(2020, 8, 31));
            let surname = if base.male && !base.surname.is_empty() {
                base.surname.clone()
            } else {
                names::surname(rng).to_owned()
            };
            let cname = names::han_name(rng, &surname, cmale);
            let cid = self.issue_id(rng, base.origin.code, cbirth, cmale);
            // Age on 1 September 2026 decides the grade.
            let cage = 2026 - cbirth.year() - i32::from(cbirth.month() as u8 > 8);
            let grade_no = (cage - 5).clamp(1, 9) as usize;
            let grade = ["一", "二", "三", "四", "五", "六", "七", "八", "九"][grade_no - 1];
            let status = if cage >= 15 {
                "graduated"
            } else if rng.gen_bool(0.03) {
                "transferred"
            } else {
                "enrolled"
            };
            let (school_idx, school_kind) = if grade_no <= 6 {
                (rng.gen_range(1..=15), "小学")
            } else {
                (rng.gen_range(16..=20), "中学")
            };
            let phone_only = rng.gen_bool(self.noise.edu_phone_only_guardian);
            let missing_id = phone_only || rng.gen_bool(self.noise.edu_missing_guardian_id);
            let student_no = format!("E{pref}{k}");
            let guardian_name = (!phone_only).then(|| self.noisy_name(rng, &base.name));
            let guardian_id = (!missing_id).then(|| self.noisy_id(rng, id.as_str()));
            let guardian_phone =
                (phone_only || rng.gen_bool(0.95)).then(|| self.noisy_phone(rng, phones.0, phones.1));
            rows.push(
                Department::Education,
                EDU_STUDENT,
                vec![
                    s(&student_no),
                    rng.gen_bool(0.92).then(|| cid.as_str().to_owned()),
                    s(cname),
                    s(sex_zh(cmale)),
                    s(iso_date(cbirth)),
                    s(format!("21{}{school_idx:02}", dest.code)),
                    s(format!("{}第{}{school_kind}", dest.name, names::number_zh(school_idx))),
                    s(dest.code),
                    s(format!("{grade}年级")),
                    s(status),
                    s(iso_date(random_date(rng, date(2019, 9, 1), date(2026, 9, 1)))),
                    guardian_name,
                    guardian_id,
                    guardian_phone,
                    s(if phone_only {
                        "其他"
                    } else if base.male {
                        "父亲"
                    } else {
                        "母亲"
                    }),
                ],
            );
            add(Department::Education, format!("student/{student_no}"));
        }
    }
}

/// Monthly individual income tax on wages (simplified: 5,000 yuan standard deduction, the monthly
/// bracket table, no special deductions), in fen.
fn monthly_tax_fen(income_fen: i64) -> i64 {
    let taxable = income_fen - 500_000;
    if taxable <= 0 {
        0
    } else if taxable <= 300_000 {
        taxable * 3 / 100
    } else if taxable <= 1_200_000 {
        taxable / 10 - 21_000
    } else {
        taxable / 5 - 141_000
    }
}

/// Sex of a worker's truth record.
pub fn sex_of(code: &str) -> Option<Sex> {
    match code {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_code_check() {
        // Published example: organisation code D2143569-3? Use a self-consistency check instead:
        // the check digit makes Σ(c·w) + check ≡ 0 (mod 11) with check weight 1 ('X' = 10).
        for body in [0u64, 12345678, 99999999, 31415926] {
            let code = org_code(body);
            let w = [3u32, 7, 9, 10, 5, 8, 4, 2];
            let sum: u32 = code.bytes().take(8).zip(w).map(|(b, w)| u32::from(b - b'0') * w).sum();
            let c = match code.as_bytes()[8] {
                b'X' => 10,
                b => u32::from(b - b'0'),
            };
            assert_eq!((sum + c) % 11, 0, "{code}");
        }
    }

    #[test]
    fn tax_brackets() {
        assert_eq!(monthly_tax_fen(400_000), 0);
        assert_eq!(monthly_tax_fen(600_000), 3_000);
        assert_eq!(monthly_tax_fen(1_000_000), 29_000);
    }

    #[test]
    fn window_months() {
        assert_eq!(month_str(0), "2024-11");
        assert_eq!(month_str(2), "2025-01");
        assert_eq!(month_str(WINDOW_MONTHS - 1), "2026-10");
    }
}
