//! Character tables for Chinese names: traditional → simplified pairs, homophone groups for noise, and
//! compound surnames.
//!
//! Built in rather than loaded because they are small, fixed and must be identical in every adapter, the
//! generator and the resolver; a table that varies by deployment would make the same name normalise
//! differently in different departments. Pairs were cross-checked against OpenCC's `t2s`/`s2t`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Traditional → simplified pairs that also hold in reverse: the simplified character is written with this
/// traditional one in traditional-script names. Each entry is exactly two characters.
const TRAD_SIMP: &[&str] = &[
    "張张", "陳陈", "劉刘", "黃黄", "趙赵", "吳吴", "楊杨", "鄭郑", "謝谢", "許许", "馮冯", "蔣蒋", "韓韩",
    "呂吕", "蕭萧", "葉叶", "鄧邓", "蘇苏", "盧卢", "陸陆", "賈贾", "閻阎", "譚谭", "鍾钟", "湯汤", "馬马",
    "羅罗", "孫孙", "錢钱", "衛卫", "韋韦", "顧顾", "龐庞", "饒饶", "萬万", "鄒邹", "龔龚", "賴赖", "喬乔",
    "聶聂", "嚴严", "鮑鲍", "邊边", "費费", "歐欧", "陽阳", "諸诸", "東东", "門门", "長长", "遲迟", "軒轩",
    "轅辕", "偉伟", "華华", "麗丽", "國国", "軍军", "傑杰", "勝胜", "強强", "輝辉", "濤涛", "鵬鹏", "飛飞",
    "龍龙", "鳳凤", "紅红", "藝艺", "蘭兰", "靜静", "樂乐", "靈灵", "穎颖", "瑩莹", "瑋玮", "煒炜", "禕祎",
    "嬌娇", "嬋婵", "婭娅", "嫻娴", "倫伦", "剛刚", "鋼钢", "鋒锋", "峯峰", "鋮铖", "銘铭", "錦锦", "鑑鉴",
    "鏡镜", "鎮镇", "鎖锁", "鐵铁", "寶宝", "貴贵", "賢贤", "賓宾", "贇赟", "貞贞", "賀贺", "資资", "財财",
    "質质", "豐丰", "豔艳", "鶯莺", "鴻鸿", "鶴鹤", "鷹鹰", "鳴鸣", "麥麦", "齊齐", "齡龄", "廣广", "慶庆",
    "獻献", "陰阴", "雲云", "電电", "霧雾", "靂雳", "靄霭", "顯显", "順顺", "頌颂", "頎颀", "頤颐", "頻频",
    "顏颜", "顥颢", "韻韵", "響响", "業业", "義义", "興兴", "舉举", "學学", "覺觉", "親亲", "記记", "詩诗",
    "誠诚", "詠咏", "語语", "讀读", "貝贝", "負负", "責责", "輕轻", "遠远", "運运", "達达", "選选", "遙遥",
    "邁迈", "鄉乡", "醫医", "釗钊", "鈞钧", "鈺钰", "銀银", "銳锐", "錕锟", "錚铮", "錫锡", "鍵键", "鎧铠",
    "鏞镛", "鐸铎", "開开", "閃闪", "閔闵", "閣阁", "闊阔", "關关", "雙双", "頂顶", "項项", "須须", "預预",
    "領领", "頭头", "顆颗", "題题", "願愿", "類类", "飄飘", "館馆", "騰腾", "驊骅", "驍骁", "驥骥", "體体",
    "魯鲁", "鮮鲜", "鯤鲲", "鳥鸟", "鸞鸾", "點点", "黨党", "劍剑", "勞劳", "勳勋", "勵励", "區区", "協协",
    "單单", "廳厅", "厲厉", "參参", "叢丛", "從从", "徹彻", "態态", "憲宪", "應应", "懷怀", "戀恋", "戰战",
    "戲戏", "揚扬", "換换", "撫抚", "擁拥", "擇择", "據据", "擴扩", "斂敛", "斬斩", "時时", "晉晋", "曉晓",
    "曄晔", "暉晖", "暢畅", "曠旷", "書书", "會会", "朧胧", "楓枫", "棟栋", "榮荣", "樺桦", "標标", "樞枢",
    "橋桥", "機机", "檢检", "櫻樱", "權权", "歡欢", "歲岁", "歸归", "氣气", "漢汉", "淵渊", "溫温", "潔洁",
    "潤润", "澤泽", "濱滨", "濟济", "瀅滢", "瀟潇", "灝灏", "燁烨", "營营", "爍烁", "爭争", "爾尔", "牆墙",
    "獎奖", "瑤瑶", "環环", "璽玺", "瓊琼", "產产", "畢毕", "畫画", "發发", "盡尽", "監监", "盤盘", "礦矿",
    "碩硕", "確确", "禮礼", "禪禅", "禎祯", "種种", "穩稳", "競竞", "筆笔", "簡简", "籃篮", "紀纪", "約约",
    "紈纨", "紋纹", "納纳", "紐纽", "純纯", "紗纱", "紘纮", "紡纺", "紹绍", "終终", "絢绚", "結结", "絨绒",
    "統统", "絲丝", "綠绿", "綺绮", "綸纶", "維维", "綿绵", "緒绪", "緣缘", "緯纬", "練练", "縣县", "縝缜",
    "總总", "繡绣", "繼继", "續续", "纓缨", "習习", "聖圣", "聞闻", "聯联", "聰聪", "聲声", "肅肃", "臨临",
    "與与", "艦舰", "莊庄", "莖茎", "萊莱", "蒼苍", "蓮莲", "蕩荡", "薈荟", "藍蓝", "藥药", "蘆芦", "處处",
    "號号", "術术", "衝冲", "補补", "裝装", "襲袭", "見见", "規规", "視视", "覽览", "觀观", "訓训", "訪访",
    "詳详", "認认", "說说", "課课", "調调", "談谈", "諧谐", "謙谦", "講讲", "證证", "識识", "譜谱", "護护",
    "譽誉", "讓让", "貢贡", "貫贯", "貿贸", "賞赏", "賜赐", "賦赋", "賽赛", "贊赞", "贏赢", "趕赶", "躍跃",
    "車车", "載载", "輔辅", "輪轮", "轉转", "辦办", "農农", "還还", "進进", "連连", "適适", "遺遗", "釋释",
    "鈴铃", "閏闰", "閩闽", "闖闯", "陣阵", "隊队", "階阶", "際际", "隨随", "隱隐", "雋隽", "雛雏", "離离",
    "霽霁", "頁页", "風风", "颯飒", "養养", "馭驭", "馳驰", "馴驯", "駒驹", "駿骏", "騏骐", "騎骑", "驕骄",
    "驗验", "鯨鲸", "鵑鹃", "鷗鸥", "鷺鹭", "恆恒", "羣群", "眾众", "淨净", "蘊蕴", "傳传", "嶽岳", "儀仪",
    "億亿", "優优", "備备", "價价", "儉俭", "兒儿", "凱凯", "勁劲", "匯汇", "嶺岭", "嶸嵘", "帥帅", "師师",
    "幫帮", "廬庐", "彥彦", "彌弥", "憶忆", "憐怜", "楨桢", "樹树", "滬沪", "滿满", "漣涟", "瀾澜", "灣湾",
    "燈灯", "燦灿", "燭烛", "璉琏", "瑪玛", "璣玑", "瓏珑", "瓚瓒", "祿禄", "箏筝", "節节", "篤笃", "簫箫",
    "粵粤", "級级", "細细", "經经", "縈萦", "繽缤", "羨羡", "翹翘", "萇苌", "葦苇", "蔭荫", "薔蔷", "詞词",
    "誼谊", "諾诺", "謹谨", "貽贻", "賡赓", "軼轶", "遜逊", "鈕钮", "鈿钿", "鉉铉", "銓铨", "錄录", "錡锜",
    "鍔锷", "鎔镕", "鏗铿", "閎闳", "闓闿", "陝陕", "韜韬", "頡颉", "顓颛", "飆飙", "駱骆", "騫骞", "驄骢",
    "鯉鲤", "鴿鸽", "鵲鹊", "鸝鹂", "鄔邬", "閆闫", "藺蔺", "鄺邝", "婁娄", "闞阚", "樓楼", "寧宁", "堯尧",
    "壽寿", "夢梦", "創创", "縉缙", "紳绅", "嬡嫒", "愛爱", "煙烟", "璦瑷", "琿珲", "現现", "塵尘", "壯壮",
    "奮奋", "實实", "寬宽", "將将", "專专", "崗岗", "巒峦", "帶带", "廈厦", "悅悦", "欒栾", "潁颍", "濰潍",
    "灃沣", "烏乌", "無无", "煥焕", "獨独", "皚皑", "硯砚", "籟籁", "緹缇", "縵缦", "繆缪", "纖纤", "藹蔼",
    "蘋苹", "蘿萝", "詡诩", "誥诰", "諭谕", "謐谧", "贛赣", "軻轲", "鍇锴", "鎬镐", "鏘锵", "鐳镭", "鑾銮",
    "闡阐", "隴陇", "靚靓", "韌韧", "颺飏", "騁骋", "驪骊", "鴛鸳", "鴦鸯", "歷历", "倉仓", "儲储", "傘伞",
    "僑侨", "儂侬", "勸劝", "卻却", "厙厍", "嘆叹", "團团", "圓圆", "圍围", "園园", "圖图", "壇坛", "墾垦",
    "壩坝", "夾夹", "奧奥", "娛娱", "媧娲", "嫗妪", "嬰婴", "孌娈", "寵宠", "寢寝", "屆届", "崢峥", "嵐岚",
    "巔巅", "幗帼", "廂厢", "廟庙", "廢废", "彈弹", "徑径", "慚惭", "憑凭", "憤愤", "戇戆", "揮挥", "決决",
    "湧涌", "滄沧", "潛潜", "瀏浏", "熒荧", "祕秘", "稅税", "稟禀", "穌稣", "紓纾", "絳绛", "給给", "絹绢",
    "綏绥", "綢绸", "綬绶", "綱纲", "緊紧", "緞缎", "緗缃", "緬缅", "縱纵", "織织", "繕缮", "羋芈", "艱艰",
    "蒞莅", "蓀荪", "薩萨", "貸贷", "贈赠", "跡迹", "蹤踪", "轎轿", "辭辞", "辮辫", "邐逦", "鄖郧", "酈郦",
    "醞酝", "釐厘",
];

