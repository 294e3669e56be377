//! The dispatcher: stages in order, each instruction a step that makes an
//! image (a config change, or a layer), looked up in the cache first.
//! Stages the target does not need are skipped, as BuildKit does. Output
//! is Docker's classic builder text (`Step N/M : …`, ` ---> Using cache`,
//! ` ---> <short id>`, `Successfully built …`), with each step's time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use super::BuildError;
use super::cache::{Cache, Key};
use super::context::{self, Context, Ignore};
use super::copy::{self, Layers, Ownership, Staging, Tree};
use super::steps::{self, Args, Instruction};
use crate::image::catalog::LayerRecord;
use crate::image::digest::Digest;
use crate::image::images::{Images, now_rfc3339};
use crate::image::layer;
use crate::image::oci::{History, ImageConfig, Platform, RunConfig};
use crate::image::reference::Reference;

/// What a build is asked to do (`docker build`'s options).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's text when it does not come from a file (stdin).
    pub dockerfile_text: Option<String>,
    /// The Dockerfile's path, relative to the context or absolute
    /// (`Dockerfile` by default).
    pub dockerfile: Option<String>,
    /// `-t`.
    pub tags: Vec<Reference>,
    /// `--build-arg NAME[=value]` (`None`: take it from the environment,
    /// which the client resolved already, so unset).
    pub build_args: BTreeMap<String, Option<String>>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `-q`: only the image id is printed (by the caller).
    pub quiet: bool,
}

/// One RUN, as the host runs it.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The image it runs on.
    pub image: Digest,
    /// The whole command line (shell + command, or the exec form).
    pub argv: Vec<String>,
    /// Build args to set (`NAME=value`), over the image's env.
    pub env: Vec<String>,
    /// `RUN --network=none`.
    pub network_none: bool,
}

/// What the daemon does for a build: run containers, pull, download.
pub trait BuildHost: Send + Sync {
    /// Runs `step` in a container of its image, writing its output (and
    /// Docker's ` ---> Running in …` lines) to `out`; returns the exit code
    /// and, when it is 0, the layer of its changes. The container is
    /// removed either way.
    fn run(
        &self,
        step: &RunStep,
        out: &mut dyn FnMut(&str),
    ) -> Result<(i32, Option<LayerRecord>), BuildError>;
    /// Pulls `name` (always, for `--pull`; else only when missing).
    fn pull(&self, name: &str, out: &mut dyn FnMut(&str)) -> Result<Digest, BuildError>;
    /// Downloads `url` into `dest`; returns its Last-Modified time.
    fn fetch(&self, url: &str, dest: &Path) -> Result<Option<SystemTime>, BuildError>;
}

/// The proxy args every build accepts without an ARG, left out of history.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// One stage of the Dockerfile.
#[derive(Debug, Clone)]
struct StageDef {
    base: String,
    name: Option<String>,
    from: Instruction,
    steps: Vec<Instruction>,
}

/// The state of a stage being built.
#[derive(Debug)]
struct State {
    id: Digest,
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, String>,
    cmd_set: bool,
}

impl State {
    fn run_config(&mut self) -> &mut RunConfig {
        self.config.config.get_or_insert_with(RunConfig::default)
    }

    fn env_map(&self) -> BTreeMap<String, String> {
        let mut env = self.args.clone();
        for e in self
            .config
            .config
            .iter()
            .flat_map(|c| c.env.iter().flatten())
        {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }
}

/// A running build.
struct Build<'a> {
    images: &'a Images,
    host: &'a dyn BuildHost,
    cache: Cache,
    opts: &'a BuildOptions,
    work: PathBuf,
    context: Option<Context>,
    ignore: Ignore,
    out: &'a mut dyn FnMut(&str),
    step: usize,
    total: usize,
    meta_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    /// Built stages: index → (name, image id).
    built: Vec<(Option<String>, Digest)>,
    /// Flattened roots of stages and images used by `COPY --from`.
    roots: BTreeMap<Digest, PathBuf>,
}

