//! The one name type of Stasis: partitions, workloads, their image repositories and FFDC
//! bundles are all named by a [`Name`], which is also a directory name under the root and a
//! hostname. One rule, checked in one place:
//!
//! `[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}` and no `..` — 1 to 63 ASCII letters, digits, `_`, `.`
//! and `-`, not starting with `.` or `-`.
//!
//! A `Name` can only be made through [`Name::new`] / [`str::parse`] / serde, which all check
//! the rule, so a function taking `&Name` never sees a path separator, a dot entry or a NUL.

use std::fmt;

/// Longest name.
pub const MAX_LEN: usize = 63;

/// The rule, for messages.
pub const RULE: &str =
    "1-63 characters from [A-Za-z0-9_.-], not starting with '.' or '-', without '..'";

/// A name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad name {given:?}: {why} (a name is {RULE})")]
pub struct NameError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A checked name (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks `s` and makes a name of it.
    pub fn new(s: impl Into<String>) -> Result<Name, NameError> {
        let s = s.into();
        match why_bad(&s) {
            None => Ok(Name(s)),
            Some(why) => Err(NameError { given: s, why }),
        }
    }

    /// Checks `s` without keeping it.
    pub fn check(s: &str) -> Result<(), NameError> {
        match why_bad(s) {
            None => Ok(()),
            Some(why) => Err(NameError {
                given: s.to_string(),
                why,
            }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn why_bad(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return Some("empty");
    };
    if b.len() > MAX_LEN {
        return Some("longer than 63 characters");
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Some("must start with a letter, a digit or '_'");
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Some("only ASCII letters, digits, '_', '.' and '-' are allowed");
    }
    if s.contains("..") {
        return Some("contains '..'");
    }
    None
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for Name {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl AsRef<std::ffi::OsStr> for Name {
    fn as_ref(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::new(&self.0)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Name, NameError> {
        s.parse()
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        s.parse()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rule() {
        for ok in ["a", "web-1", "db_2.x", "_x", "9", &"x".repeat(63)] {
            ok.parse::<Name>().unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".a",
            "-a",
            "a/b",
            "a b",
            "a..b",
            "a\0b",
            "é",
            &"x".repeat(64),
        ] {
            let e = bad.parse::<Name>().unwrap_err();
            assert!(e.to_string().contains("1-63 characters"), "{e}");
        }
    }

    #[test]
    fn serde_checks() {
        let n: Name = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(n, "web");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"web\"");
        assert!(serde_json::from_str::<Name>("\"../etc\"").is_err());
    }

    proptest! {
        #[test]
        fn a_name_is_one_safe_path_component(s in "\\PC{0,70}") {
            if let Ok(n) = s.parse::<Name>() {
                prop_assert!(crate::safefs::check_name(n.as_ref()).is_ok());
                prop_assert!(n.len() <= MAX_LEN);
            }
        }
    }
}
