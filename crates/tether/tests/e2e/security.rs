//! Security: JWT authentication, sessions bound to their principal,
//! per-principal policies, and refusing open access off loopback.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{Legacy, binary, demo, get_json, http, http_unpooled, post, tether_env, text};
use crate::sse_client::SseSession;

const SECRET: &str = "hs256-test-secret-never-logged";
const ISSUER: &str = "https://issuer.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub` with extra claims, valid for an hour unless overridden.
fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({"iss": ISSUER, "sub": sub, "aud": "tether", "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn jwt_config(upstreams: &[(&str, String)], extra: &str) -> String {
    let mut s = format!(
        "[auth]\nmode = \"jwt\"\nauthorization_servers = [\"{ISSUER}\"]\n[auth.jwt]\nhs256_secret_env = \"TEST_JWT_SECRET\"\nissuer = \"{ISSUER}\"\naudience = \"tether\"\n{extra}\n"
    );
    for (name, url) in upstreams {
        s.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

fn init_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"}}})
}

async fn init_with(url: &str, bearer: Option<&str>) -> crate::harness::Reply {
    let headers: Vec<(&str, String)> = bearer
        .map(|t| ("authorization", format!("Bearer {t}")))
        .into_iter()
        .collect();
    post(url, &headers, &init_body()).await
}

#[tokio::test]
async fn tokens_are_verified_and_refusals_point_to_the_metadata() {
    let up = demo("legacy");
    let gw = tether_env(
        &jwt_config(&[("demo", up.mcp())], "leeway_secs = 0"),
        &[("TEST_JWT_SECRET", SECRET), ("TETHER_LOG", "debug")],
    );
    let missing = init_with(&gw.mcp(), None).await;
    assert_eq!(missing.status, 401);
    let challenge = missing.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://"),
        "{challenge}"
    );
    assert!(challenge.contains("/.well-known/oauth-protected-resource"));
    let doc = get_json(&format!("{}/.well-known/oauth-protected-resource", gw.base)).await;
    assert_eq!(doc["authorization_servers"][0], ISSUER);
    assert!(doc["resource"].as_str().unwrap().ends_with("/mcp"));

    let forged = {
        let claims = json!({"iss": ISSUER, "sub": "mallory", "aud": "tether", "exp": now() + 3600});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap()
    };
    let refused = [
        ("expired", token("alice", json!({"exp": now() - 3600}))),
        ("badly signed", forged),
        (
            "wrong audience",
            token("alice", json!({"aud": "someone-else"})),
        ),
        (
            "wrong issuer",
            token("alice", json!({"iss": "https://evil.test"})),
        ),
        ("no subject", {
            let claims = json!({"iss": ISSUER, "aud": "tether", "exp": now() + 3600});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        }),
        ("garbage", "not.a.token".to_owned()),
        ("no audience", {
            let claims = json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        }),
    ];
    for (why, bad) in &refused {
        let r = init_with(&gw.mcp(), Some(bad)).await;
        assert_eq!(r.status, 401, "{why}");
        let h = r.headers["www-authenticate"].to_str().unwrap();
        assert!(h.contains("error=\"invalid_token\""), "{why}: {h}");
    }
    let alice = token("alice", json!({}));
    let ok = init_with(&gw.mcp(), Some(&alice)).await;
    assert_eq!(ok.status, 200, "{:?}", ok.messages);
    // A token verified once stops working when it expires.
    let brief = token("brief", json!({"exp": now() + 2}));
    assert_eq!(init_with(&gw.mcp(), Some(&brief)).await.status, 200);
    assert_eq!(init_with(&gw.mcp(), Some(&brief)).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(init_with(&gw.mcp(), Some(&brief)).await.status, 401);
    // Neither the secret nor tokens reach the log.
    let log = gw.log();
    assert!(!log.contains(SECRET), "the secret was logged");
    assert!(!log.contains(&alice), "a token was logged");
}

#[tokio::test]
async fn another_principal_cannot_use_a_session_it_did_not_make() {
    let up = demo("legacy");
    let gw = tether_env(
        &jwt_config(&[("demo", up.mcp())], ""),
        &[("TEST_JWT_SECRET", SECRET)],
    );
    let (alice_token, bob_token) = (token("alice", json!({})), token("bob", json!({})));
    let alice = Legacy::connect_as(&gw.mcp(), json!({}), Some(&alice_token)).await;
    alice.call("demo__counter_increment", json!({})).await;
    let hijack = Legacy {
        url: alice.url.clone(),
        session: alice.session.clone(),
        version: alice.version.clone(),
        next: 50.into(),
        bearer: Some(bob_token.clone()),
    };
    let stolen = hijack
        .request(
            "tools/call",
            json!({"name": "demo__counter_get", "arguments": {}}),
        )
        .await;
    let unknown = Legacy {
        session: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ..hijack
    };
    let made_up = unknown
        .request(
            "tools/call",
            json!({"name": "demo__counter_get", "arguments": {}}),
        )
        .await;
    assert_eq!(stolen.status, 404);
    assert_eq!(
        stolen.messages.last().unwrap().1,
        made_up.messages.last().unwrap().1,
        "the same answer as for an unknown id"
    );
    // Alice's session is intact.
    let r = alice.call("demo__counter_increment", json!({})).await;
    assert_eq!(text(&r), "2");
    // Each principal sees only its own sessions.
    let listed = |bearer: String| {
        let url = format!("{}/sessions", gw.base);
        async move {
            http()
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let alice_id = alice.session.clone().unwrap();
    assert!(listed(alice_token.clone()).await.contains(&alice_id));
    assert!(!listed(bob_token.clone()).await.contains(&alice_id));

    // HTTP+SSE sessions are bound the same way.
    let mut sse = SseSession::open_as(&gw.base, "/sse", Some(&alice_token)).await;
    sse.initialize(json!({})).await;
    let url = format!("{}{}", gw.base, sse.endpoint);
    let bob_post = http()
        .post(&url)
        .bearer_auth(&bob_token)
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bob_post.status(), 404);
    assert_eq!(sse.count("demo__counter_increment").await, 1);
}

#[tokio::test]
async fn policies_hide_what_a_principal_may_not_use_and_deny_calls_to_it() {
    let (a, b) = (demo("legacy"), demo("legacy"));
    let policies = "[[auth.policies]]\nscope = \"mcp:read\"\nupstreams = [\"a\"]\ntools = [\"a__echo\"]\n\
                    [[auth.policies]]\nclaim = \"groups\"\nvalue = \"admins\"\nupstreams = [\"*\"]\n";
    let gw = tether_env(
        &jwt_config(&[("a", a.mcp()), ("b", b.mcp())], policies),
        &[("TEST_JWT_SECRET", SECRET)],
    );
    let reader_token = token("reader", json!({"scope": "openid mcp:read"}));
    let reader = Legacy::connect_as(&gw.mcp(), json!({}), Some(&reader_token)).await;
    let tools = reader.result("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a__echo"]);
    assert_eq!(
        text(&reader.call("a__echo", json!({"text": "hi"})).await),
        "hi"
    );
    for denied in ["a__counter_increment", "b__echo"] {
        let r = reader
            .request(
                "tools/call",
                json!({"name": denied, "arguments": {"text": "x"}}),
            )
            .await;
        assert_eq!(
            r.last()["error"]["code"],
            -32001,
            "{denied}: {:?}",
            r.messages
        );
    }
    // An upstream's own endpoint is closed to a principal its policy keeps out.
    let single = init_with(&format!("{}/u/b/mcp", gw.base), Some(&reader_token)).await;
    assert_eq!(single.status, 403);
    assert_eq!(single.last()["error"]["code"], -32001);
    let admin_token = token("root", json!({"groups": ["staff", "admins"]}));
    let admin = Legacy::connect_as(&gw.mcp(), json!({}), Some(&admin_token)).await;
    let all = admin.result("tools/list", json!({})).await;
    assert!(all["tools"].as_array().unwrap().len() > 4);
    admin.call("b__counter_increment", json!({})).await;
    // Someone no policy matches reaches nothing.
    let nobody = Legacy::connect_as(&gw.mcp(), json!({}), Some(&token("x", json!({})))).await;
    let none = nobody.result("tools/list", json!({})).await;
    assert!(none["tools"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn rs256_tokens_verify_against_a_jwks() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures");
    let up = demo("legacy");
    let gw = tether_env(
        &format!(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_url = \"{}\"\nissuer = \"{ISSUER}\"\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
            fixtures.join("jwks.json").display(),
            up.mcp()
        ),
        &[],
    );
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("rsa-private.pem")).unwrap())
        .unwrap();
    let sign = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let claims = json!({"iss": ISSUER, "sub": "carol", "exp": now() + 600});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    assert_eq!(
        init_with(&gw.mcp(), Some(&sign("test-rsa"))).await.status,
        200
    );
    assert_eq!(
        init_with(&gw.mcp(), Some(&sign("unknown-kid")))
            .await
            .status,
        401
    );
    // An HS256 token "signed" with the public key must not pass as RS256.
    let public = std::fs::read(fixtures.join("rsa-public.pem")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("test-rsa".into());
    let confused = jsonwebtoken::encode(
        &header,
        &json!({"iss": ISSUER, "sub": "mallory", "exp": now() + 600}),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_eq!(init_with(&gw.mcp(), Some(&confused)).await.status, 401);
}

#[test]
fn open_access_off_loopback_is_refused() {
    let dir = crate::harness::TempDir::new();
    let config = dir.0.join("tether.toml");
    let store = format!("[store]\nurl = \"sqlite://{}/s.db\"\n", dir.0.display());
    std::fs::write(&config, &store).unwrap();
    let out = std::process::Command::new(binary())
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
}

#[tokio::test]
async fn hostile_input_gets_clear_answers_and_others_keep_being_served() {
    use std::io::{Read, Write};
    let up = demo("legacy");
    let gw = tether_env(
        &format!(
            "[server]\nmax_body_bytes = 65536\nbody_timeout_secs = 1\nmax_inflight_per_session = 2\n[[upstreams]]\nname = \"demo\"\nurl = \"{}\"\n",
            up.mcp()
        ),
        &[],
    );
    let c = Legacy::connect(&gw.mcp()).await;
    let raw_post = |body: String| {
        let req = http()
            .post(gw.mcp())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", c.session.clone().unwrap())
            .body(body);
        req.send()
    };
    // Nesting far past any sane depth.
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = raw_post(deep).await.unwrap();
    assert_eq!(r.status(), 400);
    // Batches (removed from the protocol in 2025-06-18).
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string();
    let r = raw_post(batch).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("batches"));
    // Too large a body, too large headers.
    let r = raw_post("x".repeat(70_000)).await.unwrap();
    assert_eq!(r.status(), 413);
    // A connection of its own: the one the 413 answered is closed by the server.
    let fresh = http_unpooled();
    let r = fresh
        .post(gw.mcp())
        .header("x-filler", "y".repeat(20_000))
        .header("content-type", "application/json")
        // No body left unread when the answer comes (that could reset the connection).
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // A client that stops sending its body.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        tcp,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
    )
    .unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while !answer.contains("\r\n\r\n") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0);
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Requests in flight per session are capped.
    let slow = json!({"name": "demo__progress", "arguments": {"steps": 2, "delay_ms": 400}});
    let calls = (0..4).map(|_| c.request("tools/call", slow.clone()));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    // And the session, like everyone else, is still served.
    assert_eq!(
        text(&c.call("demo__echo", json!({"text": "fine"})).await),
        "fine"
    );
    let other = Legacy::connect(&gw.mcp()).await;
    assert_eq!(
        text(&other.call("demo__echo", json!({"text": "too"})).await),
        "too"
    );
}

#[tokio::test]
async fn a_flood_from_one_principal_does_not_stop_another() {
    let up = demo("legacy");
    let gw = tether_env(
        &format!(
            "[server]\nrate_limit_per_principal = 20\nrate_limit_burst = 20\n{}",
            jwt_config(&[("demo", up.mcp())], "")
        ),
        &[("TEST_JWT_SECRET", SECRET)],
    );
    let (flooder, calm) = (token("flooder", json!({})), token("calm", json!({})));
    let f = Legacy::connect_as(&gw.mcp(), json!({}), Some(&flooder)).await;
    let c = Legacy::connect_as(&gw.mcp(), json!({}), Some(&calm)).await;
    let flood = async {
        let mut limited = 0;
        let mut retry_after = None;
        for _ in 0..200 {
            let r = f
                .request(
                    "tools/call",
                    json!({"name": "demo__echo", "arguments": {"text": "x"}}),
                )
                .await;
            if r.status == 429 {
                limited += 1;
                retry_after = r
                    .headers
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
            }
        }
        (limited, retry_after)
    };
    let steady = async {
        let mut ok = 0;
        for i in 0..10 {
            let r = c
                .request(
                    "tools/call",
                    json!({"name": "demo__echo", "arguments": {"text": format!("c{i}")}}),
                )
                .await;
            if r.status == 200 && r.last().get("result").is_some() {
                ok += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
        ok
    };
    let ((limited, retry_after), ok) = tokio::join!(flood, steady);
    assert!(
        limited > 100,
        "only {limited} of 200 flood requests were limited"
    );
    assert!(retry_after.is_some(), "429 without Retry-After");
    assert_eq!(ok, 10, "the other principal's calls were disturbed");
}

#[tokio::test]
async fn upstream_credentials_come_from_the_environment_or_the_client() {
    let guarded = crate::harness::spawn_demo(&["--era", "legacy", "--bearer", "upstream-secret"]);
    let gw = tether_env(
        &format!(
            "[[upstreams]]\nname = \"envd\"\nurl = \"{0}\"\nheaders_env = {{ Authorization = \"UPSTREAM_AUTH\" }}\n\
             [[upstreams]]\nname = \"passed\"\nurl = \"{0}\"\nera = \"legacy\"\nforward_client_token = true\n",
            guarded.mcp()
        ),
        &[
            ("UPSTREAM_AUTH", "Bearer upstream-secret"),
            ("TETHER_LOG", "debug"),
        ],
    );
    let plain = Legacy::connect(&gw.mcp()).await;
    assert_eq!(
        text(&plain.call("envd__echo", json!({"text": "env"})).await),
        "env"
    );
    // Without a token of its own, the client gets nothing through the forwarding upstream.
    let refused = plain
        .request(
            "tools/call",
            json!({"name": "passed__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert!(
        refused.last().get("error").is_some(),
        "{:?}",
        refused.messages
    );
    let holder = Legacy::connect_as(&gw.mcp(), json!({}), Some("upstream-secret")).await;
    assert_eq!(
        text(&holder.call("passed__echo", json!({"text": "mine"})).await),
        "mine"
    );
    assert!(
        !gw.log().contains("upstream-secret"),
        "a credential was logged"
    );
}

#[tokio::test]
async fn a_private_result_is_cached_for_its_principal_only() {
    let up =
        crate::harness::spawn_demo(&["--era", "modern", "--ttl-ms", "60000", "--private-cache"]);
    let gw = tether_env(
        &jwt_config(&[("demo", up.mcp())], ""),
        &[("TEST_JWT_SECRET", SECRET)],
    );
    let url = gw.mcp().replace("/mcp", "/u/demo/mcp");
    let list = |bearer: String| {
        let url = url.clone();
        async move {
            let auth = format!("Bearer {bearer}");
            let reply = crate::harness::modern_with(
                &url,
                "tools/list",
                json!({}),
                &[("authorization", &auth)],
            )
            .await;
            assert_eq!(reply.status, 200, "{:?}", reply.messages);
            reply.last()["result"]["cacheScope"].clone()
        }
    };
    let asked = || async { up.stats().await["cacheable_requests"].as_u64().unwrap() };
    assert_eq!(list(token("ann", json!({}))).await, "private");
    list(token("ann", json!({}))).await;
    assert_eq!(asked().await, 1, "ann's second list came from the cache");
    list(token("bob", json!({}))).await;
    assert_eq!(asked().await, 2, "bob never gets ann's private list");
    list(token("bob", json!({}))).await;
    assert_eq!(asked().await, 2, "bob's own is cached for him");
}
