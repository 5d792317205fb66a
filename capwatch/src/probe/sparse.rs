//! The kernel's BTF as aya's loader needs it, and no more. aya looks in the kernel's BTF only for
//! the ids of the functions and tracepoints the programs attach to (capwatch's programs carry no
//! CO-RE relocations); a full parse of it (`aya::Btf::from_sys_fs`) holds some 18 MiB at its peak.
//! This one reads the kernel's BTF through the mapped, lazily read `btf_rs` view the offsets come
//! from, and builds a BTF in which those few types keep their ids and every other id is a
//! placeholder, so that the ids aya hands the kernel are the kernel's.
//!
//! aya 0.14's `EbpfLoader::new()` parses the kernel's whole BTF all the same, before any other
//! can be set: `without_full_parse` runs the loader where that file cannot be read.

use aya::Btf;
use btf_rs::Type;

use crate::error::Error;

/// What the programs attach to: every `tp_btf` tracepoint (`btf_trace_<name>` typedefs) and every
/// fexit target (functions).
const TRACEPOINTS: [&str; 6] =
    ["sys_exit", "sched_process_fork", "sched_process_exec", "cgroup_attach_task", "sched_process_exit", "cap_capable"];
const FUNCTIONS: [&str; 4] = ["cap_capable", "cap_capset", "cap_mmap_addr", "cap_vm_enough_memory"];

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_FUNC: u32 = 12;
/// `BTF_FUNC_GLOBAL`, a function's linkage in its record's vlen.
const FUNC_GLOBAL: u32 = 1;

/// The sparse BTF of the running kernel, read from `kernel`.
pub fn btf(kernel: &btf_rs::Btf) -> Result<Btf, Error> {
    let mut wanted: Vec<(u32, u32, &str)> = Vec::new(); // (id, kind, name)
    let names = TRACEPOINTS
        .iter()
        .map(|tp| (format!("btf_trace_{tp}"), BTF_KIND_TYPEDEF))
        .chain(FUNCTIONS.iter().map(|f| (f.to_string(), BTF_KIND_FUNC)));
    let names: Vec<(String, u32)> = names.collect();
    for (name, kind) in &names {
        for id in kernel.resolve_ids_by_name(name).unwrap_or_default() {
            let matches = match kernel.resolve_type_by_id(id) {
                Ok(Type::Typedef(_)) => *kind == BTF_KIND_TYPEDEF,
                Ok(Type::Func(_)) => *kind == BTF_KIND_FUNC,
                _ => false,
            };
            if matches {
                wanted.push((id, *kind, name));
            }
        }
    }
    wanted.sort_unstable();
    let last = wanted.last().map_or(0, |(id, ..)| *id);

    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(last as usize * 12);
    let mut next = wanted.iter().peekable();
    for id in 1..=last {
        let record = match next.peek() {
            Some((wanted_id, kind, name)) if *wanted_id == id => {
                let name_off = strings.len() as u32;
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                let vlen = if *kind == BTF_KIND_FUNC { FUNC_GLOBAL } else { 0 };
                next.next();
                [name_off, kind << 24 | vlen, 0]
            }
            // A pointer to void: the smallest record there is.
            _ => [0, BTF_KIND_PTR << 24, 0],
        };
        for word in record {
            types.extend_from_slice(&word.to_ne_bytes());
        }
    }

    let mut blob = Vec::with_capacity(24 + types.len() + strings.len());
    blob.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]); // version, flags
    for word in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        blob.extend_from_slice(&word.to_ne_bytes()); // hdr_len, type_off, type_len, str_off, str_len
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(&strings);
    Btf::parse(&blob, aya::Endianness::default()).map_err(|_| Error::NoBtf)
}

/// Runs `load` (which makes an `EbpfLoader` and loads an object with it) on a thread of its own,
/// in a private mount namespace where /sys/kernel/btf is an empty directory, so that
/// `EbpfLoader::new()` finds no BTF to parse; the sparse BTF given to the loader serves instead.
/// Where the namespace cannot be made (no CAP_SYS_ADMIN), `load` runs as it is, parse and all.
pub fn without_full_parse<T: Send>(load: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                hide_kernel_btf();
                load()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// For the calling thread only: its own filesystem context and mount namespace, a slave of the
/// host's (nothing mounted here goes back), and an empty tmpfs on /sys/kernel/btf.
fn hide_kernel_btf() {
    // SAFETY: plain syscalls on constant, NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) != 0 {
            return;
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return;
        }
        libc::mount(
            c"none".as_ptr(),
            c"/sys/kernel/btf".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=4k".as_ptr().cast(),
        );
    }
}
