//! The filter as data ([`Plan`]) and its translation to classic BPF.
//!
//! The generated program has three parts:
//!
//! 1. The architecture check. `seccomp_data.arch` must be the native
//!    `AUDIT_ARCH_*`, and on x86_64 the syscall number must not carry the x32
//!    bit (x32 syscalls arrive with the x86_64 audit arch). Anything else is
//!    killed, like libseccomp's default bad-arch action; see the module docs
//!    of [`super`] for why 32-bit ABIs are not translated.
//! 2. Optionally, `ENOSYS` for every number above the largest the profile
//!    names, as runc's `libcontainer/seccomp/patchbpf` does: a syscall newer
//!    than the profile then looks unimplemented, and libc falls back to an
//!    older one instead of failing with `EPERM`.
//! 3. A binary search on the syscall number, whose leaves compare a few
//!    numbers each. A syscall whose rules are unconditional returns right
//!    there; one with argument conditions jumps to its rule chain, placed
//!    after the search. Only the syscall number and the architecture are
//!    loaded before a verdict for unconditional syscalls, so the kernel's
//!    seccomp action cache (Linux 5.11+) can skip the filter entirely for
//!    them.
//!
//! Classic BPF conditional jumps reach at most 255 instructions ahead; the
//! layout keeps every conditional jump short (a rule chain is at most 37
//! instructions) and uses `ja`, which has a 32-bit offset, for far targets.

use std::collections::BTreeMap;

use libc::sock_filter;

/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`.
const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`.
const JMP_JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;

/// Offsets into `struct seccomp_data` (`linux/seccomp.h`).
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// The x32 ABI marks its syscall numbers with this bit
/// (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// What a tracer writes as the syscall number to skip a syscall; it is not
/// an x32 syscall.
const SKIPPED_SYSCALL: u32 = u32::MAX;

/// Syscall numbers compared one after the other in a leaf of the search.
const LEAF_SIZE: usize = 4;

/// How one argument is compared, with libseccomp's meaning: all comparisons
/// are on the full, unsigned 64-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compare {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `arg & mask == value`
    MaskedEq {
        /// The bits of the argument compared.
        mask: u64,
    },
}

/// One condition on one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Condition {
    /// The argument, 0 to 5.
    pub(super) index: u8,
    /// The comparison.
    pub(super) compare: Compare,
    /// The value compared with.
    pub(super) value: u64,
}

/// One rule for one syscall: when every condition holds, return `ret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    /// All must hold; none means the rule always matches.
    pub(super) conditions: Vec<Condition>,
    /// The `SECCOMP_RET_*` value, data included.
    pub(super) ret: u32,
}

/// Everything the program decides, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// The `AUDIT_ARCH_*` value syscalls must carry.
    pub(super) audit_arch: u32,
    /// Whether the architecture has the x32 bit to refuse (x86_64).
    pub(super) refuse_x32: bool,
    /// What a syscall no rule matches gets.
    pub(super) default_ret: u32,
    /// Numbers above this get `ENOSYS` (see the module docs).
    pub(super) enosys_above: Option<u32>,
    /// The rules of each syscall, tried in order; the first that matches
    /// decides. Conditional rules come before the unconditional one.
    pub(super) syscalls: BTreeMap<u32, Vec<Rule>>,
}

/// The program would need a conditional jump longer than BPF allows. The
/// layout above rules this out; it is reported rather than miscompiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JumpOutOfRange;

/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
/// `SECCOMP_RET_ERRNO | ENOSYS`.
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs();