/// Traditional → simplified pairs used only for normalising: in these the simplified character is also a
/// traditional character in its own right, above all as a surname (范, 余, 后, 郁, 姜 stay themselves in
/// Taiwan and Hong Kong), so converting back would corrupt names. Variant forms (艷, 嫺, 衆) are here too.
const TRAD_SIMP_FORWARD_ONLY: &[&str] = &[
    "範范", "鐘钟", "艷艳", "餘余", "髮发", "後后", "徵征", "曆历", "讚赞", "鬱郁", "蕓芸", "嫺娴", "臺台",
    "裊袅", "衆众",
];

/// Groups of name characters that share a pinyin syllable (tones ignored, as pinyin input methods ignore
/// them), so picking the wrong candidate from the IME list produces one for another. Each character
/// appears in at most one group.
pub(crate) const HOMOPHONE_GROUPS: &[&str] = &[
    "伟玮炜韦纬",
    "丽莉俪利力立励",
    "军君钧均",
    "华桦骅",
    "静婧靖敬",
    "敏珉闽",
    "杰洁捷",
    "明铭鸣茗",
    "芳方舫",
    "娜纳",
    "磊垒",
    "强墙蔷",
    "英瑛莺鹰",
    "玲灵凌龄菱",
    "林琳霖麟临",
    "婷亭庭廷",
    "燕艳彦雁",
    "红虹鸿宏洪弘",
    "霞侠",
    "平萍苹屏",
    "峰锋丰枫风",
    "刚钢岗",
    "斌彬滨",
    "辉晖徽",
    "慧惠蕙",
    "涛韬滔",
    "波博伯柏",
    "浩昊皓灏",
    "宇雨羽禹",
    "玉钰煜昱",
    "鹏朋",
    "凯恺铠楷",
    "俊骏峻浚",
    "琴芹勤",
    "梅玫媒",
    "健建剑",
    "晶菁精京经",
    "倩茜",
    "云芸耘昀",
    "兰岚蓝澜",
    "新欣鑫馨心芯",
    "飞菲非霏",
    "东冬",
    "龙隆",
    "佳嘉家加",
    "颖影",
    "莹盈滢",
    "阳洋扬",
    "帆凡",
    "琪琦祺淇棋旗奇",
    "思斯丝",
    "晨辰臣尘",
    "涵函含寒",
    "毅艺忆亿逸",
    "诚成城承程呈",
    "振震",
    "志智治致",
    "勇永涌泳",
    "贵桂",
    "福富",
    "秀绣",
    "婉宛",
    "亮谅",
    "娟鹃",
    "丹单",
    "超潮",
];

