//! `tether upstreams`, `tether virtual-servers`, `tether sessions`,
//! `tether evict`, `tether reload`: the admin API for operators, answered
//! as readable tables.

use serde_json::Value;

/// Where the admin API is and how to authenticate to it.
pub struct Admin {
    /// Base URL of a running Tether (e.g. `http://127.0.0.1:8080`).
    pub url: String,
    /// The admin bearer token.
    pub token: String,
}

type Failure = Box<dyn std::error::Error>;

impl Admin {
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, Failure> {
        let url = format!("{}/admin{path}", self.url.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body: Value = resp
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if !status.is_success() {
            let why = body["error"].as_str().unwrap_or("no details");
            return Err(format!("{url}: HTTP {}: {why}", status.as_u16()).into());
        }
        Ok(body)
    }

    /// Prints the upstreams.
    pub async fn upstreams(&self) -> Result<(), Failure> {
        let body = self.call(reqwest::Method::GET, "/upstreams").await?;
        let rows = list(&body["upstreams"]).map(|u| {
            let def = &u["definition"];
            let target = match def["url"].as_str() {
                Some(url) => url.to_owned(),
                None => words(&def["command"]),
            };
            vec![
                text(&def["name"]),
                text(&u["source"]),
                text(&u["transport"]),
                match u["healthy"].as_bool() {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
                text(&u["upstream_sessions"]),
                target,
                text(&def["description"]),
            ]
        });
        print!(
            "{}",
            table(
                &[
                    "NAME",
                    "SOURCE",
                    "TRANSPORT",
                    "HEALTHY",
                    "SESSIONS",
                    "TARGET",
                    "DESCRIPTION"
                ],
                rows.collect()
            )
        );
        Ok(())
    }

    /// Prints the virtual servers, each with its endpoint and what it selects.
    pub async fn virtual_servers(&self) -> Result<(), Failure> {
        let body = self.call(reqwest::Method::GET, "/virtual-servers").await?;
        let rows = list(&body["virtual_servers"]).map(|v| {
            let selects = |key: &str| match words(&v[key]) {
                picked if picked.is_empty() => "-".into(),
                picked => picked,
            };
            vec![
                text(&v["name"]),
                text(&v["source"]),
                format!("/v/{}/mcp", text(&v["name"])),
                selects("tools"),
                selects("prompts"),
                selects("resources"),
                match v["progressive_discovery"].as_bool() {
                    Some(true) => "progressive".into(),
                    _ => "full".into(),
                },
                text(&v["description"]),
            ]
        });
        print!(
            "{}",
            table(
                &[
                    "NAME",
                    "SOURCE",
                    "ENDPOINT",
                    "TOOLS",
                    "PROMPTS",
                    "RESOURCES",
                    "LISTING",
                    "DESCRIPTION"
                ],
                rows.collect()
            )
        );
        Ok(())
    }

    /// Prints this node's client sessions.
    pub async fn sessions(&self) -> Result<(), Failure> {
        let body = self.call(reqwest::Method::GET, "/sessions").await?;
        let rows = list(&body["sessions"]).map(|s| {
            let upstreams: Vec<String> = list(&s["upstreams"])
                .map(|u| format!("{} ({})", text(&u["upstream"]), text(&u["era"])))
                .collect();
            vec![
                text(&s["id"]),
                text(&s["principal"]),
                text(&s["endpoint"]),
                text(&s["transport"]),
                duration(&s["age_secs"]),
                duration(&s["idle_secs"]),
                text(&s["uses"]),
                upstreams.join(", "),
            ]
        });
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "PRINCIPAL",
                    "ENDPOINT",
                    "TRANSPORT",
                    "AGE",
                    "IDLE",
                    "USES",
                    "UPSTREAMS"
                ],
                rows.collect()
            )
        );
        Ok(())
    }

    /// Ends one client session.
    pub async fn evict_session(&self, id: &str) -> Result<(), Failure> {
        self.call(reqwest::Method::DELETE, &format!("/sessions/{id}"))
            .await?;
        println!("ended session {id}");
        Ok(())
    }

    /// Closes every upstream session of one upstream.
    pub async fn evict_upstream(&self, name: &str) -> Result<(), Failure> {
        let body = self
            .call(
                reqwest::Method::DELETE,
                &format!("/upstreams/{name}/sessions"),
            )
            .await?;
        println!(
            "closed {} upstream sessions of {name}",
            text(&body["closed_sessions"])
        );
        Ok(())
    }

    /// Makes the running Tether read its config file again.
    pub async fn reload(&self) -> Result<(), Failure> {
        let body = self.call(reqwest::Method::POST, "/reload").await?;
        let change = &body["change"];
        for (what, key) in [
            ("added", "added"),
            ("replaced", "replaced"),
            ("described", "described"),
            ("removed", "removed"),
        ] {
            let names: Vec<String> = list(&change[key]).map(text).collect();
            if !names.is_empty() {
                println!("{what}: {}", names.join(", "));
            }
        }
        println!(
            "closed upstream sessions: {}",
            text(&change["closed_sessions"])
        );
        Ok(())
    }
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn words(v: &Value) -> String {
    list(v).map(text).collect::<Vec<_>>().join(" ")
}

fn duration(v: &Value) -> String {
    let Some(secs) = v.as_i64() else {
        return "-".into();
    };
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "N"],
            vec![
                vec!["alpha".into(), "1".into()],
                vec!["b".into(), "22".into()],
            ],
        );
        assert_eq!(t, "NAME   N\nalpha  1\nb      22\n");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(&42.into()), "42s");
        assert_eq!(duration(&125.into()), "2m5s");
        assert_eq!(duration(&7260.into()), "2h1m");
        assert_eq!(duration(&Value::Null), "-");
    }
}
