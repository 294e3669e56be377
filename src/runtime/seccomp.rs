//! Seccomp profiles: Docker's default, Docker/OCI JSON profiles, compiled to BPF.
