//! The emulated model's answer rules, shared by Chat Completions and the Responses API: plain
//! text, JSON for structured outputs, or tool calls. Everything is decided from the request's
//! content by fixed rules, never at random, so the same request always gets the same answer
//! (ids and timestamps aside). docs/emulator.md lists the rules for users writing assertions.

use serde_json::{Value, json};

use super::schema_value;
use super::text;

/// A function tool the request offers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tool {
    pub(crate) name: String,
    /// Its `parameters` JSON Schema (an empty object schema when absent).
    pub(crate) parameters: Value,
}

/// `tool_choice`, from either API's spelling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// The answer's format: `response_format` (Chat) or `text.format` (Responses).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Format {
    Text,
    JsonObject,
    /// The `schema` of a `json_schema` format.
    JsonSchema(Value),
}

/// What the rules look at in a request, read by the Chat and Responses front ends.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    pub(crate) tools: Vec<Tool>,
    pub(crate) choice: ToolChoice,
    pub(crate) parallel: bool,
    pub(crate) format: Format,
    /// The text of the last user message.
    pub(crate) last_user: String,
    /// The tool results that end the conversation, as `(tool name, output)`: the tool messages
    /// (or `function_call_output` items) after the last assistant turn.
    pub(crate) tool_results: Vec<(String, String)>,
    /// The names of every tool the assistant already called in the conversation.
    pub(crate) called: Vec<String>,
}

impl Ask {
    /// The ask of an OpenAI-style body (Chat Completions or Responses), where `tools`,
    /// `tool_choice` and `parallel_tool_calls` sit at the top; the format, the last user text
    /// and the conversation's tool traffic each API reads its own way.
    pub(crate) fn openai(
        body: &Value,
        format: Format,
        last_user: String,
        tool_results: Vec<(String, String)>,
        called: Vec<String>,
    ) -> Self {
        Self {
            tools: tools(body.get("tools")),
            choice: tool_choice(body.get("tool_choice")),
            parallel: body
                .get("parallel_tool_calls")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            format,
            last_user,
            tool_results,
            called,
        }
    }
}

/// One tool call of an answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) name: String,
    /// Compact JSON, valid against the tool's parameters schema.
    pub(crate) arguments: String,
}

/// The emulated model's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Message content: prose, or JSON when a JSON format was asked for.
    Text {
        content: String,
        json: bool,
    },
    ToolCalls(Vec<Call>),
}

/// Applies the answer rules (docs/emulator.md, "Answer rules").
pub(crate) fn answer(ask: &Ask) -> Answer {
    match tools_to_call(ask) {
        Some(tools) if !tools.is_empty() => Answer::ToolCalls(
            tools
                .into_iter()
                .map(|t| Call {
                    name: t.name.clone(),
                    arguments: schema_value::generate(&t.parameters).to_string(),
                })
                .collect(),
        ),
        _ => final_text(ask),
    }
}

/// The tools to call, or `None` for a text answer.
fn tools_to_call(ask: &Ask) -> Option<Vec<&Tool>> {
    if ask.tools.is_empty() {
        return None;
    }
    match &ask.choice {
        ToolChoice::None => None,
        // Forced: called even after a tool result, as the real service does.
        ToolChoice::Named(name) => ask.tools.iter().find(|t| &t.name == name).map(|t| vec![t]),
        // A tool result answers the call: the loop ends with text.
        ToolChoice::Auto if !ask.tool_results.is_empty() => None,
        ToolChoice::Auto => Some(pick(ask)),
        // A call is required: the first offered tool not called yet (for agents whose final
        // answer is a tool, e.g. pydantic-ai's `final_result`), else the usual pick.
        ToolChoice::Required if !ask.tool_results.is_empty() => Some(
            ask.tools
                .iter()
                .find(|t| !ask.called.contains(&t.name))
                .map_or_else(|| pick(ask), |t| vec![t]),
        ),
        ToolChoice::Required => Some(pick(ask)),
    }
}

