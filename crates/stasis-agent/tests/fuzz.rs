//! Bounded fuzzing (proptest, stable) of the agent's parsers: durations, probes, and the API's
//! request parsing of a workload spec (JSON → `WorkloadSpec` → validation). Each must answer
//! Ok or an error — never panic — and what parses must hold its promises. The seeds below are
//! the corpus (mutated by the `mutated_*` properties); crashes found become seeds here.

use proptest::prelude::*;
use stasis_agent::duration;
use stasis_agent::probe::Probe;
use stasis_agent::spec::parse_request;

/// Seeds: valid and almost-valid inputs, and every crash found so far.
const DURATION_SEEDS: &[&str] = &[
    "500ms",
    "2s",
    "1m30s",
    "1.5h",
    "0",
    "0s",
    "1e400",
    "18446744073709551615ms",
    "9999999999d",
    "1..5s",
    ".s",
    "5µs",
    "µ",
    "1m1m1m",
    " 3 ",
    "-1s",
    "NaN",
    "inf",
];

const PROBE_SEEDS: &[&str] = &[
    "exec:/bin/true",
    "exec:",
    "exec: ",
    "tcp:127.0.0.1:80",
    "tcp::80",
    "tcp:h:99999",
    "http://localhost:8080/health",
    "http://",
    "http://h",
    "http://:1/",
    "http://h:x/",
    "ftp://x",
];

const SPEC_SEEDS: &[&str] = &[
    r#"{"name":"web","partition":{"cmd":["sleep","1"]}}"#,
    r#"{"name":"web","partition":{"cmd":[]}}"#,
    r#"{"name":"web","partition":{"cmd":["x"]},"probe":{"probe":{"kind":"exec","cmd":[]}}}"#,
    r#"{"name":"web","partition":{"cmd":["x"]},"probe":{"probe":{"kind":"tcp","addr":"h:1"},"timeout":0,"period":"0s"}}"#,
    r#"{"name":"web","partition":{"cmd":["x"],"limits":{"memory_bytes":0,"cpus":-1,"pids":0}}}"#,
    r#"{"name":"web","partition":{"cmd":["x"],"veth":{"host_if":"eth0","inner_if":"x","host_addr":"","inner_addr":""}}}"#,
    r#"{"name":"web","partition":{"cmd":["x"]},"checkpoint_every":"18446744073709551615ms","images_kept":0}"#,
    r#"{"name":"web","partition":{"cmd":["x"]},"policy":{"boot_restarts":4294967295,"backoff_restarts":4294967295,"backoff":"1ns"}}"#,
    r#"{"name":"../x","partition":{"cmd":["x"]}}"#,
    r#"{"name":"web","partition":{"cmd":["x"],"cwd":"rel","env":["=x","A"]}}"#,
    r#"{"name":"web","partition":{"cmd":["x"]},"hooks_timeout":1e300}"#,
];

fn config() -> ProptestConfig {
    ProptestConfig {
        // Bounded: a few seconds in all (the suite stays under ~20 s).
        cases: 10_000,
        max_shrink_time: 2000,
        ..ProptestConfig::default()
    }
}

#[test]
fn seeds_never_panic() {
    for s in DURATION_SEEDS {
        let _ = duration::parse(s);
    }
    for s in PROBE_SEEDS {
        let _ = s.parse::<Probe>();
    }
    for s in SPEC_SEEDS {
        let _ = parse_request(s.as_bytes());
    }
    // The issue's case: a 400-style error naming the field.
    assert_eq!(
        parse_request(SPEC_SEEDS[2].as_bytes()).unwrap_err().0,
        "probe.cmd: empty command"
    );
}

/// Replace, insert or delete a few characters of `seed`.
fn mutate(seed: &str, edits: &[(usize, u8, char)]) -> String {
    let mut v: Vec<char> = seed.chars().collect();
    for &(at, op, c) in edits {
        let at = if v.is_empty() { 0 } else { at % (v.len() + 1) };
        match op % 3 {
            0 if at < v.len() => v[at] = c,
            1 => v.insert(at, c),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => v.push(c),
        }
    }
    v.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            any::<u8>(),
            prop_oneof![
                prop::sample::select(vec![
                    '0', '9', '.', ':', '/', '"', '{', '}', '[', ']', ',', '-', 'e', 's', 'm', 'h',
                    '\0', 'µ', ' '
                ]),
                any::<char>()
            ],
        ),
        0..6,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_parse_or_refuse(s in "\\PC{0,24}") {
        if let Ok(d) = duration::parse(&s) {
            // What parses formats and parses back (durations are bounded).
            prop_assert_eq!(duration::parse(&duration::format(d)).ok(), Some(d));
        }
    }

    #[test]
    fn mutated_durations(i in 0..DURATION_SEEDS.len(), e in edits()) {
        let _ = duration::parse(&mutate(DURATION_SEEDS[i], &e));
    }

    #[test]
    fn probes_parse_or_refuse(s in "\\PC{0,40}") {
        if let Ok(p) = s.parse::<Probe>() {
            prop_assert!(stasis_agent::spec::check_probe("probe", &p).is_ok());
        }
    }

    #[test]
    fn mutated_probes(i in 0..PROBE_SEEDS.len(), e in edits()) {
        if let Ok(p) = mutate(PROBE_SEEDS[i], &e).parse::<Probe>() {
            prop_assert!(stasis_agent::spec::check_probe("probe", &p).is_ok());
        }
    }

    #[test]
    fn mutated_specs(i in 0..SPEC_SEEDS.len(), e in edits()) {
        let body = mutate(SPEC_SEEDS[i], &e);
        if let Ok(spec) = parse_request(body.as_bytes()) {
            // What passes validation serialises and parses back to a valid spec.
            let again = serde_json::to_vec(&spec).unwrap();
            prop_assert!(parse_request(&again).is_ok(), "{}", String::from_utf8_lossy(&again));
        }
    }

    #[test]
    fn arbitrary_json_specs(v in arbitrary_json()) {
        let _ = parse_request(v.to_string().as_bytes());
        let wrapped = serde_json::json!({"name": "w", "partition": v});
        let _ = parse_request(wrapped.to_string().as_bytes());
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "name", "web", "cmd", "exec", "tcp", "http", "0s", "10ms", "veth", "host", "/", "x=y",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let keys = prop::sample::select(vec![
        "name",
        "partition",
        "cmd",
        "probe",
        "kind",
        "addr",
        "url",
        "period",
        "timeout",
        "threshold",
        "limits",
        "memory_bytes",
        "cpus",
        "pids",
        "env",
        "cwd",
        "rootfs",
        "net",
        "veth",
        "policy",
        "backoff",
        "hooks_timeout",
        "images_kept",
        "checkpoint_every",
    ]);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
