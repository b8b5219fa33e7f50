//! Chinese names with realistic frequencies.
//!
//! Surnames follow their approximate national shares (王, 李, 张 and 刘 alone cover about 30 % of the
//! population); given names are drawn from a small pool with a steep (Zipf-like) distribution, which is
//! what produces the flood of namesakes (张伟, 王芳, 李娜…) that makes name + birth date non-unique at
//! provincial scale.

use rand::Rng;

/// Surnames with approximate shares in per-mille of the population.
pub static SURNAMES: &[(&str, u32)] = &[
    ("王", 71),
    ("李", 70),
    ("张", 68),
    ("刘", 54),
    ("陈", 46),
    ("杨", 33),
    ("黄", 23),
    ("赵", 22),
    ("吴", 20),
    ("周", 19),
    ("徐", 16),
    ("孙", 15),
    ("马", 15),
    ("朱", 14),
    ("胡", 13),
    ("郭", 12),
    ("何", 12),
    ("高", 11),
    ("林", 11),
    ("罗", 11),
    ("郑", 10),
    ("梁", 10),
    ("谢", 8),
    ("宋", 8),
    ("唐", 8),
    ("许", 7),
    ("韩", 7),
    ("冯", 7),
    ("邓", 7),
    ("曹", 7),
    ("彭", 6),
    ("曾", 6),
    ("肖", 6),
    ("田", 6),
    ("董", 5),
    ("袁", 5),
    ("潘", 5),
    ("于", 5),
    ("蒋", 5),
    ("蔡", 5),
    ("余", 5),
    ("杜", 5),
    ("叶", 5),
    ("程", 5),
    ("苏", 4),
    ("魏", 4),
    ("吕", 4),
    ("丁", 4),
    ("任", 4),
    ("沈", 4),
    ("姚", 4),
    ("卢", 4),
    ("姜", 4),
    ("崔", 3),
    ("钟", 3),
    ("谭", 3),
    ("陆", 3),
    ("汪", 3),
    ("范", 3),
    ("金", 3),
    ("石", 3),
    ("廖", 3),
    ("贾", 3),
    ("夏", 3),
    ("韦", 3),
    ("付", 3),
    ("方", 3),
    ("白", 3),
    ("邹", 3),
    ("孟", 3),
    ("熊", 3),
    ("秦", 3),
    ("邱", 3),
    ("江", 3),
    ("尹", 3),
    ("薛", 2),
    ("闫", 2),
    ("段", 2),
    ("雷", 2),
    ("侯", 2),
    ("龙", 2),
    ("史", 2),
    ("陶", 2),
    ("黎", 2),
    ("贺", 2),
    ("顾", 2),
    ("毛", 2),
    ("郝", 2),
    ("龚", 2),
    ("邵", 2),
    ("万", 2),
    ("钱", 2),
    ("严", 2),
    ("覃", 2),
    ("武", 2),
    ("戴", 2),
    ("莫", 2),
    ("孔", 2),
    ("向", 2),
    ("汤", 2),
    ("欧阳", 1),
    ("诸葛", 1),
    ("司马", 1),
];

/// Common male given names, most frequent first.
pub static GIVEN_MALE: &[&str] = &[
    "伟", "强", "磊", "军", "勇", "杰", "涛", "明", "超", "刚", "平", "辉", "鹏", "华", "飞", "斌", "波",
    "浩", "宇", "俊", "峰", "建华", "建国", "建军", "志强", "志明", "海涛", "小龙", "国强", "文", "亮", "林",
    "健", "凯", "兵", "东", "晨", "阳", "帅", "龙", "海", "建平", "红军", "小军", "永刚", "德明", "春生",
    "金龙", "家豪", "子轩", "浩然", "宇航", "俊杰", "晓东", "云龙", "志刚", "立新", "卫东",
];

/// Common female given names, most frequent first.
pub static GIVEN_FEMALE: &[&str] = &[
    "芳", "娜", "秀英", "敏", "静", "丽", "艳", "娟", "霞", "秀兰", "燕", "玲", "桂英", "丹", "萍", "红",
    "玉兰", "桂兰", "英", "梅", "莉", "婷", "雪", "慧", "琳", "晶", "倩", "颖", "洁", "兰", "小红", "丽华",
    "春梅", "海燕", "玉梅", "秀珍", "金凤", "美玲", "晓燕", "雪梅", "丽娟", "欣怡", "子涵", "雨欣", "思琪",
    "梦瑶", "佳怡", "诗涵",
];

/// Uyghur given names (Kashgar hukou); full names are written `given·father's name`.
pub static UYGHUR_MALE: &[&str] =
    &["买买提", "艾力", "阿不都", "吐尔逊", "艾买提", "努尔", "亚森", "热合曼", "阿布力孜", "依明"];
pub static UYGHUR_FEMALE: &[&str] =
    &["阿依古丽", "古丽娜尔", "热依拉", "帕提古丽", "努尔古丽", "米娜瓦尔", "阿米娜", "祖丽菲亚"];