/// Translates a plan to BPF instructions.
pub(super) fn generate(plan: &Plan) -> Result<Vec<sock_filter>, JumpOutOfRange> {
    let mut asm = Assembler::default();

    // 1. Architecture.
    let arch_ok = asm.label();
    asm.load(ARCH_OFFSET);
    asm.jump(
        JMP_JEQ_K,
        plan.audit_arch,
        Target::To(arch_ok),
        Target::Next,
    );
    asm.ret(RET_KILL_PROCESS);
    asm.bind(arch_ok);
    asm.load(NR_OFFSET);
    if plan.refuse_x32 {
        let native = asm.label();
        asm.jump(JMP_JGE_K, X32_SYSCALL_BIT, Target::Next, Target::To(native));
        asm.jump(JMP_JEQ_K, SKIPPED_SYSCALL, Target::To(native), Target::Next);
        asm.ret(RET_KILL_PROCESS);
        asm.bind(native);
    }

    // 2. Syscalls newer than the profile.
    if let Some(max) = plan.enosys_above {
        let known = asm.label();
        asm.jump(JMP_JGT_K, max, Target::Next, Target::To(known));
        asm.ret(RET_ENOSYS);
        asm.bind(known);
    }

    // 3. Search, then the chains of conditional syscalls.
    let entries: Vec<(u32, &[Rule])> = plan
        .syscalls
        .iter()
        .map(|(nr, rules)| (*nr, rules.as_slice()))
        .collect();
    let mut chains = Vec::new();
    search(&mut asm, &entries, plan.default_ret, &mut chains);
    for (label, rules) in chains {
        asm.bind(label);
        for rule in rules {
            emit_rule(&mut asm, rule);
        }
        if rules.last().is_none_or(|rule| !rule.conditions.is_empty()) {
            asm.ret(plan.default_ret);
        }
    }
    asm.finish()
}