/// Two-character surnames (复姓), in simplified form. Without them 欧阳娜娜 would be read as surname 欧,
/// given name 阳娜娜, and masking and surname blocking would both go wrong.
pub(crate) const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "宇文", "司徒", "夏侯",
    "公孙", "端木", "轩辕", "西门", "南宫", "独孤", "澹台", "公冶", "宗政", "濮阳", "淳于", "单于", "太叔",
    "申屠", "仲孙", "钟离", "闾丘", "东郭", "百里", "呼延", "万俟", "拓跋", "第五", "左丘", "司空", "司寇",
    "巫马", "公西", "漆雕", "乐正", "壤驷", "公良", "谷梁", "宰父", "夹谷", "微生", "羊舌", "赫连", "鲜于",
    "闻人", "东门", "梁丘", "段干", "子车", "亓官", "即墨", "达奚", "褚师", "公羊", "颛孙",
];

fn pair(entry: &str) -> Option<(char, char)> {
    let mut it = entry.chars();
    let pair = (it.next()?, it.next()?);
    it.next().is_none().then_some(pair)
}

fn to_simp_map() -> &'static HashMap<char, char> {
    static MAP: OnceLock<HashMap<char, char>> = OnceLock::new();
    MAP.get_or_init(|| TRAD_SIMP.iter().chain(TRAD_SIMP_FORWARD_ONLY).filter_map(|e| pair(e)).collect())
}

