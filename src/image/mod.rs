//! Images: the content-addressed store, layers, image records, archives and
//! registries.
//!
//! This module knows nothing of services or stacks: it stores and moves bytes
//! that are named by their digest, and never hands out a byte that does not
//! match its digest.
//!
//! - [`store`]: blobs by digest, written atomically and verified;
//! - [`leftovers`]: temp entries of killed writers, told apart from live ones;
//! - [`catalog`]: image records, tags and the sizes of unpacked layers;
//! - [`layer`]: layer tars unpacked safely, and directories turned into layers;
//! - [`snapshot`]: unpacked layers shared by chain id, the lowers of overlays;
//! - [`driver`]: the storage driver a state root keeps to (overlay or vfs);
//! - [`archive`]: `save`/`load` in Docker's archive format and OCI layouts;
//! - [`images`]: all of it as one local image store with the image verbs;
//! - [`registry`]: the distribution v2 client (auth challenges, manifests,
//!   resumable verified blob transfers, uploads, listings);
//! - [`auth`]: credentials in Docker's `config.json` format;
//! - [`pull`] and [`push`]: moving images between a registry and the store.

pub mod archive;
pub mod auth;
pub mod catalog;
pub mod changes;
pub mod digest;
pub mod driver;
pub mod images;
pub mod layer;
pub mod leftovers;
pub mod oci;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
