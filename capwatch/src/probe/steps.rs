//! The breakdown programs (`capwatch-ebpf/src/steps.rs`): capwatch's own code stopped after
//! each step of a capability check or a syscall exit, for the benchmark to tell where its cost
//! lies. Loaded once through the verifier; each step attaches in turn.

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{tp_btf::BtfTracePointLink, BtfTracePoint},
    Btf, Ebpf,
};
use capwatch_common::{CapKey, Totals};

use super::{chain, open_object, program, CapSlots, MapSizes, Reads};
use crate::{cgroup::Scope, error::Error};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capwatch-steps"));

/// One configuration of the breakdown: a program on `cap_capable` and one on `sys_exit`.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The benchmark's name for it.
    pub name: &'static str,
    pub cap_capable: &'static str,
    pub sys_exit: &'static str,
}

impl Step {
    /// In the order the programs take them; each with an empty program on the other hook.
    pub const ALL: [Step; 9] = [
        Step::cap("to_scope", "step_cap_scope"),
        Step::cap("to_syscall", "step_cap_syscall"),
        Step::cap("to_judge", "step_cap_judge"),
        Step::cap("to_origin", "step_cap_origin"),
        Step::cap("to_hash", "step_cap_hash"),
        Step::cap("to_key", "step_cap_all"),
        Step::exit("exit_args", "step_exit_args"),
        Step::exit("exit_all", "step_exit_all"),
        Step::exit("exit_calls", "step_exit_calls"),
    ];

    const fn cap(name: &'static str, program: &'static str) -> Self {
        Step { name, cap_capable: program, sys_exit: "step_empty_sys_exit" }
    }

    const fn exit(name: &'static str, program: &'static str) -> Self {
        Step { name, cap_capable: "step_empty_cap_capable", sys_exit: program }
    }

    /// Whether the step is on the capability check's path (else on the syscall exit's).
    pub fn on_check(&self) -> bool {
        self.sys_exit == "step_empty_sys_exit"
    }
}

/// Every breakdown program, loaded; at most one step attached.
pub struct Steps {
    ebpf: Ebpf,
    /// Dropping a link detaches its program.
    attached: Vec<BtfTracePointLink>,
    caps: HashMap<MapData, CapKey, Totals>,
    slots: CapSlots,
}

impl Steps {
    /// Loads the programs for `scope`, with the offsets capwatch's own programs get.
    pub fn load(scope: Scope) -> Result<Self, Error> {
        let (mut ebpf, btf) = open_object(OBJECT, false, scope, MapSizes::default(), true, Reads::Casts)?;
        let mut names: Vec<&str> = Step::ALL.iter().flat_map(|s| [s.cap_capable, s.sys_exit]).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            load(&mut ebpf, &btf, name)?;
        }
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::Missing(name));
        let caps = HashMap::try_from(take("CW_CAPS")?)?;
        let slots = CapSlots::new(Array::try_from(take("CW_CAP_SLOTS")?)?, Array::try_from(take("CW_CAP_COUNTS")?)?);
        Ok(Self { ebpf, attached: Vec::new(), caps, slots })
    }

    /// Gives every key the programs counted so far its slot, as the daemon does for each key it
    /// learns: from then on the whole check counts it there.
    pub fn give_slots(&mut self) -> Result<(), Error> {
        let keys: Vec<CapKey> = self.caps.keys().collect::<Result<_, _>>()?;
        self.slots.give(keys.into_iter())
    }

    /// Attaches `step`'s two programs, detaching what was attached before.
    pub fn attach(&mut self, step: &Step) -> Result<(), Error> {
        self.detach();
        for name in [step.cap_capable, step.sys_exit] {
            let program: &mut BtfTracePoint = program(&mut self.ebpf, name)?;
            let fail = |e: aya::programs::ProgramError| Error::Program { program: name, reason: chain(&e) };
            let id = program.attach().map_err(fail)?;
            self.attached.push(program.take_link(id).map_err(fail)?);
        }
        Ok(())
    }

    /// Detaches whatever step is attached.
    pub fn detach(&mut self) {
        self.attached.clear();
    }
}

fn load(ebpf: &mut Ebpf, btf: &Btf, name: &'static str) -> Result<(), Error> {
    let hook = if name.starts_with("step_exit") || name == "step_empty_sys_exit" { "sys_exit" } else { "cap_capable" };
    let program: &mut BtfTracePoint = program(ebpf, name)?;
    program.load(hook, btf).map_err(|e| Error::Program { program: name, reason: chain(&e) })
}
