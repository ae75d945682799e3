//! Topic names and topic references. A [`TopicName`] is the only way to reach a topic's
//! tables: it is validated once, at parse time, and renders the quoted table identifiers.

use crate::error::{Error, Result};
use std::fmt;

/// Longest topic name. `<name>_deliveries` must stay within Postgres' 63-byte identifiers.
pub const MAX_NAME_LEN: usize = 50;
/// Longest topic identifier (the part after `:`).
pub const MAX_IDENTIFIER_LEN: usize = 255;

/// A valid topic name: 1-50 characters of `[a-z0-9_]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Parses a name, refusing (never rewriting) anything outside `[a-z0-9_]{1,50}`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid("Topic name must not be empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "Topic name must be at most {MAX_NAME_LEN} characters"
            )));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::invalid(
                "Topic name may only contain lowercase letters, digits and underscores",
            ));
        }
        Ok(TopicName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Quoted identifier of the events table, safe to put in SQL.
    pub fn events_table(&self) -> String {
        format!("\"{}_events\"", self.0)
    }

    /// Quoted identifier of the deliveries table, safe to put in SQL.
    pub fn deliveries_table(&self) -> String {
        format!("\"{}_deliveries\"", self.0)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic as clients write it: `name` or `name:identifier` (split on the first `:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicRef {
    /// The topic.
    pub name: TopicName,
    /// The identifier scoping it, if any. Never empty when present.
    pub identifier: Option<String>,
}

impl TopicRef {
    /// Parses `name` or `name:identifier`.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, identifier) = match s.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (s, None),
        };
        let name = TopicName::parse(name)?;
        let identifier = match identifier {
            None => None,
            Some(i) => Some(parse_identifier(i)?),
        };
        Ok(TopicRef { name, identifier })
    }

    /// The identifier, or "" when there is none (how it is stored).
    pub fn identifier_str(&self) -> &str {
        self.identifier.as_deref().unwrap_or("")
    }
}

/// Validates a topic identifier: 1-255 printable characters.
pub fn parse_identifier(i: &str) -> Result<String> {
    if i.is_empty() {
        return Err(Error::invalid(
            "Topic identifier after ':' must not be empty",
        ));
    }
    if i.len() > MAX_IDENTIFIER_LEN {
        return Err(Error::invalid(format!(
            "Topic identifier must be at most {MAX_IDENTIFIER_LEN} characters"
        )));
    }
    if i.chars().any(char::is_control) {
        return Err(Error::invalid(
            "Topic identifier must not contain control characters",
        ));
    }
    Ok(i.to_owned())
}

impl fmt::Display for TopicRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identifier {
            Some(i) => write!(f, "{}:{}", self.name, i),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let ok = ["users", "a", "form_submissions", "x9_", &"a".repeat(50)];
        for s in ok {
            assert!(TopicName::parse(s).is_ok(), "{s} should parse");
        }
        let bad = [
            "",
            "Users",
            "users-1",
            "users events",
            "users\"; drop table topics; --",
            "ü",
            &"a".repeat(51),
        ];
        for s in bad {
            assert!(TopicName::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn tables_are_quoted() {
        let n = TopicName::parse("users").unwrap();
        assert_eq!(n.events_table(), "\"users_events\"");
        assert_eq!(n.deliveries_table(), "\"users_deliveries\"");
        assert!(n.deliveries_table().len() - 2 <= 63);
    }

    #[test]
    fn refs() {
        let r = TopicRef::parse("users:123").unwrap();
        assert_eq!(r.name.as_str(), "users");
        assert_eq!(r.identifier.as_deref(), Some("123"));
        assert_eq!(r.to_string(), "users:123");
        let r = TopicRef::parse("users:a:b").unwrap();
        assert_eq!(r.identifier.as_deref(), Some("a:b"));
        assert_eq!(TopicRef::parse("users").unwrap().identifier, None);
        assert!(TopicRef::parse("users:").is_err());
        assert!(TopicRef::parse(":123").is_err());
        assert!(TopicRef::parse("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn a_name_parses_exactly_when_it_is_lowercase_digits_and_underscores(s in "\\PC{0,60}|[a-z0-9_]{0,55}") {
            let valid = !s.is_empty()
                && s.len() <= MAX_NAME_LEN
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            proptest::prop_assert_eq!(TopicName::parse(&s).is_ok(), valid);
            if valid {
                let n = TopicName::parse(&s).unwrap();
                proptest::prop_assert_eq!(n.events_table(), format!("\"{s}_events\""));
            }
        }

        #[test]
        fn refs_round_trip_and_refuse_control_characters(
            name in "[a-z0-9_]{1,50}",
            ident in "\\PC{1,80}",
            junk in "\\PC*",
        ) {
            let r = TopicRef::parse(&format!("{name}:{ident}")).unwrap();
            proptest::prop_assert_eq!(r.name.as_str(), name.as_str());
            proptest::prop_assert_eq!(r.identifier.as_deref(), Some(ident.as_str()));
            proptest::prop_assert_eq!(TopicRef::parse(&r.to_string()).unwrap(), r);
            let with_control = format!("{name}:{ident}\n");
            proptest::prop_assert!(TopicRef::parse(&with_control).is_err());
            // Anything at all: an answer, never a panic.
            let _ = TopicRef::parse(&junk);
        }
    }
}