/// Builds the image `opts` describes; returns its id. `root` is the
/// daemon's state root (cache files and scratch space live under
/// `root/build`).
pub fn build(
    images: &Images,
    host: &dyn BuildHost,
    root: &Path,
    opts: &BuildOptions,
    out: &mut dyn FnMut(&str),
) -> Result<Digest, BuildError> {
    let build_dir = root.join("build");
    std::fs::create_dir_all(&build_dir).map_err(BuildError::io("create", &build_dir))?;
    let work = tempfile::Builder::new()
        .prefix("work-")
        .tempdir_in(&build_dir)
        .map_err(BuildError::io("create a directory in", &build_dir))?;
    let text = match &opts.dockerfile_text {
        Some(t) => t.clone(),
        None => {
            let name = opts.dockerfile.as_deref().unwrap_or("Dockerfile");
            let path = if Path::new(name).is_absolute() {
                PathBuf::from(name)
            } else {
                opts.context.join(name)
            };
            std::fs::read_to_string(&path).map_err(|source| BuildError::Context { path, source })?
        }
    };
    let dockerfile_path = Path::new(opts.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let ignore = Ignore::for_build(&opts.context, dockerfile_path)?;
    let mut b = Build {
        images,
        host,
        cache: Cache::open(&build_dir.join("cache.json")),
        opts,
        work: work.path().to_path_buf(),
        context: None,
        ignore,
        out,
        step: 0,
        total: 0,
        meta_args: BTreeMap::new(),
        used_args: BTreeSet::new(),
        built: Vec::new(),
        roots: BTreeMap::new(),
    };
    let result = b.run(&text);
    b.cache.prune(|d| images.catalog.get(d).is_ok());
    result
}

impl Build<'_> {
    fn say(&mut self, text: &str) {
        (self.out)(text);
    }

    fn run(&mut self, text: &str) -> Result<Digest, BuildError> {
        // The parser checks the whole file first (Docker's messages, at
        // the line); the dispatcher then runs the engine's reading of it.
        let name = self.opts.dockerfile.as_deref().unwrap_or("Dockerfile");
        super::dockerfile::parse(text, name).map_err(|e| BuildError::Parse {
            line: e.line,
            message: e.message.clone(),
        })?;
        let instructions = steps::parse(text)?;
        let mut stages: Vec<StageDef> = Vec::new();
        let mut meta = Vec::new();
        for ins in instructions {
            if ins.keyword == "FROM" {
                let words: Vec<String> =
                    ins.text().split_whitespace().map(str::to_string).collect();
                let (base, name) = match words.as_slice() {
                    [b] => (b.clone(), None),
                    [b, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        (b.clone(), Some(n.to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(BuildError::Parse {
                            line: ins.line,
                            message: "FROM requires either one or three arguments".into(),
                        });
                    }
                };
                stages.push(StageDef {
                    base,
                    name,
                    from: ins,
                    steps: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.steps.push(ins);
            } else if ins.keyword == "ARG" {
                meta.push(ins);
            } else {
                return Err(BuildError::Parse {
                    line: ins.line,
                    message: format!("{} before the first FROM", ins.keyword),
                });
            }
        }
        if stages.is_empty() {
            return Err(BuildError::Instruction(
                "the Dockerfile has no FROM instruction".into(),
            ));
        }
        // Meta args: usable in FROM.
        for ins in &meta {
            for (k, v) in steps::key_values(&ins.text(), &self.meta_args.clone(), false)? {
                let value = match self.opts.build_args.get(&k) {
                    Some(Some(given)) => {
                        self.used_args.insert(k.clone());
                        given.clone()
                    }
                    _ => v,
                };
                self.meta_args.insert(k, value);
            }
        }
        let target = match &self.opts.target {
            Some(t) => stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
                .ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "failed to reach build target {t} in Dockerfile"
                    ))
                })?,
            None => stages.len() - 1,
        };
        if !self.opts.labels.is_empty() {
            let text = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect::<Vec<_>>()
                .join(" ");
            stages[target].steps.push(Instruction {
                keyword: "LABEL".into(),
                flags: Vec::new(),
                args: Args::Shell(text),
                line: 0,
            });
        }
        let needed = self.needed(&stages, target)?;
        self.total = needed.iter().map(|&i| 1 + stages[i].steps.len()).sum();
        let mut last = None;
        for (index, stage) in stages.iter().enumerate().take(target + 1) {
            if !needed.contains(&index) {
                self.built.push((stage.name.clone(), Digest::of(b"")));
                continue;
            }
            let id = self.stage(stage)?;
            self.built.push((stage.name.clone(), id.clone()));
            last = Some(id);
        }
        let id = last.ok_or_else(|| BuildError::Instruction("nothing to build".into()))?;
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let list = unused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            self.say(&format!(
                "[Warning] One or more build-args [{list}] were not consumed\n"
            ));
        }
        self.say(&format!("Successfully built {}\n", id.short()));
        for tag in &self.opts.tags {
            self.images
                .catalog
                .tag(tag, &id)
                .map_err(|e| BuildError::Image(e.into()))?;
            self.say(&format!("Successfully tagged {}\n", tag.familiar()));
        }
        Ok(id)
    }

    /// The stages the target needs: itself, and every stage reachable
    /// through FROM and `COPY --from`.
    fn needed(&self, stages: &[StageDef], target: usize) -> Result<BTreeSet<usize>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let base = steps::process_word(&stages[i].base, &self.meta_args)?;
            let mut refs = vec![base];
            for s in &stages[i].steps {
                if matches!(s.keyword.as_str(), "COPY" | "ADD")
                    && let Some(f) = s.flag("from")
                {
                    refs.push(f.to_string());
                }
            }
            for r in refs {
                if let Some(j) = stage_index(stages, &r, i) {
                    todo.push(j);
                }
            }
        }
        Ok(needed)
    }

    fn begin(&mut self, ins: &Instruction) -> Instant {
        self.step += 1;
        let line = format!("Step {}/{} : {}\n", self.step, self.total, ins.display());
        self.say(&line);
        Instant::now()
    }

    fn finish(&mut self, id: &Digest, started: Instant, cached: bool) {
        if cached {
            self.say(" ---> Using cache\n");
        }
        let line = format!(
            " ---> {} ({:.2}s)\n",
            id.short(),
            started.elapsed().as_secs_f64()
        );
        self.say(&line);
    }

    fn stage(&mut self, stage: &StageDef) -> Result<Digest, BuildError> {
        let started = self.begin(&stage.from);
        let base = steps::process_word(&stage.base, &self.meta_args)?;
        let mut state = self.from(&base, stage)?;
        self.finish(&state.id, started, false);
        let triggers = state
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        if !triggers.is_empty() {
            self.say(&format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            for trigger in &triggers {
                for ins in steps::parse(trigger)? {
                    if matches!(ins.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                        return Err(BuildError::Instruction(format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            ins.keyword
                        )));
                    }
                    let started = Instant::now();
                    self.say(&format!(" ---> Running trigger: {}\n", ins.display()));
                    let cached = self.step_of(&mut state, &ins)?;
                    self.finish(&state.id, started, cached);
                }
            }
        }
        for ins in &stage.steps {
            let started = self.begin(ins);
            let cached = self.step_of(&mut state, ins)?;
            self.finish(&state.id, started, cached);
        }
        Ok(state.id)
    }

    fn from(&mut self, base: &str, stage: &StageDef) -> Result<State, BuildError> {
        let own_index = self.built.len();
        let stage_ref = self
            .built
            .iter()
            .take(own_index)
            .position(|(n, _)| n.as_deref() == Some(&base.to_ascii_lowercase()));
        let id = if base.eq_ignore_ascii_case("scratch") {
            let config = ImageConfig {
                architecture: Platform::host().architecture,
                os: Platform::host().os,
                ..ImageConfig::default()
            };
            self.images.put_image(Vec::new(), config)?
        } else if let Some(i) = stage_ref {
            self.built[i].1.clone()
        } else {
            self.image(base)?
        };
        let _ = stage;
        let record = self
            .images
            .catalog
            .get(&id)
            .map_err(|e| BuildError::Image(e.into()))?;
        let config = self.images.config(&id)?;
        Ok(State {
            id,
            config,
            layers: record.layers,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// An image by name: pulled when missing, or always with `--pull`.
    fn image(&mut self, name: &str) -> Result<Digest, BuildError> {
        if !self.opts.pull
            && let Ok(id) = self.images.catalog.resolve(name)
        {
            return Ok(id);
        }
        let out = &mut *self.out;
        self.host.pull(name, out)
    }

    /// Runs one instruction on `state`; returns whether the cache answered.
    fn step_of(&mut self, state: &mut State, ins: &Instruction) -> Result<bool, BuildError> {
        let env = state.env_map();
        let kw = ins.keyword.as_str();
        match kw {
            "RUN" => self.run_step(state, ins),
            "COPY" | "ADD" => self.copy_step(state, ins, &env),
            "WORKDIR" => {
                let dir = steps::process_word(&ins.text(), &env)?;
                let (path, _) = copy::resolve_dest(&dir, &state.workdir());
                let text = format!("WORKDIR {path}");
                state.run_config().working_dir = Some(path.clone());
                let layers = Layers(self.images.layers(&state.id)?);
                if layers.lookup(&path).is_some_and(|m| m.is_dir()) {
                    return self.meta_step(state, &text, &[]);
                }
                let key_text = format!("WORKDIR-mkdir {path}");
                self.layer_step(state, &key_text, &text, None, |staging| {
                    staging.mkdirs(&path, false).map(|_| ())
                })
            }
            _ => {
                let text = self.apply_meta(state, ins, &env)?;
                self.meta_step(state, &text, &[])
            }
        }
    }

    /// Applies a config instruction; returns its history text.
    fn apply_meta(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        env: &BTreeMap<String, String>,
    ) -> Result<String, BuildError> {
        let raw = ins.text();
        let bad = |m: &str| BuildError::Parse {
            line: ins.line,
            message: m.to_string(),
        };
        Ok(match ins.keyword.as_str() {
            "ENV" => {
                let pairs = steps::key_values(&raw, env, true)?;
                if pairs.is_empty() {
                    return Err(bad("ENV requires at least one argument"));
                }
                let rc = state.run_config();
                let list = rc.env.get_or_insert_with(Vec::new);
                for (k, v) in &pairs {
                    list.retain(|e| e.split('=').next() != Some(k.as_str()));
                    list.push(format!("{k}={v}"));
                }
                format!(
                    "ENV {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            "LABEL" => {
                let pairs = steps::key_values(&raw, env, true)?;
                let rc = state.run_config();
                let labels = rc.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in &pairs {
                    labels.insert(k.clone(), v.clone());
                }
                format!(
                    "LABEL {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            "MAINTAINER" => {
                state.config.author = Some(raw.clone());
                format!("MAINTAINER {raw}")
            }
            "ARG" => {
                let pairs = steps::key_values(&raw, env, false)?;
                let mut shown = Vec::new();
                for (k, default) in pairs {
                    let has_default = raw.contains(&format!("{k}="));
                    let value = match self.opts.build_args.get(&k) {
                        Some(Some(v)) => Some(v.clone()),
                        _ if has_default => Some(default.clone()),
                        _ => self.meta_args.get(&k).cloned(),
                    };
                    self.used_args.insert(k.clone());
                    shown.push(if has_default {
                        format!("{k}={default}")
                    } else {
                        k.clone()
                    });
                    if let Some(v) = value {
                        state.args.insert(k, v);
                    }
                }
                format!("ARG {}", shown.join(" "))
            }
            "CMD" => {
                let cmd = self.command(state, ins);
                state.run_config().cmd = Some(cmd.clone());
                state.cmd_set = true;
                format!("CMD {}", serde_json::to_string(&cmd).unwrap_or_default())
            }
            "ENTRYPOINT" => {
                let ep = self.command(state, ins);
                let cmd_set = state.cmd_set;
                let rc = state.run_config();
                rc.entrypoint = Some(ep.clone());
                if !cmd_set {
                    rc.cmd = None;
                }
                format!(
                    "ENTRYPOINT {}",
                    serde_json::to_string(&ep).unwrap_or_default()
                )
            }
            "SHELL" => {
                let Args::Exec(words) = &ins.args else {
                    return Err(bad("SHELL requires the arguments to be in JSON form"));
                };
                state.run_config().shell = Some(words.clone());
                format!("SHELL {}", serde_json::to_string(words).unwrap_or_default())
            }
            "EXPOSE" => {
                let ports = steps::process_words(&raw, env, true)?;
                let rc = state.run_config();
                let map = rc.exposed_ports.get_or_insert_with(BTreeMap::new);
                let mut shown = Vec::new();
                for p in ports {
                    let p = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    map.insert(p.clone(), Value::Object(serde_json::Map::new()));
                    shown.push(p);
                }
                format!(
                    "EXPOSE map[{}]",
                    shown
                        .iter()
                        .map(|p| format!("{p}:{{}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            "VOLUME" => {
                let vols = match &ins.args {
                    Args::Exec(v) => v
                        .iter()
                        .map(|w| steps::process_word(w, env))
                        .collect::<Result<Vec<_>, _>>()?,
                    Args::Shell(s) => steps::process_words(s, env, true)?,
                };
                if vols.iter().any(String::is_empty) || vols.is_empty() {
                    return Err(bad("VOLUME specified can not be an empty string"));
                }
                let rc = state.run_config();
                let map = rc.volumes.get_or_insert_with(BTreeMap::new);
                for v in &vols {
                    map.insert(v.clone(), Value::Object(serde_json::Map::new()));
                }
                format!(
                    "VOLUME {}",
                    serde_json::to_string(&vols).unwrap_or_default()
                )
            }
            "USER" => {
                let user = steps::process_word(&raw, env)?;
                state.run_config().user = Some(user.clone());
                format!("USER {user}")
            }
            "STOPSIGNAL" => {
                let sig = steps::process_word(&raw, env)?;
                state.run_config().stop_signal = Some(sig.clone());
                format!("STOPSIGNAL {sig}")
            }
            "ONBUILD" => {
                let inner = raw.trim();
                let kw = inner
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(kw.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") || kw.is_empty() {
                    return Err(bad(&format!("{kw} isn't allowed as an ONBUILD trigger")));
                }
                state
                    .run_config()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(inner.to_string());
                format!("ONBUILD {inner}")
            }
            "HEALTHCHECK" => {
                let check = healthcheck(ins)?;
                let shown = serde_json::to_string(&check.test).unwrap_or_default();
                state.run_config().healthcheck = Some(check);
                format!("HEALTHCHECK {shown}")
            }
            other => return Err(bad(&format!("unknown instruction: {other}"))),
        })
    }

    /// CMD/ENTRYPOINT argv: the exec form, or the shell form through SHELL.
    fn command(&self, state: &State, ins: &Instruction) -> Vec<String> {
        match &ins.args {
            Args::Exec(words) => words.clone(),
            Args::Shell(text) => {
                let mut argv = state.shell();
                argv.push(text.clone());
                argv
            }
        }
    }

    /// A config-only step: a new image with an empty-layer history entry.
    fn meta_step(
        &mut self,
        state: &mut State,
        text: &str,
        args: &[String],
    ) -> Result<bool, BuildError> {
        let created_by = format!("/bin/sh -c #(nop)  {text}");
        let key = Key {
            parent: Some(&state.id),
            text: &created_by,
            args,
            content: Some(&config_hash(&state.config)),
        }
        .hash();
        if !self.opts.no_cache
            && let Some(id) = self.cache.get(&key, |d| self.images.catalog.get(d).is_ok())
        {
            state.config = self.images.config(&id)?;
            state.id = id;
            return Ok(true);
        }
        let created = now_rfc3339();
        state.config.created = Some(created.clone());
        state.config.history.push(History {
            created: Some(created),
            created_by: Some(created_by.clone()),
            empty_layer: true,
            ..History::default()
        });
        let id = self
            .images
            .put_image(state.layers.clone(), state.config.clone())?;
        self.cache.put(&key, &id);
        state.id = id;
        Ok(false)
    }

    /// A step that adds the layer `fill` stages.
    fn layer_step(
        &mut self,
        state: &mut State,
        key_text: &str,
        history: &str,
        content: Option<&str>,
        fill: impl FnOnce(&Staging<'_>) -> Result<(), BuildError>,
    ) -> Result<bool, BuildError> {
        let created_by = format!("/bin/sh -c #(nop)  {history}");
        let cfg_hash = config_hash(&state.config);
        let content = format!("{}\0{cfg_hash}", content.unwrap_or(""));
        let key = Key {
            parent: Some(&state.id),
            text: key_text,
            args: &[],
            content: Some(&content),
        }
        .hash();
        if let Some(hit) = self.lookup(state, &key)? {
            return Ok(hit);
        }
        let layers = Layers(self.images.layers(&state.id)?);
        let dir = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&self.work)
            .map_err(BuildError::io("create a directory in", &self.work))?;
        let staging = Staging {
            root: dir.path().to_path_buf(),
            layers: &layers,
            own: Ownership::default(),
        };
        fill(&staging)?;
        let root = dir.path().to_path_buf();
        let record = self
            .images
            .put_layer(|out| layer::tar_dir(&root, out).map(|_| ()))?;
        self.commit(state, record, &created_by, &key)?;
        Ok(false)
    }

    /// A cache lookup: on a hit, `state` moves to the cached image.
    fn lookup(&mut self, state: &mut State, key: &str) -> Result<Option<bool>, BuildError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let Some(id) = self.cache.get(key, |d| self.images.catalog.get(d).is_ok()) else {
            return Ok(None);
        };
        let record = self
            .images
            .catalog
            .get(&id)
            .map_err(|e| BuildError::Image(e.into()))?;
        state.config = self.images.config(&id)?;
        state.layers = record.layers;
        state.id = id;
        Ok(Some(true))
    }

    fn commit(
        &mut self,
        state: &mut State,
        record: LayerRecord,
        created_by: &str,
        key: &str,
    ) -> Result<(), BuildError> {
        let created = now_rfc3339();
        state.config.created = Some(created.clone());
        state.config.history.push(History {
            created: Some(created),
            created_by: Some(created_by.to_string()),
            ..History::default()
        });
        state.layers.push(record);
        let id = self
            .images
            .put_image(state.layers.clone(), state.config.clone())?;
        self.cache.put(key, &id);
        state.id = id;
        Ok(())
    }

    fn run_step(&mut self, state: &mut State, ins: &Instruction) -> Result<bool, BuildError> {
        let argv = match &ins.args {
            Args::Exec(words) => words.clone(),
            Args::Shell(text) => {
                let mut argv = state.shell();
                argv.push(text.clone());
                argv
            }
        };
        let network_none = match ins.flag("network") {
            None | Some("default") => false,
            Some("none") => true,
            Some(other) => {
                return Err(BuildError::Instruction(format!(
                    "RUN --network={other} is not supported (default or none)"
                )));
            }
        };
        // Build args the step sees: in the env of the command (unless an
        // ENV of the same name wins) and in history, proxies excepted.
        let config_env: BTreeSet<String> = state
            .config
            .config
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .map(|e| e.split('=').next().unwrap_or("").to_string())
            .collect();
        let mut env = Vec::new();
        let mut recorded = Vec::new();
        for (k, v) in &state.args {
            if config_env.contains(k) {
                continue;
            }
            env.push(format!("{k}={v}"));
            if !PROXY_ARGS.contains(&k.as_str()) {
                recorded.push(format!("{k}={v}"));
            }
        }
        for p in PROXY_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*p)
                && !state.args.contains_key(*p)
            {
                env.push(format!("{p}={v}"));
            }
        }
        let mut created_by = argv.join(" ");
        if !recorded.is_empty() {
            created_by = format!("|{} {} {created_by}", recorded.len(), recorded.join(" "));
        }
        let key_text = format!(
            "RUN{} {created_by}",
            if network_none { " --network=none" } else { "" }
        );
        let cfg_hash = config_hash(&state.config);
        let key = Key {
            parent: Some(&state.id),
            text: &key_text,
            args: &env,
            content: Some(&cfg_hash),
        }
        .hash();
        if let Some(hit) = self.lookup(state, &key)? {
            return Ok(hit);
        }
        let step = RunStep {
            image: state.id.clone(),
            argv: argv.clone(),
            env,
            network_none,
        };
        let out = &mut *self.out;
        let (code, layer) = self.host.run(&step, out)?;
        if code != 0 {
            return Err(BuildError::NonZero {
                command: argv.join(" "),
                code,
            });
        }
        let layer = layer.ok_or_else(|| BuildError::Host("the RUN step made no layer".into()))?;
        self.commit(state, layer, &created_by, &key)?;
        Ok(false)
    }

    fn context(&mut self) -> Result<&Context, BuildError> {
        if self.context.is_none() {
            let cache_dir = self.images.root().join("build").join("contexts");
            self.context = Some(context::scan(&self.opts.context, &self.ignore, &cache_dir)?);
        }
        self.context
            .as_ref()
            .ok_or_else(|| BuildError::Instruction("no context".into()))
    }

    /// The flattened root of an image (a stage's result, or `--from=image`).
    fn root_of(&mut self, id: &Digest) -> Result<PathBuf, BuildError> {
        if let Some(p) = self.roots.get(id) {
            return Ok(p.clone());
        }
        let dir = self.work.join(format!("root-{}", id.short()));
        let layers = self.images.layers(id)?;
        std::fs::create_dir_all(&dir).map_err(BuildError::io("create", &dir))?;
        layer::flatten(&layers, &dir).map_err(|e| BuildError::Image(e.into()))?;
        self.roots.insert(id.clone(), dir.clone());
        Ok(dir)
    }

    fn copy_step(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        env: &BTreeMap<String, String>,
    ) -> Result<bool, BuildError> {
        let is_add = ins.keyword == "ADD";
        let mut words = match &ins.args {
            Args::Exec(w) => w
                .iter()
                .map(|w| steps::process_word(w, env))
                .collect::<Result<Vec<_>, _>>()?,
            Args::Shell(s) => steps::process_words(s, env, true)?,
        };
        if words.len() < 2 {
            return Err(BuildError::Parse {
                line: ins.line,
                message: format!(
                    "{} requires at least two arguments, but only one was provided. Destination could not be determined",
                    ins.keyword
                ),
            });
        }
        let dest_word = words.pop().unwrap_or_default();
        let (dest, mut dest_dir) = copy::resolve_dest(&dest_word, &state.workdir());
        let layers = Layers(self.images.layers(&state.id)?);
        let own = Ownership {
            owner: match ins.flag("chown") {
                Some(c) if !c.is_empty() => {
                    Some(copy::resolve_chown(&steps::process_word(c, env)?, &layers)?)
                }
                _ => None,
            },
            mode: match ins.flag("chmod") {
                Some(m) if !m.is_empty() => Some(copy::parse_chmod(m)?),
                _ => None,
            },
        };
        // Where the sources come from.
        let from = ins
            .flag("from")
            .map(|f| steps::process_word(f, env))
            .transpose()?;
        let from_root = match &from {
            None => None,
            Some(f) => {
                let id = match stage_ref(&self.built, f) {
                    Some(id) => id,
                    None => self.image(f)?,
                };
                Some((id.clone(), self.root_of(&id)?))
            }
        };
        let urls: Vec<&String> = words.iter().filter(|w| is_add && is_url(w)).collect();
        if !urls.is_empty() && from_root.is_some() {
            return Err(BuildError::Instruction(
                "ADD --from cannot fetch URLs".into(),
            ));
        }
        // Resolve local sources and the content they hash to.
        let mut resolved: Vec<String> = Vec::new();
        for w in words.iter().filter(|w| !(is_add && is_url(w))) {
            let found = match &from_root {
                Some((_, root)) => copy::sources(Tree::Dir(root), w)?,
                None => copy::sources(Tree::Context(self.context()?), w)?,
            };
            resolved.extend(found);
        }
        let count = resolved.len() + urls.len();
        if count > 1 {
            if !dest_word.ends_with('/') {
                return Err(BuildError::Instruction(format!(
                    "When using {} with more than one source file, the destination must be a directory and end with a /",
                    ins.keyword
                )));
            }
            dest_dir = true;
        }
        if layers.lookup(&dest).is_some_and(|m| m.is_dir()) {
            dest_dir = true;
        }
        let content = match &from_root {
            Some((id, _)) => format!("from {id} {}", resolved.join("\0")),
            None => self.context()?.hash_paths(&resolved),
        };
        let flags = ins
            .flags
            .iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let key_text = format!("{} {flags} {} {}", ins.keyword, words.join(" "), dest);
        let history = format!(
            "{} {}{} in {dest} ",
            ins.keyword,
            if resolved.len() + urls.len() == 1 && !dest_dir {
                "file:"
            } else {
                "dir:"
            },
            &content.get(..64).unwrap_or(&content),
        );
        let ctx = match &from_root {
            None => Some(self.context()?.clone()),
            Some(_) => None,
        };
        let host = self.host;
        let work = self.work.clone();
        let base_content = format!("{content}\0{}", config_hash(&state.config));
        // URLs are fetched before the lookup: their content is the key.
        let mut fetched = Vec::new();
        for url in &urls {
            let file = work.join(format!("url-{}", fetched.len()));
            let mtime = host.fetch(url, &file)?;
            let bytes = std::fs::read(&file).map_err(BuildError::io("read", &file))?;
            fetched.push((
                (*url).clone(),
                file,
                mtime,
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            ));
        }
        let url_hashes = fetched
            .iter()
            .map(|f| f.3.clone())
            .collect::<Vec<_>>()
            .join(",");
        let full_content = format!("{base_content}\0{url_hashes}");
        let key = Key {
            parent: Some(&state.id),
            text: &key_text,
            args: &[],
            content: Some(&full_content),
        }
        .hash();
        if let Some(hit) = self.lookup(state, &key)? {
            return Ok(hit);
        }
        let dir = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&work)
            .map_err(BuildError::io("create a directory in", &work))?;
        let staging = Staging {
            root: dir.path().to_path_buf(),
            layers: &layers,
            own,
        };
        let tree_root;
        let tree = match (&from_root, &ctx) {
            (Some((_, root)), _) => {
                tree_root = root.clone();
                Tree::Dir(&tree_root)
            }
            (None, Some(c)) => Tree::Context(c),
            (None, None) => return Err(BuildError::Instruction("no context".into())),
        };
        if dest_dir {
            staging.mkdirs(&dest, true)?;
        }
        for src in &resolved {
            let src_path = match tree {
                Tree::Context(c) => c.root.join(src),
                Tree::Dir(d) => d.join(src),
            };
            let is_file = std::fs::symlink_metadata(&src_path).is_ok_and(|m| m.is_file());
            if is_add && is_file && from_root.is_none() && staging.extract(&src_path, &dest)? {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&src_path).is_ok_and(|m| m.is_dir());
            let target = if is_dir || !dest_dir {
                dest.clone()
            } else {
                let base = src.rsplit('/').next().unwrap_or(src);
                format!("{}/{base}", dest.trim_end_matches('/'))
            };
            staging.copy(tree, src, &target)?;
        }
        for (url, file, mtime, _) in &fetched {
            let name = url
                .split(['?', '#'])
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("download")
                .to_string();
            let target = if dest_dir {
                format!("{}/{name}", dest.trim_end_matches('/'))
            } else {
                dest.clone()
            };
            let data = std::fs::read(file).map_err(BuildError::io("read", file))?;
            let mtime = mtime
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| (i64::try_from(d.as_secs()).unwrap_or(0), 0));
            staging.write(&target, &data, 0o600, mtime)?;
        }
        let root = dir.path().to_path_buf();
        let record = self
            .images
            .put_layer(|out| layer::tar_dir(&root, out).map(|_| ()))?;
        let created_by = format!("/bin/sh -c #(nop) {history}");
        self.commit(state, record, &created_by, &key)?;
        Ok(false)
    }
}

/// A hash of the config a step starts from: steps on the same parent
/// image id share it anyway; this guards against a parent changed in place.
fn config_hash(config: &ImageConfig) -> String {
    let bytes = serde_json::to_vec(&config.config).unwrap_or_default();
    Digest::of(&bytes).hex().to_string()
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A name or index of a stage built before.
fn stage_ref(built: &[(Option<String>, Digest)], name: &str) -> Option<Digest> {
    if let Ok(i) = name.parse::<usize>() {
        return built.get(i).map(|(_, d)| d.clone());
    }
    let lower = name.to_ascii_lowercase();
    built
        .iter()
        .find(|(n, _)| n.as_deref() == Some(&lower))
        .map(|(_, d)| d.clone())
}

/// The index of stage `name` (a name or number) defined before `before`.
fn stage_index(stages: &[StageDef], name: &str, before: usize) -> Option<usize> {
    if let Ok(i) = name.parse::<usize>() {
        return (i < before).then_some(i);
    }
    let lower = name.to_ascii_lowercase();
    stages
        .iter()
        .take(before)
        .position(|s| s.name.as_deref() == Some(&lower))
}

fn quote(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '$' || c == '\\')
    {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
        )
    } else {
        s.to_string()
    }
}

/// `HEALTHCHECK [--interval=…] CMD …` or `HEALTHCHECK NONE`.
fn healthcheck(ins: &Instruction) -> Result<crate::image::oci::HealthConfig, BuildError> {
    let bad = |m: String| BuildError::Parse {
        line: ins.line,
        message: m,
    };
    let text = ins.text();
    let trimmed = text.trim();
    let mut check = crate::image::oci::HealthConfig::default();
    if trimmed.eq_ignore_ascii_case("NONE") {
        check.test = Some(vec!["NONE".into()]);
        return Ok(check);
    }
    let rest = trimmed
        .strip_prefix("CMD")
        .or_else(|| trimmed.strip_prefix("cmd"))
        .ok_or_else(|| bad("HEALTHCHECK requires CMD or NONE".into()))?
        .trim();
    check.test = Some(if rest.starts_with('[') {
        let words: Vec<String> = serde_json::from_str(rest)
            .map_err(|e| bad(format!("invalid JSON in HEALTHCHECK: {e}")))?;
        std::iter::once("CMD".to_string()).chain(words).collect()
    } else {
        vec!["CMD-SHELL".into(), rest.to_string()]
    });
    for (name, value) in &ins.flags {
        let nanos = || -> Result<i64, BuildError> {
            let d = parse_duration(value)
                .ok_or_else(|| bad(format!("invalid --{name} value {value:?}")))?;
            i64::try_from(d.as_nanos()).map_err(|_| bad(format!("--{name} is too long")))
        };
        match name.as_str() {
            "interval" => check.interval = Some(nanos()?),
            "timeout" => check.timeout = Some(nanos()?),
            "start-period" => check.start_period = Some(nanos()?),
            "start-interval" => check.start_interval = Some(nanos()?),
            "retries" => {
                check.retries = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("invalid --retries value {value:?}")))?,
                )
            }
            other => return Err(bad(format!("unknown flag: {other}"))),
        }
    }
    Ok(check)
}

/// Go's `time.ParseDuration` for the units health checks use.
fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_duration("30s"),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("1m30s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(parse_duration("x"), None);
    }
}