fn to_trad_map() -> &'static HashMap<char, char> {
    static MAP: OnceLock<HashMap<char, char>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for (t, s) in TRAD_SIMP.iter().filter_map(|e| pair(e)) {
            map.entry(s).or_insert(t);
        }
        map
    })
}

fn homophone_map() -> &'static HashMap<char, &'static str> {
    static MAP: OnceLock<HashMap<char, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for group in HOMOPHONE_GROUPS {
            for c in group.chars() {
                map.entry(c).or_insert(*group);
            }
        }
        map
    })
}

/// The simplified form of a traditional name character, or the character itself.
pub(crate) fn simplify(c: char) -> char {
    to_simp_map().get(&c).copied().unwrap_or(c)
}

/// The traditional form of a simplified name character, or the character itself.
pub(crate) fn traditionalize(c: char) -> char {
    to_trad_map().get(&c).copied().unwrap_or(c)
}

/// The homophone group containing `c`, if any (including `c` itself).
pub(crate) fn homophones(c: char) -> Option<&'static str> {
    homophone_map().get(&c).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tables_are_well_formed() {
        for e in TRAD_SIMP.iter().chain(TRAD_SIMP_FORWARD_ONLY) {
            assert!(pair(e).is_some(), "bad entry {e}");
        }
        assert!(TRAD_SIMP.len() >= 300);
        let keys: HashSet<char> =
            TRAD_SIMP.iter().chain(TRAD_SIMP_FORWARD_ONLY).filter_map(|e| pair(e)).map(|(t, _)| t).collect();
        assert_eq!(keys.len(), TRAD_SIMP.len() + TRAD_SIMP_FORWARD_ONLY.len(), "duplicate key");
        // Simplifying must be idempotent: no output is itself a key.
        for (_, s) in TRAD_SIMP.iter().chain(TRAD_SIMP_FORWARD_ONLY).filter_map(|e| pair(e)) {
            assert!(!keys.contains(&s), "{s} is both a simplified form and a key");
        }
        // Reverse map: a round trip returns to the simplified character.
        for (_, s) in TRAD_SIMP.iter().filter_map(|e| pair(e)) {
            assert_eq!(simplify(traditionalize(s)), s);
        }
    }

    #[test]
    fn required_pairs_present() {
        for (t, s) in [
            ('張', '张'),
            ('陳', '陈'),
            ('劉', '刘'),
            ('黃', '黄'),
            ('趙', '赵'),
            ('偉', '伟'),
            ('華', '华'),
            ('麗', '丽'),
            ('國', '国'),
            ('軍', '军'),
            ('傑', '杰'),
            ('勝', '胜'),
            ('鍾', '钟'),
            ('鐘', '钟'),
            ('範', '范'),
            ('歐', '欧'),
            ('陽', '阳'),
        ] {
            assert_eq!(simplify(t), s);
        }
        assert_eq!(traditionalize('钟'), '鍾');
        assert_eq!(traditionalize('范'), '范');
        assert_eq!(traditionalize('后'), '后');
        assert_eq!(simplify('于'), '于');
        assert_eq!(simplify('於'), '於');
    }

    #[test]
    fn homophone_groups_are_disjoint_and_large_enough() {
        let mut seen = HashSet::new();
        let mut pairs = 0;
        for g in HOMOPHONE_GROUPS {
            let n = g.chars().count();
            assert!(n >= 2, "singleton group {g}");
            pairs += n * (n - 1) / 2;
            for c in g.chars() {
                assert!(seen.insert(c), "{c} in two groups");
                assert_eq!(simplify(c), c, "{c} is not simplified");
            }
        }
        assert!(pairs >= 40);
    }

    #[test]
    fn compound_surnames_are_two_simplified_chars() {
        for s in COMPOUND_SURNAMES {
            assert_eq!(s.chars().count(), 2, "{s}");
            assert!(s.chars().all(|c| simplify(c) == c), "{s}");
        }
    }
}
