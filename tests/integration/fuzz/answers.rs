//! Answers: usage::from_json, the SSE scanner through usage::observe, BodyKind.

use super::generators::*;
use super::*;

/// A `usage` member in every shape: both namings, wrong types, nulls, extra members.
fn usage_value() -> BoxedStrategy<Value> {
    let count = prop_oneof![
        4 => (0u64..1_000_000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => number(),
        1 => json_value(),
    ];
    let field =
        |name: &'static str| proptest::option::of(count.clone()).prop_map(move |v| (name, v));
    prop_oneof![
        6 => (
            field("prompt_tokens"),
            field("completion_tokens"),
            field("input_tokens"),
            field("output_tokens"),
            prop::collection::btree_map(key(), json_value(), 0..3),
        )
            .prop_map(|(a, b, c, d, extra)| {
                let mut members: Map<String, Value> = extra.into_iter().collect();
                for (name, value) in [a, b, c, d] {
                    members.remove(name);
                    if let Some(value) = value {
                        members.insert(name.into(), value);
                    }
                }
                Value::Object(members)
            }),
        1 => Just(Value::Null),
        1 => json_value(),
    ]
    .boxed()
}

/// An answer with (mostly) a `usage`, decoys nested in other members.
fn answer() -> BoxedStrategy<Value> {
    (
        proptest::option::of(usage_value()),
        prop::collection::btree_map(key(), json_value(), 0..5),
    )
        .prop_map(|(usage, extra)| {
            let mut members: Map<String, Value> = extra.into_iter().collect();
            members.remove("usage");
            if let Some(usage) = usage {
                members.insert("usage".into(), usage);
            }
            Value::Object(members)
        })
        .boxed()
}

/// What a full parse of the answer says its usage is.
fn reference_usage(document: &Value) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Counts {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    }
    let usage = document.as_object()?.get("usage")?;
    let counts: Option<Counts> = serde_json::from_value(usage.clone()).ok()?;
    let counts = counts?;
    let prompt = counts.prompt_tokens.or(counts.input_tokens);
    let completion = counts.completion_tokens.or(counts.output_tokens);
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_tokens: 0,
    })
}

proptest! {
    #![proptest_config(config(5))]

    /// `usage::from_json` never panics, and on JSON objects without duplicate members it agrees
    /// with a full parse of the top-level `usage`, whatever the layout, order and escapes.
    #[test]
    fn from_json_agrees_with_a_full_parse(body in hostile(|| prop_oneof![4 => answer(), 1 => json_value()])) {
        let fast = usage::from_json(&body);
        if let Some(document) = strict(&body) {
            prop_assert_eq!(fast, reference_usage(&document), "{}", String::from_utf8_lossy(&body));
        }
    }
}

proptest! {
    #![proptest_config(config(1))]

    /// `BodyKind::from_content_type` never panics and recognises exactly the SSE and JSON
    /// essences.
    #[test]
    fn body_kind_of_any_content_type(value in re("\\PC{0,40}|[ -~]{0,40}")) {
        let Ok(header) = HeaderValue::from_str(&value) else {
            return Ok(());
        };
        let kind = BodyKind::from_content_type(Some(&header));
        let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let expected = if essence == "text/event-stream" {
            BodyKind::Sse
        } else if essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
        {
            BodyKind::Json
        } else {
            BodyKind::Other
        };
        prop_assert_eq!(kind, expected);
    }
}

/// Every `on_done` call.
type Reports = Arc<Mutex<Vec<(Option<Usage>, Ending)>>>;

/// What `observe` passed on and the usage it reported (exactly once, as complete).
fn observe_all(chunks: Vec<Bytes>, kind: BodyKind, strip: bool) -> (Vec<u8>, Option<Usage>) {
    let reports = Reports::default();
    let seen = Arc::clone(&reports);
    let body = Body::from_stream(futures_util::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    let body = usage::observe(body, kind, strip, move |usage, ending| {
        seen.lock().expect("lock").push((usage, ending));
    });
    let out = block_on(body.collect()).expect("body").to_bytes().to_vec();
    let reports = reports.lock().expect("lock").clone();
    assert_eq!(reports.len(), 1, "on_done once: {reports:?}");
    assert_eq!(reports[0].1, Ending::Complete);
    (out, reports[0].0)
}

/// `bytes` cut at `cuts` (taken modulo its length; repeats make empty chunks).
fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for to in at {
        chunks.push(Bytes::copy_from_slice(&bytes[from..to]));
        from = to;
    }
    chunks.push(Bytes::copy_from_slice(&bytes[from..]));
    chunks
}

