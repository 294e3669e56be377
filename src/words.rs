//! A leaf module (it imports nothing from the crate, so any layer may use
//! it): splitting a command string into words the way a POSIX shell would, without
//! running one: compose turns `command: echo "hello world"` into
//! `["echo", "hello world"]` the same way.

use thiserror::Error;

/// Why a command string cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WordsError {
    /// A quote is opened and never closed.
    #[error("unterminated {0} quote")]
    Unterminated(&'static str),
    /// The string ends with a lone backslash.
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// Splits `input` into words: whitespace separates words, single quotes keep
/// everything literally, double quotes keep whitespace and honour `\"`, `\\`,
/// `\$` and `` \` ``, and a backslash outside quotes escapes the next character.
pub fn split_words(input: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(WordsError::Unterminated("single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(WordsError::Unterminated("double")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(WordsError::Unterminated("double")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(WordsError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            ("echo hello", &["echo", "hello"]),
            ("  echo   hello  ", &["echo", "hello"]),
            (r#"echo "hello world""#, &["echo", "hello world"]),
            ("echo 'a \"b\" c'", &["echo", "a \"b\" c"]),
            (
                r#"sh -c "echo \"x\" \$HOME""#,
                &["sh", "-c", "echo \"x\" $HOME"],
            ),
            (r"a\ b c", &["a b", "c"]),
            ("''", &[""]),
            ("x''y", &["xy"]),
            ("", &[]),
            ("héllo wörld", &["héllo", "wörld"]),
        ];
        for (input, want) in cases {
            assert_eq!(split_words(input).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert_eq!(
            split_words("echo 'x"),
            Err(WordsError::Unterminated("single"))
        );
        assert_eq!(
            split_words("echo \"x"),
            Err(WordsError::Unterminated("double"))
        );
        assert_eq!(split_words("x \\"), Err(WordsError::TrailingBackslash));
    }
}