/// Zipf-like pick: index k has weight 1/(k+1), so the first few entries dominate.
pub fn zipf_pick<'a, R: Rng + ?Sized>(rng: &mut R, items: &'a [&'a str]) -> &'a str {
    let total: f64 = (1..=items.len()).map(|k| 1.0 / k as f64).sum();
    let mut x = rng.gen::<f64>() * total;
    for (k, it) in items.iter().enumerate() {
        x -= 1.0 / (k + 1) as f64;
        if x <= 0.0 {
            return it;
        }
    }
    items[items.len() - 1]
}

/// Pick a surname by share.
pub fn surname<R: Rng + ?Sized>(rng: &mut R) -> &'static str {
    let total: u32 = SURNAMES.iter().map(|s| s.1).sum();
    let mut x = rng.gen_range(0..total);
    for (s, w) in SURNAMES {
        if x < *w {
            return s;
        }
        x -= w;
    }
    SURNAMES[0].0
}

/// Characters combined into two-character given names (first, second), by sex.
static MALE_FIRST: &[&str] = &[
    "志", "建", "国", "文", "明", "小", "海", "永", "德", "家", "俊", "子", "浩", "宇", "天", "金", "春",
    "晓", "立", "红", "卫", "玉", "长", "学", "振", "世", "光", "成", "新", "庆",
];
static MALE_SECOND: &[&str] = &[
    "强", "明", "军", "华", "平", "伟", "刚", "勇", "杰", "斌", "波", "辉", "龙", "峰", "涛", "林", "东",
    "成", "新", "良", "生", "荣", "飞", "鹏", "超", "亮", "军", "宏", "武", "福",
];
static FEMALE_FIRST: &[&str] = &[
    "秀", "丽", "玉", "桂", "春", "美", "晓", "海", "雪", "金", "小", "佳", "雨", "思", "梦", "欣", "诗",
    "子", "淑", "红", "艳", "慧", "婉", "静", "月", "彩", "翠", "爱", "凤", "巧",
];
static FEMALE_SECOND: &[&str] = &[
    "英", "兰", "梅", "芳", "华", "珍", "燕", "霞", "凤", "玲", "娟", "琴", "红", "莲", "婷", "琳", "怡",
    "涵", "瑶", "欣", "云", "萍", "敏", "丹", "娥", "菊", "花", "香", "清", "荣",
];

/// A Han name for the given sex, with the given surname: 40 % from the pool of very common given
/// names (the namesake generators), the rest composed of two characters.
pub fn han_name<R: Rng + ?Sized>(rng: &mut R, surname: &str, male: bool) -> String {
    if rng.gen_bool(0.4) {
        let given = zipf_pick(rng, if male { GIVEN_MALE } else { GIVEN_FEMALE });
        return format!("{surname}{given}");
    }
    let (first, second) = if male { (MALE_FIRST, MALE_SECOND) } else { (FEMALE_FIRST, FEMALE_SECOND) };
    let a = zipf_pick(rng, first);
    let b = zipf_pick(rng, second);
    format!("{surname}{a}{b}")
}

/// A Uyghur name `given·father`, with the middle dot used in Chinese documents.
pub fn uyghur_name<R: Rng + ?Sized>(rng: &mut R, male: bool) -> String {
    let given = zipf_pick(rng, if male { UYGHUR_MALE } else { UYGHUR_FEMALE });
    let father = zipf_pick(rng, UYGHUR_MALE);
    format!("{given}·{father}")
}

/// Shop-name syllables for enterprise and individual business names (字号).
pub static TRADE_NAMES: &[&str] = &[
    "鑫源", "宏达", "恒通", "兴旺", "华盛", "永丰", "金鹏", "利民", "顺发", "昌隆", "广源", "福瑞", "荣盛",
    "新华", "隆兴", "建安", "诚信", "众合", "天成", "万通", "嘉禾", "盛世", "博远", "中泰",
];

/// Industries migrant workers are employed in, with the suffix used in enterprise names.
pub static INDUSTRIES: &[(&str, &str)] = &[
    ("建筑业", "建筑工程有限公司"),
    ("建筑业", "劳务有限公司"),
    ("制造业", "电子科技有限公司"),
    ("制造业", "五金制品有限公司"),
    ("制造业", "服装有限公司"),
    ("住宿和餐饮业", "餐饮管理有限公司"),
    ("批发和零售业", "商贸有限公司"),
    ("交通运输、仓储和邮政业", "物流有限公司"),
    ("居民服务、修理和其他服务业", "家政服务有限公司"),
];

/// Chinese numeral for 1..=99 (school names: 第十二小学).
pub fn number_zh(n: u32) -> String {
    const D: [&str; 10] = ["", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
    match n {
        0 => "零".into(),
        1..=9 => D[n as usize].into(),
        10..=19 => format!("十{}", D[(n % 10) as usize]),
        _ => format!("{}十{}", D[(n / 10 % 10) as usize], D[(n % 10) as usize]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipf_favours_the_head() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 10_000;
        let heads = (0..n).filter(|_| zipf_pick(&mut rng, GIVEN_MALE) == GIVEN_MALE[0]).count();
        // 1/H(58) ≈ 21 %.
        assert!(heads > n / 7 && heads < n / 3, "{heads}");
    }

    #[test]
    fn chinese_numbers() {
        assert_eq!(number_zh(3), "三");
        assert_eq!(number_zh(10), "十");
        assert_eq!(number_zh(12), "十二");
        assert_eq!(number_zh(20), "二十");
    }
}
