//! `herald import devices` in the real binary, on SQLite and PostgreSQL, checked through the API
//! of a running `herald serve` over the same database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_store::testing::TestDatabase;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

struct Server {
    child: Child,
    base: String,
    data_dir: PathBuf,
    database_url: Option<String>,
    http: reqwest::Client,
    auth: (String, String),
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(dir: &Path, db: &TestDatabase) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let database_url = (db.name != "sqlite").then(|| db.url.clone());
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_MASTER_KEY")
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(url) = &database_url {
            command.env("HERALD_DATABASE_URL", url);
        }
        let child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "herald serve never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let account: Value = serde_json::from_slice(
            &std::fs::read(data_dir.join("bootstrap-account.json")).unwrap(),
        )
        .unwrap();
        let auth = (
            account["accountSid"].as_str().unwrap().to_owned(),
            account["authToken"].as_str().unwrap().to_owned(),
        );
        Server {
            child,
            base,
            data_dir,
            database_url,
            http,
            auth,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.auth.0, Some(&self.auth.1));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// App `shop` (made with its first credential).
    async fn make_app(&self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/credentials");
        let content: Value =
            serde_json::from_slice(&std::fs::read(root.join("apn-token-content.json")).unwrap())
                .unwrap();
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/PushNotifications/Credentials",
                Some(json!({"credentialType": "APN", "appName": "shop", "content": content})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    /// `herald import devices --app APP FILE` against this server's database.
    fn import(&self, app: &str, file: &Path, extra: &[&str]) -> (Option<i32>, Value, String) {
        let mut command = Command::new(BIN);
        command
            .args(["import", "devices", "--app", app, "--data-dir"])
            .arg(&self.data_dir)
            .args(extra)
            .arg(file)
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_MASTER_KEY");
        if let Some(url) = &self.database_url {
            command.env("HERALD_DATABASE_URL", url);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().unwrap();
        let stdout = String::from_utf8(stdout).unwrap();
        let stderr = String::from_utf8(stderr).unwrap();
        let summary = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (status.code(), summary, stderr)
    }

    /// Every user and, per user, their registration in `shop` (token, provider, status).
    async fn registrations(&self) -> Vec<(String, Vec<(String, String, String)>)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(t) => format!("/v1/PushNotifications/Users?pageSize=1000&pageToken={t}"),
                None => "/v1/PushNotifications/Users?pageSize=1000".into(),
            };
            let (status, page) = self.call(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            for user in page["users"].as_array().unwrap() {
                let id = user["id"].as_str().unwrap().to_owned();
                let (status, regs) = self
                    .call(
                        reqwest::Method::GET,
                        &format!(
                            "/v1/PushNotifications/DeviceRegistrations?userId={id}&appName=shop"
                        ),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{regs}");
                let mut devices: Vec<(String, String, String)> = regs["deviceRegistrations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r["devices"].as_array().unwrap().clone())
                    .map(|d| {
                        (
                            d["token"].as_str().unwrap().to_owned(),
                            d["provider"].as_str().unwrap().to_owned(),
                            d["status"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                devices.sort();
                out.push((id, devices));
            }
            match page["pagination"]["next"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        out.sort();
        out
    }
}

/// A user made through the API (by registering one device), for lines that name a userId.
async fn user_with_device(server: &Server, token: &str) -> String {
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/v1/PushNotifications/DeviceRegistrations",
            Some(json!({"appName": "shop", "token": token, "provider": "FCM"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["resourceId"].as_str().unwrap();
    let (status, reg) = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/PushNotifications/DeviceRegistrations/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reg}");
    reg["userId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn import_registers_valid_lines_reports_rejected_ones_and_is_idempotent() {
    for db in TestDatabase::all().await {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &db).await;
        server.make_app().await;
        let ada = user_with_device(&server, "ada-phone").await;

        // 1,200 good CSV lines without user (more than one batch), 2 for an existing user, and bad
        // ones of every kind.
        let mut csv = String::from("userId,token,provider\n");
        for i in 0..1200 {
            let provider = if i % 2 == 0 { "APN" } else { "FCM" };
            csv.push_str(&format!(",tok-{i:05},{provider}\n"));
        }
        csv.push_str(&format!("{ada},ada-tablet,APN\n")); // line 1202
        csv.push_str(&format!("{ada},\"ada,laptop\",FCM\n")); // 1203: quoted comma in a token
        csv.push_str(",tok-bad-provider,GCM\n"); // 1204
        csv.push_str(",,APN\n"); // 1205
        csv.push_str("not-a-user,tok-x,APN\n"); // 1206
        csv.push_str(",has space,FCM\n"); // 1207
        csv.push_str(",tok-00001,FCM\n"); // 1208: duplicate of line 3
        csv.push_str(",too,many,columns\n"); // 1209
        csv.push_str("comms_pushnotificationuser_01h455vb4pex5vsknk084sn02q,tok-ghost,APN\n"); // 1210
        csv.push_str(",\"unterminated,APN\n"); // 1211
        let file = dir.path().join("devices.csv");
        std::fs::write(&file, &csv).unwrap();

        let (code, summary, stderr) = server.import("shop", &file, &["--batch-size", "100"]);
        assert_eq!(
            code,
            Some(2),
            "some lines were rejected: {summary} {stderr}"
        );
        assert_eq!(summary["lines"], 1210, "{summary}");
        assert_eq!(summary["newUsers"], 1200, "{summary}");
        assert_eq!(summary["added"], 2, "{summary}");
        assert_eq!(summary["rejectedCount"], 8, "{summary}");
        let rejected: Vec<(i64, String)> = summary["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["line"].as_i64().unwrap(),
                    r["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let reason = |line: i64| {
            rejected
                .iter()
                .find(|(l, _)| *l == line)
                .unwrap_or_else(|| panic!("line {line} not rejected: {rejected:?}"))
                .1
                .clone()
        };
        assert!(reason(1204).starts_with("provider:"), "{}", reason(1204));
        assert!(reason(1205).starts_with("token:"), "{}", reason(1205));
        assert!(reason(1206).starts_with("userId:"), "{}", reason(1206));
        assert!(reason(1207).starts_with("token:"), "{}", reason(1207));
        assert!(reason(1208).contains("line 3"), "{}", reason(1208));
        assert!(reason(1209).contains("columns"), "{}", reason(1209));
        assert!(reason(1210).starts_with("userId:"), "{}", reason(1210));
        assert!(reason(1211).contains("CSV"), "{}", reason(1211));
        assert!(stderr.contains(":1204: rejected: provider:"), "{stderr}");

        let after_first = server.registrations().await;
        assert_eq!(after_first.len(), 1201, "1,200 new users and Ada");
        let ada_devices = &after_first.iter().find(|(id, _)| *id == ada).unwrap().1;
        let ada_tokens: Vec<&str> = ada_devices.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(ada_tokens, ["ada,laptop", "ada-phone", "ada-tablet"]);
        assert!(!after_first.iter().any(|(_, d)| {
            d.iter()
                .any(|x| x.0 == "tok-x" || x.0 == "tok-ghost" || x.0 == "tok-bad-provider")
        }));
        let tok1 = after_first
            .iter()
            .find(|(_, d)| d.iter().any(|x| x.0 == "tok-00001"))
            .unwrap();
        assert_eq!(
            tok1.1,
            [(
                "tok-00001".to_owned(),
                "FCM".to_owned(),
                "ACTIVE".to_owned()
            )]
        );

        // Again: nothing changes.
        let (code, summary, _) = server.import("shop", &file, &[]);
        assert_eq!(code, Some(2));
        assert_eq!(summary["registered"], 0, "{summary}");
        assert_eq!(summary["unchanged"], 1202, "{summary}");
        assert_eq!(summary["rejectedCount"], 8, "{summary}");
        assert_eq!(
            server.registrations().await,
            after_first,
            "a second run changed registrations"
        );

        // JSON lines: moves a device to Ada, adds one, rejects bad lines; exit 0 only when clean.
        let jsonl = dir.path().join("devices.jsonl");
        std::fs::write(
            &jsonl,
            format!(
                "{}\n\n{}\n{}\n",
                json!({"userId": ada, "token": "tok-00002", "provider": "APN"}),
                json!({"token": "tok-json", "provider": "FCM", "userId": null}),
                json!({"token": "tok-json-2", "provider": "FCM"})
            ),
        )
        .unwrap();
        let (code, summary, stderr) = server.import("shop", &jsonl, &["--concurrency", "1"]);
        assert_eq!(code, Some(0), "{summary} {stderr}");
        assert_eq!(summary["moved"], 1, "{summary}");
        assert_eq!(summary["newUsers"], 2, "{summary}");
        let regs = server.registrations().await;
        let ada_devices = &regs.iter().find(|(id, _)| *id == ada).unwrap().1;
        assert!(
            ada_devices.iter().any(|d| d.0 == "tok-00002"),
            "{ada_devices:?}"
        );
        assert_eq!(
            regs.len(),
            1203,
            "the moved device's old user stays (without registration)"
        );

        let bad_json = dir.path().join("bad.jsonl");
        std::fs::write(
            &bad_json,
            "{\"token\": \"t1\", \"provider\": \"APN\", \"extra\": 1}\n{\"token\": 5, \"provider\": \"APN\"}\n[1]\n{broken\n",
        )
        .unwrap();
        let (code, summary, _) = server.import("shop", &bad_json, &[]);
        assert_eq!(code, Some(2));
        let reasons: Vec<&str> = summary["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons.len(), 4, "{summary}");
        assert!(reasons[0].contains("extra"), "{reasons:?}");
        assert!(
            reasons[1].starts_with("token: must be a string"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("not a JSON object"), "{reasons:?}");
        assert!(reasons[3].contains("not valid JSON"), "{reasons:?}");
        assert_eq!(
            server.registrations().await,
            regs,
            "rejected lines stored nothing"
        );

        // An unknown app or a bad app name stops before anything is read into the store.
        let (code, _, stderr) = server.import("nope", &file, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("no app nope"), "{stderr}");
        let (code, _, stderr) = server.import("Bad-Name", &file, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("--app"), "{stderr}");
        assert_eq!(server.registrations().await, regs);
        drop(server);
        drop(db);
    }
}
