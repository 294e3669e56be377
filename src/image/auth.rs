//! Registry credentials: Docker's `config.json` format, read from Docker's
//! file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) and from our
//! own file, and written only to our own file and to credential helpers.
//!
//! The format is Docker's (`cli/config/configfile/file.go`):
//! `{"auths": {"localhost:5000": {"auth": base64("user:password")}}}`, with
//! Docker Hub under the key `https://index.docker.io/v1/`. Our file is written
//! atomically with mode 0600 from its first byte; keys we do not know are kept.
//!
//! Credential helpers work as in Docker: `credHelpers` names a helper per
//! registry, `credsStore` one for every other registry, and a registry with a
//! helper takes its credentials from the helper only, never from `auths`.
//! A helper is the program `docker-credential-<name>` on `PATH`, spoken to in
//! the docker-credential-helpers protocol: `get` with the server URL on stdin
//! answers `{"ServerURL","Username","Secret"}` (or "credentials not found in
//! native keychain" and a failure), `store` reads that JSON, `erase` reads the
//! server URL. `login` stores through the registry's helper when it has one
//! (our file then only records the registry, as Docker's does) and `logout`
//! erases through it. Our file is asked first, then Docker's; each helper is
//! asked once per registry and process. A helper that cannot be run or fails
//! on `get` is logged and the registry used anonymously.
//!
//! Credentials are never logged: [`Credentials`] and [`AuthStore`] redact
//! passwords in their `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{debug, warn};

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
    kind: SecretKind,
}

/// What the secret of [`Credentials`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A password (or a personal access token used as one): basic
    /// authentication, or the token server's `GET` with it.
    Password,
    /// Docker's identity token: an OAuth2 refresh token, traded for an access
    /// token with `POST realm` (`grant_type=refresh_token`).
    IdentityToken,
    /// A bearer token sent to the registry as it is (Docker's
    /// `registrytoken`).
    RegistryToken,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_string(),
            password: password.to_string(),
            kind: SecretKind::Password,
        }
    }

    /// An identity token (an OAuth2 refresh token) for `username`; Docker's
    /// helpers and `docker login` name its user `<token>`.
    pub fn identity_token(username: &str, token: &str) -> Self {
        Self {
            username: if username.is_empty() {
                TOKEN_USERNAME.to_string()
            } else {
                username.to_string()
            },
            password: token.to_string(),
            kind: SecretKind::IdentityToken,
        }
    }

    /// A bearer token the registry accepts as it is.
    pub fn registry_token(token: &str) -> Self {
        Self {
            username: String::new(),
            password: token.to_string(),
            kind: SecretKind::RegistryToken,
        }
    }

    /// What the secret is.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The password, or the token. Never log it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `base64(user:password)`, Docker's `auth` field.
    fn encode(&self) -> String {
        BASE64.encode(format!("{}:{}", self.username, self.password))
    }

    /// Reads one `auths` entry: `identitytoken` (with the user name of
    /// `auth` or `username`, if any), `auth` (base64 `user:password`) or
    /// `username`/`password` fields.
    fn decode(entry: &Value) -> Option<Self> {
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let from_auth = entry
                .get("auth")
                .and_then(Value::as_str)
                .and_then(|a| BASE64.decode(a.trim()).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|text| text.split_once(':').map(|(u, _)| u.to_string()));
            let user = from_auth
                .or_else(|| {
                    entry
                        .get("username")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_default();
            return Some(Self::identity_token(&user, token));
        }
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
            .field("kind", &self.kind)
            .finish()
    }
}

/// What one config file says about credentials.
#[derive(Clone, Default)]
struct ConfigFile {
    /// `auths` entries that hold credentials, by registry domain.
    entries: BTreeMap<String, Credentials>,
    /// `credsStore`: the helper of every registry without one of its own.
    store: Option<String>,
    /// `credHelpers`: helpers by registry domain.
    helpers: BTreeMap<String, String>,
}

impl ConfigFile {
    fn helper_for(&self, domain: &str) -> Option<&str> {
        self.helpers
            .get(domain)
            .or(self.store.as_ref())
            .map(String::as_str)
    }
}

/// What a helper answered for one registry.
#[derive(Clone)]
enum Answer {
    /// Credentials.
    Found(Credentials),
    /// It keeps none for the registry.
    Missing,
    /// It could not be run, or failed.
    Failed,
}

