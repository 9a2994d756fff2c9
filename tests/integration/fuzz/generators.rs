//! Generators: JSON values, their renderings, hostile byte soups.

use super::*;

/// A regex strategy compiled once per pattern and process: a `&str` strategy parses its regex
/// (and builds its Unicode classes) again for every value it generates.
pub(super) fn re(pattern: &'static str) -> Arc<RegexGeneratorStrategy<String>> {
    type Compiled = HashMap<&'static str, Arc<RegexGeneratorStrategy<String>>>;
    static COMPILED: LazyLock<Mutex<Compiled>> = LazyLock::new(Mutex::default);
    let mut compiled = COMPILED.lock().expect("lock");
    Arc::clone(compiled.entry(pattern).or_insert_with(|| {
        Arc::new(proptest::string::string_regex(pattern).expect("a valid regex"))
    }))
}

/// A small deterministic generator for rendering choices (whitespace, escapes, order), so
/// that one `u64` from proptest decides a whole rendering.
pub(super) struct Dice(pub(super) u64);

impl Dice {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// How a JSON value is written out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    pub(super) seed: u64,
    /// Blanks between tokens.
    pub(super) blanks: bool,
    /// Line breaks among the blanks (not for SSE data lines).
    pub(super) newlines: bool,
    /// `\uXXXX` escapes of ordinary characters and `\/`.
    pub(super) escapes: bool,
    /// The same in member names (which the byte-level scanners compare raw).
    pub(super) key_escapes: bool,
    /// Object members in a random order rather than sorted.
    pub(super) shuffle: bool,
}

pub(super) fn style() -> BoxedStrategy<Style> {
    (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(seed, blanks, newlines, escapes, key_escapes, shuffle)| Style {
                seed,
                blanks,
                newlines,
                escapes,
                key_escapes,
                shuffle,
            },
        )
        .boxed()
}

pub(super) struct Renderer {
    dice: Dice,
    style: Style,
}

impl Renderer {
    pub(super) fn new(style: Style) -> Self {
        Self {
            dice: Dice(style.seed),
            style,
        }
    }

    pub(super) fn blank(&mut self, out: &mut String) {
        if !self.style.blanks || !self.dice.chance(35) {
            return;
        }
        let choices: &[&str] = if self.style.newlines {
            &[" ", "  ", "\t", "\n", "\r\n", "\n    "]
        } else {
            &[" ", "  ", "\t"]
        };
        out.push_str(choices[self.dice.below(choices.len())]);
    }

    fn string(&mut self, text: &str, out: &mut String) {
        self.quoted(text, self.style.escapes, out);
    }

    pub(super) fn key(&mut self, text: &str, out: &mut String) {
        self.quoted(text, self.style.key_escapes, out);
    }

    fn quoted(&mut self, text: &str, escapes: bool, out: &mut String) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' if self.dice.chance(50) => out.push_str("\\n"),
                '\t' if self.dice.chance(50) => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                '/' if escapes && self.dice.chance(30) => out.push_str("\\/"),
                c if escapes && self.dice.chance(15) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if self.dice.chance(50) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        } else {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    pub(super) fn value(&mut self, value: &Value, out: &mut String) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => self.string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.blank(out);
                        out.push(',');
                    }
                    self.blank(out);
                    self.value(item, out);
                }
                self.blank(out);
                out.push(']');
            }
            Value::Object(members) => {
                let mut order: Vec<(&String, &Value)> = members.iter().collect();
                if self.style.shuffle {
                    for i in (1..order.len()).rev() {
                        order.swap(i, self.dice.below(i + 1));
                    }
                }
                out.push('{');
                for (i, (key, item)) in order.into_iter().enumerate() {
                    if i > 0 {
                        self.blank(out);
                        out.push(',');
                    }
                    self.blank(out);
                    self.key(key, out);
                    self.blank(out);
                    out.push(':');
                    self.blank(out);
                    self.value(item, out);
                }
                self.blank(out);
                out.push('}');
            }
        }
    }
}

