//! `stack daemon`: the long-running process that owns the state root, serves
//! the API and keeps containers as their restart policies say.
//!
//! [`events`] is its event bus (what `docker events` shows); [`supervisor`]
//! watches every running container's shim, reports exits, applies restart
//! policies with backoff and `--rm`, and re-adopts containers when the
//! daemon starts again (live restore).

pub mod events;
pub mod supervisor;
