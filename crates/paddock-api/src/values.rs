//! Request values that can only hold valid data (parse, don't validate).
//!
//! Each deserializes with `try_from`, so a body with an out-of-range value is rejected by the JSON
//! extractor with 422 `validation_failed` before any handler code runs.

use serde::{Deserialize, Serialize};

fn integer_schema(min: i64, max: i64) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

fn string_schema(
    min: Option<usize>,
    max: Option<usize>,
    pattern: Option<&str>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(min)
        .max_length(max)
        .pattern(pattern)
        .into()
}

macro_rules! bounded_int {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $min:literal ..= $max:literal, default $default:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(pub $ty);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                integer_schema($min as i64, $max as i64)
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const MIN: $ty = $min;
            pub const MAX: $ty = $max;

            pub fn get(self) -> $ty {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(v: i64) -> Result<Self, String> {
                if (($min as i64)..=($max as i64)).contains(&v) {
                    Ok(Self(v as $ty))
                } else {
                    Err(format!("{} must be between {} and {}, got {}", stringify!($name), $min, $max, v))
                }
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0 as i64
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }
    )*};
}

bounded_int! {
    /// Task priority: higher is claimed first.
    Priority: i32 = -1000 ..= 1000, default 0;
    /// Attempts a task may make before it fails for good.
    MaxAttempts: i32 = 1 ..= 100, default 1;
    /// Tasks one claim may return.
    MaxTasks: i64 = 1 ..= 100, default 1;
    /// Long-poll wait of a claim, in milliseconds.
    WaitMs: u64 = 0 ..= 30000, default 0;
    /// Dispatched + running tasks an agent may hold.
    MaxConcurrentTasks: i32 = 1 ..= 1000, default 1;
    /// Dispatched + running tasks a runtime may hold.
    MaxConcurrency: i32 = 1 ..= 10000, default 10000;
    /// Page size of a list.
    PageLimit: i64 = 1 ..= 500, default 50;
    /// Dispatched + running tasks a concurrency key may have in the workspace.
    ConcurrencyLimit: i32 = 1 ..= 10000, default 1;
}

/// A duration in a request: a humantime string (`"90s"`, `"2h 30m"`) or a number of milliseconds,
/// at least 1 ms. Serialised as milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DurationRepr", into = "u64")]
pub struct DurationMs(u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Ms(u64),
    Text(String),
}

impl DurationMs {
    pub fn from_ms(ms: u64) -> Result<Self, String> {
        if ms == 0 {
            Err("a duration must be at least 1 ms".into())
        } else {
            Ok(Self(ms))
        }
    }

    pub fn ms(self) -> u64 {
        self.0
    }

    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl TryFrom<DurationRepr> for DurationMs {
    type Error = String;
    fn try_from(r: DurationRepr) -> Result<Self, String> {
        match r {
            DurationRepr::Ms(ms) => Self::from_ms(ms),
            DurationRepr::Text(s) => {
                let d = humantime::parse_duration(&s).map_err(|e| {
                    format!("`{s}` is not a duration (e.g. \"90s\", \"2h 30m\"): {e}")
                })?;
                Self::from_ms(
                    u64::try_from(d.as_millis()).map_err(|_| "duration too long".to_owned())?,
                )
            }
        }
    }
}

impl From<DurationMs> for u64 {
    fn from(d: DurationMs) -> u64 {
        d.0
    }
}

impl utoipa::PartialSchema for DurationMs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::OneOfBuilder::new()
            .item(integer_schema(1, i64::MAX))
            .item(string_schema(Some(1), Some(100), None))
            .description(Some(
                "milliseconds, or a humantime string such as \"90s\" or \"2h 30m\"",
            ))
            .into()
    }
}

impl utoipa::ToSchema for DurationMs {}

/// Labels of a runtime (and what a pool asks of them): at most 32, keys of 1 to 63 characters,
/// values of at most 200.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "std::collections::BTreeMap<String, String>",
    into = "std::collections::BTreeMap<String, String>"
)]
pub struct Labels(std::collections::BTreeMap<String, String>);

