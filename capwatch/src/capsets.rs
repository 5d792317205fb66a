//! A process's capability sets as capget(2) gives them and capset(2) takes them, for the
//! self-test's child, the commands `capwatch run` starts and the tests' workload. Raw syscalls on plain data: usable
//! between fork and exec.

/// capget(2)'s and capset(2)'s header (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One 32-capability word of each set (linux/capability.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective, permitted and inheritable sets of one process.
#[derive(Clone, Copy)]
pub struct CapSets {
    data: [CapData; 2],
}

impl CapSets {
    /// `_LINUX_CAPABILITY_VERSION_3`: two words per set.
    const VERSION_3: u32 = 0x2008_0522;

    fn header() -> CapHeader {
        CapHeader { version: Self::VERSION_3, pid: 0 }
    }

    /// The calling thread's sets.
    pub fn get() -> Option<Self> {
        let mut header = Self::header();
        let mut data = [CapData::default(); 2];
        // SAFETY: a valid header and two words of data, as version 3 asks.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        (rc == 0).then_some(Self { data })
    }

    /// Sets of the given masks.
    pub fn of(effective: u64, permitted: u64, inheritable: u64) -> Self {
        let word = |mask: u64, i: usize| (mask >> (32 * i)) as u32;
        let data = [0, 1].map(|i| CapData {
            effective: word(effective, i),
            permitted: word(permitted, i),
            inheritable: word(inheritable, i),
        });
        Self { data }
    }

    /// Gives the calling thread these sets; false where the kernel refused.
    pub fn set(&self) -> bool {
        let mut header = Self::header();
        // SAFETY: a valid header and two words of data, as version 3 asks.
        unsafe { libc::syscall(libc::SYS_capset, &mut header, self.data.as_ptr()) == 0 }
    }

    pub fn permitted(&self) -> u64 {
        u64::from(self.data[0].permitted) | u64::from(self.data[1].permitted) << 32
    }

    pub fn inheritable(&self) -> u64 {
        u64::from(self.data[0].inheritable) | u64::from(self.data[1].inheritable) << 32
    }

    /// The same sets without `cap` in the effective one.
    pub fn without_effective(&self, cap: u32) -> Self {
        let mut sets = *self;
        sets.data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        sets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_split_into_the_kernels_words() {
        let sets = CapSets::of(1 << 40 | 1, 1 << 40 | 1 << 7 | 1, 0);
        assert_eq!(sets.permitted(), 1 << 40 | 1 << 7 | 1);
        assert_eq!(sets.without_effective(40).data[1].effective, 0);
        assert!(CapSets::get().is_some());
    }
}
