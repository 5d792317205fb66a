//! Capability checks, from whichever backend saw them, into `CW_CAPS`.

use core::{mem::MaybeUninit, ptr::read_volatile};

use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_get_stack},
    programs::tracing::StackIdContext,
};
use capwatch_common::{
    flags_from_opts, CapKey, Loss, Origin, Verdict, CALL_SITES, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_KEPT,
    CAP_FLAG_MOOT_MASK, CAP_FLAG_MOOT_SHIFT, CAP_FLAG_OUTER_USERNS, CAP_FLAG_PORT_SHIFT, JUDGED_STACK_READ,
};

use crate::{
    aggregate,
    consequence::{self, Direct, Probed},
    maps::{KprobeStash, CW_CAPS, CW_KPROBE_STASH, CW_STACKS},
    origin, pending, scope, task,
};

/// Offsets read by userspace from the kernel's BTF: `task_struct.real_cred`,
/// `cred.user_ns`, `user_namespace.level`.
#[unsafe(no_mangle)]
pub(crate) static CW_TASK_REAL_CRED_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static CW_CRED_USER_NS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static CW_USER_NS_LEVEL_OFFSET: u32 = 0;

/// Known call sites (`capwatch_common::Site`) as [start, end, judged bit] of their functions'
/// addresses, which userspace resolves from kallsyms; unused entries are zero.
#[unsafe(no_mangle)]
static CW_CALL_SITES: [u64; 3 * CALL_SITES] = [0; 3 * CALL_SITES];

/// Frames of a first occurrence's kernel stack searched for an advisory call site.
const STACK_FRAMES: usize = 16;

/// Records one check: `ret` is `cap_capable`'s result (0 granted, negative denied); `checked`
/// the credentials and namespace it was made on, where not already judged into `flags`.
#[inline(always)]
pub fn on_check<C: StackIdContext>(ctx: &C, cap: u32, ret: i32, flags: u32, checked: Checked) {
    check_until::<{ step::ALL }, C>(ctx, cap, ret, flags, checked);
}

/// The steps of a check, in the order `check_until` takes them: the benchmark's breakdown
/// measures programs that stop after each (steps.rs).
pub mod step {
    /// Whether the current task's cgroup is watched.
    pub const SCOPE: u8 = 1;
    /// The syscall the check is made in (the task's saved registers).
    pub const SYSCALL: u8 = 2;
    /// What the checked credentials and the syscall's arguments say (`judge`).
    pub const JUDGE: u8 = 3;
    /// Who in the cgroup is acting (origin.rs).
    pub const ORIGIN: u8 = 4;
    /// Everything, the key counted by its lookup in `CW_CAPS`, as before userspace gives it a
    /// slot.
    pub const HASH: u8 = 5;
    /// Everything: the key counted in its slot, or by its lookup where it has none.
    pub const ALL: u8 = u8::MAX;
}

/// `on_check` up to and including step `UNTIL`; what the last step taken found, so that a
/// program stopping there cannot have its work optimised away.
#[inline(always)]
pub fn check_until<const UNTIL: u8, C: StackIdContext>(
    ctx: &C,
    cap: u32,
    ret: i32,
    flags: u32,
    checked: Checked,
) -> u64 {
    let current = task::current();
    let task = current.task;
    let Some(cgroup_id) = scope::watched(current) else {
        return 0;
    };
    if UNTIL == step::SCOPE {
        return cgroup_id;
    }
    let regs = current.saved_regs();
    let syscall = unsafe { (*regs).orig_rax } as u32;
    if UNTIL == step::SYSCALL {
        return syscall as u64;
    }
    let flags = flags | judge(task, checked, cap, syscall, regs);
    if UNTIL == step::JUDGE {
        return flags as u64;
    }
    // A moot check's refusal cannot be why its syscall fails.
    if ret != 0 && flags & CAP_FLAG_MOOT_MASK == 0 {
        pending::note_denied(syscall, cap);
    }
    let origin = origin::of_current_task(task);
    if UNTIL == step::ORIGIN {
        return origin as u64;
    }
    let key = CapKey {
        cgroup_id,
        cap,
        syscall,
        verdict: if ret == 0 { Verdict::Granted } else { Verdict::Denied },
        origin,
        flags,
    };
    if UNTIL == step::HASH || !aggregate::count_in_slot(&key) {
        aggregate::record(&CW_CAPS, &key, || first_occurrence(ctx), Loss::CapMapFull);
    }
    // Every capset makes this check, before it commits the new sets.
    if (cap, syscall) == (consequence::CAP_SETPCAP, consequence::SYS_CAPSET) {
        note_kept(syscall, regs);
    }
    1
}