/// Emits the search over `entries` (sorted by number); chains to emit later
/// go to `chains`.
fn search<'p>(
    asm: &mut Assembler,
    entries: &[(u32, &'p [Rule])],
    default_ret: u32,
    chains: &mut Vec<(Label, &'p [Rule])>,
) {
    if entries.len() <= LEAF_SIZE {
        for &(nr, rules) in entries {
            let next = asm.label();
            asm.jump(JMP_JEQ_K, nr, Target::Next, Target::To(next));
            match rules {
                [only] if only.conditions.is_empty() => asm.ret(only.ret),
                _ => {
                    let chain = asm.label();
                    asm.ja(chain);
                    chains.push((chain, rules));
                }
            }
            asm.bind(next);
        }
        asm.ret(default_ret);
        return;
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let (pivot, _) = high[0];
    let low_half = asm.label();
    let high_half = asm.label();
    asm.jump(JMP_JGE_K, pivot, Target::Next, Target::To(low_half));
    asm.ja(high_half);
    asm.bind(low_half);
    search(asm, low, default_ret, chains);
    asm.bind(high_half);
    search(asm, high, default_ret, chains);
}

/// Emits one rule: its conditions, each jumping past the rule when it fails,
/// then the rule's return.
fn emit_rule(asm: &mut Assembler, rule: &Rule) {
    let fail = asm.label();
    for condition in &rule.conditions {
        emit_condition(asm, condition, fail);
    }
    asm.ret(rule.ret);
    asm.bind(fail);
}

/// Splits a 64-bit value into its high and low words.
fn words(value: u64) -> (u32, u32) {
    let [h0, h1, h2, h3, l0, l1, l2, l3] = value.to_be_bytes();
    (
        u32::from_be_bytes([h0, h1, h2, h3]),
        u32::from_be_bytes([l0, l1, l2, l3]),
    )
}

/// Emits a 64-bit comparison of one argument, word by word: falls through
/// when it holds, jumps to `fail` when it does not. x86_64 and aarch64 are
/// little-endian, so an argument's low word is at its offset, its high word
/// 4 bytes on.
fn emit_condition(asm: &mut Assembler, condition: &Condition, fail: Label) {
    let low_offset = ARGS_OFFSET + 8 * u32::from(condition.index);
    let high_offset = low_offset + 4;
    let (value_high, value_low) = words(condition.value);
    let pass = asm.label();
    let (pass_to, fail_to) = (Target::To(pass), Target::To(fail));
    asm.load(high_offset);
    match condition.compare {
        Compare::Eq => {
            asm.jump(JMP_JEQ_K, value_high, Target::Next, fail_to);
            asm.load(low_offset);
            asm.jump(JMP_JEQ_K, value_low, Target::Next, fail_to);
        }
        Compare::Ne => {
            asm.jump(JMP_JEQ_K, value_high, Target::Next, pass_to);
            asm.load(low_offset);
            asm.jump(JMP_JEQ_K, value_low, fail_to, Target::Next);
        }
        Compare::Gt | Compare::Ge => {
            // Above in the high word: holds. Below: fails. Equal: the low
            // word decides.
            asm.jump(JMP_JGT_K, value_high, pass_to, Target::Next);
            asm.jump(JMP_JEQ_K, value_high, Target::Next, fail_to);
            asm.load(low_offset);
            let code = if condition.compare == Compare::Gt {
                JMP_JGT_K
            } else {
                JMP_JGE_K
            };
            asm.jump(code, value_low, Target::Next, fail_to);
        }
        Compare::Lt | Compare::Le => {
            // The negations of Ge and Gt.
            asm.jump(JMP_JGT_K, value_high, fail_to, Target::Next);
            asm.jump(JMP_JEQ_K, value_high, Target::Next, pass_to);
            asm.load(low_offset);
            let code = if condition.compare == Compare::Lt {
                JMP_JGE_K
            } else {
                JMP_JGT_K
            };
            asm.jump(code, value_low, fail_to, Target::Next);
        }
        Compare::MaskedEq { mask } => {
            let (mask_high, mask_low) = words(mask);
            asm.and(mask_high);
            asm.jump(JMP_JEQ_K, value_high, Target::Next, fail_to);
            asm.load(low_offset);
            asm.and(mask_low);
            asm.jump(JMP_JEQ_K, value_low, Target::Next, fail_to);
        }
    }
    asm.bind(pass);
}

/// A position in the program, bound once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// A label, which must come later.
    To(Label),
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Plain {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Always(Label),
    Bind(Label),
}

/// Collects instructions with symbolic jump targets, then lays them out.
#[derive(Debug, Default)]
struct Assembler {
    items: Vec<Item>,
    labels: usize,
}

impl Assembler {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn bind(&mut self, label: Label) {
        self.items.push(Item::Bind(label));
    }

    fn load(&mut self, offset: u32) {
        self.items.push(Item::Plain {
            code: LD_W_ABS,
            k: offset,
        });
    }

    fn and(&mut self, mask: u32) {
        self.items.push(Item::Plain {
            code: ALU_AND_K,
            k: mask,
        });
    }

    fn ret(&mut self, value: u32) {
        self.items.push(Item::Plain {
            code: RET_K,
            k: value,
        });
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Jump { code, k, jt, jf });
    }

    fn ja(&mut self, label: Label) {
        self.items.push(Item::Always(label));
    }

    /// Resolves labels to offsets.
    fn finish(self) -> Result<Vec<sock_filter>, JumpOutOfRange> {
        let mut positions = vec![None; self.labels];
        let mut pc = 0usize;
        for item in &self.items {
            match item {
                Item::Bind(label) => positions[label.0] = Some(pc),
                _ => pc += 1,
            }
        }
        // Instructions after `pc` that a jump from `pc` skips to reach `label`.
        let distance = |pc: usize, label: Label| -> Result<usize, JumpOutOfRange> {
            let position = positions[label.0].ok_or(JumpOutOfRange)?;
            position.checked_sub(pc + 1).ok_or(JumpOutOfRange)
        };
        let short = |pc: usize, target: Target| -> Result<u8, JumpOutOfRange> {
            match target {
                Target::Next => Ok(0),
                Target::To(label) => u8::try_from(distance(pc, label)?).map_err(|_| JumpOutOfRange),
            }
        };
        let mut program = Vec::with_capacity(pc);
        for item in &self.items {
            let pc = program.len();
            let instruction = match *item {
                Item::Bind(_) => continue,
                Item::Plain { code, k } => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Item::Jump { code, k, jt, jf } => sock_filter {
                    code,
                    jt: short(pc, jt)?,
                    jf: short(pc, jf)?,
                    k,
                },
                Item::Always(label) => sock_filter {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(distance(pc, label)?).map_err(|_| JumpOutOfRange)?,
                },
            };
            program.push(instruction);
        }
        Ok(program)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `SECCOMP_RET_ALLOW`.
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    /// `SECCOMP_RET_ERRNO | EPERM`.
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
    /// `AUDIT_ARCH_X86_64`, as a stand-in architecture.
    const ARCH: u32 = 0xc000_003e;

    /// Runs a seccomp BPF program on one syscall, as the kernel would, with
    /// `seccomp_data` laid out little-endian. Panics on an instruction or
    /// jump the kernel's checker would refuse.
    pub(in crate::runtime::seccomp) fn run(
        program: &[sock_filter],
        arch: u32,
        nr: u32,
        args: [u64; 6],
    ) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            let k = insn.k;
            match insn.code {
                LD_W_ABS => {
                    let at = usize::try_from(k).unwrap();
                    assert!(at % 4 == 0 && at < 64, "load at {at}");
                    a = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                ALU_AND_K => a &= k,
                JMP_JA => pc += usize::try_from(k).unwrap(),
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let holds = match insn.code {
                        JMP_JEQ_K => a == k,
                        JMP_JGT_K => a > k,
                        _ => a >= k,
                    };
                    pc += usize::from(if holds { insn.jt } else { insn.jf });
                }
                RET_K => return k,
                code => panic!("unexpected opcode {code:#x} at {pc}"),
            }
            pc += 1;
            assert!(pc < program.len(), "ran off the end of the program");
        }
    }

    fn plan_with(syscalls: BTreeMap<u32, Vec<Rule>>) -> Plan {
        Plan {
            audit_arch: ARCH,
            refuse_x32: true,
            default_ret: EPERM,
            enosys_above: None,
            syscalls,
        }
    }

    fn holds(compare: Compare, arg: u64, value: u64) -> bool {
        match compare {
            Compare::Eq => arg == value,
            Compare::Ne => arg != value,
            Compare::Lt => arg < value,
            Compare::Le => arg <= value,
            Compare::Gt => arg > value,
            Compare::Ge => arg >= value,
            Compare::MaskedEq { mask } => arg & mask == value,
        }
    }

    #[test]
    fn argument_comparisons_use_all_64_bits() {
        // Values on both sides of every word boundary.
        let values = [
            0,
            1,
            40,
            0x7fff_ffff,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x1_ffff_ffff,
            0x7e02_0000,
            0x8000_0000_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ];
        let compares = [
            Compare::Eq,
            Compare::Ne,
            Compare::Lt,
            Compare::Le,
            Compare::Gt,
            Compare::Ge,
            Compare::MaskedEq { mask: 0x7e02_0000 },
            Compare::MaskedEq {
                mask: 0xffff_0000_0000_00ff,
            },
        ];
        for compare in compares {
            for value in values {
                let rule = Rule {
                    conditions: vec![Condition {
                        index: 3,
                        compare,
                        value,
                    }],
                    ret: ALLOW,
                };
                let program = generate(&plan_with(BTreeMap::from([(7, vec![rule])]))).unwrap();
                for arg in values {
                    let mut args = [0xdead_beef; 6];
                    args[3] = arg;
                    let expected = if holds(compare, arg, value) {
                        ALLOW
                    } else {
                        EPERM
                    };
                    assert_eq!(
                        run(&program, ARCH, 7, args),
                        expected,
                        "{compare:?} arg {arg:#x} value {value:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn conditions_of_a_rule_all_hold_and_rules_are_alternatives() {
        let eq = |index, value| Condition {
            index,
            compare: Compare::Eq,
            value,
        };
        let rules = vec![
            Rule {
                conditions: vec![eq(0, 1), eq(1, 2)],
                ret: ALLOW,
            },
            Rule {
                conditions: vec![eq(0, 5)],
                ret: libc::SECCOMP_RET_ERRNO | 13,
            },
        ];
        let program = generate(&plan_with(BTreeMap::from([(9, rules)]))).unwrap();
        assert_eq!(run(&program, ARCH, 9, [1, 2, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&program, ARCH, 9, [1, 3, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            run(&program, ARCH, 9, [5, 3, 0, 0, 0, 0]),
            libc::SECCOMP_RET_ERRNO | 13
        );
        assert_eq!(run(&program, ARCH, 9, [6, 2, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn search_finds_every_syscall_and_nothing_else() {
        let syscalls: BTreeMap<u32, Vec<Rule>> = (0..470)
            .step_by(3)
            .map(|nr| {
                let rule = Rule {
                    conditions: Vec::new(),
                    ret: libc::SECCOMP_RET_ERRNO | nr,
                };
                (nr, vec![rule])
            })
            .collect();
        let program = generate(&plan_with(syscalls.clone())).unwrap();
        for nr in 0..600 {
            let expected = syscalls.get(&nr).map_or(EPERM, |rules| rules[0].ret);
            assert_eq!(run(&program, ARCH, nr, [0; 6]), expected, "syscall {nr}");
        }
    }

    #[test]
    fn long_rule_chains_are_reached_through_far_jumps() {
        let rules: Vec<Rule> = (0..200)
            .map(|i| Rule {
                conditions: vec![Condition {
                    index: 0,
                    compare: Compare::Eq,
                    value: i,
                }],
                ret: libc::SECCOMP_RET_ERRNO | u32::try_from(i).unwrap(),
            })
            .collect();
        let syscalls = BTreeMap::from([(1, rules.clone()), (2, rules), (300, Vec::new())]);
        let program = generate(&plan_with(syscalls)).unwrap();
        assert!(program.len() > 2000);
        for nr in [1, 2] {
            assert_eq!(
                run(&program, ARCH, nr, [199, 0, 0, 0, 0, 0]),
                libc::SECCOMP_RET_ERRNO | 199
            );
            assert_eq!(run(&program, ARCH, nr, [200, 0, 0, 0, 0, 0]), EPERM);
        }
        assert_eq!(run(&program, ARCH, 300, [0; 6]), EPERM);
    }

    #[test]
    fn other_architectures_and_x32_are_killed() {
        let allow = vec![Rule {
            conditions: Vec::new(),
            ret: ALLOW,
        }];
        let program = generate(&plan_with(BTreeMap::from([(0, allow)]))).unwrap();
        assert_eq!(run(&program, ARCH, 0, [0; 6]), ALLOW);
        // AUDIT_ARCH_I386 with the same number.
        assert_eq!(
            run(&program, 0x4000_0003, 0, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            run(&program, ARCH, 0x4000_0000, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        // A tracer's "skip this syscall" is not x32.
        assert_eq!(run(&program, ARCH, u32::MAX, [0; 6]), EPERM);
    }

    #[test]
    fn numbers_above_the_profile_get_enosys() {
        let allow = vec![Rule {
            conditions: Vec::new(),
            ret: ALLOW,
        }];
        let mut plan = plan_with(BTreeMap::from([(10, allow)]));
        plan.enosys_above = Some(10);
        let program = generate(&plan).unwrap();
        assert_eq!(run(&program, ARCH, 10, [0; 6]), ALLOW);
        assert_eq!(run(&program, ARCH, 9, [0; 6]), EPERM);
        assert_eq!(run(&program, ARCH, 11, [0; 6]), RET_ENOSYS);
        assert_eq!(run(&program, ARCH, u32::MAX, [0; 6]), RET_ENOSYS);
    }

    #[test]
    fn an_empty_plan_returns_the_default() {
        let program = generate(&plan_with(BTreeMap::new())).unwrap();
        assert_eq!(run(&program, ARCH, 0, [0; 6]), EPERM);
    }

    #[test]
    fn unconditional_syscalls_only_load_the_number_and_arch() {
        // What lets the kernel's action cache skip the filter for them: on
        // the path to their verdict, no argument is loaded.
        let allow = vec![Rule {
            conditions: Vec::new(),
            ret: ALLOW,
        }];
        let syscalls: BTreeMap<u32, Vec<Rule>> = (0..50).map(|nr| (nr, allow.clone())).collect();
        let program = generate(&plan_with(syscalls)).unwrap();
        let loads_args = program
            .iter()
            .any(|insn| insn.code == LD_W_ABS && insn.k >= ARGS_OFFSET);
        assert!(!loads_args);
    }
}
