//! A JSON value that validates against a JSON Schema, built by fixed rules (no randomness), so
//! the emulator can answer structured-output requests and tool calls like a model would, and
//! users can predict the answer (the rules are listed in docs/emulator.md).
//!
//! The rules, in the order they apply to one schema:
//! - `$ref` (`#`, `#/$defs/…`, `#/definitions/…`, any JSON pointer into the root) is followed;
//! - `const` gives its value; `enum` its first value (the `variant`-th for array items that must
//!   be unique);
//! - `allOf` is merged into one schema (properties and `required` united);
//! - `anyOf` / `oneOf` take the first branch (past the nesting limit: a `null` branch if any);
//! - `type` (the first non-`null` one of a list; inferred from the keywords when absent):
//!   - object: every property, required or not, in the order of the schema's keys (beyond the
//!     nesting limit, only the required ones); no additional properties;
//!   - array: one item, raised to `minItems` and lowered to `maxItems`; `prefixItems` first;
//!   - string: the property's name (`"value"` at the top level), padded with `x` to
//!     `minLength` or cut to `maxLength`; a fixed example for the common formats;
//!   - integer 1 and number 1.5, moved into `minimum` / `maximum` / the exclusive bounds and
//!     onto `multipleOf`;
//!   - boolean `true`; null `null`.
//!
//! `pattern` is not honoured (no regex inversion): a schema with one gets the same string as
//! without it.

use serde_json::{Map, Number, Value, json};

/// Below this nesting depth every optional property and item is generated; deeper, only what
/// the schema requires, so recursive schemas (trees, linked lists) end.
const FULL_DEPTH: usize = 6;
/// A hard stop for schemas that require infinite nesting (a required self-reference).
const MAX_DEPTH: usize = 32;

/// A value valid against `schema` (the root, holding any `$defs` its `$ref`s point into).
pub(crate) fn generate(schema: &Value) -> Value {
    Gen { root: schema }.value(schema, "value", 0, 0)
}

struct Gen<'a> {
    root: &'a Value,
}

