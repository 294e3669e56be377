//! Registry credentials: Docker's `config.json` `auths` format, read from
//! Docker's file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) and
//! from our own file, and written only to our own file.
//!
//! The format is Docker's (`cli/config/configfile/file.go`):
//! `{"auths": {"localhost:5000": {"auth": base64("user:password")}}}`, with
//! Docker Hub under the key `https://index.docker.io/v1/`. Our file is written
//! atomically with mode 0600 from its first byte; keys we do not know are kept.
//! Credential helpers (`credsStore`, `credHelpers`) are not run.
//!
//! Credentials are never logged: [`Credentials`] and [`AuthStore`] redact
//! passwords in their `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::reference::DEFAULT_DOMAIN;
use super::registry::{RegistryClient, RegistryError};
use super::store::sync_dir;

/// The key Docker stores Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// The password. Never log it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `base64(user:password)`, Docker's `auth` field.
    fn encode(&self) -> String {
        BASE64.encode(format!("{}:{}", self.username, self.password))
    }

    /// Reads one `auths` entry: `auth` (base64 `user:password`) or
    /// `username`/`password` fields.
    fn decode(entry: &Value) -> Option<Self> {
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let raw = BASE64.decode(auth.trim()).ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (user, password) = text.split_once(':')?;
            return Some(Self::new(user, password));
        }
        let user = entry.get("username").and_then(Value::as_str)?;
        let password = entry.get("password").and_then(Value::as_str)?;
        Some(Self::new(user, password))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Every credential known, by registry domain (`docker.io`, `localhost:5000`).
#[derive(Clone, Default)]
pub struct AuthStore {
    entries: BTreeMap<String, Credentials>,
}

impl fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only which registries have credentials; Credentials redacts the rest.
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

/// The registry domain an `auths` key names: Docker writes keys as bare hosts,
/// as URLs (`https://host/v1/`), and Docker Hub as `https://index.docker.io/v1/`.
pub fn domain_of_key(key: &str) -> String {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_DOMAIN.to_string()
        }
        other => other.to_string(),
    }
}

/// The key Docker writes for a registry domain (`docker.io` is
/// [`DOCKER_HUB_KEY`]).
pub fn key_of_domain(domain: &str) -> String {
    let domain = domain_of_key(domain);
    if domain == DEFAULT_DOMAIN {
        DOCKER_HUB_KEY.to_string()
    } else {
        domain
    }
}

/// Docker's own config file: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

impl AuthStore {
    /// No credentials: every registry is used anonymously.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads Docker's config file (if `docker` is given and exists), then ours
    /// (if it exists); entries in ours win.
    pub fn load(docker: Option<&Path>, own: &Path) -> Result<Self, RegistryError> {
        let mut store = Self::empty();
        for path in docker.into_iter().chain([own]) {
            let Some(doc) = read_config(path)? else {
                continue;
            };
            if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
                for (key, entry) in auths {
                    if let Some(creds) = Credentials::decode(entry) {
                        store.entries.insert(domain_of_key(key), creds);
                    }
                }
            }
        }
        Ok(store)
    }

    /// [`AuthStore::load`] with Docker's file at its usual place.
    pub fn load_default(own: &Path) -> Result<Self, RegistryError> {
        Self::load(docker_config_path().as_deref(), own)
    }

    /// The credentials for a registry domain (or any `auths` key form).
    pub fn credentials(&self, registry: &str) -> Option<&Credentials> {
        self.entries.get(&domain_of_key(registry))
    }

    /// Adds or replaces credentials in memory.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.entries.insert(domain_of_key(registry), credentials);
    }

    /// Registries with credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

