//! The daemon's side of a build: [`crate::build::BuildHost`] over its
//! containers (RUN), its registry client (pulls, ADD of URLs).
//!
//! A RUN is a container of the step's image, created and started with an
//! attach socket the daemon reads (output and exit code come from the shim
//! over that socket, no polling), its writable layer stored as the step's
//! layer, and the container removed.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::SystemTime;

use crate::build::{BuildError, BuildHost, RunStep};
use crate::image::catalog::LayerRecord;
use crate::image::digest::Digest;
use crate::image::driver::StorageDriver;
use crate::image::layer;
use crate::reconcile::container::{NetMode, RunRequest};
use crate::reconcile::containers::driver_of;
use crate::runtime::attach::{self, Kind};

use super::Daemon;

/// The daemon as a build host.
#[derive(Debug)]
pub struct DaemonBuildHost<'a> {
    /// The daemon.
    pub daemon: &'a Daemon,
    /// The runtime the daemon's async work runs in (pulls, downloads).
    pub handle: tokio::runtime::Handle,
}

fn host_err(what: &str, e: &dyn std::error::Error) -> BuildError {
    BuildError::Host(format!("{what}: {}", crate::error_chain(e)))
}

impl BuildHost for DaemonBuildHost<'_> {
    fn run(
        &self,
        step: &RunStep,
        out: &mut dyn FnMut(&str),
    ) -> Result<(i32, Option<LayerRecord>), BuildError> {
        let containers = &self.daemon.containers;
        let mut req = RunRequest {
            image: step.image.to_string(),
            entrypoint: Some(Vec::new()),
            cmd: step.argv.clone(),
            env: step.env.clone(),
            network: if step.network_none {
                NetMode::None
            } else {
                NetMode::Network("bridge".into())
            },
            ..RunRequest::default()
        };
        self.daemon.apply_defaults(&mut req);
        let id = containers
            .create(&req)
            .map_err(|e| host_err("cannot create the RUN container", &e))?;
        out(&format!(" ---> Running in {}\n", &id[..12.min(id.len())]));
        let result = self.run_created(&id, out);
        let removed = containers.remove(&id, true, false);
        if result.is_ok() {
            out(&format!(
                "Removing intermediate container {}\n",
                &id[..12.min(id.len())]
            ));
        }
        let outcome = result?;
        removed.map_err(|e| host_err("cannot remove the RUN container", &e))?;
        Ok(outcome)
    }

    fn pull(&self, name: &str, out: &mut dyn FnMut(&str)) -> Result<Digest, BuildError> {
        let reference: crate::image::reference::Reference = name
            .parse()
            .map_err(|e| host_err(&format!("invalid reference {name:?}"), &e))?;
        out(&format!("Pulling {}\n", reference.familiar()));
        self.handle
            .block_on(self.daemon.pull(&reference))
            .map_err(|e| host_err(&format!("cannot pull {}", reference.familiar()), &e))?;
        self.daemon
            .containers
            .images
            .catalog
            .resolve(&reference.to_string())
            .map_err(|e| host_err("the pulled image is missing", &e))
    }

    fn fetch(&self, url: &str, dest: &Path) -> Result<Option<SystemTime>, BuildError> {
        let client = self
            .daemon
            .registry_client("docker.io", None)
            .map_err(|e| host_err("cannot make an HTTP client", &e))?;
        let http = client.http().clone();
        let url = url.to_string();
        let (bytes, modified) = self
            .handle
            .block_on(async move {
                let resp = http.get(&url).send().await?.error_for_status()?;
                let modified = resp
                    .headers()
                    .get(reqwest::header::LAST_MODIFIED)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = resp.bytes().await?;
                Ok::<_, reqwest::Error>((bytes, modified))
            })
            .map_err(|e| host_err("cannot download", &e))?;
        std::fs::write(dest, &bytes).map_err(|e| host_err("cannot store a download", &e))?;
        Ok(modified.and_then(|m| httpdate(&m)))
    }
}