impl Gen<'_> {
    /// `name` is the property (or the enclosing array's property) the value is for; `variant`
    /// tells apart items of one array that must be unique.
    fn value(&self, schema: &Value, name: &str, variant: u64, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let schema = match schema {
            Value::Bool(_) => return json!(name),
            Value::Object(_) => schema,
            _ => return json!(name),
        };
        if let Some(target) = schema.get("$ref").and_then(Value::as_str)
            && let Some(resolved) = self.resolve(target)
        {
            return self.value(resolved, name, variant, depth + 1);
        }
        if let Some(c) = schema.get("const") {
            return c.clone();
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.is_empty()
        {
            return values[usize::try_from(variant).unwrap_or(0) % values.len()].clone();
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            let merged = self.merge_all_of(schema, all);
            return self.value(&merged, name, variant, depth + 1);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array)
                && let Some(branch) = self.pick_branch(branches, depth)
            {
                return self.value(branch, name, variant, depth + 1);
            }
        }
        match type_of(schema).as_str() {
            "object" => self.object(schema, depth),
            "array" => self.array(schema, name, depth),
            "integer" => integer(schema, variant),
            "number" => number(schema, variant),
            "boolean" => Value::Bool(variant.is_multiple_of(2)),
            "null" => Value::Null,
            _ => Value::String(string(schema, name, variant)),
        }
    }

    fn resolve(&self, target: &str) -> Option<&Value> {
        let pointer = target.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(pointer)
    }

    /// The schema without `allOf`, with each `allOf` branch's keywords added: properties and
    /// `required` united, other keywords kept from the first schema that has them.
    fn merge_all_of(&self, schema: &Value, all: &[Value]) -> Value {
        let mut merged = schema.as_object().cloned().unwrap_or_default();
        merged.remove("allOf");
        for branch in all {
            let mut branch = branch;
            // Follow `$ref` chains so a referenced base model's properties merge too.
            for _ in 0..MAX_DEPTH {
                match branch
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| self.resolve(r))
                {
                    Some(next) => branch = next,
                    None => break,
                }
            }
            let Some(branch) = branch.as_object() else {
                continue;
            };
            for (key, value) in branch {
                match (key.as_str(), merged.get_mut(key)) {
                    ("properties", Some(Value::Object(props))) => {
                        if let Value::Object(more) = value {
                            for (k, v) in more {
                                props.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                        }
                    }
                    ("required", Some(Value::Array(req))) => {
                        for r in value.as_array().into_iter().flatten() {
                            if !req.contains(r) {
                                req.push(r.clone());
                            }
                        }
                    }
                    ("$ref", _) => {}
                    (_, None) => {
                        merged.insert(key.clone(), value.clone());
                    }
                    _ => {}
                }
            }
        }
        Value::Object(merged)
    }

    /// The first branch; past the full depth, a `null` branch if there is one (ends recursion).
    fn pick_branch<'b>(&self, branches: &'b [Value], depth: usize) -> Option<&'b Value> {
        if depth >= FULL_DEPTH
            && let Some(null) = branches.iter().find(|b| type_of(b) == "null")
        {
            return Some(null);
        }
        branches.first()
    }

    fn object(&self, schema: &Value, depth: usize) -> Value {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let props = schema.get("properties").and_then(Value::as_object);
        let mut out = Map::new();
        if let Some(props) = props {
            for (key, sub) in props {
                if depth < FULL_DEPTH || required.contains(&key.as_str()) {
                    out.insert(key.clone(), self.value(sub, key, 0, depth + 1));
                }
            }
        }
        // Required names without a property schema (allowed by JSON Schema) get a string.
        for key in required {
            if !out.contains_key(key) {
                let sub = additional_schema(schema);
                out.insert(key.to_owned(), self.value(&sub, key, 0, depth + 1));
            }
        }
        // Free-form maps (`additionalProperties: {schema}`) that must not be empty.
        let min = schema
            .get("minProperties")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut n = 0u64;
        while (out.len() as u64) < min && n < 64 {
            n += 1;
            let key = format!("key{n}");
            if !out.contains_key(&key) {
                let sub = additional_schema(schema);
                out.insert(key.clone(), self.value(&sub, &key, 0, depth + 1));
            }
        }
        Value::Object(out)
    }

    fn array(&self, schema: &Value, name: &str, depth: usize) -> Value {
        let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = schema.get("maxItems").and_then(Value::as_u64);
        let prefix: &[Value] = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let wanted = if depth < FULL_DEPTH {
            min.max(1).max(prefix.len() as u64)
        } else {
            min
        };
        let count = max.map_or(wanted, |m| wanted.min(m)).min(64);
        let unique = schema.get("uniqueItems").and_then(Value::as_bool) == Some(true);
        let items = schema.get("items");
        let mut out: Vec<Value> = Vec::new();
        for i in 0..count {
            let sub = match usize::try_from(i).ok().and_then(|i| prefix.get(i)) {
                Some(p) => p,
                // `items: false` (no items past the prefix) ends the array.
                None if items == Some(&Value::Bool(false)) => break,
                None => items.unwrap_or(&Value::Bool(true)),
            };
            // Items of a unique array are made different through their variant.
            let variant = if unique { i } else { 0 };
            let item = self.value(sub, name, variant, depth + 1);
            if unique && out.contains(&item) {
                continue;
            }
            out.push(item);
        }
        Value::Array(out)
    }
}

/// The schema of properties not listed in `properties` (a string when unconstrained).
fn additional_schema(schema: &Value) -> Value {
    match schema.get("additionalProperties") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({"type": "string"}),
    }
}

/// The schema's type: the first non-`null` entry of `type`, or one inferred from its keywords.
fn type_of(schema: &Value) -> String {
    match schema.get("type") {
        Some(Value::String(t)) => return t.clone(),
        Some(Value::Array(types)) => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            if let Some(t) = names.iter().find(|t| **t != "null").or(names.first()) {
                return (*t).to_owned();
            }
        }
        _ => {}
    }
    let has = |keys: &[&str]| keys.iter().any(|k| schema.get(*k).is_some());
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
    ]) {
        "object"
    } else if has(&[
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
    ]) {
        "array"
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        "number"
    } else {
        "string"
    }
    .to_owned()
}