/// The tools whose names the last user message mentions (all of them when parallel calls are
/// allowed, else the first), or the first offered tool when it mentions none.
fn pick(ask: &Ask) -> Vec<&Tool> {
    let named: Vec<&Tool> = ask
        .tools
        .iter()
        .filter(|t| mentions(&ask.last_user, &t.name))
        .collect();
    match named.first() {
        None => vec![&ask.tools[0]],
        Some(first) if !ask.parallel => vec![*first],
        Some(_) => named,
    }
}

/// Whether `text` holds `name` as a whole word (not inside a longer identifier).
fn mentions(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The text answer: the echo of the last user message, or a summary of the tool results; as
/// JSON when the format asks for it.
fn final_text(ask: &Ask) -> Answer {
    let prose = if ask.tool_results.is_empty() {
        text::answer(&ask.last_user)
    } else {
        tool_summary(&ask.tool_results)
    };
    match &ask.format {
        Format::Text => Answer::Text {
            content: prose,
            json: false,
        },
        Format::JsonObject => Answer::Text {
            content: json!({"answer": prose}).to_string(),
            json: true,
        },
        Format::JsonSchema(schema) => Answer::Text {
            content: schema_value::generate(schema).to_string(),
            json: true,
        },
    }
}

/// `Hello from the foundry-proxy emulator. Tool results: NAME returned OUTPUT; …`
fn tool_summary(results: &[(String, String)]) -> String {
    let parts: Vec<String> = results
        .iter()
        .map(|(name, output)| format!("{name} returned {}", output.trim()))
        .collect();
    format!("{} Tool results: {}", text::GREETING, parts.join("; "))
}

/// Splits JSON text into stream chunks: `count` pieces when given, else pieces of at most
/// [`JSON_CHUNK_CHARS`] characters. Joining them gives the text back.
pub(crate) fn json_chunks(content: &str, count: Option<usize>) -> Vec<String> {
    let chars: Vec<char> = content.chars().collect();
    let n = count
        .unwrap_or_else(|| chars.len().div_ceil(JSON_CHUNK_CHARS))
        .clamp(1, chars.len().max(1));
    (0..n)
        .map(|i| {
            chars[i * chars.len() / n..(i + 1) * chars.len() / n]
                .iter()
                .collect()
        })
        .collect()
}

/// The size of a streamed JSON piece (content or tool arguments), about two tokens.
pub(crate) const JSON_CHUNK_CHARS: usize = 8;

/// `tool_choice` in either spelling: a string, Chat's `{"type":"function","function":{"name"}}`
/// or Responses' `{"type":"function","name"}`. Unknown forms count as `auto`.
pub(crate) fn tool_choice(value: Option<&Value>) -> ToolChoice {
    match value {
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        },
        Some(obj @ Value::Object(_)) => obj
            .pointer("/function/name")
            .or_else(|| obj.get("name"))
            .and_then(Value::as_str)
            .map_or(ToolChoice::Auto, |n| ToolChoice::Named(n.to_owned())),
        _ => ToolChoice::Auto,
    }
}

/// The function tools of a request: Chat's `{"type":"function","function":{…}}` or Responses'
/// flat `{"type":"function","name",…}`; other tool types (web search, …) are not called.
pub(crate) fn tools(value: Option<&Value>) -> Vec<Tool> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name").and_then(Value::as_str)?;
            let parameters = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            Some(Tool {
                name: name.to_owned(),
                parameters,
            })
        })
        .collect()
}

