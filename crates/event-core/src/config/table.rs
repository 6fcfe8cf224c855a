//! The tables of environment variables: each [`Variable`] declared once, with its default, its
//! rule and its documentation, and the [`Reader`] that parses a table's variables with the
//! messages its rules give. Every crate with settings (this one, the backends, the manager)
//! declares its own table; `docs/configuration.md` is generated from them
//! ([`markdown_table`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, ConfigProblem};

/// One environment variable, declared once: its parser's rule, its default and its doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The name, such as `EVENT_BATCH_SIZE`.
    pub name: &'static str,
    /// The default, written as it would be in the environment; `None` is unset.
    pub default: Option<&'static str>,
    /// What the default means, when its text alone does not say (`7 days`); may be empty.
    pub default_note: &'static str,
    /// The values allowed; also the `expected` part of a bad value's [`ConfigProblem`].
    pub rule: Rule,
    /// Whether the value is shown in logs and errors, and how it is hidden.
    pub secret: Secret,
    /// Whether the original Python system had it.
    pub original: bool,
    /// What it does, in Markdown.
    pub doc: &'static str,
}

/// What values a [`Variable`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
    Bool,
    /// A whole number in a range, `_` allowed as a separator.
    Whole {
        /// The least value allowed.
        min: u64,
        /// The greatest value allowed.
        max: u64,
    },
    /// One of the names, in any case.
    OneOf(&'static [&'static str]),
    /// A value checked by the crate's own code; the text says what is allowed.
    Text(&'static str),
}

impl Rule {
    /// What the rule allows, in words: the `expected` of a [`ConfigProblem`].
    pub fn expected(&self) -> String {
        match self {
            Rule::Bool => "true or false (also 1/0, yes/no, on/off)".into(),
            Rule::Whole { min, max: u64::MAX } => format!("a whole number, at least {min}"),
            Rule::Whole { min, max } => format!("a whole number from {min} to {max}"),
            Rule::OneOf(names) => format!("one of {}", names.join(", ")),
            Rule::Text(text) => (*text).into(),
        }
    }
}

/// How a [`Variable`]'s value is kept out of logs, errors and `Debug` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secret {
    /// Shown as is.
    No,
    /// A URL whose password is replaced by `***` ([`redact_url`]).
    UrlPassword,
    /// Replaced by `***` when set.
    Whole,
}

impl Variable {
    /// `value` as it may be shown: in errors, logs, stats pages.
    pub fn redact(&self, value: &str) -> String {
        match self.secret {
            Secret::No => value.to_string(),
            Secret::UrlPassword => redact_url(value),
            Secret::Whole if value.is_empty() => String::new(),
            Secret::Whole => "***".to_string(),
        }
    }
}

/// A set of settings read from one table of variables: [`Config`](super::Config), and each
/// backend's own (`RedisConfig`, `KafkaConfig`). Implementing [`read`](Self::read) and
/// [`write`](Self::write) gives the rest: the environment, validation of a value built in
/// code, and the redacted view.
pub trait EnvSettings: Sized {
    /// Every variable read, in the order the documentation lists them.
    const VARIABLES: &'static [Variable];

    /// Reads the settings; problems go to the reader, which reports them all at once.
    fn read(reader: &mut Reader<'_>) -> Self;

    /// The effective value of the variable called `name`, written as in the environment
    /// (unset as empty), secrets included; `None` for a name not in [`Self::VARIABLES`].
    fn write(&self, name: &str) -> Option<String>;

    /// Reads the settings through `lookup`, which returns a variable's value if it is set.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(lookup);
        let settings = Self::read(&mut reader);
        reader.finish(settings)
    }

    /// Reads the settings from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the settings from the given variables only (tests, embedding, the CLI's flags).
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = variables(vars);
        Self::from_lookup(&|name| vars.get(name).cloned())
    }

    /// Checks settings built in code against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every field that is out of range.
    fn validate(&self) -> Result<(), ConfigError> {
        Self::from_lookup(&|name| self.write(name)).map(|_| ())
    }

    /// Every variable and its effective value, secrets included: to hand the settings to a
    /// child process. Never log it; [`redacted`](Self::redacted) is for showing.
    fn to_vars(&self) -> BTreeMap<String, String> {
        Self::VARIABLES
            .iter()
            .filter_map(|var| Some((var.name.to_string(), self.write(var.name)?)))
            .collect()
    }

    /// Every variable and its effective value, with secrets removed: for stats pages and logs.
    fn redacted(&self) -> BTreeMap<&'static str, String> {
        Self::VARIABLES
            .iter()
            .filter_map(|var| Some((var.name, var.redact(&self.write(var.name)?))))
            .collect()
    }
}