/// `(lower, lower exclusive?, upper, upper exclusive?)`, reading both the 2019+ numeric
/// exclusive bounds and draft 4's boolean ones.
fn bounds(schema: &Value) -> (Option<f64>, bool, Option<f64>, bool) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    let (mut lo, mut lo_ex) = (num("minimum"), flag("exclusiveMinimum"));
    if let Some(x) = num("exclusiveMinimum")
        && lo.is_none_or(|l| x >= l)
    {
        (lo, lo_ex) = (Some(x), true);
    }
    let (mut hi, mut hi_ex) = (num("maximum"), flag("exclusiveMaximum"));
    if let Some(x) = num("exclusiveMaximum")
        && hi.is_none_or(|h| x <= h)
    {
        (hi, hi_ex) = (Some(x), true);
    }
    (lo, lo_ex, hi, hi_ex)
}

fn integer(schema: &Value, variant: u64) -> Value {
    let (lo, lo_ex, hi, hi_ex) = bounds(schema);
    // The integer range: exclusive bounds move one step inwards.
    let lo = lo.map(|l| {
        if lo_ex {
            l.floor() as i64 + 1
        } else {
            l.ceil() as i64
        }
    });
    let hi = hi.map(|h| {
        if hi_ex {
            h.ceil() as i64 - 1
        } else {
            h.floor() as i64
        }
    });
    let step = schema
        .get("multipleOf")
        .and_then(Value::as_f64)
        .filter(|m| *m >= 1.0 && m.fract() == 0.0)
        .map_or(1, |m| m as i64);
    let mut v = 1i64.saturating_add(i64::try_from(variant).unwrap_or(0));
    if let Some(l) = lo {
        v = v.max(l.saturating_add(i64::try_from(variant).unwrap_or(0)));
    }
    if let Some(h) = hi {
        v = v.min(h);
    }
    // Onto the next multiple at or above v, or the one below when that passes the upper bound.
    let mut m = v.div_euclid(step) * step;
    if m < v {
        m += step;
    }
    if hi.is_some_and(|h| m > h) {
        m -= step;
    }
    json!(m)
}

