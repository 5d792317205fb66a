//! The programs capwatch's tests watch: each action makes one kind of kernel call, reports
//! what the kernel answered, and exits 0 when the call succeeded, 2 when it was refused.
//!
//! Usage: cw-workload ACTION [ARGS]
//!   setuid N          setuid(0) N times
//!   getppid N         getppid() N times
//!   raw-socket        socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
//!   open PATH         open PATH for reading
//!   access PATH       access(PATH, R_OK): the kernel checks on the caller's real ids
//!   fsuid UID         setfsuid(UID): file access as UID, the effective capabilities of the
//!                     filesystem cleared as with any change away from fsuid 0
//!   mmap N            N private writable anonymous mappings
//!   mmap-low N        N read-only mappings at address 0, below vm.mmap_min_addr, each unmapped
//!   capset N          capset(2) N times with the sets it has
//!   ptrace-read N     open a child's /proc/PID/environ N times, with one capability the child
//!                     holds set aside from this process's effective set (a ptrace access check)
//!   child ACTION ...  run ACTION in a child process and wait for it
//!   mknod PATH        make a character device node (1:3, like /dev/null) at PATH
//!   userns ACTION ... enter a new user namespace (as its root), then do ACTION
//!   fanotify          fanotify_init(FAN_CLASS_NOTIF, O_RDONLY)
//!   chmod PATH        chmod PATH 0644
//!   setpgid-foreign   setpgid(0, 1): refused by the call's own rules, no capability involved
//!   signalled N       N times: spin with -EPERM (then -EACCES) in rax until a timer's signal
//!                     arrives; its handler's rt_sigreturn restores that rax as its return
//!   as-user UID ACTION ...          become UID, then do ACTION
//!   seccomp-refuse NAMES ACTION ... install a seccomp filter refusing the comma-separated
//!                     syscalls with EPERM, then do ACTION
//!   time ACTION ...   do ACTION and print `ns_per_call X` (its N from the action's count):
//!                     this thread's CPU time, so start-up and other processes taking the CPU
//!                     cost nothing (eBPF programs run in the caller and count); and
//!                     `wall_ns_per_call X`
//!   paced RATE SECONDS ACTION
//!                     do ACTION (setuid or getppid) at RATE calls per second for SECONDS,
//!                     printing `calls N` and `behind_ms M` (how far the pace fell behind)
//! Actions joined with `+` run one after the other in the same process.

use std::{
    ffi::CString,
    process::ExitCode,
    time::{Duration, Instant},
};

use capwatch::capsets::CapSets;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Actions separated by `+` run one after the other in this process; the last one decides.
    let mut result = Ok(());
    let mut done = 0;
    for action in args.split(|a| a == "+") {
        done += action.len() + 1;
        // Hands the rest to another program image: a memfd copy of this one (as runc re-executes
        // itself), or the program at PATH.
        // `memfd-exec ARGS…` and `exec PATH ARGS…`: everything after them, later actions
        // included, is the new image's.
        let after = |words: usize| args.get(done - action.len() - 1 + words..).unwrap_or_default();
        match action {
            [first, ..] if first == "memfd-exec" => return exec_self_from_memfd(after(1)),
            [first, path, ..] if first == "exec" => return exec_path(path, after(2)),
            _ => {}
        }
        result = match run(action) {
            Some(result) => result,
            None => {
                eprintln!("usage: cw-workload ACTION [ARGS] [+ ACTION [ARGS]]… (see the source for actions)");
                return ExitCode::from(64);
            }
        };
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(errno) => {
            println!("errno {errno}");
            ExitCode::from(2)
        }
    }
}

