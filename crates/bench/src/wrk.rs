//! `--wrk`: the same cases driven by wrk, an HTTP load generator that knows
//! nothing of MCP, so the figures do not depend on this tool's client. A
//! legacy case opens one session first and every wrk connection calls in
//! it; a modern case sends the stateless request as it is. One call made
//! with this tool's client first checks the request is answered.

use std::process::Command;

use super::{Case, Stats, open_as, post};

/// Runs wrk for the case (after a one-second warm-up run); the latency
/// percentiles and rate it reports, and the number of calls it made.
pub async fn load(case: &Case, dir: &std::path::Path) -> (Stats, u64) {
    let http = reqwest::Client::new();
    let session = open_as(&http, &case.url, case.bearer.as_deref(), case.era).await;
    let body = session.call(1, &case.tool);
    let (_, reply) = post(&http, &session, &body).await;
    assert!(
        reply.get("result").is_some(),
        "the call wrk repeats fails: {reply}"
    );
    let mut script = format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\n",
        serde_json::to_string(&body).expect("json")
    );
    for (name, value) in session.headers(&body) {
        script.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    let path = dir.join(format!("wrk-{}.lua", std::process::id()));
    std::fs::write(&path, script).expect("wrk script");
    let run = |secs: u64| {
        let out = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{}", case.concurrency),
                &format!("-d{secs}s"),
                "--latency",
                "-s",
            ])
            .arg(&path)
            .arg(&case.url)
            .output()
            .expect("wrk runs (Debian package wrk)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(1);
    let out = run(case.measure.as_secs().max(1));
    session.close(&http).await;
    let errors = field(&out, "Non-2xx or 3xx responses:").unwrap_or(0.0);
    assert!(errors == 0.0, "wrk saw {errors} failed calls:\n{out}");
    let calls = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let latency = |p: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map_or(f64::NAN, |v| micros(v.trim()))
    };
    let stats = Stats {
        p50: latency("50%"),
        p99: latency("99%"),
        rps: field(&out, "Requests/sec:").unwrap_or(f64::NAN),
    };
    (stats, calls)
}

/// The number after `label` on its line of wrk's report.
fn field(out: &str, label: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.trim().parse().ok())
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`) in microseconds.
fn micros(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}
