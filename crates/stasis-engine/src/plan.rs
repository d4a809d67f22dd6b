//! How restore builds the tree: a pure plan of steps ([`creation_plan`]) run against a small
//! seam ([`TaskKernel`]). The restorer's implementation injects `clone3(set_tid)`, `setsid`
//! and `setpgid` into the tasks (`restore.rs`); the tests run the same plan against a model of
//! the kernel's rules (pids unique, a child inherits its creator's group and session, `setsid`
//! refused to a group leader, `setpgid` only into a group of the same session, never of a
//! session leader) on trees the model itself grew at random, and check that the restored tree
//! is the one that was dumped.
//!
//! Linux cannot change a process's parent, session or group membership after the fact except
//! through these calls, so the order is the whole decision: every process is created by its
//! parent (or, sharing a sibling's fd table, by that sibling with `CLONE_PARENT`), parents
//! first; a session leader calls `setsid` after creating the children that stayed in its old
//! session (it forked them before its `setsid`) and before creating those in its own (which
//! inherit it); process groups are joined once every process exists,
//! leaders first ([`crate::restore::group_plan`]); threads come after (a process's threads
//! share its group); zombies exit last, once their group and session are in place.

use crate::error::Failure;
use stasis_image::records as rec;

/// One step of building the tree (pids as the image names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Process `pid` created by `by` with these extra clone flags and exit signal.
    Process {
        pid: i32,
        by: i32,
        flags: u64,
        exit_signal: u64,
    },
    /// `pid` makes itself a session leader (and takes its controlling terminal).
    Setsid { pid: i32 },
    /// `pid` joins process group `pgid` (its own when equal), unless it is in it already.
    Group { pid: i32, pgid: i32 },
    /// Every group is joined: what needs them (foreground groups of terminals) can run.
    GroupsDone,
    /// Thread `tid` created in process `leader`.
    Thread { leader: i32, tid: i32 },
    /// `pid` exits with its saved status, to be waited for by its parent.
    Zombie { pid: i32 },
}

/// The steps that build every process but the root (which the restorer creates itself, with
/// its session when it led one) and every thread, in an order the kernel accepts.
pub(crate) fn creation_plan(processes: &[rec::Process]) -> Vec<Step> {
    let mut plan = Vec::new();
    if let Some(root) = processes.first() {
        create_children(processes, root.pid, &mut plan);
    }
    // A group whose leader has left it for another group of the tree (its members stay in
    // it): the leader makes it again, the members join, then the leader leaves it again.
    let in_tree = |id: i32| processes.iter().any(|q| q.pid == id);
    let left: Vec<i32> = processes
        .iter()
        .filter(|q| q.pgid != q.pid && q.sid != q.pid && in_tree(q.pgid))
        .filter(|q| processes.iter().any(|m| m.pgid == q.pid))
        .map(|q| q.pid)
        .collect();
    plan.extend(left.iter().map(|&g| Step::Group { pid: g, pgid: g }));
    let (last, rest): (Vec<_>, Vec<_>) = crate::restore::group_plan(processes)
        .into_iter()
        .partition(|(pid, _)| left.contains(pid));
    for (pid, pgid) in rest.into_iter().chain(leave_order(processes, &left, last)) {
        plan.push(Step::Group { pid, pgid });
    }
    plan.push(Step::GroupsDone);
    for p in processes {
        for t in p.threads.iter().skip(1) {
            plan.push(Step::Thread {
                leader: p.pid,
                tid: t.tid,
            });
        }
    }
    for p in processes.iter().filter(|p| p.zombie) {
        plan.push(Step::Zombie { pid: p.pid });
    }
    plan
}

