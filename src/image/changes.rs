//! `--change` instructions of `import` and `commit` (`-c 'CMD ["sh"]'`): the
//! Dockerfile instructions that only edit the image config, applied the way
//! `docker import -c` applies them.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::Value;
use thiserror::Error;

use super::oci::{ImageConfig, RunConfig};

/// A config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `CMD`.
    Cmd(Vec<String>),
    /// `ENTRYPOINT`.
    Entrypoint(Vec<String>),
    /// `ENV k=v …` or `ENV k v`.
    Env(Vec<(String, String)>),
    /// `EXPOSE 80/tcp …`.
    Expose(Vec<String>),
    /// `LABEL k=v …`.
    Label(Vec<(String, String)>),
    /// `ONBUILD <instruction>`.
    OnBuild(String),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `USER`.
    User(String),
    /// `VOLUME ["/a"]` or `VOLUME /a /b`.
    Volume(Vec<String>),
    /// `WORKDIR`.
    Workdir(String),
}

/// Why a change does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChangeError {
    /// An instruction `--change` does not accept.
    #[error(
        "{0} is not a valid change command (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"
    )]
    Unknown(String),
    /// An instruction without the arguments it needs.
    #[error("{0} requires at least one argument")]
    MissingArgument(String),
    /// `NAME=value` pairs that do not parse.
    #[error("{instruction}: invalid argument {argument:?}")]
    BadArgument {
        /// The instruction.
        instruction: String,
        /// The argument.
        argument: String,
    },
}

/// `["a", "b"]` (exec form) or a shell string run with `/bin/sh -c`.
fn command_form(rest: &str) -> Vec<String> {
    if rest.trim_start().starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(rest)
    {
        return list;
    }
    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
}

/// Splits `a=1 "b=two words"` into pairs; the legacy `ENV key value` form when
/// the first word has no `=`.
fn pairs(instruction: &str, rest: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let words = crate::words::split_words(rest).map_err(|_| ChangeError::BadArgument {
        instruction: instruction.to_string(),
        argument: rest.to_string(),
    })?;
    let Some(first) = words.first() else {
        return Err(ChangeError::MissingArgument(instruction.to_string()));
    };
    if !first.contains('=') {
        let (key, value) = rest
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((rest.trim(), ""));
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ChangeError::BadArgument {
                instruction: instruction.to_string(),
                argument: w.clone(),
            }),
        })
        .collect()
}

impl FromStr for Change {
    type Err = ChangeError;

    fn from_str(s: &str) -> Result<Self, ChangeError> {
        let s = s.trim();
        let (word, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        let instruction = word.to_ascii_uppercase();
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(ChangeError::MissingArgument(instruction));
        }
        let list = || {
            if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).ok()
            } else {
                None
            }
            .unwrap_or_else(|| rest.split_whitespace().map(str::to_string).collect())
        };
        Ok(match instruction.as_str() {
            "CMD" => Self::Cmd(command_form(rest)),
            "ENTRYPOINT" => Self::Entrypoint(command_form(rest)),
            "ENV" => Self::Env(pairs(&instruction, rest)?),
            "LABEL" => Self::Label(pairs(&instruction, rest)?),
            "EXPOSE" => Self::Expose(
                rest.split_whitespace()
                    .map(|p| {
                        if p.contains('/') {
                            p.to_string()
                        } else {
                            format!("{p}/tcp")
                        }
                    })
                    .collect(),
            ),
            "ONBUILD" => Self::OnBuild(rest.to_string()),
            "STOPSIGNAL" => Self::StopSignal(rest.to_string()),
            "USER" => Self::User(rest.to_string()),
            "VOLUME" => Self::Volume(list()),
            "WORKDIR" => Self::Workdir(rest.to_string()),
            _ => return Err(ChangeError::Unknown(word.to_string())),
        })
    }
}

/// Applies `changes` in order to `config`.
pub fn apply_changes(config: &mut ImageConfig, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let run = config.config.get_or_insert_with(RunConfig::default);
    for change in changes {
        match change {
            Change::Cmd(argv) => run.cmd = Some(argv.clone()),
            Change::Entrypoint(argv) => run.entrypoint = Some(argv.clone()),
            Change::Env(pairs) => {
                let env = run.env.get_or_insert_with(Vec::new);
                for (k, v) in pairs {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    env.push(format!("{k}={v}"));
                }
            }
            Change::Expose(ports) => {
                let map = run.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    map.insert(p.clone(), Value::Object(serde_json::Map::new()));
                }
            }
            Change::Label(pairs) => {
                let labels = run.labels.get_or_insert_with(BTreeMap::new);
                labels.extend(pairs.iter().cloned());
            }
            Change::OnBuild(trigger) => run
                .on_build
                .get_or_insert_with(Vec::new)
                .push(trigger.clone()),
            Change::StopSignal(s) => run.stop_signal = Some(s.clone()),
            Change::User(u) => run.user = Some(u.clone()),
            Change::Volume(paths) => {
                let map = run.volumes.get_or_insert_with(BTreeMap::new);
                for p in paths {
                    map.insert(p.clone(), Value::Object(serde_json::Map::new()));
                }
            }
            Change::Workdir(w) => run.working_dir = Some(w.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_like_docker_import() {
        assert_eq!(
            "CMD [\"sh\", \"-c\", \"echo hi\"]"
                .parse::<Change>()
                .unwrap(),
            Change::Cmd(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            "cmd echo hi".parse::<Change>().unwrap(),
            Change::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            "ENV A=1 B=\"two words\"".parse::<Change>().unwrap(),
            Change::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(
            "ENV PATH /usr/bin:/bin".parse::<Change>().unwrap(),
            Change::Env(vec![("PATH".into(), "/usr/bin:/bin".into())])
        );
        assert_eq!(
            "EXPOSE 80 53/udp".parse::<Change>().unwrap(),
            Change::Expose(vec!["80/tcp".into(), "53/udp".into()])
        );
        assert_eq!(
            "VOLUME [\"/data\"]".parse::<Change>().unwrap(),
            Change::Volume(vec!["/data".into()])
        );
        assert!(matches!(
            "RUN x".parse::<Change>(),
            Err(ChangeError::Unknown(_))
        ));
        assert!(matches!(
            "CMD".parse::<Change>(),
            Err(ChangeError::MissingArgument(_))
        ));
    }

    #[test]
    fn changes_edit_the_config() {
        let mut config = ImageConfig::default();
        let changes: Vec<Change> = [
            "ENV A=1",
            "ENV A=2 B=3",
            "WORKDIR /app",
            "USER 1000",
            "LABEL x=y",
            "ONBUILD RUN make",
        ]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
        apply_changes(&mut config, &changes);
        let run = config.config.unwrap();
        assert_eq!(run.env.unwrap(), ["A=2", "B=3"]);
        assert_eq!(run.working_dir.as_deref(), Some("/app"));
        assert_eq!(run.user.as_deref(), Some("1000"));
        assert_eq!(run.labels.unwrap()["x"], "y");
        assert_eq!(run.on_build.unwrap(), ["RUN make"]);
    }
}
