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
use super::dockerfile::{self, CommandLine, Env, Instruction, KeyValue, Lexer, Source, Step};
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
    from: Step,
    steps: Vec<Step>,
}

/// A step's text as Docker prints it in `Step N/M : …`: the keyword upper
/// case, the rest as written (continuations joined).
fn display(step: &Step) -> String {
    let text = step.original.trim();
    let rest = text
        .find(char::is_whitespace)
        .map(|i| text[i..].trim_start())
        .unwrap_or("");
    format!("{} {rest}", step.instruction.keyword())
}

/// A word that failed to expand, as a parse error at its step's line.
fn shell_error(line: usize) -> impl Fn(dockerfile::ShellError) -> BuildError {
    move |e| BuildError::Parse {
        line,
        message: e.to_string(),
    }
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

    /// The variables words expand against: ARGs, then ENV over them.
    fn env(&self) -> Env {
        let mut env = Env::new();
        for (k, v) in &self.args {
            env.set(k, v);
        }
        for e in self
            .config
            .config
            .iter()
            .flat_map(|c| c.env.iter().flatten())
        {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            env.set(k, v);
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
    /// The Dockerfile's lexer (its escape character).
    lexer: Lexer,
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
        lexer: Lexer::new('\\'),
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
        let name = self.opts.dockerfile.as_deref().unwrap_or("Dockerfile");
        let file = dockerfile::parse(text, name).map_err(|e| BuildError::Parse {
            line: e.line,
            message: e.message.clone(),
        })?;
        self.lexer = file.lexer();
        let mut stages: Vec<StageDef> = file
            .stages
            .iter()
            .map(|s| StageDef {
                base: s.base.clone(),
                name: s.name.clone(),
                from: s.from.clone(),
                steps: s.steps.clone(),
            })
            .collect();
        if stages.is_empty() {
            return Err(BuildError::Instruction(
                "the Dockerfile has no FROM instruction".into(),
            ));
        }
        // Meta args: usable in FROM.
        for decl in file.meta_arg_decls() {
            let meta = self.meta_env();
            let default = decl
                .default
                .as_deref()
                .map(|d| self.lexer.process_word(d, &meta))
                .transpose()
                .map_err(shell_error(0))?;
            let value = match self.opts.build_args.get(&decl.name) {
                Some(Some(given)) => {
                    self.used_args.insert(decl.name.clone());
                    given.clone()
                }
                _ => default.unwrap_or_default(),
            };
            self.meta_args.insert(decl.name.clone(), value);
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
            // `--label`s: a LABEL step of literal pairs (line 0: never
            // expanded).
            let pairs: Vec<KeyValue> = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            let original = format!(
                "LABEL {}",
                self.opts
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            stages[target].steps.push(Step {
                instruction: Instruction::Label(pairs),
                start_line: 0,
                end_line: 0,
                original,
                span: 0..0,
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

    /// The meta ARGs as an environment (for FROM lines).
    fn meta_env(&self) -> Env {
        let mut env = Env::new();
        for (k, v) in &self.meta_args {
            env.set(k, v);
        }
        env
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
            let base = self
                .lexer
                .process_word(&stages[i].base, &self.meta_env())
                .map_err(shell_error(stages[i].from.start_line))?;
            let mut refs = vec![base];
            for s in &stages[i].steps {
                if let Instruction::Copy(c) = &s.instruction
                    && let Some(f) = &c.from
                {
                    refs.push(f.clone());
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

    fn begin(&mut self, step: &Step) -> Instant {
        self.step += 1;
        let line = format!("Step {}/{} : {}\n", self.step, self.total, display(step));
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
        let base = self
            .lexer
            .process_word(&stage.base, &self.meta_env())
            .map_err(shell_error(stage.from.start_line))?;
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
                for step in trigger_steps(trigger, self.lexer.escape())? {
                    let started = Instant::now();
                    self.say(&format!(" ---> Running trigger: {}\n", display(&step)));
                    let cached = self.step_of(&mut state, &step)?;
                    self.finish(&state.id, started, cached);
                }
            }
        }
        for step in &stage.steps {
            let started = self.begin(step);
            let cached = self.step_of(&mut state, step)?;
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

    /// Runs one step on `state`; returns whether the cache answered.
    fn step_of(&mut self, state: &mut State, step: &Step) -> Result<bool, BuildError> {
        let env = state.env();
        let line = step.start_line;
        // Line 0: the `--label` step, literal already.
        let ins = if step.instruction.expands() && line != 0 {
            step.instruction
                .expand(&self.lexer, &env)
                .map_err(shell_error(line))?
        } else {
            step.instruction.clone()
        };
        match &ins {
            Instruction::Run(run) => self.run_step(state, run),
            Instruction::Copy(c) => self.copy_step(
                state,
                &CopyArgs {
                    keyword: "COPY",
                    sources: &c.sources,
                    dest: &c.dest,
                    from: c.from.as_deref(),
                    chown: c.chown.as_deref(),
                    chmod: c.chmod.as_deref(),
                    checksum: None,
                    line,
                },
                &env,
            ),
            Instruction::Add(a) => self.copy_step(
                state,
                &CopyArgs {
                    keyword: "ADD",
                    sources: &a.sources,
                    dest: &a.dest,
                    from: None,
                    chown: a.chown.as_deref(),
                    chmod: a.chmod.as_deref(),
                    checksum: a.checksum.as_deref(),
                    line,
                },
                &env,
            ),
            Instruction::Workdir(dir) => {
                let (path, _) = copy::resolve_dest(dir, &state.workdir());
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
            other => {
                let text = self.apply_meta(state, other, line)?;
                self.meta_step(state, &text, &[])
            }
        }
    }

    /// Applies a config instruction (words expanded); returns its history
    /// text.
    fn apply_meta(
        &mut self,
        state: &mut State,
        ins: &Instruction,
        line: usize,
    ) -> Result<String, BuildError> {
        let bad = |m: &str| BuildError::Parse {
            line,
            message: m.to_string(),
        };
        let pairs_text = |pairs: &[KeyValue]| {
            pairs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Ok(match ins {
            Instruction::Env(pairs) => {
                if pairs.is_empty() {
                    return Err(bad("ENV requires at least one argument"));
                }
                let rc = state.run_config();
                let list = rc.env.get_or_insert_with(Vec::new);
                for kv in pairs {
                    list.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
                    list.push(format!("{}={}", kv.key, kv.value));
                }
                format!("ENV {}", pairs_text(pairs))
            }
            Instruction::Label(pairs) => {
                let rc = state.run_config();
                let labels = rc.labels.get_or_insert_with(BTreeMap::new);
                for kv in pairs {
                    labels.insert(kv.key.clone(), kv.value.clone());
                }
                format!("LABEL {}", pairs_text(pairs))
            }
            Instruction::Maintainer(who) => {
                state.config.author = Some(who.clone());
                format!("MAINTAINER {who}")
            }
            Instruction::Arg(decls) => {
                let mut shown = Vec::new();
                for decl in decls {
                    let k = &decl.name;
                    let value = match (self.opts.build_args.get(k), &decl.default) {
                        (Some(Some(v)), _) => Some(v.clone()),
                        (_, Some(default)) => Some(default.clone()),
                        _ => self.meta_args.get(k).cloned(),
                    };
                    self.used_args.insert(k.clone());
                    shown.push(match &decl.default {
                        Some(default) => format!("{k}={default}"),
                        None => k.clone(),
                    });
                    if let Some(v) = value {
                        state.args.insert(k.clone(), v);
                    }
                }
                format!("ARG {}", shown.join(" "))
            }
            Instruction::Cmd(command) => {
                let cmd = command.argv(&state.shell());
                state.run_config().cmd = Some(cmd.clone());
                state.cmd_set = true;
                format!("CMD {}", serde_json::to_string(&cmd).unwrap_or_default())
            }
            Instruction::Entrypoint(command) => {
                let ep = command.argv(&state.shell());
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
            Instruction::Shell(words) => {
                state.run_config().shell = Some(words.clone());
                format!("SHELL {}", serde_json::to_string(words).unwrap_or_default())
            }
            Instruction::Expose(ports) => {
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
            Instruction::Volume(vols) => {
                if vols.iter().any(String::is_empty) || vols.is_empty() {
                    return Err(bad("VOLUME specified can not be an empty string"));
                }
                let rc = state.run_config();
                let map = rc.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    map.insert(v.clone(), Value::Object(serde_json::Map::new()));
                }
                format!("VOLUME {}", serde_json::to_string(vols).unwrap_or_default())
            }
            Instruction::User(user) => {
                state.run_config().user = Some(user.clone());
                format!("USER {user}")
            }
            Instruction::StopSignal(sig) => {
                state.run_config().stop_signal = Some(sig.clone());
                format!("STOPSIGNAL {sig}")
            }
            Instruction::OnBuild(trigger) => {
                let text = trigger.text.trim().to_string();
                state
                    .run_config()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(text.clone());
                format!("ONBUILD {text}")
            }
            Instruction::Healthcheck(check) => {
                let check = health_config(check, line)?;
                let shown = serde_json::to_string(&check.test).unwrap_or_default();
                state.run_config().healthcheck = Some(check);
                format!("HEALTHCHECK {shown}")
            }
            other => {
                return Err(bad(&format!("{} is not allowed here", other.keyword())));
            }
        })
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

    fn run_step(&mut self, state: &mut State, run: &dockerfile::Run) -> Result<bool, BuildError> {
        if !run.mounts.is_empty() {
            return Err(BuildError::Instruction(
                "RUN --mount is not supported by this builder".into(),
            ));
        }
        if let Some(mode) = run.security.as_deref().filter(|m| *m != "sandbox") {
            return Err(BuildError::Instruction(format!(
                "RUN --security={mode} is not supported (sandbox only)"
            )));
        }
        let argv = run_argv(run, &state.shell());
        let network_none = match run.network.as_deref() {
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
        ins: &CopyArgs<'_>,
        env: &Env,
    ) -> Result<bool, BuildError> {
        let is_add = ins.keyword == "ADD";
        let mut words = Vec::new();
        // Heredoc sources: (file name, body).
        let mut inline = Vec::new();
        for source in ins.sources {
            match source {
                Source::Path(p) => words.push(p.clone()),
                Source::Inline(doc) => {
                    let body = if doc.expand {
                        self.lexer
                            .expand_heredoc(&doc.content, env)
                            .map_err(shell_error(ins.line))?
                    } else {
                        doc.content.clone()
                    };
                    inline.push((doc.name.clone(), body));
                }
            }
        }
        let dest_word = ins.dest.to_string();
        let (dest, mut dest_dir) = copy::resolve_dest(&dest_word, &state.workdir());
        let layers = Layers(self.images.layers(&state.id)?);
        let own = Ownership {
            owner: match ins.chown {
                Some(c) if !c.is_empty() => Some(copy::resolve_chown(c, &layers)?),
                _ => None,
            },
            mode: match ins.chmod {
                Some(m) if !m.is_empty() => Some(copy::parse_chmod(m)?),
                _ => None,
            },
        };
        // Where the sources come from.
        let from_root = match ins.from {
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
        if ins.checksum.is_some() && (urls.is_empty() || urls.len() != words.len()) {
            return Err(BuildError::Instruction(
                "checksum can't be specified for non-HTTP(S) sources".into(),
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
        let count = resolved.len() + urls.len() + inline.len();
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
        let mut content = match &from_root {
            Some((id, _)) => format!("from {id} {}", resolved.join("\0")),
            None if resolved.is_empty() => String::new(),
            None => self.context()?.hash_paths(&resolved),
        };
        if !inline.is_empty() {
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            for (name, body) in &inline {
                sha2::Digest::update(&mut hasher, name.as_bytes());
                sha2::Digest::update(&mut hasher, b"\0");
                sha2::Digest::update(&mut hasher, body.as_bytes());
                sha2::Digest::update(&mut hasher, b"\0");
            }
            content.push_str(&hex::encode(sha2::Digest::finalize(hasher)));
        }
        let flags = [
            ("from", ins.from),
            ("chown", ins.chown),
            ("chmod", ins.chmod),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("--{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
        let key_text = format!("{} {flags} {} {}", ins.keyword, words.join(" "), dest);
        let history = format!(
            "{} {}{} in {dest} ",
            ins.keyword,
            if count == 1 && !dest_dir {
                "file:"
            } else {
                "dir:"
            },
            &content.get(..64).unwrap_or(&content),
        );
        let ctx = match &from_root {
            None if resolved.is_empty() => None,
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
            let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            if let Some(want) = ins.checksum {
                let hex = want.strip_prefix("sha256:").ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "unsupported digest algorithm in ADD --checksum={want} (sha256 only)"
                    ))
                })?;
                if !hex.eq_ignore_ascii_case(&sum) {
                    return Err(BuildError::Instruction(format!(
                        "digest mismatch for {url}: sha256:{sum}, expected {want}"
                    )));
                }
            }
            fetched.push(((*url).clone(), file, mtime, sum));
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
            (None, None) => {
                tree_root = dir.path().to_path_buf();
                Tree::Dir(&tree_root)
            }
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
        for (name, body) in &inline {
            let target = if dest_dir {
                format!("{}/{name}", dest.trim_end_matches('/'))
            } else {
                dest.clone()
            };
            staging.write(&target, body.as_bytes(), 0o644, None)?;
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

/// What COPY and ADD share, words expanded.
struct CopyArgs<'a> {
    keyword: &'static str,
    sources: &'a [Source],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    /// ADD `--checksum` (URL sources only).
    checksum: Option<&'a str>,
    line: usize,
}

/// The argv of a RUN. With heredocs (`RUN <<EOF`), the body is the
/// script: a lone heredoc runs as the shell's script, or with the
/// interpreter its `#!` line names; a command with heredocs runs in the
/// shell with the bodies attached, as a shell would read them.
fn run_argv(run: &dockerfile::Run, shell: &[String]) -> Vec<String> {
    let CommandLine::Shell(cmd) = &run.command else {
        return run.command.argv(shell);
    };
    if run.heredocs.is_empty() {
        return run.command.argv(shell);
    }
    if let [doc] = run.heredocs.as_slice()
        && cmd.trim().starts_with("<<")
        && cmd.split_whitespace().count() == 1
    {
        if let Some(first) = doc.content.lines().next()
            && let Some(interp) = first.strip_prefix("#!")
        {
            // Feed the whole body (its `#!` line too) to the interpreter.
            let delim = unique_delimiter(&doc.content);
            let script = format!(
                "{} /dev/stdin <<'{delim}'\n{}{}{delim}\n",
                interp.trim(),
                doc.content,
                if doc.content.ends_with('\n') {
                    ""
                } else {
                    "\n"
                }
            );
            let mut argv = shell.to_vec();
            argv.push(script);
            return argv;
        }
        let mut argv = shell.to_vec();
        argv.push(doc.content.clone());
        return argv;
    }
    let mut script = cmd.clone();
    script.push('\n');
    for doc in &run.heredocs {
        script.push_str(&doc.content);
        if !doc.content.is_empty() && !doc.content.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&doc.name);
        script.push('\n');
    }
    let mut argv = shell.to_vec();
    argv.push(script);
    argv
}

/// A heredoc delimiter that is no line of `body`.
fn unique_delimiter(body: &str) -> String {
    let mut delim = "STACK_EOF".to_string();
    while body.lines().any(|l| l == delim) {
        delim.push('_');
    }
    delim
}

/// The steps of an ONBUILD trigger (one instruction), parsed as the
/// Dockerfile language reads it.
fn trigger_steps(trigger: &str, escape: char) -> Result<Vec<Step>, BuildError> {
    let text = format!("# escape={escape}\nFROM scratch\n{trigger}\n");
    let file = dockerfile::parse(&text, "ONBUILD").map_err(|e| BuildError::Parse {
        line: e.line.saturating_sub(2),
        message: e.message.clone(),
    })?;
    let bad =
        |kw: &str| BuildError::Instruction(format!("{kw} isn't allowed as an ONBUILD trigger"));
    let [stage] = file.stages.as_slice() else {
        return Err(bad("FROM"));
    };
    for step in &stage.steps {
        if matches!(
            step.instruction,
            Instruction::OnBuild(_) | Instruction::From(_) | Instruction::Maintainer(_)
        ) {
            return Err(bad(step.instruction.keyword()));
        }
    }
    Ok(stage.steps.clone())
}

/// The image config's health check of a HEALTHCHECK.
fn health_config(
    check: &dockerfile::Healthcheck,
    line: usize,
) -> Result<crate::image::oci::HealthConfig, BuildError> {
    let mut out = crate::image::oci::HealthConfig {
        test: Some(check.test()),
        ..Default::default()
    };
    if let dockerfile::Healthcheck::Check {
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
        ..
    } = check
    {
        let nanos = |d: &Option<std::time::Duration>, name: &str| {
            d.map(|d| {
                i64::try_from(d.as_nanos()).map_err(|_| BuildError::Parse {
                    line,
                    message: format!("--{name} is too long"),
                })
            })
            .transpose()
        };
        out.interval = nanos(interval, "interval")?;
        out.timeout = nanos(timeout, "timeout")?;
        out.start_period = nanos(start_period, "start-period")?;
        out.start_interval = nanos(start_interval, "start-interval")?;
        out.retries = retries.map(i64::from);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_runs_as_the_script_or_with_its_interpreter() {
        let file = dockerfile::parse(
            "FROM scratch\nRUN <<EOF\necho hi\nEOF\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print 1 }\nEOF\nRUN cat <<A\nx\nA\n",
            "Dockerfile",
        )
        .unwrap();
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        let argv = |i: usize| match &file.stages[0].steps[i].instruction {
            Instruction::Run(run) => run_argv(run, &sh),
            other => panic!("{other:?}"),
        };
        assert_eq!(argv(0), ["/bin/sh", "-c", "echo hi\n"]);
        assert_eq!(
            argv(1),
            [
                "/bin/sh",
                "-c",
                "/bin/awk -f /dev/stdin <<'STACK_EOF'\n#!/bin/awk -f\nBEGIN { print 1 }\nSTACK_EOF\n"
            ]
        );
        assert_eq!(argv(2), ["/bin/sh", "-c", "cat <<A\nx\nA\n"]);
    }

    #[test]
    fn step_lines_read_as_written() {
        let file = dockerfile::parse("from busybox\ncopy --chown=1:2 a \\\n  /b/\n", "Dockerfile")
            .unwrap();
        assert_eq!(display(&file.stages[0].from), "FROM busybox");
        let shown = display(&file.stages[0].steps[0]);
        assert!(shown.starts_with("COPY --chown=1:2 a"), "{shown}");
        assert!(shown.ends_with("/b/"), "{shown}");
    }

    #[test]
    fn onbuild_triggers_parse_and_refuse_from() {
        let steps = trigger_steps("RUN echo hi", '\\').unwrap();
        assert_eq!(steps.len(), 1);
        assert!(trigger_steps("FROM busybox", '\\').is_err());
    }
}
