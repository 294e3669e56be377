//! Seccomp profiles.
#![allow(missing_docs)]
use oci_spec::runtime::LinuxSeccomp;
use std::io;
#[derive(Debug)]
pub struct Program;
impl Program {
    pub fn apply(&self) -> io::Result<()> {
        Ok(())
    }
}
pub fn compile(_p: &LinuxSeccomp) -> io::Result<Program> {
    Ok(Program)
}
pub fn default_for(_c: &oci_spec::runtime::Capabilities) -> LinuxSeccomp {
    LinuxSeccomp::default()
}
pub fn load_for(
    _p: &std::path::Path,
    _c: &oci_spec::runtime::Capabilities,
) -> io::Result<LinuxSeccomp> {
    Ok(LinuxSeccomp::default())
}