impl utoipa::PartialSchema for Labels {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .additional_properties(Some(string_schema(None, Some(200), None)))
            .max_properties(Some(32))
            .description(Some(
                "string labels: at most 32, keys of 1 to 63 characters",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Labels {}

impl Labels {
    pub fn as_map(&self) -> &std::collections::BTreeMap<String, String> {
        &self.0
    }
}

impl TryFrom<std::collections::BTreeMap<String, String>> for Labels {
    type Error = String;
    fn try_from(m: std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        if m.len() > 32 {
            return Err(format!("at most 32 labels, got {}", m.len()));
        }
        for (k, v) in &m {
            if !(1..=63).contains(&k.chars().count()) {
                return Err(format!("label key `{k}` must be 1 to 63 characters"));
            }
            if v.chars().count() > 200 {
                return Err(format!(
                    "label `{k}`: the value must be at most 200 characters"
                ));
            }
        }
        Ok(Self(m))
    }
}

impl From<Labels> for std::collections::BTreeMap<String, String> {
    fn from(l: Labels) -> Self {
        l.0
    }
}

/// A concurrency key: 1 to 200 characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConcurrencyKey(String);

impl utoipa::PartialSchema for ConcurrencyKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(Some(1), Some(200), None)
    }
}

impl utoipa::ToSchema for ConcurrencyKey {}

impl ConcurrencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConcurrencyKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let len = s.chars().count();
        if (1..=200).contains(&len) {
            Ok(Self(s))
        } else {
            Err(format!(
                "concurrency_key must be 1 to 200 characters, got {len}"
            ))
        }
    }
}

impl From<ConcurrencyKey> for String {
    fn from(k: ConcurrencyKey) -> String {
        k.0
    }
}

/// A short human-facing text: 1 to 200 characters, not blank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(Some(1), Some(200), Some(r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$"))
    }
}

impl utoipa::ToSchema for Name {}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let len = s.chars().count();
        if s.trim().is_empty() || len > 200 {
            Err(format!(
                "must be 1 to 200 characters and not blank, got {len}"
            ))
        } else if s.chars().any(char::is_control) {
            Err("must not contain control characters".into())
        } else {
            Ok(Self(s))
        }
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

/// A workspace slug: lowercase letters, digits and dashes, 1 to 63 characters, starting alphanumeric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl utoipa::PartialSchema for Slug {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(Some(1), Some(63), Some("^[a-z0-9][a-z0-9-]*$"))
    }
}

impl utoipa::ToSchema for Slug {}

impl Slug {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A slug derived from a name: lowercased, runs of other characters become one dash.
    pub fn from_name(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        let out: String = out.trim_end_matches('-').chars().take(63).collect();
        Self::try_from(out.trim_end_matches('-').to_owned()).ok()
    }
}

impl TryFrom<String> for Slug {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s))
        } else {
            Err("slug must be 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit".into())
        }
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

/// A JSON object (payloads, results, definitions, progress): anything but an object is refused.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Free text reported by a daemon (error messages): at most 64 KiB of characters.
pub fn bounded_text(s: &str, max_chars: usize) -> Result<&str, String> {
    if s.chars().count() > max_chars {
        Err(format!("must be at most {max_chars} characters"))
    } else {
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ints_refuse_out_of_range() {
        assert!(MaxTasks::try_from(0).is_err());
        assert!(MaxTasks::try_from(101).is_err());
        assert_eq!(MaxTasks::try_from(100).unwrap().get(), 100);
        assert!(WaitMs::try_from(30001).is_err());
        assert!(Priority::try_from(-1001).is_err());
        assert!(serde_json::from_str::<WaitMs>("-1").is_err());
    }

    #[test]
    fn names_and_slugs() {
        assert!(Name::try_from(" ".to_owned()).is_err());
        assert!(Name::try_from("x".repeat(201)).is_err());
        assert_eq!(Slug::from_name("Acme Corp!").unwrap().as_str(), "acme-corp");
        assert!(Slug::try_from("-bad".to_owned()).is_err());
    }
}