/// A chat stream without and with the proxy's injected usage: the same events, plus a
/// `"usage":null` member in each chunk and one usage-only event.
#[derive(Debug, Clone)]
struct Streams {
    plain: Vec<u8>,
    injected: Vec<u8>,
    usage: Usage,
}

#[derive(Debug, Clone)]
enum Event {
    /// A chat chunk: its members (rendered), where `"usage":null` goes, the blank style.
    Chunk(Vec<(String, Value)>, usize),
    Comment(String),
    Named(String, Value),
    Done,
    Blank,
}

fn event() -> BoxedStrategy<Event> {
    // `message` too: a top-level `message` holding `usage` is Anthropic's message_start,
    // whose usage the scanner rightly reads.
    let top_key = key().prop_filter("not read at the top", |k| {
        !matches!(k.as_str(), "usage" | "response" | "message" | "choices")
    });
    prop_oneof![
        6 => (
            prop::collection::vec(json_value(), 0..3),
            prop::collection::btree_map(top_key, json_value(), 0..4),
            any::<usize>(),
        )
            .prop_map(|(choices, extra, at)| {
                let mut members: Vec<(String, Value)> = extra.into_iter().collect();
                members.insert(at % (members.len() + 1), ("choices".into(), Value::Array(choices)));
                Event::Chunk(members, at / 7)
            }),
        1 => re("[ -~]{0,20}").prop_map(Event::Comment),
        // Named events carry no top-level usage: that is the chat chunks' business here.
        1 => (re("[a-z.]{1,12}"), json_value()).prop_map(|(n, mut v)| {
            if let Some(members) = v.as_object_mut() {
                members.remove("usage");
                members.remove("response");
                members.remove("message");
            }
            Event::Named(n, v)
        }),
        1 => Just(Event::Done),
        1 => Just(Event::Blank),
    ]
    .boxed()
}

fn streams() -> BoxedStrategy<Streams> {
    (
        prop::collection::vec(
            (event(), prop::sample::select(&["\n", "\r\n", "\r"][..])),
            0..8,
        ),
        any::<usize>(),
        (0u64..100_000, 0u64..100_000),
        style(),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
    )
        .prop_map(
            |(events, usage_at, (prompt, completion), style, usage_ending)| {
                // Blanks inside a data line only: no line breaks. Member names unescaped: the
                // scanner finds `"usage"` by its bytes (see the report on escaped keys).
                let style = Style {
                    newlines: false,
                    key_escapes: false,
                    ..style
                };
                let mut renderer = Renderer::new(style);
                let mut plain = String::new();
                let mut injected = String::new();
                let usage_at = usage_at % (events.len() + 1);
                let usage_event = |renderer: &mut Renderer| {
                    let members = json!({
                        "choices": [],
                        "id": "chatcmpl-1",
                        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion},
                    });
                    let mut out = String::from("data: ");
                    renderer.value(&members, &mut out);
                    out.push_str(usage_ending);
                    out.push_str(usage_ending);
                    out
                };
                for (i, (event, ending)) in events.iter().enumerate() {
                    if i == usage_at {
                        injected.push_str(&usage_event(&mut renderer));
                    }
                    match event {
                        Event::Chunk(members, at) => {
                            // `{` blanks members joined by `,` + blanks, blanks `}`; the injected
                            // member goes in with the same separator.
                            let mut sep = String::from(",");
                            renderer.blank(&mut sep);
                            let mut open = String::from("{");
                            renderer.blank(&mut open);
                            let mut close = String::new();
                            renderer.blank(&mut close);
                            close.push('}');
                            let rendered: Vec<String> = members
                                .iter()
                                .map(|(k, v)| {
                                    let mut out = String::new();
                                    renderer.key(k, &mut out);
                                    renderer.blank(&mut out);
                                    out.push(':');
                                    renderer.blank(&mut out);
                                    renderer.value(v, &mut out);
                                    out
                                })
                                .collect();
                            let mut null_member = String::from("\"usage\"");
                            renderer.blank(&mut null_member);
                            null_member.push(':');
                            renderer.blank(&mut null_member);
                            null_member.push_str("null");
                            let mut with_null = rendered.clone();
                            with_null.insert(at % (rendered.len() + 1), null_member);
                            for (out, members) in
                                [(&mut plain, &rendered), (&mut injected, &with_null)]
                            {
                                out.push_str("data: ");
                                out.push_str(&open);
                                out.push_str(&members.join(&sep));
                                out.push_str(&close);
                                out.push_str(ending);
                                out.push_str(ending);
                            }
                        }
                        Event::Comment(text) => {
                            for out in [&mut plain, &mut injected] {
                                out.push_str(&format!(":{text}{ending}{ending}"));
                            }
                        }
                        Event::Named(name, value) => {
                            let mut data = String::new();
                            renderer.value(value, &mut data);
                            for out in [&mut plain, &mut injected] {
                                out.push_str(&format!(
                                    "event: {name}{ending}data: {data}{ending}{ending}"
                                ));
                            }
                        }
                        Event::Done => {
                            for out in [&mut plain, &mut injected] {
                                out.push_str(&format!("data: [DONE]{ending}{ending}"));
                            }
                        }
                        Event::Blank => {
                            // A lone LF right after a CR would join it as one line ending.
                            let after_cr = plain.ends_with('\r') || injected.ends_with('\r');
                            let ending = if after_cr && *ending == "\n" {
                                "\r\n"
                            } else {
                                ending
                            };
                            for out in [&mut plain, &mut injected] {
                                out.push_str(ending);
                            }
                        }
                    }
                }
                if usage_at == events.len() {
                    injected.push_str(&usage_event(&mut renderer));
                }
                Streams {
                    plain: plain.into_bytes(),
                    injected: injected.into_bytes(),
                    usage: Usage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        cached_tokens: 0,
                    },
                }
            },
        )
        .boxed()
}

