//! Device rules on cgroup v2: there is no `devices.allow` file; the kernel
//! asks a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup
//! instead. This module turns OCI device rules into that program (pure, and
//! unit-tested by running it through a small interpreter); `crate::sys::bpf`
//! loads and attaches it.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`: the low 16 bits of `access_type` are the device type
//! (`BPF_DEVCG_DEV_BLOCK` 1, `BPF_DEVCG_DEV_CHAR` 2), the high 16 the access
//! asked for (`BPF_DEVCG_ACC_MKNOD` 1, `_READ` 2, `_WRITE` 4). Rules follow
//! the v1 semantics: the last rule that matches decides, and nothing matching
//! means deny. An allow matches a request that asks for nothing outside its
//! access; a deny matches one that asks for any of its access. So the rules are emitted last first, each a
//! block that returns its verdict on a match and falls through otherwise.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Offset (jumps: instructions to skip).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2; // device type
const R3: u8 = 3; // access asked for
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The access bits of an OCI access string (`rwm`).
fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// Why a rule set cannot become a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceFilterError {
    /// A device number that does not fit the program's 32-bit compare.
    #[error("device number {0} is out of range")]
    OutOfRange(i64),
    /// A rule block longer than a jump can skip.
    #[error("too many device rules")]
    TooLong,
}

/// The program for `rules` (in the order the spec lists them).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>, DeviceFilterError> {
    let mut out = vec![
        insn(LDX_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_W, R4, R1, 4, 0),
        insn(LDX_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        // Each check is a jump to the end of this block when it fails; the
        // offsets are patched once the block's length is known.
        let typ = match rule.typ() {
            Some(LinuxDeviceType::B) => Some(1),
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(2),
            // `a`, or no type: every device. `p` (FIFOs) never reaches the
            // device cgroup.
            Some(LinuxDeviceType::A | LinuxDeviceType::P) | None => None,
        };
        if let Some(t) = typ {
            checks.push(insn(JNE_K, R2, 0, 0, t));
        }
        let wanted = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if wanted != 7 {
            checks.push(insn(MOV64_X, R1, R3, 0, 0));
            if rule.allow() {
                // An allow covers a request that asks for nothing outside
                // its access: (access & !wanted) == 0.
                checks.push(insn(ALU32_AND_K, R1, 0, 0, !wanted & 7));
                checks.push(insn(JNE_K, R1, 0, 0, 0));
            } else {
                // A deny refuses a request that asks for any of its access,
                // as removing that access from a v1 cgroup does.
                checks.push(insn(ALU32_AND_K, R1, 0, 0, wanted));
                checks.push(insn(JEQ_K, R1, 0, 0, 0));
            }
        }
        for (value, reg) in [(rule.major(), R4), (rule.minor(), R5)] {
            if let Some(v) = value.filter(|v| *v >= 0) {
                let imm = i32::try_from(v).map_err(|_| DeviceFilterError::OutOfRange(v))?;
                checks.push(insn(JNE_K, reg, 0, 0, imm));
            }
        }
        let verdict = [
            insn(MOV64_K, R0, 0, 0, i32::from(rule.allow())),
            insn(EXIT, 0, 0, 0, 0),
        ];
        let len = checks.len() + verdict.len();
        for (i, check) in checks.iter_mut().enumerate() {
            if check.code == JNE_K || check.code == JEQ_K {
                // Skip the rest of the block: everything after this check.
                check.off = i16::try_from(len - i - 1).map_err(|_| DeviceFilterError::TooLong)?;
            }
        }
        let unconditional = checks.is_empty();
        out.extend(checks);
        out.extend(verdict);
        if unconditional {
            // Nothing after a rule that matches everything can run, and the
            // verifier refuses unreachable instructions.
            return Ok(out);
        }
    }
    out.push(insn(MOV64_K, R0, 0, 0, 0));
    out.push(insn(EXIT, 0, 0, 0, 0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs the program on one request, as the kernel would (32-bit ALU
    /// operations truncate, as eBPF's do).
    #[allow(clippy::cast_possible_truncation)]
    fn run(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [typ | (access << 16), major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            pc += 1;
            match i.code {
                LDX_W => regs[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]),
                ALU32_AND_K => regs[dst] = (regs[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => regs[dst] = ((regs[dst] as u32) >> i.imm) as u64,
                MOV64_X => regs[dst] = regs[src],
                MOV64_K => regs[dst] = i.imm as u64,
                JNE_K => {
                    if regs[dst] != i.imm as u64 {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JEQ_K => {
                    if regs[dst] == i.imm as u64 {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                EXIT => return regs[0],
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    const CHAR: u32 = 2;
    const BLOCK: u32 = 1;
    const MKNOD: u32 = 1;
    const READ: u32 = 2;
    const WRITE: u32 = 4;

    #[test]
    fn dockers_default_rules_allow_the_usual_nodes_and_mknod_only() {
        let rules = vec![
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, None, None, "m"),
            rule(true, LinuxDeviceType::B, None, None, "m"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
            rule(true, LinuxDeviceType::C, Some(136), None, "rwm"),
        ];
        let prog = program(&rules).unwrap();
        assert_eq!(run(&prog, CHAR, READ | WRITE, 1, 3), 1, "/dev/null");
        assert_eq!(run(&prog, CHAR, READ, 136, 7), 1, "a pty");
        assert_eq!(run(&prog, BLOCK, READ, 8, 0), 0, "a disk");
        assert_eq!(run(&prog, BLOCK, MKNOD, 8, 0), 1, "mknod alone is allowed");
        assert_eq!(run(&prog, CHAR, MKNOD | READ, 1, 1), 0, "/dev/mem");
        assert_eq!(
            run(&prog, CHAR, READ, 1, 5),
            0,
            "/dev/zero is not in these rules"
        );
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let rules = vec![
            rule(true, LinuxDeviceType::A, None, None, "rwm"),
            rule(false, LinuxDeviceType::C, Some(1), None, "w"),
        ];
        let prog = program(&rules).unwrap();
        assert_eq!(run(&prog, CHAR, READ, 1, 3), 1);
        assert_eq!(
            run(&prog, CHAR, READ | WRITE, 1, 3),
            0,
            "deny w refuses any request for w"
        );
        assert_eq!(run(&prog, CHAR, WRITE, 1, 3), 0);
        assert_eq!(run(&prog, BLOCK, WRITE, 1, 3), 1);
        assert_eq!(
            run(&program(&[]).unwrap(), CHAR, READ, 1, 3),
            0,
            "no rule: deny"
        );
    }
}
