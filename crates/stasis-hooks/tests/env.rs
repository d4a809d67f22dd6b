//! `Hooks::from_env`. One test function: this binary is the only code touching
//! the environment, so there is no race with other tests.

use std::time::Duration;

use stasis_hooks::{notify, Event, Hooks, HooksError, ENV_SOCKET};

#[test]
fn from_env_unset_empty_and_set() {
    std::env::remove_var(ENV_SOCKET);
    assert!(Hooks::from_env().unwrap().is_none(), "unset: hooks off");

    std::env::set_var(ENV_SOCKET, "");
    assert!(matches!(Hooks::from_env(), Err(HooksError::EmptyEnv)));

    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("app.sock");
    std::env::set_var(ENV_SOCKET, &path);
    let hooks = Hooks::from_env().unwrap().expect("set: hooks on");
    assert_eq!(hooks.path(), path);
    hooks.serve(|_| Ok(())).unwrap();
    notify(&path, Event::PostRestore, Duration::from_secs(5)).unwrap();
    assert!(hooks.was_restored());
    std::env::remove_var(ENV_SOCKET);
}