/// Every credential known: config files (ours first, then Docker's) and
/// credentials inserted in memory, which win. Cheap to clone; clones share
/// what helpers answered.
#[derive(Clone, Default)]
pub struct AuthStore {
    inserted: BTreeMap<String, Credentials>,
    files: Vec<ConfigFile>,
    /// What helpers answered, by helper and registry domain.
    answered: Arc<Mutex<BTreeMap<(String, String), Answer>>>,
}

impl fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which registries have credentials or helpers; Credentials redacts
        // the rest.
        let mut map = f.debug_map();
        map.entries(self.inserted.iter());
        for file in &self.files {
            map.entries(file.entries.iter());
            if let Some(store) = &file.store {
                map.entry(&"credsStore", store);
            }
            map.entries(file.helpers.iter());
        }
        map.finish()
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

    /// Reads our config file `own` (if it exists), then Docker's (if `docker`
    /// is given and exists); what ours says for a registry wins.
    pub fn load(docker: Option<&Path>, own: &Path) -> Result<Self, RegistryError> {
        let mut store = Self::empty();
        for path in [own].into_iter().chain(docker) {
            let Some(doc) = read_config(path)? else {
                continue;
            };
            let mut file = ConfigFile::default();
            if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
                for (key, entry) in auths {
                    if let Some(creds) = Credentials::decode(entry) {
                        file.entries.insert(domain_of_key(key), creds);
                    }
                }
            }
            file.store = doc
                .get("credsStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if let Some(helpers) = doc.get("credHelpers").and_then(Value::as_object) {
                for (key, helper) in helpers {
                    if let Some(helper) = helper.as_str().filter(|h| !h.is_empty()) {
                        file.helpers.insert(domain_of_key(key), helper.to_string());
                    }
                }
            }
            store.files.push(file);
        }
        Ok(store)
    }

    /// [`AuthStore::load`] with Docker's file at its usual place.
    pub fn load_default(own: &Path) -> Result<Self, RegistryError> {
        Self::load(docker_config_path().as_deref(), own)
    }

    /// The credential helper (the `<name>` of `docker-credential-<name>`)
    /// that keeps the credentials of a registry, if a config file names one.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        let domain = domain_of_key(registry);
        self.files.iter().find_map(|f| f.helper_for(&domain))
    }

    /// True when [`AuthStore::credentials`] may have to run a helper for
    /// `registry` (one is named, and was not asked yet): a blocking call,
    /// which async code makes on a blocking thread.
    pub fn needs_helper(&self, registry: &str) -> bool {
        let domain = domain_of_key(registry);
        if self.inserted.contains_key(&domain) {
            return false;
        }
        let answered = self.lock_answered();
        self.files.iter().any(|f| {
            f.helper_for(&domain)
                .is_some_and(|h| !answered.contains_key(&(h.to_string(), domain.clone())))
        })
    }

    fn lock_answered(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Answer>> {
        // Each change is one insert: a panic elsewhere cannot leave it half done.
        self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The credentials for a registry domain (or any `auths` key form): those
    /// inserted, else from the first config file that has any for it. A file
    /// that names a helper for the registry takes them from the helper only;
    /// when the helper cannot be run or fails, from its `auths` entry, as
    /// Docker's CLI ends up doing (it ignores the helper's error). Each helper
    /// runs at most once per registry.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        let domain = domain_of_key(registry);
        if let Some(creds) = self.inserted.get(&domain) {
            return Some(creds.clone());
        }
        self.files
            .iter()
            .find_map(|file| match file.helper_for(&domain) {
                Some(helper) => match self.ask_helper(helper, &domain) {
                    Answer::Found(creds) => Some(creds),
                    Answer::Missing => None,
                    Answer::Failed => file.entries.get(&domain).cloned(),
                },
                None => file.entries.get(&domain).cloned(),
            })
    }

    fn ask_helper(&self, helper: &str, domain: &str) -> Answer {
        let key = (helper.to_string(), domain.to_string());
        if let Some(answer) = self.lock_answered().get(&key) {
            return answer.clone();
        }
        let answer = match helper_get(helper, &key_of_domain(domain)) {
            Ok(Some(creds)) => Answer::Found(creds),
            Ok(None) => Answer::Missing,
            Err(error) => {
                let cause = std::error::Error::source(&error).map(ToString::to_string);
                warn!(%error, cause, registry = domain, "credential helper failed; using the config file's own entry, if any");
                Answer::Failed
            }
        };
        self.lock_answered().insert(key, answer.clone());
        answer
    }

    /// Adds or replaces credentials in memory.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.inserted.insert(domain_of_key(registry), credentials);
    }

    /// Registries with credentials in memory or in `auths` entries (not
    /// those only a helper knows).
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self
            .inserted
            .keys()
            .chain(self.files.iter().flat_map(|f| f.entries.keys()))
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }
}