/// Remembers, until the capset's exit, what it keeps if it narrows the permitted set
/// (`consequence::capset_kept`, against the task's own credentials, which capset replaces).
/// A BPF subprogram of its own, so that its stack does not add to the check's.
#[inline(never)]
fn note_kept(syscall: u32, regs: *const pt_regs) {
    let offset = unsafe { read_volatile(&CW_TASK_REAL_CRED_OFFSET) };
    if offset == 0 {
        return;
    }
    let task = task::current().task;
    let Ok(cred) = (unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const u64) }) else {
        return;
    };
    let kept = consequence::capset_kept(regs, cred as *const u8);
    if kept != 0 {
        pending::note_kept(syscall, kept);
    }
}

/// A capset in `syscall` succeeded keeping `kept` in a narrower permitted set: each capability
/// under a key of its own marked `CAP_FLAG_KEPT`. No check is made for them (security/
/// commoncap.c cap_capset), yet the capset fails where one was not held. Only the
/// application's: the runtime's capset applies the container's configuration, which the runtime
/// says itself, and would add a key per granted capability to every container and exec session.
#[inline(always)]
pub fn on_kept(syscall: u32, kept: u64) {
    let Some(cgroup_id) = scope::watched_cgroup() else {
        return;
    };
    let origin = origin::current();
    if origin != Origin::App {
        return;
    }
    let mut key = CapKey { cgroup_id, cap: 0, syscall, verdict: Verdict::Granted, origin, flags: CAP_FLAG_KEPT };
    for cap in 0..64 {
        if kept >> cap & 1 != 0 {
            key.cap = cap;
            aggregate::record(&CW_CAPS, &key, || (-1, 0), Loss::CapMapFull);
        }
    }
}

/// What the checked credentials and the syscall's arguments say of a check made by the current
/// `task` (see `cred_flags` and `consequence::judge`).
#[inline(always)]
fn judge(task: *const u8, checked: Checked, cap: u32, syscall: u32, regs: *const pt_regs) -> u32 {
    let moot = match checked {
        Checked::Typed(cred, _) => consequence::judge::<Direct>(cap, syscall, regs, cred),
        Checked::Raw(cred, _) | Checked::Current(cred) => consequence::judge::<Probed>(cap, syscall, regs, cred),
        Checked::Judged => return 0,
    };
    cred_flags(task, checked)
        | moot.raw() << CAP_FLAG_MOOT_SHIFT
        | consequence::port(cap, syscall, regs) << CAP_FLAG_PORT_SHIFT
}

/// A first occurrence's kernel stack: kept in `CW_STACKS` for its call site's name, and searched
/// here for the known call sites, so that a full or colliding stack map never changes a verdict.
#[inline(always)]
fn first_occurrence<C: StackIdContext>(ctx: &C) -> (i32, u32) {
    let stack_id = ctx.get_stackid(&CW_STACKS, 0).map_or(-1, |id| id as i32);
    // Left for the helper to fill, which zeroes what the stack does not reach: zeroing it here
    // would be a call to memset, whose frame counts against the 512 bytes of stack that the
    // check, this function and their callees share.
    let mut frames = MaybeUninit::<[u64; STACK_FRAMES]>::uninit();
    let size = size_of::<[u64; STACK_FRAMES]>() as u32;
    let read = unsafe { bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), size, 0) };
    if read <= 0 {
        return (stack_id, 0);
    }
    // SAFETY: bpf_get_stack wrote all `size` bytes (the frames, then zeroes).
    let frames = unsafe { frames.assume_init() };
    let site = |i: usize| unsafe { read_volatile(&CW_CALL_SITES[i]) };
    if site(0) == 0 {
        // No call site is known (kallsyms hides addresses): nothing was judged.
        return (stack_id, 0);
    }
    let mut judged = JUDGED_STACK_READ;
    for frame in frames {
        for s in 0..CALL_SITES {
            let (start, end) = (site(3 * s), site(3 * s + 1));
            if start != 0 {
                judged |= site(3 * s + 2) as u32 & all_if_below(frame.wrapping_sub(start), end.wrapping_sub(start));
            }
        }
    }
    (stack_id, judged)
}

/// All ones when `a < b` (unsigned), else zero, without a branch (Hacker's Delight 2-13, the
/// borrow of `a - b`): a compare per frame and site would let the verifier follow every
/// combination of outcomes, and 6.1's gives up after a million instructions.
#[inline(always)]
fn all_if_below(a: u64, b: u64) -> u32 {
    let borrow = ((!a & b) | ((!a | b) & a.wrapping_sub(b))) >> 63;
    0u32.wrapping_sub(borrow as u32)
}

/// The credentials and namespace a check was made against, as the probe got them.
#[derive(Clone, Copy)]
pub enum Checked {
    /// Typed kernel pointers (tracepoint, fexit): their fields can be loaded directly.
    Typed(*const u8, *const u8),
    /// Plain addresses (kprobe): their fields are read through `bpf_probe_read_kernel`.
    Raw(*const u8, *const u8),
    /// Already judged into the flags (the kprobe's return).
    Judged,
    /// Current's own credentials (a plain address), already judged into the flags by the
    /// program on a direct caller of `cap_capable` (callers.rs); the syscall's arguments are
    /// judged against them.
    Current(*const u8),
}