fn read_config(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RegistryError::AuthRead {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RegistryError::AuthCorrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// Replaces `path` with `bytes`, mode 0600 from creation on: temp file beside
/// it, fsync, rename, fsync of the directory.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".config.json.{}.{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        // A temp file left by a killed process keeps its mode; make sure.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn update_own(
    own: &Path,
    change: impl FnOnce(&mut Map<String, Value>) -> bool,
) -> Result<bool, RegistryError> {
    let mut doc = read_config(own)?.unwrap_or_default();
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let Some(auths) = auths.as_object_mut() else {
        return Ok(false);
    };
    if !change(auths) {
        return Ok(false);
    }
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|source| RegistryError::AuthCorrupt {
        path: own.to_path_buf(),
        source,
    })?;
    write_private(own, &bytes).map_err(|source| RegistryError::AuthWrite {
        path: own.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Checks `username`/`password` against the registry (`GET /v2/` with the
/// basic or token flow it asks for), then saves them in our file `own`.
/// Nothing is written when the registry refuses them.
pub async fn login(
    client: &RegistryClient,
    own: &Path,
    server: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let domain = domain_of_key(server);
    let credentials = Credentials::new(username, password);
    client.check_credentials(&domain, &credentials).await?;
    let key = key_of_domain(&domain);
    update_own(own, |auths| {
        // Drop other spellings of the same registry so one entry remains.
        auths.retain(|k, _| domain_of_key(k) != domain);
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(credentials.encode()));
        auths.insert(key, Value::Object(entry));
        true
    })?;
    Ok(())
}

/// Removes the credentials of `server` from our file; returns whether there
/// were any.
pub fn logout(own: &Path, server: &str) -> Result<bool, RegistryError> {
    let domain = domain_of_key(server);
    update_own(own, |auths| {
        let before = auths.len();
        auths.retain(|k, _| domain_of_key(k) != domain);
        auths.len() != before
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_keys_name_domains() {
        assert_eq!(domain_of_key(DOCKER_HUB_KEY), "docker.io");
        assert_eq!(domain_of_key("docker.io"), "docker.io");
        assert_eq!(domain_of_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(key_of_domain("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(key_of_domain("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn both_files_are_read_and_ours_wins() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.json");
        let own = dir.path().join("own.json");
        let auth = |s: &str| BASE64.encode(s);
        fs::write(
            &docker,
            serde_json::json!({"auths": {
                DOCKER_HUB_KEY: {"auth": auth("hub:hubpw")},
                "localhost:5000": {"auth": auth("old:oldpw")},
                "bad.example": {"auth": "!!"},
                "fields.example": {"username": "u", "password": "p"}
            }, "credsStore": "desktop"})
            .to_string(),
        )
        .unwrap();
        fs::write(
            &own,
            serde_json::json!({"auths": {"localhost:5000": {"auth": auth("new:pw:with:colons")}}})
                .to_string(),
        )
        .unwrap();
        let store = AuthStore::load(Some(&docker), &own).unwrap();
        assert_eq!(store.credentials("docker.io").unwrap().username, "hub");
        let local = store.credentials("localhost:5000").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password()),
            ("new", "pw:with:colons")
        );
        assert_eq!(store.credentials("fields.example").unwrap().password(), "p");
        assert!(store.credentials("bad.example").is_none());
        let debug = format!("{store:?}");
        assert!(
            !debug.contains("hubpw") && !debug.contains("pw:with"),
            "{debug}"
        );
    }

    #[test]
    fn missing_files_are_empty_and_corrupt_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.json");
        assert_eq!(AuthStore::load(None, &own).unwrap().registries().count(), 0);
        fs::write(&own, "{not json").unwrap();
        let err = AuthStore::load(None, &own).unwrap_err();
        assert!(matches!(err, RegistryError::AuthCorrupt { .. }), "{err}");
    }

    #[test]
    fn logout_keeps_other_entries_and_the_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.json");
        update_own(&own, |auths| {
            auths.insert(
                "a:1".into(),
                serde_json::json!({"auth": BASE64.encode("u:p")}),
            );
            auths.insert(
                "b:2".into(),
                serde_json::json!({"auth": BASE64.encode("u:p")}),
            );
            true
        })
        .unwrap();
        assert_eq!(
            fs::metadata(&own).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(logout(&own, "http://a:1/").unwrap());
        assert!(!logout(&own, "a:1").unwrap());
        let store = AuthStore::load(None, &own).unwrap();
        assert_eq!(store.registries().collect::<Vec<_>>(), ["b:2"]);
        assert_eq!(
            fs::metadata(&own).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