/// The order in which leaders that left their groups move to their final ones: a move into
/// group `T` needs `T` to exist then — a member that stays in it, a leader that moved into it
/// already, or its own leader not gone yet.
fn leave_order(
    processes: &[rec::Process],
    left: &[i32],
    mut moves: Vec<(i32, i32)>,
) -> Vec<(i32, i32)> {
    let stays = |g: i32| {
        processes
            .iter()
            .any(|m| m.pgid == g && !left.contains(&m.pid))
    };
    let mut out: Vec<(i32, i32)> = Vec::new();
    while !moves.is_empty() {
        let ok = |&(l, t): &(i32, i32)| {
            let target_lives = stays(t)
                || out.iter().any(|&(_, g)| g == t)
                || (t != l && moves.iter().any(|&(p, _)| p == t));
            // Leaving must not empty a group someone still has to move into.
            let awaited = moves.iter().any(|&(p, g)| g == l && p != l);
            let others = stays(l) || out.iter().any(|&(_, g)| g == l);
            target_lives && (!awaited || others)
        };
        let i = moves.iter().position(ok).unwrap_or(0);
        out.push(moves.remove(i));
    }
    out
}

/// The session a process must be born into, when that is known: its own session unless it
/// leads one; for a session leader, the session its children forked before its `setsid` had
/// to be born into (they, or theirs, stayed there), if any.
fn birth_session(processes: &[rec::Process], p: &rec::Process) -> Option<i32> {
    if p.sid != p.pid {
        return Some(p.sid);
    }
    processes
        .iter()
        .filter(|c| c.pid != p.pid && crate::files::creator(c).0 == p.pid)
        .filter_map(|c| birth_session(processes, c))
        .find(|&sid| sid != p.pid)
}

/// Create the children of `by` (the processes it creates: its own, and siblings sharing its fd
/// table), then theirs, depth first: those born in its old session, then its `setsid` if it
/// leads one (not the root: the restorer did it), then those born in its new session.
fn create_children(processes: &[rec::Process], by: i32, plan: &mut Vec<Step>) {
    let root = processes.first().map(|r| r.pid);
    let me = processes.iter().find(|p| p.pid == by);
    let kids: Vec<&rec::Process> = processes
        .iter()
        .skip(1)
        .filter(|c| crate::files::creator(c).0 == by)
        .collect();
    let (new, old): (Vec<&rec::Process>, Vec<&rec::Process>) = kids
        .iter()
        .partition(|c| birth_session(processes, c) == Some(by) && Some(by) != root);
    let push = |plan: &mut Vec<Step>, c: &rec::Process| {
        let (by, flags) = crate::files::creator(c);
        // clone3 refuses an exit signal with CLONE_PARENT: the creator's own is used.
        let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            c.exit_signal.max(0) as u64
        };
        plan.push(Step::Process {
            pid: c.pid,
            by,
            flags,
            exit_signal,
        });
    };
    for c in &old {
        push(plan, c);
    }
    if me.is_some_and(|m| m.sid == m.pid) && Some(by) != root {
        plan.push(Step::Setsid { pid: by });
    }
    for c in &new {
        push(plan, c);
    }
    for c in kids {
        create_children(processes, c.pid, plan);
    }
}

/// What the plan needs from the kernel (image pids throughout).
pub(crate) trait TaskKernel {
    /// Create process `pid` from `by` (`clone3` with `set_tid`).
    fn create_process(
        &mut self,
        pid: i32,
        by: i32,
        flags: u64,
        exit_signal: u64,
    ) -> Result<(), Failure>;
    /// `setsid` in `pid`.
    fn setsid(&mut self, pid: i32) -> Result<(), Failure>;
    /// The process group `pid` is in now (an image pid, or any number for a group outside).
    fn pgid(&mut self, pid: i32) -> Result<i32, Failure>;
    /// `setpgid(0, pgid)` in `pid`.
    fn setpgid(&mut self, pid: i32, pgid: i32) -> Result<(), Failure>;
    /// Every group is joined.
    fn groups_done(&mut self) -> Result<(), Failure>;
    /// Create thread `tid` in process `leader`.
    fn create_thread(&mut self, leader: i32, tid: i32) -> Result<(), Failure>;
    /// Make `pid` exit as it had.
    fn make_zombie(&mut self, pid: i32) -> Result<(), Failure>;
}

