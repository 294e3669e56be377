//! `stack system install|uninstall` into a temporary unit directory: the
//! unit runs this binary's daemon with the flags passed through, and
//! uninstall removes it. systemctl is never run for such a directory.

use std::process::Command;
use std::time::Duration;

fn stack(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("STACK_ROOT");
    crate::output_within(&mut cmd, Duration::from_secs(60))
}

#[test]
fn install_writes_a_notify_unit_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let root = dir.path().join("state root");
    let units_arg = units.to_str().unwrap();
    let out = stack(
        &root,
        &[
            "system",
            "install",
            "--unit-dir",
            units_arg,
            "--",
            "-H",
            "tcp://127.0.0.1:2376",
            "--tlsverify",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(units.join("stack.service")).unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_stack")).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(
        exec_start,
        format!(
            "{} --root \"{}\" daemon -H tcp://127.0.0.1:2376 --tlsverify",
            exe.display(),
            root.display()
        )
    );
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    // Not a directory systemd reads: written, not enabled.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("Enabled"), "{said}");

    // Installing again replaces the unit.
    let out = stack(
        &root,
        &["system", "install", "--unit-dir", units_arg, "--no-start"],
    );
    assert!(out.status.success());
    let unit = std::fs::read_to_string(units.join("stack.service")).unwrap();
    assert!(unit.contains("daemon\n"), "{unit}");
    assert_eq!(
        std::fs::read_dir(&units).unwrap().count(),
        1,
        "no temp file left"
    );

    let out = stack(&root, &["system", "uninstall", "--unit-dir", units_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!units.join("stack.service").exists());
    let out = stack(&root, &["system", "uninstall", "--unit-dir", units_arg]);
    assert!(!out.status.success(), "nothing left to uninstall");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not installed"));
}
