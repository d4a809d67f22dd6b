//! hugetlb mappings and hugetlb memfds (issue 13 item 2): private and shared anonymous
//! `MAP_HUGETLB` mappings, `MFD_HUGETLB` memfds (open, mapped shared and privately, sealed),
//! a `SHM_HUGETLB` segment, shared with a forked child; and a restore refused, naming the
//! mappings and the pages they need, when the huge page pool is too small.
//!
//! The machine's pool of 2 MiB pages (`/proc/sys/vm/nr_hugepages`) is 0: each test sets it to
//! what it needs through [`HugePool`], which puts the old value back when the test ends (or
//! panics).

mod common;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const POOL_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// 2 MiB pages one `mem_hugetlb` tree holds, or reserves at restore, is under 24 (the
/// workload's header); with a second instance being restored beside a checkpointed one, 48.
const PAGES: u64 = 48;

fn read_num(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pool_file(name: &str) -> u64 {
    read_num(&format!("{POOL_2M}/{name}"))
}

/// `/proc/sys/vm/nr_hugepages` set for the life of the value, the old value put back on drop.
pub struct HugePool {
    old: u64,
}

impl HugePool {
    /// Set the pool of 2 MiB pages to `n` pages; fails loudly if the kernel cannot allocate
    /// them.
    pub fn set(n: u64) -> HugePool {
        let pool = HugePool {
            old: read_num(NR_HUGEPAGES),
        };
        pool.resize(n);
        let got = read_num(NR_HUGEPAGES);
        assert!(
            got >= n,
            "the kernel gave {got} of the {n} huge pages of 2 MiB asked for in {NR_HUGEPAGES}"
        );
        pool
    }

    /// Ask for `n` pages (the kernel keeps pages in use or reserved whatever is asked).
    pub fn resize(&self, n: u64) {
        std::fs::write(NR_HUGEPAGES, n.to_string())
            .unwrap_or_else(|e| panic!("writing {n} to {NR_HUGEPAGES}: {e}"));
    }

    /// For `conformance_tests!`: the workload's arguments, while `self` (a temporary of the
    /// test's statement) keeps the pool set.
    pub fn no_args(&self) -> &'static [&'static str] {
        &[]
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.old.to_string());
    }
}

crate::conformance_tests!(
    mem_hugetlb,
    "mem_hugetlb",
    crate::HugePool::set(crate::PAGES).no_args()
);

/// The pool emptied while a checkpointed tree still runs (`--leave-running`): the restore is
/// refused before any task exists, naming the hugetlb mappings and objects, the number of
/// 2048 kB pages needed and available, and `/proc/sys/vm/nr_hugepages`; the tree keeps
/// running and verifies.
#[test]
fn restore_without_enough_huge_pages_refused() {
    let _g = common::serial();
    let pool = HugePool::set(PAGES);
    let w = common::Workload::start("mem_hugetlb", &[]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let img = common::image_dir("hh-hugetlb-refused");
    let dir = img.path().join("img");
    let out = common::checkpoint(w.pid, &dir, &["--leave-running"]);
    assert!(
        out.status.success(),
        "checkpoint --leave-running failed: {}",
        common::show_output(&out)
    );
    // Shrink the pool to what the running tree uses and reserves, and 2 pages more (the child
    // has no reservation for the private mapping it inherited: reading its untouched page
    // takes a free one, or SIGBUS).
    let in_use = pool_file("nr_hugepages") - pool_file("free_hugepages");
    pool.resize(in_use + pool_file("resv_hugepages") + 2);
    let left = pool_file("free_hugepages") - pool_file("resv_hugepages");
    assert_eq!(left, 2, "the pool has {left} free pages, not 2");
    let before = common::tree_pids(w.pid);
    let out = common::run_cmd(&mut common::restore_cmd(&dir));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore succeeded: {stderr}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).expect("maps");
    let private = maps
        .lines()
        .find(|l| l.contains(" rw-p ") && l.ends_with("/anon_hugepage (deleted)"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the private hugetlb mapping in maps")
        .split('-')
        .map(|a| u64::from_str_radix(a, 16).expect("address"))
        .collect::<Vec<_>>();
    for needle in [
        "not enough huge pages".to_string(),
        "huge pages of 2048 kB".to_string(),
        format!(
            "mapping {:#x}-{:#x} (/anon_hugepage (deleted)) of pid {}: 3",
            private[0], private[1], w.pid
        ),
        "hugetlb memfd hh_huge: 3".to_string(),
        "hugetlb memfd hh_only: 1".to_string(),
        "but 2 are available".to_string(),
        "raise /proc/sys/vm/nr_hugepages".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "message lacks {needle:?}: {stderr}"
        );
    }
    assert_eq!(
        common::tree_pids(w.pid),
        before,
        "the tree changed after the refused restore"
    );
    w.verify()
        .expect("workload must keep running correctly after the refused restore");
    drop(pool);
}
