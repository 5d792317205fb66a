//! The programs capwatch's tests watch: each action makes one kind of kernel call, reports
//! what the kernel answered, and exits 0 when the call succeeded, 2 when it was refused.
//!
//! Usage: cw-workload ACTION [ARGS]
//!   setuid N          setuid(0) N times
//!   getppid N         getppid() N times
//!   raw-socket        socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
//!   open PATH         open PATH for reading
//!   mmap N            N private writable anonymous mappings
//!   child ACTION ...  run ACTION in a child process and wait for it
//!   mknod PATH        make a character device node (1:3, like /dev/null) at PATH
//!   userns ACTION ... enter a new user namespace (as its root), then do ACTION

use std::{ffi::CString, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |i: usize| args.get(i).and_then(|n| n.parse::<u64>().ok());
    let result = match (args.first().map(String::as_str), args.len()) {
        (Some("setuid"), 2) => repeat(count(1), || unsafe { libc::setuid(0) } as i64),
        (Some("getppid"), 2) => repeat(count(1), || unsafe { libc::getppid() } as i64),
        (Some("raw-socket"), 1) => raw_socket(),
        (Some("open"), 2) => open(&args[1]),
        (Some("mmap"), 2) => repeat(count(1), mmap_once),
        (Some("child"), n) if n > 1 => child(&args[1..]),
        (Some("mknod"), 2) => mknod(&args[1]),
        (Some("userns"), n) if n > 1 => userns(&args[1..]),
        _ => {
            eprintln!("usage: cw-workload setuid N | getppid N | raw-socket | open PATH | mmap N | child ACTION...");
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(errno) => {
            println!("errno {errno}");
            ExitCode::from(2)
        }
    }
}

/// Calls `f` n times; the first negative result stops with its errno.
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
    let status = std::process::Command::new("/proc/self/exe").args(args).status().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(libc::ECHILD),
    }
}

fn mknod(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    if rc < 0 { Err(errno()) } else { Ok(()) }
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
    let ok = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut kind as *mut libc::c_int).cast(), &mut len) };
    assert!(ok == 0 && kind == libc::SOCK_RAW, "socket is not SOCK_RAW");
    Ok(())
}

fn open(path: &str) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 { Err(errno()) } else { Ok(()) }
}

fn mmap_once() -> i64 {
    let len = 4096;
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return -1;
    }
    unsafe { libc::munmap(p, len) };
    0
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