/// The docker-credential-helpers message for "no credentials for this server".
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Docker's username for an identity token (an OAuth refresh token) rather
/// than a password.
const TOKEN_USERNAME: &str = "<token>";

/// Credentials as the helper protocol writes them.
#[derive(Serialize, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// What a helper said.
enum HelperAnswer {
    /// It succeeded, with this on stdout.
    Done(Vec<u8>),
    /// It has nothing for the server.
    NotFound,
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin.
fn run_helper(
    helper: &str,
    verb: &'static str,
    input: &[u8],
    registry: &str,
) -> Result<HelperAnswer, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let error = |source| RegistryError::CredentialHelper {
        program: program.clone(),
        verb,
        registry: registry.to_string(),
        source,
    };
    debug!(program, verb, registry, "running credential helper");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(error)?;
    // The input is a line or a small JSON document, well under a pipe's
    // buffer: writing it all before reading the output cannot deadlock.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(error)?;
    }
    let output = child.wait_with_output().map_err(error)?;
    if output.status.success() {
        return Ok(HelperAnswer::Done(output.stdout));
    }
    // Helpers print their error on stdout (credentials.Serve); some on stderr.
    let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if said == NOT_FOUND {
        return Ok(HelperAnswer::NotFound);
    }
    let said = if said.is_empty() {
        String::from_utf8_lossy(&output.stderr).trim().to_string()
    } else {
        said
    };
    Err(error(io::Error::other(format!(
        "{}: {said}",
        output.status
    ))))
}

/// The credentials a helper keeps for `server_url`.
fn helper_get(helper: &str, server_url: &str) -> Result<Option<Credentials>, RegistryError> {
    let HelperAnswer::Done(out) = run_helper(helper, "get", server_url.as_bytes(), server_url)?
    else {
        return Ok(None);
    };
    let answer: HelperCredentials =
        serde_json::from_slice(&out).map_err(|source| RegistryError::CredentialHelper {
            program: format!("docker-credential-{helper}"),
            verb: "get",
            registry: server_url.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidData, source),
        })?;
    if answer.username == TOKEN_USERNAME {
        // An identity token: traded with the token server as a refresh token.
        return Ok(Some(Credentials::identity_token(
            TOKEN_USERNAME,
            &answer.secret,
        )));
    }
    Ok(Some(Credentials::new(&answer.username, &answer.secret)))
}

/// Hands credentials for `server_url` to a helper to keep.
fn helper_store(
    helper: &str,
    server_url: &str,
    credentials: &Credentials,
) -> Result<(), RegistryError> {
    let document = HelperCredentials {
        server_url: server_url.to_string(),
        username: match credentials.kind {
            SecretKind::IdentityToken => TOKEN_USERNAME.to_string(),
            _ => credentials.username.clone(),
        },
        secret: credentials.password.clone(),
    };
    let input =
        serde_json::to_vec(&document).map_err(|source| RegistryError::CredentialHelper {
            program: format!("docker-credential-{helper}"),
            verb: "store",
            registry: server_url.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidData, source),
        })?;
    run_helper(helper, "store", &input, server_url).map(|_| ())
}

