//! A short run of every fuzz target (`examples/fuzz`): no reader may panic on mutated input.
//! `DEFED_FUZZ_SECONDS` sets the time per target (default 3).

#[path = "../examples/fuzz/targets.rs"]
mod targets;

#[test]
fn readers_survive_mutated_input() {
    let seconds: f64 = std::env::var("DEFED_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut failures = Vec::new();
    for t in targets::targets() {
        let r = targets::fuzz(&t, seconds, 0);
        eprintln!(
            "{}: {} runs ({} accepted, {} refused) in {:.1} s",
            t.name, r.runs, r.accepted, r.refused, r.seconds
        );
        assert!(r.runs > 10, "{}: only {} runs", t.name, r.runs);
        assert!(r.refused > 0, "{}: no mutation was refused", t.name);
        for (msg, input) in r.findings {
            failures.push(format!("{}: {msg} ({} bytes)", t.name, input.len()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
