//! The parts of HTTP headers the registry protocol reads: `WWW-Authenticate`
//! challenges (RFC 7235, as distribution's `auth` package and Docker's
//! `registry/auth.go` use them) and `Link` headers for pagination (RFC 8288).
//!
//! Pure parsing: no I/O, so every odd header a registry sends is a unit test.

/// What a registry asks for on a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic authentication: send `user:password` on every request.
    Basic,
    /// OAuth2-style bearer tokens from a token server (Docker's token spec).
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` parameter to pass to the token server.
        service: Option<String>,
        /// The scope the registry said the request needs, if it said one.
        scope: Option<String>,
    },
}

/// Parses the first usable challenge of a `WWW-Authenticate` header value.
/// Returns `None` for schemes we do not speak or a bearer challenge without a
/// realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let find = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: find("realm")?,
        service: find("service"),
        scope: find("scope"),
    })
}

/// `key=value, key="quoted, with \"escapes\""` pairs.
fn parse_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars
            .next_if(|c| c.is_ascii_whitespace() || *c == ',')
            .is_some()
        {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        if chars.next_if_eq(&'=').is_none() {
            // A bare token (token68 or a stray word): skip it.
            if chars.peek().is_none() {
                return out;
            }
            continue;
        }
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim_end().to_string();
        }
        out.push((key.trim().to_string(), value));
    }
}

/// The target of the `rel="next"` link in a `Link` header, as distribution
/// sends it for `/v2/_catalog` and `/tags/list` pages:
/// `</v2/_catalog?last=b&n=2>; rel="next"`.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|v| v.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        is_next.then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer_challenges_parse() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn quoted_values_may_hold_commas_and_escapes() {
        let header = r#"bearer  realm = "http://x/t?a=1,b=2" , scope="a \"b\"",service=plain"#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "http://x/t?a=1,b=2".into(),
                service: Some("plain".into()),
                scope: Some(r#"a "b""#.into()),
            })
        );
    }

    #[test]
    fn basic_and_unknown_schemes() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn next_links_are_found() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://a/prev>; rel="prev", <https://a/next>; rel=next"#).as_deref(),
            Some("https://a/next")
        );
        assert_eq!(next_link(r#"<https://a/prev>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