impl DaemonBuildHost<'_> {
    fn run_created(
        &self,
        id: &str,
        out: &mut dyn FnMut(&str),
    ) -> Result<(i32, Option<LayerRecord>), BuildError> {
        let containers = &self.daemon.containers;
        let (mut ours, theirs) =
            UnixStream::pair().map_err(|e| host_err("cannot make a socket pair", &e))?;
        containers
            .start(id, Some(theirs.into()))
            .map_err(|e| host_err("cannot start the RUN container", &e))?;
        let mut code = None;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = match ours.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(host_err("cannot read the RUN output", &e)),
            };
            buf.extend_from_slice(&chunk[..n]);
            let frames = attach::split_frames(&mut buf)
                .map_err(|e| host_err("bad frame from the shim", &e))?;
            for (kind, payload) in frames {
                match kind {
                    Kind::Stdout | Kind::Stderr => out(&String::from_utf8_lossy(&payload)),
                    Kind::Exit => code = attach::parse_exit(&payload).map(|(c, _)| c),
                    _ => {}
                }
            }
            if code.is_some() {
                break;
            }
        }
        let state = containers
            .runtime
            .wait(id, None)
            .map_err(|e| host_err("cannot wait for the RUN container", &e))?;
        let code = code.unwrap_or(state.exit_code);
        if code != 0 {
            return Ok((code, None));
        }
        let record = containers
            .runtime
            .record(id)
            .map_err(|e| host_err("cannot read the RUN container", &e))?;
        let images = &containers.images;
        let upper = record.rootfs.upper.clone();
        let layer = match driver_of(&record) {
            StorageDriver::Overlay => images.put_layer(|o| layer::diff(&upper, o).map(|_| ()))?,
            StorageDriver::Vfs => {
                let parent: Digest = record
                    .image_id
                    .parse()
                    .map_err(|_| BuildError::Host(format!("bad image id {}", record.image_id)))?;
                let base = images.layers(&parent)?;
                let changes =
                    layer::tree_changes(&base, &upper).map_err(|e| BuildError::Image(e.into()))?;
                images.put_layer(|o| layer::write_changes(&upper, &changes, o).map(|_| ()))?
            }
        };
        Ok((code, Some(layer)))
    }
}

/// Which build of a stack service's context made the image its tag names:
/// `<root>/build/stacks.json`, tag → (build hash, image id). A service's
/// image counts as present only while its tag still names that image and
/// its context hashes the same.
#[derive(Debug, Default)]
pub struct StackBuilds {
    path: std::path::PathBuf,
    entries: BTreeMap<String, (String, String)>,
}

impl StackBuilds {
    /// Reads the record (missing or unreadable: empty).
    pub fn open(root: &Path) -> StackBuilds {
        let path = root.join("build").join("stacks.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StackBuilds { path, entries }
    }

    /// Whether `tag` names `id` built from a context hashing `hash`.
    pub fn is_current(&self, tag: &str, hash: &str, id: &Digest) -> bool {
        self.entries
            .get(tag)
            .is_some_and(|(h, i)| h == hash && *i == id.to_string())
    }

    fn record(&mut self, tag: &str, hash: &str, id: &Digest) -> Result<(), String> {
        self.entries
            .insert(tag.to_string(), (hash.to_string(), id.to_string()));
        let bytes = serde_json::to_vec(&self.entries).map_err(|e| e.to_string())?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("cannot record the build of {tag}: {e}"))
    }
}

/// Builds a stack service's image as its `build` section says and tags it
/// `tag`; records it as built from `hash`.
pub fn build_service(
    d: &Daemon,
    handle: tokio::runtime::Handle,
    tag: &str,
    hash: &str,
    how: &crate::reconcile::plan::BuildHow,
) -> Result<Option<String>, String> {
    let reference: crate::image::reference::Reference = tag
        .parse()
        .map_err(|e| format!("invalid image name {tag:?}: {e}"))?;
    let opts = crate::build::BuildOptions {
        context: how.dir.clone(),
        dockerfile: how
            .dockerfile
            .as_ref()
            .map(|f| f.to_string_lossy().into_owned()),
        tags: vec![reference],
        build_args: how
            .args
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        target: how.target.clone(),
        no_cache: how.no_cache,
        ..crate::build::BuildOptions::default()
    };
    let host = DaemonBuildHost { daemon: d, handle };
    let mut log = String::new();
    let id = crate::build::build(&d.containers.images, &host, &d.root, &opts, &mut |t| {
        log.push_str(t);
    })
    .map_err(|e| format!("building {tag}: {}", crate::error_chain(&e)))?;
    tracing::debug!(image = %tag, output = %log, "stack service built");
    StackBuilds::open(&d.root).record(tag, hash, &id)?;
    Ok(None)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = httpdate("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
    }
}
