//! Image references the way Docker reads them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:5000/ns/name:tag` names another
//! registry, `name@sha256:…` pins a manifest.
//!
//! The grammar follows distribution's `reference` package (docs in
//! `reference/regexp.go`): a domain is the first component when it contains a
//! `.` or a `:` or is `localhost`; path components are lowercase alphanumerics
//! joined by `.`, `_`, `__` or runs of `-`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::digest::Digest;

/// The registry that names without a domain refer to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace of single-component names on Docker Hub.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag of a reference that names none.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalized image reference.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    /// Empty input.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// Upper case in the repository name (Docker's own message).
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    /// Anything else that does not match the grammar.
    #[error("invalid reference format: {0:?}")]
    Malformed(String),
    /// A tag that is too long or has bad characters.
    #[error(
        "invalid tag {0:?}: tags are up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    Tag(String),
    /// A digest that does not parse.
    #[error("invalid digest in reference {reference:?}")]
    Digest {
        /// The reference.
        reference: String,
        /// Why.
        #[source]
        source: super::digest::DigestError,
    },
    /// The name is longer than 255 characters.
    #[error("repository name must not be more than 255 characters")]
    TooLong,
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return false;
        }
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|c| **c == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        expect_alnum = true;
    }
    !expect_alnum
}

fn is_domain(s: &str) -> bool {
    // host[:port], host components alphanumerics and '-', or a bracketed IPv6.
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, after.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(host) => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    }
}

fn is_tag(s: &str) -> bool {
    let mut bytes = s.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    s.len() <= 128
        && (first.is_ascii_alphanumeric() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest {
                        reference: s.to_string(),
                        source,
                    })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        if name.is_empty() {
            return Err(ReferenceError::Malformed(s.to_string()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong);
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
            {
                if !is_domain(first) {
                    return Err(ReferenceError::Malformed(s.to_string()));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(name.to_string()));
        }
        if !path.split('/').all(is_path_component) {
            return Err(ReferenceError::Malformed(s.to_string()));
        }
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The registry host (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`: the repository's full name.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as Docker prints it: `busybox` for official images,
    /// `user/app` on Docker Hub, `host:5000/app` elsewhere.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        }
    }

    /// The reference as Docker prints it (`busybox:latest`).
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(tag) = tag {
        s.push(':');
        s.push_str(tag);
    }
    if let Some(digest) = digest {
        s.push('@');
        s.push_str(&digest.to_string());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_normalize_like_docker() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/ns/app:v1",
                "localhost:5000/ns/app:v1",
                "localhost:5000/ns/app:v1",
            ),
            (
                "127.0.0.1:5000/app",
                "127.0.0.1:5000/app:latest",
                "127.0.0.1:5000/app:latest",
            ),
            (
                "registry.example.com/a/b/c:1.0-rc_1",
                "registry.example.com/a/b/c:1.0-rc_1",
                "registry.example.com/a/b/c:1.0-rc_1",
            ),
            (
                "[::1]:5000/app",
                "[::1]:5000/app:latest",
                "[::1]:5000/app:latest",
            ),
            (
                "a__b/c--d.e",
                "docker.io/a__b/c--d.e:latest",
                "a__b/c--d.e:latest",
            ),
        ];
        for (input, full, familiar) in cases {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(
                r.to_string().parse::<Reference>().unwrap(),
                r,
                "{input} round trip"
            );
        }
    }

    #[test]
    fn digests_pin_references() {
        let r: Reference = format!("busybox@{DIGEST}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), DIGEST);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
        let both: Reference = format!("busybox:1@{DIGEST}").parse().unwrap();
        assert_eq!(both.tag(), Some("1"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            ":tag",
            "busybox::tag",
            "-busybox",
            "busybox-",
            "a//b",
            "a/b/",
            "busybox:.tag",
            "busybox@sha256:abc",
            "bad host:5000/app",
            "host:port/app",
            "ns/UPPER",
            "a..b",
            "a._b",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            "Busybox".parse::<Reference>(),
            Err(ReferenceError::Uppercase("Busybox".into()))
        );
        let long = format!("a/{}", "b".repeat(300));
        assert_eq!(long.parse::<Reference>(), Err(ReferenceError::TooLong));
    }

    #[test]
    fn tags_and_digests_can_be_replaced() {
        let r: Reference = "localhost:5000/app:v1".parse().unwrap();
        assert_eq!(
            r.with_tag("v2").unwrap().to_string(),
            "localhost:5000/app:v2"
        );
        assert!(r.with_tag("-bad").is_err());
        let pinned = r.with_digest(DIGEST.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("localhost:5000/app@{DIGEST}"));
    }
}