/// `value` written in `style`, with blanks around it.
pub(super) fn render(value: &Value, style: Style) -> String {
    let mut renderer = Renderer::new(style);
    let mut out = String::new();
    renderer.blank(&mut out);
    renderer.value(value, &mut out);
    renderer.blank(&mut out);
    out
}

/// Member names the parsers look for, among ordinary ones.
pub(super) const KEYS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "include_usage",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "choices",
    "response",
    "error",
    "code",
    "message",
    "messages",
    "content",
    "id",
    "",
];

pub(super) fn key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => re("\\PC{0,6}"),
        1 => re("[\"\\\\{}\\[\\]:,a-z]{0,6}"),
    ]
    .boxed()
}

pub(super) fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => re("\\PC{0,12}"),
        1 => re("[\"\\\\{}:,\\r\\n\\t u]{0,12}"),
        1 => prop::sample::select(&[
            "\"usage\":{\"prompt_tokens\":2}",
            "\\\"usage\\\":null",
            "data: {\"usage\":1}\n\n",
            "{",
            "}",
            "\\",
        ][..]).prop_map(str::to_owned),
    ]
    .boxed()
}

pub(super) fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..100_000).prop_map(Value::from),
        // Floats serde_json reads back exactly (its default parser is not correctly rounded for
        // 17-digit values: see `with_model_replaces_only_the_model`).
        any::<f64>().prop_filter_map("finite, round-trips", |f| {
            let number = serde_json::Number::from_f64(f)?;
            (serde_json::from_str::<f64>(&number.to_string()).ok()? == f)
                .then_some(Value::Number(number))
        }),
    ]
    .boxed()
}

pub(super) fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Pieces of JSON and SSE the scanners look for, to build byte soups from.
pub(super) const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b" ",
    b"\n",
    b"\r",
    b"\r\n",
    b"null",
    b"true",
    b"1",
    b"-0.5e3",
    b"\"model\"",
    b"\"stream\"",
    b"\"stream_options\"",
    b"\"include_usage\"",
    b"\"usage\"",
    b"\"prompt_tokens\"",
    b"\"choices\"",
    b"[]",
    b"data:",
    b"data: ",
    b"event: x",
    b": ping",
    b"\xff",
    b"\xc3",
    b"\\u00",
];

pub(super) fn soup() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..64)
        .prop_map(|parts| parts.concat())
        .boxed()
}

/// One byte edit of a document.
#[derive(Debug, Clone)]
pub(super) enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

pub(super) fn edits() -> BoxedStrategy<Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
            (
                any::<usize>(),
                prop::sample::select(b"{}[]\",:\\ \n0".to_vec())
            )
                .prop_map(|(at, b)| Edit::Insert(at, b)),
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        1..4,
    )
    .boxed()
}

pub(super) fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip(at, b) if len > 0 => bytes[at % len] = b,
            Edit::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Documents from `documents`, rendered in random styles: as they are (mostly), or mutated; and
/// arbitrary bytes and byte soups.
pub(super) fn hostile<S: Strategy<Value = Value> + 'static>(
    documents: impl Fn() -> S,
) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => soup(),
        4 => (documents(), style()).prop_map(|(v, s)| render(&v, s).into_bytes()),
        2 => (documents(), style(), edits())
            .prop_map(|(v, s, e)| apply(render(&v, s).into_bytes(), &e)),
    ]
    .boxed()
}

/// Parses JSON refusing duplicate member names anywhere (where parsers legitimately differ).
pub(super) fn strict(bytes: &[u8]) -> Option<Value> {
    struct Strict;
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(StrictSeed)? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut members = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(StrictSeed)?;
                if members.insert(key, value).is_some() {
                    return Err(de::Error::custom("duplicate member"));
                }
            }
            Ok(Value::Object(members))
        }
    }
    struct StrictSeed;
    impl<'de> de::DeserializeSeed<'de> for StrictSeed {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = de::DeserializeSeed::deserialize(StrictSeed, &mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}