fn number(schema: &Value, variant: u64) -> Value {
    let (lo, lo_ex, hi, hi_ex) = bounds(schema);
    let wanted = 1.5 + variant as f64;
    let v = match (lo, hi) {
        (Some(l), Some(h)) => {
            let inside = |x: f64| (x > l || (!lo_ex && x == l)) && (x < h || (!hi_ex && x == h));
            if inside(wanted) {
                wanted
            } else if !lo_ex {
                l
            } else if !hi_ex {
                h
            } else {
                l + (h - l) / 2.0
            }
        }
        (Some(l), None) if wanted <= l || (lo_ex && wanted == l) => {
            if lo_ex {
                l + 1.0
            } else {
                l
            }
        }
        (None, Some(h)) if wanted >= h || (hi_ex && wanted == h) => {
            if hi_ex {
                h - 1.0
            } else {
                h
            }
        }
        _ => wanted,
    };
    let v = match schema.get("multipleOf").and_then(Value::as_f64) {
        Some(m) if m > 0.0 => {
            let up = (v / m).ceil() * m;
            let ok = |x: f64| {
                lo.is_none_or(|l| x > l || (!lo_ex && x == l))
                    && hi.is_none_or(|h| x < h || (!hi_ex && x == h))
            };
            if ok(up) { up } else { (v / m).floor() * m }
        }
        _ => v,
    };
    // Whole numbers stay integers in JSON (1 not 1.0) only when the schema asks for one.
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A fixed example for each common string format; `variant` (0, 1, …) makes distinct ones.
fn formatted(format: &str, v: u64) -> Option<String> {
    let day = 1 + v % 28;
    Some(match format {
        "date-time" => format!("2024-01-{day:02}T12:00:00Z"),
        "date" => format!("2024-01-{day:02}"),
        "time" => format!("12:00:{:02}Z", v % 60),
        "duration" => format!("P{}D", v + 1),
        "email" | "idn-email" => format!("user{}@example.com", v + 1),
        "hostname" | "idn-hostname" => format!("host{}.example.com", v + 1),
        "ipv4" => format!("192.0.2.{}", 1 + v % 254),
        "ipv6" => format!("2001:db8::{:x}", v + 1),
        "uri" | "iri" | "url" => format!("https://example.com/{}", v + 1),
        "uri-reference" | "iri-reference" => format!("/example/{}", v + 1),
        "uuid" => format!("00000000-0000-4000-8000-{:012x}", v + 1),
        _ => return None,
    })
}

fn string(schema: &Value, name: &str, variant: u64) -> String {
    if let Some(s) = schema
        .get("format")
        .and_then(Value::as_str)
        .and_then(|f| formatted(f, variant))
    {
        return s;
    }
    let mut s = if variant == 0 {
        name.to_owned()
    } else {
        format!("{name} {}", variant + 1)
    };
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
    let max = schema.get("maxLength").and_then(Value::as_u64);
    let len = s.chars().count() as u64;
    if len < min {
        s.extend(std::iter::repeat_n(
            'x',
            usize::try_from(min - len).unwrap_or(0),
        ));
    }
    if let Some(max) = max
        && (s.chars().count() as u64) > max
    {
        let keep = usize::try_from(max).unwrap_or(0);
        s = if variant == 0 {
            s.chars().take(keep).collect()
        } else {
            // Keep the variant's digits at the end so short unique strings stay unique.
            let tail = (variant + 1).to_string();
            let head: String = name.chars().take(keep.saturating_sub(tail.len())).collect();
            format!("{head}{tail}").chars().take(keep).collect()
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("test schema {schema} does not compile: {e}"))
    }

    #[track_caller]
    fn assert_valid(schema: Value) -> Value {
        let value = generate(&schema);
        let v = validator(&schema);
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{value} is not valid against {schema}: {errors:?}"
        );
        value
    }

    #[test]
    fn objects_get_every_property_named_after_itself() {
        let v = assert_valid(json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "note": {"type": ["string", "null"]}},
            "required": ["city"],
            "additionalProperties": false,
        }));
        assert_eq!(v, json!({"city": "city", "days": 1, "note": "note"}));
    }

    #[test]
    fn enum_const_any_of_take_the_first_choice() {
        let v = assert_valid(json!({
            "type": "object",
            "properties": {
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "kind": {"const": "weather"},
                "maybe": {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "null"}]},
                "either": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
            },
        }));
        assert_eq!(
            v,
            json!({"unit": "celsius", "kind": "weather", "maybe": 5, "either": true})
        );
    }

    #[test]
    fn refs_and_recursive_schemas_end() {
        let v = assert_valid(json!({
            "$defs": {"Node": {"type": "object", "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            }, "required": ["name", "children"]}},
            "$ref": "#/$defs/Node",
        }));
        assert_eq!(v["name"], "name");
        assert_valid(json!({
            "definitions": {"L": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/definitions/L"}, {"type": "null"}]}}, "required": ["next"]}},
            "$ref": "#/definitions/L",
        }));
        // Root recursion.
        assert_valid(json!({"type": "object", "properties": {"again": {"$ref": "#"}}}));
    }

    #[test]
    fn all_of_merges_properties() {
        let v = assert_valid(json!({
            "$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
            "allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"tag": {"type": "string", "maxLength": 2}}, "required": ["tag"]}],
        }));
        assert_eq!(v, json!({"id": 1, "tag": "ta"}));
    }

    #[test]
    fn numbers_respect_every_bound() {
        for schema in [
            json!({"type": "integer", "minimum": 10}),
            json!({"type": "integer", "exclusiveMinimum": 10}),
            json!({"type": "integer", "maximum": -3}),
            json!({"type": "integer", "exclusiveMaximum": 0}),
            json!({"type": "integer", "minimum": 3, "maximum": 3}),
            json!({"type": "integer", "minimum": 1, "multipleOf": 7}),
            json!({"type": "integer", "minimum": -20, "maximum": -10, "multipleOf": 4}),
            json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
            json!({"type": "number", "minimum": 2.5}),
            json!({"type": "number", "exclusiveMaximum": -1}),
            json!({"type": "number", "exclusiveMinimum": 1.5}),
            json!({"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.25}),
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 0.5}),
        ] {
            assert_valid(schema);
        }
        assert_eq!(generate(&json!({"type": "integer", "minimum": 10})), 10);
        assert_eq!(
            generate(&json!({"type": "integer", "exclusiveMinimum": 10})),
            11
        );
        assert_eq!(generate(&json!({"type": "number"})), 1.5);
    }

    #[test]
    fn strings_honour_lengths_and_formats() {
        for format in [
            "date-time",
            "date",
            "time",
            "email",
            "uri",
            "uuid",
            "ipv4",
            "ipv6",
            "hostname",
            "duration",
        ] {
            assert_valid(json!({"type": "string", "format": format}));
        }
        assert_eq!(
            generate(&json!({"type": "string", "minLength": 8})),
            "valuexxx"
        );
        assert_eq!(generate(&json!({"type": "string", "maxLength": 3})), "val");
        assert_eq!(
            generate(&json!({"type": "string", "format": "date-time"})),
            "2024-01-01T12:00:00Z"
        );
    }

    #[test]
    fn arrays_meet_item_counts_and_uniqueness() {
        let v = assert_valid(
            json!({"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": true}),
        );
        assert_eq!(v, json!(["value", "value 2", "value 3"]));
        assert_valid(
            json!({"type": "array", "items": {"type": "integer", "maximum": 1}, "maxItems": 0}),
        );
        assert_valid(
            json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": false}),
        );
        assert_valid(
            json!({"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2, "uniqueItems": true}),
        );
    }

    #[test]
    fn the_same_schema_gives_the_same_value() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}}}});
        assert_eq!(generate(&schema), generate(&schema));
    }

    /// Random schemas of the supported kinds, for the property test.
    fn schema_strategy() -> impl Strategy<Value = Value> {
        let name = "[a-z]{1,8}";
        let leaf = prop_oneof![
            (0u64..5, proptest::option::of(5u64..20)).prop_map(|(min, max)| {
                let mut s = json!({"type": "string", "minLength": min});
                if let Some(max) = max {
                    s["maxLength"] = json!(max);
                }
                s
            }),
            prop_oneof![
                Just("date-time"),
                Just("date"),
                Just("time"),
                Just("email"),
                Just("uri"),
                Just("uuid")
            ]
            .prop_map(|f| json!({"type": "string", "format": f})),
            (-50i64..50, 0i64..40, any::<bool>(), any::<bool>(), 1i64..4).prop_map(
                |(lo, span, lo_ex, hi_ex, mult)| {
                    // Ranges with room for a multiple, so each schema can be satisfied.
                    let hi = lo + span + 2 * mult + 2;
                    let mut s = json!({"type": "integer"});
                    s[if lo_ex { "exclusiveMinimum" } else { "minimum" }] = json!(lo);
                    s[if hi_ex { "exclusiveMaximum" } else { "maximum" }] = json!(hi);
                    if mult > 1 {
                        s["multipleOf"] = json!(mult);
                    }
                    s
                }
            ),
            (-100.0f64..100.0, 0.5f64..50.0, any::<bool>(), any::<bool>()).prop_map(
                |(lo, span, lo_ex, hi_ex)| {
                    let mut s = json!({"type": "number"});
                    s[if lo_ex { "exclusiveMinimum" } else { "minimum" }] = json!(lo);
                    s[if hi_ex { "exclusiveMaximum" } else { "maximum" }] = json!(lo + span);
                    s
                }
            ),
            Just(json!({"type": "boolean"})),
            Just(json!({"type": "null"})),
            proptest::collection::vec(name, 1..4).prop_map(|v| json!({"enum": v})),
            name.prop_map(|c| json!({"const": c})),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                (
                    proptest::collection::btree_map(name, inner.clone(), 0..5),
                    any::<bool>()
                )
                    .prop_map(|(props, all_required)| {
                        let required: Vec<&String> = props
                            .keys()
                            .enumerate()
                            .filter(|(i, _)| all_required || i % 2 == 0)
                            .map(|(_, k)| k)
                            .collect();
                        json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
                    }),
                (inner.clone(), 0u64..3, 0u64..3).prop_map(|(items, min, extra)| {
                    json!({"type": "array", "items": items, "minItems": min, "maxItems": min + extra})
                }),
                proptest::collection::vec(inner.clone(), 1..3)
                    .prop_map(|branches| json!({"anyOf": branches})),
            ]
        })
        .prop_flat_map(|schema| {
            // `$ref`s resolve against the root, so the definitions live at the top.
            prop_oneof![
                Just(schema.clone()),
                Just(json!({"$defs": {"D": schema}, "type": "object",
                    "properties": {"d": {"$ref": "#/$defs/D"}}, "required": ["d"]})),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every generated value validates against its schema, by an independent validator.
        #[test]
        fn generated_values_validate(schema in schema_strategy()) {
            let value = generate(&schema);
            let v = validator(&schema);
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{} is not valid against {}: {:?}", value, schema, errors);
        }
    }
}