/// What the checked credentials and namespace say: `CAP_FLAG_FOREIGN_CRED` when `cred` is not
/// the current `task`'s own (`real_cred`), `CAP_FLAG_OUTER_USERNS` when `ns` lies above the
/// credentials' user namespace. The common case (own credentials, own namespace) costs two reads,
/// plain loads where the pointers are typed.
#[inline(always)]
fn cred_flags(task: *const u8, checked: Checked) -> u32 {
    match checked {
        Checked::Typed(cred, ns) => judge_cred(task, cred, ns, |base, offset| {
            unsafe { *(base.wrapping_add(offset as usize) as *const u64) }.into()
        }),
        Checked::Raw(cred, ns) => judge_cred(task, cred, ns, |base, offset| {
            unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u64) }.ok()
        }),
        Checked::Judged | Checked::Current(_) => 0,
    }
}

/// `cred_flags` with `read(base, offset)` reading the 8 bytes at `base + offset`.
#[inline(always)]
fn judge_cred(task: *const u8, cred: *const u8, ns: *const u8, read: impl Fn(*const u8, u32) -> Option<u64>) -> u32 {
    let read_ptr = |base: *const u8, offset: u32| read(base, offset).map(|v| v as *const u8);
    let mut flags = 0;
    let real_cred = unsafe { read_volatile(&CW_TASK_REAL_CRED_OFFSET) };
    if real_cred != 0 && read_ptr(task, real_cred).is_some_and(|own| own != cred) {
        flags |= CAP_FLAG_FOREIGN_CRED;
    }
    let user_ns = unsafe { read_volatile(&CW_CRED_USER_NS_OFFSET) };
    let level = unsafe { read_volatile(&CW_USER_NS_LEVEL_OFFSET) };
    if user_ns == 0 || level == 0 {
        return flags;
    }
    let Some(own_ns) = read_ptr(cred, user_ns) else { return flags };
    if own_ns != ns {
        // Rare (a user namespace other than the credentials'): always through the helper.
        let depth =
            |ns: *const u8| unsafe { bpf_probe_read_kernel(ns.wrapping_add(level as usize) as *const i32) }.ok();
        if let (Some(own), Some(target)) = (depth(own_ns), depth(ns)) {
            if target < own {
                flags |= CAP_FLAG_OUTER_USERNS;
            }
        }
    }
    flags
}

/// kprobe backend, at `cap_capable`'s entry: keep `cap` and what `opts`, `cred` and the
/// syscall's arguments say until the return.
#[inline(always)]
pub fn on_kprobe_entry(cred: *const u8, ns: *const u8, cap: u32, opts: u32) {
    let current = task::current();
    let task = current.task;
    if scope::watched(current).is_none() {
        return;
    }
    let regs = current.saved_regs();
    let syscall = unsafe { (*regs).orig_rax } as u32;
    let stash =
        KprobeStash { cap, flags: flags_from_opts(opts) | judge(task, Checked::Raw(cred, ns), cap, syscall, regs) };
    let tid = bpf_get_current_pid_tgid();
    if CW_KPROBE_STASH.insert(tid, stash, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // `cap_capable` does not nest: an entry left behind is a return the kretprobe missed.
    if CW_KPROBE_STASH.get_ptr(tid).is_some() {
        aggregate::count_loss(Loss::KprobeStashOverwritten);
        if CW_KPROBE_STASH.insert(tid, stash, 0).is_ok() {
            return;
        }
    }
    aggregate::count_loss(Loss::KprobeStashFull);
}

/// A thread that exits with a stash entry left lost a kretprobe: count it, and free the entry
/// before its thread id is reused.
#[inline(always)]
pub fn forget_kprobe_stash() {
    if CW_KPROBE_STASH.remove(bpf_get_current_pid_tgid()).is_ok() {
        aggregate::count_loss(Loss::KprobeStashOverwritten);
    }
}

/// kprobe backend, at `cap_capable`'s return.
#[inline(always)]
pub fn on_kprobe_return<C: StackIdContext>(ctx: &C, ret: i32) {
    if scope::watched_cgroup().is_none() {
        return;
    }
    let tid = bpf_get_current_pid_tgid();
    let Some(stash) = CW_KPROBE_STASH.get_ptr(tid).map(|p| unsafe { *p }) else {
        aggregate::count_loss(Loss::KretprobeUnmatched);
        return;
    };
    let _ = CW_KPROBE_STASH.remove(tid);
    on_check(ctx, stash.cap, ret, stash.flags, Checked::Judged);
}
