//! A process being worked on from outside: syscall injection plus a scratch area.
//!
//! [`Remote`] wraps [`stasis_sys::inject::Injector`] for one thread, together with the address of
//! a scratch area in the tracee (our own page, mapped next to the gadget) where arguments and
//! results of injected calls live (paths, `struct sigaction`, `stack_t`, `clone_args`, …). The
//! scratch area is written and read with `process_vm_writev`/`readv`.

use crate::error::Failure;
use stasis_sys::inject::Injector;
use stasis_sys::mem;
use stasis_sys::ptrace::Regs;

/// Size of the gadget + scratch mapping (the gadget is at its start).
pub const PARASITE_LEN: u64 = 16 * 4096;
/// Scratch starts one page after the gadget.
pub const SCRATCH_OFF: u64 = 4096;

/// Injection context for one thread.
pub struct Remote {
    /// Thread group id.
    pub pid: i32,
    inj: Injector,
    /// Base address of our mapping (gadget at `base`, scratch from `base + SCRATCH_OFF`).
    pub base: u64,
}

impl Remote {
    /// `regs` is the register template; `base` our mapping in the tracee.
    pub fn new(pid: i32, tid: i32, base: u64, regs: Regs) -> Self {
        let mut inj = Injector::new(tid, base, regs);
        inj.set_stack(base + PARASITE_LEN - 64);
        Self { pid, inj, base }
    }

    /// Same, with an explicit gadget (e.g. a `syscall` in the vdso) before our page exists.
    pub fn with_gadget(pid: i32, tid: i32, gadget: u64, regs: Regs) -> Self {
        Self {
            pid,
            inj: Injector::new(tid, gadget, regs),
            base: 0,
        }
    }

    /// Thread this context injects into.
    pub fn tid(&self) -> i32 {
        self.inj.tid()
    }

    /// Switch to our mapping once it exists.
    pub fn use_base(&mut self, base: u64) {
        self.base = base;
        self.inj.set_gadget(base);
        self.inj.set_stack(base + PARASITE_LEN - 64);
    }

    /// Address of scratch byte `off`.
    pub fn scratch(&self, off: u64) -> u64 {
        self.base + SCRATCH_OFF + off
    }

    /// Run a syscall; `what` names the step for errors. Returns the non-negative result.
    pub fn call(&mut self, what: &str, nr: i64, args: &[u64]) -> Result<u64, Failure> {
        match self.inj.call(nr, args) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::new(self.tid(), what.to_string(), e)),
            Err(e) => Err(Failure::new(self.tid(), what.to_string(), e)),
        }
    }

    /// Run a syscall and return the raw result (negative errno) for callers that handle errors.
    pub fn call_raw(&mut self, what: &str, nr: i64, args: &[u64]) -> Result<i64, Failure> {
        self.inj
            .raw(nr, args)
            .map_err(|e| Failure::new(self.tid(), what.to_string(), e))
    }

    /// Clone events seen in the last call.
    pub fn clone_events(&self) -> &[stasis_sys::inject::CloneEvent] {
        &self.inj.events
    }

    /// Write bytes at scratch offset `off`; returns their remote address.
    pub fn put(&self, off: u64, bytes: &[u8]) -> Result<u64, Failure> {
        let addr = self.scratch(off);
        assert!(off + bytes.len() as u64 <= PARASITE_LEN - SCRATCH_OFF - 128);
        mem::write_all(self.pid, addr, bytes)
            .map_err(|e| Failure::new(self.pid, format!("writing scratch at {addr:#x}"), e))?;
        Ok(addr)
    }

    /// Write a NUL-terminated string at scratch offset `off`.
    pub fn put_str(&self, off: u64, s: &str) -> Result<u64, Failure> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        if b.len() > 8192 {
            return Err(Failure::msg(self.pid, format!("path too long: {s}")));
        }
        self.put(off, &b)
    }

    /// Read `len` bytes at scratch offset `off`.
    pub fn get(&self, off: u64, len: usize) -> Result<Vec<u8>, Failure> {
        let addr = self.scratch(off);
        let mut buf = vec![0u8; len];
        mem::read_exact(self.pid, addr, &mut buf)
            .map_err(|e| Failure::new(self.pid, format!("reading scratch at {addr:#x}"), e))?;
        Ok(buf)
    }

    /// Read a little-endian u64 at scratch offset `off`.
    pub fn get_u64(&self, off: u64) -> Result<u64, Failure> {
        let b = self.get(off, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// Little-endian u64 at byte `i` of `b`.
pub fn le64(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// Encode u64 values as little-endian bytes.
pub fn words(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