/// A format object: `{"type":"json_schema", …}` with the schema at `schema_at` (Chat nests it
/// under `json_schema`, Responses keeps it flat), `{"type":"json_object"}`, or text.
pub(crate) fn format(value: Option<&Value>, schema_at: &str) -> Format {
    match value.and_then(|v| v.get("type")).and_then(Value::as_str) {
        Some("json_object") => Format::JsonObject,
        Some("json_schema") => Format::JsonSchema(
            value
                .and_then(|v| v.pointer(schema_at))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
        _ => Format::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(choice: ToolChoice, last_user: &str) -> Ask {
        Ask {
            tools: tools(Some(&json!([
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time"}},
            ]))),
            choice,
            parallel: true,
            format: Format::Text,
            last_user: last_user.to_owned(),
            tool_results: vec![],
            called: vec![],
        }
    }

    fn names(answer: &Answer) -> Vec<&str> {
        match answer {
            Answer::ToolCalls(calls) => calls.iter().map(|c| c.name.as_str()).collect(),
            Answer::Text { .. } => vec![],
        }
    }

    #[test]
    fn auto_calls_the_first_tool_with_valid_arguments() {
        let a = answer(&ask(ToolChoice::Auto, "weather in Paris?"));
        assert_eq!(
            a,
            Answer::ToolCalls(vec![Call {
                name: "get_weather".into(),
                arguments: r#"{"city":"city"}"#.into()
            }])
        );
    }

    #[test]
    fn named_tools_in_the_prompt_are_called_in_parallel() {
        let both = ask(ToolChoice::Auto, "use get_time and get_weather");
        assert_eq!(names(&answer(&both)), ["get_weather", "get_time"]);
        let mut serial = both.clone();
        serial.parallel = false;
        assert_eq!(names(&answer(&serial)), ["get_weather"]);
        let one = ask(ToolChoice::Required, "what does get_time say?");
        assert_eq!(names(&answer(&one)), ["get_time"]);
        // Part of a longer identifier is no mention.
        let longer = ask(ToolChoice::Auto, "call get_time_zone");
        assert_eq!(names(&answer(&longer)), ["get_weather"]);
        assert_eq!(
            names(&answer(&ask(ToolChoice::Named("get_time".into()), ""))),
            ["get_time"]
        );
    }

    #[test]
    fn a_tool_result_ends_the_loop() {
        let mut a = ask(ToolChoice::Auto, "weather?");
        a.tool_results = vec![("get_weather".into(), "sunny".into())];
        a.called = vec!["get_weather".into()];
        assert_eq!(
            answer(&a),
            Answer::Text {
                content: "Hello from the foundry-proxy emulator. Tool results: get_weather returned sunny".into(),
                json: false
            }
        );
        // Required: the next tool not called yet.
        a.choice = ToolChoice::Required;
        assert_eq!(names(&answer(&a)), ["get_time"]);
        a.choice = ToolChoice::None;
        assert!(names(&answer(&a)).is_empty());
    }

    #[test]
    fn formats_give_json() {
        let mut a = ask(ToolChoice::None, "hi");
        a.format = format(
            Some(
                &json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}),
            ),
            "/json_schema/schema",
        );
        assert_eq!(
            answer(&a),
            Answer::Text {
                content: r#"{"n":1}"#.into(),
                json: true
            }
        );
        a.format = format(Some(&json!({"type": "json_object"})), "/schema");
        let Answer::Text { content, .. } = answer(&a) else {
            panic!()
        };
        assert!(serde_json::from_str::<Value>(&content).unwrap().is_object());
    }

    #[test]
    fn tool_choice_spellings() {
        assert_eq!(tool_choice(None), ToolChoice::Auto);
        assert_eq!(tool_choice(Some(&json!("none"))), ToolChoice::None);
        assert_eq!(
            tool_choice(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            )),
            ToolChoice::Named("f".into())
        );
        assert_eq!(
            tool_choice(Some(&json!({"type": "function", "name": "f"}))),
            ToolChoice::Named("f".into())
        );
    }

    #[test]
    fn json_chunks_rejoin() {
        let s = r#"{"a":"ü","b":[1,2,3]}"#;
        assert_eq!(json_chunks(s, None).concat(), s);
        assert_eq!(json_chunks(s, Some(3)).len(), 3);
        assert_eq!(json_chunks(s, Some(3)).concat(), s);
        assert_eq!(json_chunks("", None), [""]);
    }
}