/// SSE-ish byte soups: the framing bytes and the JSON the scanner reads, in any order.
fn sse_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        3 => soup(),
        2 => (streams(), edits()).prop_map(|(s, e)| apply(s.injected, &e)),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(9))]

    /// The SSE scanner on any bytes cut anywhere: never panics; passing through, the output is
    /// the input; stripping or not, output and usage do not depend on where chunks end; both
    /// modes read the same usage; `on_done` is called once.
    #[test]
    fn sse_any_bytes_any_cuts(
        bytes in sse_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (through, usage_through) = observe_all(cut(&bytes, &cuts), BodyKind::Sse, false);
        prop_assert_eq!(&through, &bytes);
        let (whole_through, whole_usage) = observe_all(vec![Bytes::from(bytes.clone())], BodyKind::Sse, false);
        prop_assert_eq!(&whole_through, &bytes);
        prop_assert_eq!(usage_through, whole_usage);

        let (stripped, usage_stripped) = observe_all(cut(&bytes, &cuts), BodyKind::Sse, true);
        let (whole_stripped, whole_usage_stripped) =
            observe_all(vec![Bytes::from(bytes.clone())], BodyKind::Sse, true);
        prop_assert_eq!(&stripped, &whole_stripped);
        prop_assert_eq!(usage_stripped, whole_usage_stripped);
        prop_assert_eq!(usage_stripped, usage_through);
        prop_assert!(stripped.len() <= bytes.len());
    }
}

proptest! {
    #![proptest_config(config(19))]

    /// Generated chat streams with the proxy's injection, in every line-ending style and cut
    /// anywhere: stripping gives back exactly the plain stream, and the usage is the injected
    /// event's; passing through keeps every byte; the plain stream has no usage.
    #[test]
    fn sse_strip_restores_the_plain_stream(
        streams in streams(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let (stripped, usage) = observe_all(cut(&streams.injected, &cuts), BodyKind::Sse, true);
        prop_assert_eq!(
            String::from_utf8_lossy(&stripped),
            String::from_utf8_lossy(&streams.plain)
        );
        prop_assert_eq!(usage, Some(streams.usage));
        let (through, usage) = observe_all(cut(&streams.injected, &cuts), BodyKind::Sse, false);
        prop_assert_eq!(&through, &streams.injected);
        prop_assert_eq!(usage, Some(streams.usage));
        let (plain, usage) = observe_all(cut(&streams.plain, &cuts), BodyKind::Sse, true);
        prop_assert_eq!(&plain, &streams.plain);
        prop_assert_eq!(usage, None);
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// JSON answers through `observe`, cut anywhere: the bytes pass unchanged and the usage is
    /// `from_json`'s.
    #[test]
    fn json_answers_observed(
        body in hostile(answer),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (out, seen) = observe_all(cut(&body, &cuts), BodyKind::Json, false);
        prop_assert_eq!(&out, &body);
        prop_assert_eq!(seen, usage::from_json(&body));
    }
}