/// Has a helper forget `server_url`; returns whether it had credentials.
fn helper_erase(helper: &str, server_url: &str) -> Result<bool, RegistryError> {
    Ok(matches!(
        run_helper(helper, "erase", server_url.as_bytes(), server_url)?,
        HelperAnswer::Done(_)
    ))
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
/// basic or token flow it asks for), then saves them: with the registry's
/// credential helper when the client's [`AuthStore`] names one (our file
/// `own` then records the registry without secrets, as Docker's does), else in
/// `own`. Nothing is saved when the registry refuses them.
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
    let helper = client
        .options()
        .auth
        .helper_for(&domain)
        .map(str::to_string);
    let mut entry = Map::new();
    if let Some(helper) = helper {
        let (key, credentials) = (key.clone(), credentials.clone());
        tokio::task::spawn_blocking(move || helper_store(&helper, &key, &credentials))
            .await
            .map_err(|source| RegistryError::Task {
                operation: super::registry::Operation::new("login", &domain),
                source,
            })??;
    } else if credentials.kind == SecretKind::IdentityToken {
        // As Docker's file: the user name in `auth`, the token beside it.
        let user = BASE64.encode(format!("{}:", credentials.username));
        entry.insert("auth".into(), Value::String(user));
        entry.insert(
            "identitytoken".into(),
            Value::String(credentials.password.clone()),
        );
    } else {
        entry.insert("auth".into(), Value::String(credentials.encode()));
    }
    update_own(own, |auths| {
        // Drop other spellings of the same registry so one entry remains.
        auths.retain(|k, _| domain_of_key(k) != domain);
        auths.insert(key, Value::Object(entry));
        true
    })?;
    Ok(())
}

/// Removes the credentials of `server`: from its credential helper when
/// `auth` names one, and from our file `own`; returns whether there were any.
pub fn logout(auth: &AuthStore, own: &Path, server: &str) -> Result<bool, RegistryError> {
    let domain = domain_of_key(server);
    let erased = match auth.helper_for(&domain) {
        Some(helper) => helper_erase(helper, &key_of_domain(&domain))?,
        None => false,
    };
    let removed = update_own(own, |auths| {
        let before = auths.len();
        auths.retain(|k, _| domain_of_key(k) != domain);
        auths.len() != before
    })?;
    Ok(erased || removed)
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
            }, "credsStore": "stack-test-absent"})
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
        // Docker's file names a helper that is not there: its entries serve.
        assert_eq!(store.helper_for("docker.io"), Some("stack-test-absent"));
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
    fn helpers_are_chosen_per_registry_then_by_default_ours_first() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.json");
        let own = dir.path().join("own.json");
        fs::write(
            &docker,
            serde_json::json!({"credsStore": "desktop",
                "credHelpers": {"gcr.io": "gcloud", "index.docker.io": "hub", "empty.example": ""}})
            .to_string(),
        )
        .unwrap();
        fs::write(
            &own,
            serde_json::json!({"credHelpers": {"registry.example:5000": "pass"}}).to_string(),
        )
        .unwrap();
        let store = AuthStore::load(Some(&docker), &own).unwrap();
        assert_eq!(store.helper_for("registry.example:5000"), Some("pass"));
        assert_eq!(store.helper_for("gcr.io"), Some("gcloud"));
        assert_eq!(store.helper_for("docker.io"), Some("hub"));
        assert_eq!(store.helper_for(DOCKER_HUB_KEY), Some("hub"));
        assert_eq!(store.helper_for("empty.example"), Some("desktop"));
        assert_eq!(store.helper_for("quay.io"), Some("desktop"));
        assert!(store.needs_helper("quay.io"));
        let mut store = store;
        store.insert("quay.io", Credentials::new("u", "p"));
        assert!(!store.needs_helper("quay.io"), "what is in memory wins");
        assert_eq!(
            AuthStore::load(None, &own).unwrap().helper_for("quay.io"),
            None
        );
    }

    #[test]
    fn identity_tokens_in_auths_entries_are_refresh_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("config.json");
        // As Docker writes it: the user name in `auth`, no password.
        fs::write(
            &own,
            r#"{"auths":{"r.example":{"auth":"bWU6","identitytoken":"tok"},"plain.example":{"auth":"bWU6cHc="}}}"#,
        )
        .unwrap();
        let store = AuthStore::load(None, &own).unwrap();
        let token = store.credentials("r.example").unwrap();
        assert_eq!(token.kind(), SecretKind::IdentityToken);
        assert_eq!((token.username.as_str(), token.password()), ("me", "tok"));
        let plain = store.credentials("plain.example").unwrap();
        assert_eq!(plain.kind(), SecretKind::Password);
        assert_eq!(plain.password(), "pw");
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
        let none = AuthStore::empty();
        assert!(logout(&none, &own, "http://a:1/").unwrap());
        assert!(!logout(&none, &own, "a:1").unwrap());
        let store = AuthStore::load(None, &own).unwrap();
        assert_eq!(store.registries().collect::<Vec<_>>(), ["b:2"]);
        assert_eq!(
            fs::metadata(&own).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