/// Variables given as pairs, by name: what `from_vars` constructors look values up in.
pub fn variables<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> BTreeMap<String, String>
where
    K: Into<String>,
    V: Into<String>,
{
    vars.into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// The defaults of a table: what reading an empty environment gives.
///
/// # Panics
/// If a table's defaults break its own rules, a bug that every crate's tests catch.
pub fn defaults<S: EnvSettings>() -> S {
    S::from_lookup(&|_| None)
        .unwrap_or_else(|err| panic!("the defaults of a variable table are invalid: {err}"))
}

/// Reads the variables of a table, collecting every problem so that one error lists them all.
pub struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<ConfigProblem>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl<'a> Reader<'a> {
    /// A reader over `lookup`, which returns a variable's value if it is set.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The value as set, untrimmed (passwords may begin or end with a space).
    pub fn untrimmed(&self, var: &Variable) -> Option<String> {
        (self.lookup)(var.name)
    }

    /// The value as set, trimmed.
    pub fn raw(&self, var: &Variable) -> Option<String> {
        self.untrimmed(var).map(|v| v.trim().to_string())
    }

    /// The value as set, trimmed, or the default's text.
    pub fn text(&self, var: &Variable) -> String {
        self.raw(var)
            .unwrap_or_else(|| var.default.unwrap_or_default().to_string())
    }

    /// The value set, trimmed, where empty means unset (so an env file can leave a line
    /// blank), or the default.
    pub fn optional(&self, var: &Variable) -> Option<String> {
        self.raw(var)
            .filter(|value| !value.is_empty())
            .or_else(|| var.default.map(String::from))
    }

    /// A path, read when it is used, so that parsing does no I/O; empty is unset.
    pub fn path(&self, var: &Variable) -> Option<PathBuf> {
        self.optional(var).map(PathBuf::from)
    }

    /// Records that `var` has the bad value `value`; `expected` says what is allowed.
    pub fn problem(&mut self, var: &Variable, value: &str, expected: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: var.name,
            value: var.redact(value),
            expected: expected.into(),
        });
    }

    /// Records that `var` has the bad value `value`, against its own rule.
    pub fn invalid(&mut self, var: &Variable, value: &str) {
        self.problem(var, value, var.rule.expected());
    }

    /// A [`Rule::Bool`] variable.
    pub fn bool(&mut self, var: &Variable) -> bool {
        let default = var.default == Some("true");
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.invalid(var, &raw);
                default
            }
        }
    }

    /// A [`Rule::Whole`] variable, as any integer type its range fits in.
    pub fn whole<T: TryFrom<u64>>(&mut self, var: &Variable) -> T {
        let Rule::Whole { min, max } = var.rule else {
            panic!("{} is read as a whole number but its rule is not", var.name);
        };
        let parse = |text: &str| text.replace('_', "").parse::<u64>().ok();
        let default = var.default.and_then(parse).unwrap_or(min);
        let value = match self.raw(var) {
            None => default,
            Some(raw) => match parse(&raw) {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.invalid(var, &raw);
                    default
                }
            },
        };
        T::try_from(value)
            .unwrap_or_else(|_| panic!("{}'s range does not fit the type it is read as", var.name))
    }

    /// A [`Rule::Whole`] variable counted in milliseconds.
    pub fn millis(&mut self, var: &Variable) -> Duration {
        Duration::from_millis(self.whole(var))
    }

    /// A [`Rule::OneOf`] variable: the value whose name matches, in any case.
    pub fn one_of<T: Copy>(&mut self, var: &Variable, values: &[(&str, T)]) -> T {
        let find = |text: &str| {
            values
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(text))
                .map(|(_, value)| *value)
        };
        let default = find(var.default.unwrap_or_default()).unwrap_or(values[0].1);
        match self.raw(var) {
            None => default,
            Some(raw) => find(&raw).unwrap_or_else(|| {
                self.invalid(var, &raw);
                default
            }),
        }
    }

    /// `value` if no problem was recorded, else every problem.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every problem recorded.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::new(self.problems))
        }
    }
}

