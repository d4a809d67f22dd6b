//! `stasis __gen-docs DIR` (hidden): what the package installs besides the binary, generated
//! from the CLI definition itself — a man page per command (`DIR/man/stasis.1`,
//! `DIR/man/stasis-checkpoint.1`, …), shell completions (`DIR/completions/stasis.bash`,
//! `_stasis`, `stasis.fish`) and the agent's systemd unit with the packaged binary's path
//! (`DIR/stasis-agent.service`).

use anyhow::Context;
use clap_complete::Shell;
use std::path::Path;

/// The unit of contrib/, written for a manual install under /usr/local/bin.
const UNIT: &str = include_str!("../../../contrib/stasis-agent.service");

/// The unit for a binary installed at `bin`.
pub fn unit_for(bin: &str) -> String {
    UNIT.replace("/usr/local/bin/stasis", bin)
}

/// Writes everything into `dir` (created if missing).
pub fn run(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = cmd.clone();
        clap_complete::generate_to(shell, &mut c, "stasis", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    let unit = dir.join("stasis-agent.service");
    std::fs::write(&unit, unit_for("/usr/bin/stasis"))
        .with_context(|| format!("writing {}", unit.display()))?;
    eprintln!(
        "wrote man pages, completions and the unit into {}",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_packaged_unit_runs_the_packaged_binary() {
        let u = super::unit_for("/usr/bin/stasis");
        assert!(u.contains("\nExecStart=/usr/bin/stasis agent "), "{u}");
        assert!(!u.contains("/usr/local/bin"), "{u}");
    }
}