/// One action; None when it is not one.
fn run(args: &[String]) -> Option<Result<(), i32>> {
    let count = |i: usize| args.get(i).and_then(|n| n.parse::<u64>().ok());
    Some(match (args.first().map(String::as_str), args.len()) {
        // The raw syscall: glibc's setuid() makes every thread of the process repeat it.
        (Some("setuid"), 2) => repeat(count(1), || unsafe { libc::syscall(libc::SYS_setuid, 0) }),
        // setuid(0) as many times whatever each call returns (a denied check each, as a user).
        (Some("setuid-tries"), 2) => repeat(count(1), || i64::from(unsafe { libc::setuid(0) }).max(0)),
        (Some("getppid"), 2) => repeat(count(1), || unsafe { libc::getppid() } as i64),
        // In a UTS namespace of its own, sethostname to the name it already has: a granted
        // CAP_SYS_ADMIN check in a call that allocates nothing, so its cost barely varies.
        (Some("sethostname"), 2) => own_uts_namespace().and_then(|()| repeat(count(1), same_hostname)),
        // The action in N threads at once (on as many CPUs as the scheduler gives).
        (Some("threads"), n) if n > 2 => {
            let action: Vec<String> = args[2..].to_vec();
            let threads: Vec<_> = (0..count(1).unwrap_or(1))
                .map(|_| {
                    std::thread::spawn({
                        let action = action.clone();
                        move || run(&action)
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|t| t.join().ok().flatten()).collect();
            results.into_iter().try_fold((), |(), r| r.unwrap_or(Err(libc::EINVAL)))
        }
        // Waits for one line on stdin: something else happens to this process meanwhile.
        (Some("await-line"), 1) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(drop).map_err(|_| libc::EIO)
        }
        // Keeps running until stdin closes: a container's command while something else happens.
        (Some("wait-stdin"), 1) => {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            Ok(())
        }
        (Some("raw-socket"), 1) => raw_socket(),
        (Some("open"), 2) => open(&args[1]),
        (Some("access"), 2) => access(&args[1]),
        (Some("fsuid"), 2) => fsuid(count(1)?),
        (Some("mmap"), 2) => repeat(count(1), mmap_once),
        (Some("mmap-low"), 2) => repeat(count(1), mmap_low),
        (Some("capset"), 2) => capset(count(1)),
        (Some("keep"), 2) => keep(count(1)?),
        (Some("ptrace-read"), 2) => ptrace_read(count(1)),
        (Some("child"), n) if n > 1 => child(&args[1..]),
        (Some("mknod"), 2) => mknod(&args[1]),
        (Some("userns"), n) if n > 1 => userns(&args[1..]),
        (Some("fanotify"), 1) => check(unsafe { libc::syscall(libc::SYS_fanotify_init, 0, libc::O_RDONLY) }),
        (Some("chmod"), 2) => chmod(&args[1]),
        (Some("setpgid-foreign"), 1) => check(unsafe { libc::setpgid(0, 1) }.into()),
        (Some("signalled"), 2) => signalled(count(1)),
        (Some("as-user"), n) if n > 2 => as_user(count(1)?, &args[2..])?,
        (Some("seccomp-refuse"), n) if n > 2 => seccomp_refuse(&args[1], &args[2..])?,
        (Some("time"), n) if n > 1 => time(&args[1..])?,
        (Some("paced"), 4) => paced(count(1)?, count(2)?, &args[3])?,
        _ => return None,
    })
}

/// Does the action and prints its cost per call; the action's second argument is its count.
fn time(action: &[String]) -> Option<Result<(), i32>> {
    let calls = action.get(1).and_then(|n| n.parse::<u64>().ok()).filter(|&n| n > 0)?;
    let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
    let result = run(action)?;
    let (elapsed, cpu) = (start.elapsed(), thread_cpu_ns() - cpu_start);
    println!("ns_per_call {:.2}", cpu as f64 / calls as f64);
    println!("wall_ns_per_call {:.2}", elapsed.as_nanos() as f64 / calls as f64);
    Some(result)
}

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Calls at a steady rate: each millisecond's share, then a sleep to the next millisecond. A
/// rate the machine cannot keep shows as `behind_ms`.
fn paced(rate: u64, seconds: u64, action: &str) -> Option<Result<(), i32>> {
    // The raw syscall: glibc's setuid() makes every other thread of the process repeat it, so
    // paced workers (`threads N paced …`) would each make one check per worker and call.
    let call: fn() -> i64 = match action {
        "setuid" => || unsafe { libc::syscall(libc::SYS_setuid, 0) },
        // As a user without CAP_SETUID: a denied check, and a syscall failing with EPERM.
        "setuid-denied" => || unsafe { libc::syscall(libc::SYS_setuid, 0) }.max(0),
        "getppid" => || unsafe { libc::getppid() } as i64,
        // As a user without CAP_SYS_ADMIN: a denied check, and a syscall failing with EPERM.
        // The name is the one the host has, should the check ever be granted.
        "sethostname-denied" => || same_hostname().max(0),
        _ => return None,
    };
    let per_ms = rate / 1000;
    let ticks = seconds * 1000;
    let start = Instant::now();
    for tick in 0..ticks {
        for _ in 0..per_ms {
            if call() < 0 {
                return Some(Err(errno()));
            }
        }
        let next = start + Duration::from_millis(tick + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let planned = Duration::from_secs(seconds);
    println!("calls {}", per_ms * ticks);
    println!("behind_ms {}", start.elapsed().saturating_sub(planned).as_millis());
    Some(Ok(()))
}

fn own_uts_namespace() -> Result<(), i32> {
    check(unsafe { libc::unshare(libc::CLONE_NEWUTS) }.into())
}

/// sethostname(2) with the name the task's UTS namespace had at its first call: it changes
/// nothing. The name is read once, so that each call is the one syscall.
fn same_hostname() -> i64 {
    static NAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let name = NAME.get_or_init(|| {
        let mut names: libc::utsname = unsafe { std::mem::zeroed() };
        unsafe { libc::uname(&mut names) };
        names.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect()
    });
    unsafe { libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) }
}

fn check(rc: i64) -> Result<(), i32> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn chmod(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    check(unsafe { libc::chmod(path.as_ptr(), 0o644) }.into())
}

/// Set by `on_alarm`, read by `spin_until_signalled`.
static SIGNALLED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    SIGNALLED.store(1, std::sync::atomic::Ordering::SeqCst);
}

/// `n` times for each of -EPERM and -EACCES: holds it in rax, as a failed syscall leaves it,
/// until SIGALRM interrupts this user code; rt_sigreturn then restores it and returns it.
fn signalled(n: Option<u64>) -> Result<(), i32> {
    let Some(n) = n else { return Err(libc::EINVAL) };
    let action = libc::sigaction {
        sa_sigaction: on_alarm as extern "C" fn(libc::c_int) as usize,
        sa_mask: unsafe { std::mem::zeroed() },
        sa_flags: 0,
        sa_restorer: None,
    };
    check(unsafe { libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) }.into())?;
    for _ in 0..n {
        for errno in [libc::EPERM, libc::EACCES] {
            SIGNALLED.store(0, std::sync::atomic::Ordering::SeqCst);
            let soon = libc::itimerval {
                it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
                it_value: libc::timeval { tv_sec: 0, tv_usec: 2000 },
            };
            check(unsafe { libc::setitimer(libc::ITIMER_REAL, &soon, std::ptr::null_mut()) }.into())?;
            spin_until_signalled(-i64::from(errno));
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn spin_until_signalled(rax: i64) {
    // SAFETY: reads a static; rax is declared clobbered.
    unsafe {
        std::arch::asm!(
            "2:",
            "pause",
            "cmp byte ptr [{flag}], 0",
            "je 2b",
            flag = in(reg) SIGNALLED.as_ptr(),
            inout("rax") rax => _,
        );
    }
}

/// Becomes `uid` (group too, no supplementary groups), then does the action.
fn as_user(uid: u64, action: &[String]) -> Option<Result<(), i32>> {
    let uid = uid as libc::uid_t;
    let dropped =
        unsafe { libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(uid) == 0 && libc::setuid(uid) == 0 };
    if !dropped {
        return Some(Err(errno()));
    }
    run(action)
}

/// Installs a real seccomp filter that refuses the comma-separated syscalls with EPERM (and
/// allows everything else), then does the action.
fn seccomp_refuse(names: &str, action: &[String]) -> Option<Result<(), i32>> {
    let numbers: Vec<u32> =
        names.split(',').map(|n| n.parse::<syscalls::Sysno>().ok().map(|s| s.id() as u32)).collect::<Option<_>>()?;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program =
        vec![stmt(load, 4), jump(AUDIT_ARCH_X86_64, 1, 0), stmt(ret, libc::SECCOMP_RET_ALLOW), stmt(load, 0)];
    for (i, &nr) in numbers.iter().enumerate() {
        let remaining = (numbers.len() - i - 1) as u8;
        // On a match, jump over the remaining tests and the ALLOW to the ERRNO.
        program.push(jump(nr, remaining + 1, 0));
    }
    program.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    program.push(stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) == 0
    };
    if !installed {
        return Some(Err(errno()));
    }
    run(action)
}

/// Calls `f` n times; the first negative result stops with its errno.
/// Copies this program into a memfd and executes that with `args`: a file with no name.
fn exec_self_from_memfd(args: &[String]) -> ExitCode {
    let fd = unsafe { libc::memfd_create(c"cw_cloned".as_ptr(), 0) };
    let copied = std::fs::read("/proc/self/exe").and_then(|image| {
        use std::{io::Write, os::fd::FromRawFd};
        let mut file = unsafe { std::fs::File::from_raw_fd(libc::dup(fd)) };
        file.write_all(&image)
    });
    if fd < 0 || copied.is_err() {
        return ExitCode::from(70);
    }
    let argv = c_args("cw-workload", args);
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    unsafe { libc::fexecve(fd, pointers.as_ptr(), envp.as_ptr()) };
    ExitCode::from(71)
}

/// Executes the program at `path` with `args`.
fn exec_path(path: &str, args: &[String]) -> ExitCode {
    let argv = c_args(path, args);
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let Ok(path) = CString::new(path) else { return ExitCode::from(64) };
    unsafe { libc::execv(path.as_ptr(), pointers.as_ptr()) };
    ExitCode::from(71)
}

fn c_args(first: &str, rest: &[String]) -> Vec<CString> {
    std::iter::once(first).chain(rest.iter().map(String::as_str)).filter_map(|a| CString::new(a).ok()).collect()
}

fn repeat(n: Option<u64>, mut f: impl FnMut() -> i64) -> Result<(), i32> {
    let Some(n) = n else { return Err(libc::EINVAL) };
    for _ in 0..n {
        if f() < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

fn child(args: &[String]) -> Result<(), i32> {
    let status = std::process::Command::new("/proc/self/exe")
        .args(args)
        .status()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(libc::ECHILD),
    }
}

fn mknod(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Becomes root of a new user namespace, then runs the action in this process.
fn userns(args: &[String]) -> Result<(), i32> {
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } < 0 {
        return Err(errno());
    }
    match (args[0].as_str(), args.len()) {
        ("mknod", 2) => mknod(&args[1]),
        ("setuid", 2) => repeat(args[1].parse().ok(), || unsafe { libc::setuid(0) } as i64),
        _ => Err(libc::EINVAL),
    }
}

fn raw_socket() -> Result<(), i32> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(errno());
    }
    // Prove it is a raw socket, not a ping socket the kernel substituted.
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    let ok = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut kind as *mut libc::c_int).cast(), &mut len)
    };
    assert!(ok == 0 && kind == libc::SOCK_RAW, "socket is not SOCK_RAW");
    Ok(())
}