/// Characters allowed in Kafka topic names, used for prefixes and group names alike: 1 to
/// `max` of `a-z A-Z 0-9 . _ -`.
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Replaces the password of a URL such as `redis://user:secret@host:6379/0` with `***`, so it
/// can be logged. A URL without a password comes back unchanged.
///
/// Whatever characters the password holds it is hidden, even those a URL should carry
/// percent-encoded (`/`, `@`, `?`, `#`, `:`): the user information is taken to end at the
/// *last* `@`, not at the first `/`. A value without `://` is not a URL whose parts can be told
/// apart, so it is hidden whole.
///
/// ```
/// use event_core::redact_url;
///
/// assert_eq!(redact_url("redis://:s3cr3t/pa55word@cache/0"), "redis://:***@cache/0");
/// assert_eq!(redact_url("redis://app:p@ss@cache:6379"), "redis://app:***@cache:6379");
/// assert_eq!(redact_url("redis://cache:6379/0"), "redis://cache:6379/0");
/// assert_eq!(redact_url("s3cr3t@cache"), "***");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host}"),
        // `redis://secret@host` puts a password alone in the user part.
        None if !userinfo.is_empty() => format!("{scheme}://***{host}"),
        None => url.to_string(),
    }
}

/// What a message about a URL that does not parse adds: how to write a password that holds
/// characters a URL reserves.
pub const URL_ENCODING_HINT: &str = "a user name or password holding `/`, `@`, `:`, `?`, `#` or `%` must be percent-encoded (`%2F`, `%40`, `%3A`, `%3F`, `%23`, `%25`)";

/// The schemes of a Redis Cluster URL: `redis-cluster://`, and `rediss-cluster://` for TLS.
pub const REDIS_CLUSTER_SCHEMES: [&str; 2] = ["redis-cluster://", "rediss-cluster://"];

/// The schemes a Redis URL may start with: one server (`redis://`, `rediss://` for TLS, a
/// Unix socket) or a cluster ([`REDIS_CLUSTER_SCHEMES`]).
pub const REDIS_SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "redis+unix://",
    "unix://",
    "redis-cluster://",
    "rediss-cluster://",
];

/// A Redis URL in the form the Redis client (`fred`) parses: a Redis Cluster URL that lists its
/// seed nodes separated by commas (`redis-cluster://user:pw@h1:7000,h2:7001,h3:7002`) becomes
/// the first node in the authority and the others as `node=` parameters
/// (`redis-cluster://user:pw@h1:7000?node=h2:7001&node=h3:7002`); any other URL (a single
/// server, or a cluster URL already in that form) comes back unchanged.
///
/// ```
/// use event_core::config::table::redis_client_url;
///
/// assert_eq!(
///     redis_client_url("redis-cluster://a:7000,b:7001,c:7002"),
///     "redis-cluster://a:7000?node=b:7001&node=c:7002"
/// );
/// assert_eq!(redis_client_url("redis://cache:6379/0"), "redis://cache:6379/0");
/// ```
pub fn redis_client_url(url: &str) -> String {
    let Some(scheme) = REDIS_CLUSTER_SCHEMES
        .iter()
        .find(|scheme| url.starts_with(**scheme))
    else {
        return url.to_string();
    };
    let rest = &url[scheme.len()..];
    // The authority ends at the path (`/0`) or the query (`?node=`).
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let mut hosts = hosts.split(',').map(str::trim).filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.to_string();
    };
    let others: Vec<String> = hosts.map(|host| format!("node={host}")).collect();
    if others.is_empty() {
        return url.to_string();
    }
    // A cluster has one database: a `/0` path says nothing more and is dropped.
    let mut params = others.join("&");
    if let Some((_, query)) = tail.split_once('?').filter(|(_, q)| !q.is_empty()) {
        params = format!("{query}&{params}");
    }
    format!("{scheme}{userinfo}{first}?{params}")
}