/// Run `plan` against `k`.
pub(crate) fn execute(plan: &[Step], k: &mut dyn TaskKernel) -> Result<(), Failure> {
    for step in plan {
        match *step {
            Step::Process {
                pid,
                by,
                flags,
                exit_signal,
            } => k.create_process(pid, by, flags, exit_signal)?,
            Step::Setsid { pid } => k.setsid(pid)?,
            Step::Group { pid, pgid } => {
                if k.pgid(pid)? != pgid {
                    k.setpgid(pid, pgid)?;
                }
            }
            Step::GroupsDone => k.groups_done()?,
            Step::Thread { leader, tid } => k.create_thread(leader, tid)?,
            Step::Zombie { pid } => k.make_zombie(pid)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A group or session led from outside the tree (the restorer's, or the original's).
    const OUTSIDE: i32 = -1;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Task {
        ppid: i32,
        pgid: i32,
        sid: i32,
        threads: Vec<i32>,
        zombie: bool,
        /// The process whose fd table it shares (0: its own).
        files_of: i32,
    }

    /// The kernel's rules for the calls the plan makes, over image pids.
    #[derive(Debug, Clone, Default)]
    struct Model {
        tasks: BTreeMap<i32, Task>,
    }

    fn refuse(pid: i32, why: &str) -> Failure {
        Failure::msg(pid, why.to_string())
    }

    impl Model {
        fn used(&self, id: i32) -> bool {
            self.tasks
                .iter()
                .any(|(&p, t)| p == id || t.threads.contains(&id))
        }

        /// A group exists while any member does (a zombie too, until it is reaped).
        fn group_exists_in(&self, pgid: i32, sid: i32) -> bool {
            self.tasks.values().any(|t| t.pgid == pgid && t.sid == sid)
        }

        fn do_setsid(&mut self, pid: i32) -> Result<(), Failure> {
            // EPERM for a group leader (a group with its pid exists).
            if self.tasks.values().any(|t| t.pgid == pid) {
                return Err(refuse(pid, "setsid: already a process group leader"));
            }
            let t = self.tasks.get_mut(&pid).expect("exists");
            t.sid = pid;
            t.pgid = pid;
            Ok(())
        }
    }

    impl TaskKernel for Model {
        fn create_process(
            &mut self,
            pid: i32,
            by: i32,
            flags: u64,
            exit_signal: u64,
        ) -> Result<(), Failure> {
            let c = match self.tasks.get(&by) {
                Some(c) if !c.zombie => c.clone(),
                _ => return Err(refuse(pid, "clone3: creator missing")),
            };
            if self.used(pid) {
                return Err(refuse(pid, "clone3: pid taken (EEXIST)"));
            }
            let parent_flag = flags & libc::CLONE_PARENT as u64 != 0;
            if parent_flag && exit_signal != 0 {
                return Err(refuse(pid, "clone3: CLONE_PARENT with an exit signal"));
            }
            let files_of = if flags & libc::CLONE_FILES as u64 != 0 {
                if c.files_of != 0 {
                    c.files_of
                } else {
                    by
                }
            } else {
                0
            };
            self.tasks.insert(
                pid,
                Task {
                    ppid: if parent_flag { c.ppid } else { by },
                    pgid: c.pgid,
                    sid: c.sid,
                    threads: vec![pid],
                    zombie: false,
                    files_of,
                },
            );
            Ok(())
        }

        fn setsid(&mut self, pid: i32) -> Result<(), Failure> {
            self.do_setsid(pid)
        }

        fn pgid(&mut self, pid: i32) -> Result<i32, Failure> {
            Ok(self.tasks[&pid].pgid)
        }

        fn setpgid(&mut self, pid: i32, pgid: i32) -> Result<(), Failure> {
            let t = self.tasks[&pid].clone();
            if t.sid == pid {
                return Err(refuse(pid, "setpgid: a session leader (EPERM)"));
            }
            if pgid != pid && !self.group_exists_in(pgid, t.sid) {
                return Err(refuse(pid, "setpgid: no such group in the session (EPERM)"));
            }
            self.tasks.get_mut(&pid).expect("exists").pgid = pgid;
            Ok(())
        }

        fn groups_done(&mut self) -> Result<(), Failure> {
            Ok(())
        }

        fn create_thread(&mut self, leader: i32, tid: i32) -> Result<(), Failure> {
            if self.used(tid) {
                return Err(refuse(tid, "clone3: tid taken"));
            }
            match self.tasks.get_mut(&leader) {
                Some(t) if !t.zombie => {
                    t.threads.push(tid);
                    Ok(())
                }
                _ => Err(refuse(tid, "clone3: thread of a missing process")),
            }
        }

        fn make_zombie(&mut self, pid: i32) -> Result<(), Failure> {
            let t = self.tasks.get_mut(&pid).expect("exists");
            if t.threads.len() != 1 {
                return Err(refuse(pid, "a zombie-to-be with threads"));
            }
            t.zombie = true;
            Ok(())
        }
    }

    /// One random operation of a tree's history.
    #[derive(Debug, Clone)]
    enum Op {
        Fork { by: usize, share_files: u8 },
        Setsid { who: usize },
        Setpgid { who: usize, to: usize, own: bool },
        Thread { who: usize },
        Exit { who: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<usize>(), 0u8..4).prop_map(|(by, share_files)| Op::Fork { by, share_files }),
            1 => any::<usize>().prop_map(|who| Op::Setsid { who }),
            2 => (any::<usize>(), any::<usize>(), any::<bool>())
                .prop_map(|(who, to, own)| Op::Setpgid { who, to, own }),
            1 => any::<usize>().prop_map(|who| Op::Thread { who }),
            1 => any::<usize>().prop_map(|who| Op::Exit { who }),
        ]
    }

    /// Grow a tree the kernel could have made: the root (a session leader or not), then
    /// random forks (some sharing fd tables with the parent or, through CLONE_PARENT, a
    /// sibling), setsid, setpgid, threads and exits of childless processes (zombies).
    fn grow(root_leads: bool, ops: &[Op]) -> Model {
        let mut m = Model::default();
        let root = 100;
        m.tasks.insert(
            root,
            Task {
                ppid: OUTSIDE,
                pgid: if root_leads { root } else { OUTSIDE },
                sid: if root_leads { root } else { OUTSIDE },
                threads: vec![root],
                zombie: false,
                files_of: 0,
            },
        );
        let mut next = root + 3;
        for o in ops {
            let live: Vec<i32> = m
                .tasks
                .iter()
                .filter(|(_, t)| !t.zombie)
                .map(|(&p, _)| p)
                .collect();
            let pick = |i: usize| live[i % live.len()];
            match *o {
                Op::Fork { by, share_files } => {
                    let by = pick(by);
                    // Shared tables the checkpoint accepts: with the parent, or with a sibling
                    // (CLONE_PARENT), the table being the creator's own.
                    let own_table = m.tasks[&by].files_of == 0;
                    let (creator, flags) = match share_files {
                        1 if own_table => (by, libc::CLONE_FILES as u64),
                        2 if by != root && own_table => {
                            (by, (libc::CLONE_FILES | libc::CLONE_PARENT) as u64)
                        }
                        _ => (by, 0),
                    };
                    let sig = if flags & libc::CLONE_PARENT as u64 != 0 {
                        0
                    } else {
                        libc::SIGCHLD as u64
                    };
                    m.create_process(next, creator, flags, sig)
                        .expect("a fork of a live process");
                    next += 3; // thread ids go between
                }
                Op::Setsid { who } => {
                    let who = pick(who);
                    if who != root {
                        let _ = m.do_setsid(who);
                    }
                }
                Op::Setpgid { who, to, own } => {
                    let who = pick(who);
                    let to = if own { who } else { m.tasks[&pick(to)].pgid };
                    if who != root && to != OUTSIDE {
                        let _ = m.setpgid(who, to);
                    }
                }
                Op::Thread { who } => {
                    let who = pick(who);
                    let n = m.tasks[&who].threads.len() as i32;
                    if n < 3 {
                        m.create_thread(who, who + n).expect("a free tid");
                    }
                }
                Op::Exit { who } => {
                    let who = pick(who);
                    let childless = !m.tasks.values().any(|t| t.ppid == who);
                    let shares =
                        m.tasks.values().any(|t| t.files_of == who) || m.tasks[&who].files_of != 0;
                    if who != root && childless && !shares && m.tasks[&who].threads.len() == 1 {
                        m.tasks.get_mut(&who).expect("live").zombie = true;
                    }
                }
            }
        }
        m
    }

    /// The image of a model: processes in creation (pid) order, as the checkpoint writes them.
    fn image(m: &Model) -> Vec<rec::Process> {
        m.tasks
            .iter()
            .map(|(&pid, t)| rec::Process {
                pid,
                ppid: t.ppid,
                pgid: t.pgid,
                sid: t.sid,
                zombie: t.zombie,
                fd_table_of: t.files_of,
                exit_signal: if t.files_of != 0 && t.files_of != t.ppid {
                    0
                } else {
                    libc::SIGCHLD
                },
                threads: t
                    .threads
                    .iter()
                    .map(|&tid| rec::Thread {
                        tid,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    }

    /// Restore into a model that holds only the root, as the restorer creates it.
    fn restore(img: &[rec::Process]) -> Result<Model, Failure> {
        let r = &img[0];
        let mut m = Model::default();
        let leads = r.sid == r.pid;
        m.tasks.insert(
            r.pid,
            Task {
                ppid: OUTSIDE,
                pgid: if leads { r.pid } else { OUTSIDE },
                sid: if leads { r.pid } else { OUTSIDE },
                threads: vec![r.pid],
                zombie: false,
                files_of: 0,
            },
        );
        execute(&creation_plan(img), &mut m)?;
        Ok(m)
    }

    #[test]
    fn a_session_leader_child_with_its_own_group_and_a_member() {
        let m = grow(
            true,
            &[
                Op::Fork {
                    by: 0,
                    share_files: 0,
                },
                Op::Setsid { who: 1 },
                Op::Fork {
                    by: 1,
                    share_files: 0,
                },
                Op::Fork {
                    by: 2,
                    share_files: 0,
                },
                Op::Setpgid {
                    who: 2,
                    to: 0,
                    own: true,
                },
                Op::Setpgid {
                    who: 3,
                    to: 2,
                    own: false,
                },
            ],
        );
        let got = restore(&image(&m)).expect("restores");
        assert_eq!(got.tasks, m.tasks);
    }

    proptest! {
        /// Whatever tree the kernel could have made, the plan rebuilds it exactly: parents,
        /// sessions, groups, threads, shared fd tables and zombies.
        #[test]
        fn the_plan_rebuilds_every_tree_the_kernel_can_make(
            root_leads in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let m = grow(root_leads, &ops);
            let img = image(&m);
            let got = restore(&img).map_err(|e| {
                TestCaseError::fail(format!("{e}\ntree {:?}\nplan {:?}", m.tasks, creation_plan(&img)))
            })?;
            // A group led from outside the tree stays the restorer's (documented): only
            // groups led inside are compared as they were.
            let mut want = m.tasks.clone();
            for t in want.values_mut() {
                if !m.tasks.contains_key(&t.pgid) {
                    t.pgid = OUTSIDE;
                }
            }
            prop_assert_eq!(got.tasks, want);
        }
    }
}