fn open(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// access(2) checks with the real ids: where they differ from the file-access ones, or root's
/// effective capabilities from its permitted ones, the kernel checks on a copy of the
/// credentials made for the call (`access_override_creds`), not on the task's own.
fn access(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    check(unsafe { libc::syscall(libc::SYS_access, path.as_ptr(), libc::R_OK) })
}

/// setfsuid(2) reports the previous fsuid, never an error: the change is read back.
fn fsuid(uid: u64) -> Result<(), i32> {
    let uid = libc::uid_t::try_from(uid).map_err(|_| libc::EINVAL)?;
    unsafe { libc::setfsuid(uid) };
    if unsafe { libc::setfsuid(u32::MAX) } as libc::uid_t == uid {
        Ok(())
    } else {
        Err(libc::EPERM)
    }
}

fn mmap_once() -> i64 {
    let len = 4096;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return -1;
    }
    unsafe { libc::munmap(p, len) };
    0
}

/// A read-only page at address 0: the kernel asks for CAP_SYS_RAWIO (below vm.mmap_min_addr),
/// and nothing else (a read-only mapping is not accounted).
fn mmap_low() -> i64 {
    let len = 4096;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return -1;
    }
    unsafe { libc::munmap(p, len) };
    0
}

/// This thread's capability sets, or the errno of capget(2).
fn capget() -> Result<CapSets, i32> {
    CapSets::get().ok_or_else(errno)
}