/// The Markdown table of `variables`, as `docs/configuration.md` shows it: variable, default,
/// allowed values, whether the original system had it, and what it does.
pub fn markdown_table(variables: &[Variable]) -> String {
    let mut out = String::from(
        "| variable | default | allowed | original | effect |\n|---|---|---|---|---|\n",
    );
    for var in variables {
        let default = match (var.default, var.default_note) {
            (Some(text), "") => format!("`{text}`"),
            (Some(text), note) => format!("`{text}` ({note})"),
            (None, "") => "unset".to_string(),
            (None, note) => format!("unset: {note}"),
        };
        let allowed = match var.rule {
            Rule::Bool => "boolean".to_string(),
            Rule::Whole { min, max: u64::MAX } => format!("at least {min}"),
            Rule::Whole { min, max } => format!("{min} to {max}"),
            Rule::OneOf(names) => names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", "),
            Rule::Text(text) => text.to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {default} | {allowed} | {} | {} |\n",
            var.name,
            if var.original { "yes" } else { "" },
            var.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER: Variable = Variable {
        name: "N",
        default: Some("1_000"),
        default_note: "",
        rule: Rule::Whole { min: 1, max: 5000 },
        secret: Secret::No,
        original: false,
        doc: "a number",
    };

    #[test]
    fn the_reader_uses_the_rule_for_values_defaults_and_messages() {
        let mut reader = Reader::new(&|_| None);
        assert_eq!(reader.whole::<u32>(&NUMBER), 1000);
        let mut reader = Reader::new(&|_| Some(" 6000 ".into()));
        assert_eq!(reader.whole::<u16>(&NUMBER), 1000);
        let err = reader.finish(()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid configuration: N="6000" is not valid: expected a whole number from 1 to 5000"#
        );
    }

    #[test]
    fn secrets_are_hidden_in_problems() {
        let secret = Variable {
            secret: Secret::Whole,
            rule: Rule::Text("anything"),
            ..NUMBER
        };
        let mut reader = Reader::new(&|_| None);
        reader.invalid(&secret, "hunter2");
        assert!(
            !reader
                .finish(())
                .unwrap_err()
                .to_string()
                .contains("hunter2")
        );
        assert_eq!(redact_url("redis://hunter2@cache/0"), "redis://***@cache/0");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    proptest::proptest! {
        /// No password shows through, whatever it holds (characters a URL should have
        /// percent-encoded included), in any URL form the bus takes; the host stays readable.
        #[test]
        fn redaction_hides_any_password(
            scheme in proptest::sample::select(vec!["redis", "rediss", "redis-cluster", "unix", "rediss-cluster"]),
            user in "[a-z]{0,6}",
            // Upper-case letters mark the password, so it cannot appear by chance in the
            // rest of the URL, which has none.
            password in "[A-Z][A-Z0-9/@:?#%+=!$&'()*,;\\[\\] ~\u{e9}\u{1f511}-]{0,24}[A-Z]",
            host in "[a-z][a-z0-9.-]{0,12}(:[0-9]{1,5})?(,[a-z]{1,6}:[0-9]{1,5}){0,2}",
            tail in "(/[0-9]{1,2})?(\\?node=[a-z]{1,6}:[0-9]{1,5})?",
            password_only in proptest::bool::ANY,
        ) {
            let url = if password_only {
                // Alone in the user part, a `:` would end the user name and start a password.
                let password = password.replace(':', "");
                format!("{scheme}://{password}@{host}{tail}")
            } else {
                format!("{scheme}://{user}:{password}@{host}{tail}")
            };
            let shown = redact_url(&url);
            proptest::prop_assert!(!shown.contains(&password), "{url} -> {shown}");
            proptest::prop_assert!(shown.ends_with(&format!("@{host}{tail}")), "{url} -> {shown}");
            // A value that is not a URL at all shows nothing of itself (a password holding
            // `://` makes it look like one, whose user information is then hidden).
            let bare = format!("{password}@{host}");
            if !password.contains("://") {
                proptest::prop_assert_eq!(redact_url(&bare), "***");
            }
        }
    }

    #[test]
    fn the_markdown_row_shows_default_rule_and_doc() {
        let table = markdown_table(&[NUMBER]);
        assert!(
            table.ends_with("| `N` | `1_000` | 1 to 5000 |  | a number |\n"),
            "{table}"
        );
    }
}