/// capset(2): 0, or -1 with errno set.
fn capset_to(sets: &CapSets) -> i64 {
    if sets.set() {
        0
    } else {
        -1
    }
}

/// capset(2) with the sets it has: changes nothing, and the kernel asks for CAP_SETPCAP each time.
fn capset(n: Option<u64>) -> Result<(), i32> {
    let data = capget()?;
    repeat(n, || capset_to(&data))
}

/// capset(2) narrowing the permitted and effective sets to the one capability numbered `cap`,
/// whether or not this process holds it, as a daemon that sheds what it does not need does.
fn keep(cap: u64) -> Result<(), i32> {
    let sets = capget()?;
    check(capset_to(&CapSets::of(1 << cap, 1 << cap, sets.inheritable())))
}

/// Opens a child's /proc/PID/environ N times (PTRACE_MODE_READ_FSCREDS) with the lowest
/// capability this process holds set aside from its effective set: the child holds it, so ours no
/// longer covers the child's and the kernel asks for CAP_SYS_PTRACE.
fn ptrace_read(n: Option<u64>) -> Result<(), i32> {
    let Some(n) = n else { return Err(libc::EINVAL) };
    let data = capget()?;
    let permitted = data.permitted();
    if permitted == 0 {
        return Err(libc::EPERM);
    }
    let lowered = data.without_effective(permitted.trailing_zeros());
    let mut pipe = [0; 2];
    check(unsafe { libc::pipe(pipe.as_mut_ptr()) }.into())?;
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut byte = 0u8;
        unsafe {
            libc::close(pipe[1]);
            libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    unsafe { libc::close(pipe[0]) };
    check(pid.into())?;
    let path = CString::new(format!("/proc/{pid}/environ")).map_err(|_| libc::EINVAL)?;
    let result = check(capset_to(&lowered)).and_then(|()| {
        for _ in 0..n {
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                return Err(errno());
            }
            unsafe { libc::close(fd) };
        }
        Ok(())
    });
    capset_to(&data);
    unsafe {
        libc::close(pipe[1]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
