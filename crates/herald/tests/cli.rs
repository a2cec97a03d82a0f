//! The `herald` binary itself: first start, accounts and keys made while a server runs, the config
//! file, TLS, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `herald serve` process, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str], envs: &[(&str, &str)], scheme: &str) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("HERALD_DATABASE_URL")
            .env("HERALD_LISTEN", &listen)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("herald starts");
        Self {
            child,
            base: format!("{scheme}://{listen}"),
        }
    }

    /// Everything the server printed to stderr (after it exited).
    fn stderr(&mut self) -> String {
        let mut out = String::new();
        if let Some(stderr) = self.child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                out.push_str(&line.unwrap_or_default());
                out.push('\n');
            }
        }
        out
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server at {base} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_json(args: &[&str], data_dir: &Path) -> Value {
    let output = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("HERALD_DATABASE_URL")
        .output()
        .expect("herald runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

async fn status_as(client: &reqwest::Client, base: &str, user: &str, password: &str) -> u16 {
    client
        .get(format!("{base}/v1/PushNotifications/Credentials"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn first_start_bootstraps_and_cli_accounts_work_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = Server::start(dir.path(), &[], &[], "http");
    wait_healthy(&client, &server.base).await;

    let bootstrap_path = dir.path().join("bootstrap-account.json");
    let mode = std::fs::metadata(&bootstrap_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "bootstrap file must be private");
    let key_mode = std::fs::metadata(dir.path().join("master.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "master key file must be private");
    let bootstrap: Value =
        serde_json::from_str(&std::fs::read_to_string(&bootstrap_path).unwrap()).unwrap();
    let sid = bootstrap["accountSid"].as_str().unwrap().to_owned();
    let token = bootstrap["authToken"].as_str().unwrap().to_owned();
    assert_eq!(status_as(&client, &server.base, &sid, &token).await, 200);
    assert_eq!(
        status_as(&client, &server.base, &sid, "0".repeat(32).as_str()).await,
        401
    );

    // Made by the CLI while the server runs; accepted at once.
    let account = run_json(&["accounts", "create", "--name", "second"], dir.path());
    let second_sid = account["accountSid"].as_str().unwrap();
    let second_token = account["authToken"].as_str().unwrap();
    assert_eq!(
        status_as(&client, &server.base, second_sid, second_token).await,
        200
    );
    let key = run_json(&["keys", "create", "--account", second_sid], dir.path());
    assert!(key["sid"].as_str().unwrap().starts_with("SK"));
    assert_eq!(
        status_as(
            &client,
            &server.base,
            key["sid"].as_str().unwrap(),
            key["secret"].as_str().unwrap()
        )
        .await,
        200
    );

    // A key for an account that does not exist is refused.
    let output = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--account",
            "AC00000000000000000000000000000000",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());

    // SIGTERM shuts down cleanly; the first start printed the token, once.
    assert!(server.terminate().success());
    let printed = server.stderr();
    assert!(
        printed.contains(&token),
        "the first start prints the bootstrap token"
    );

    // A restart on the same data neither bootstraps again nor prints a token.
    let mut again = Server::start(dir.path(), &[], &[], "http");
    wait_healthy(&client, &again.base).await;
    assert_eq!(status_as(&client, &again.base, &sid, &token).await, 200);
    assert!(again.terminate().success());
    assert!(!again.stderr().contains("HERALD_AUTH_TOKEN"));
}

#[tokio::test]
async fn config_file_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    // A self-signed certificate for 127.0.0.1.
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.path().join("tls-cert.pem");
    let key_path = dir.path().join("tls-key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    // The TLS files come from the config file; the listen address from the environment.
    let config_path = dir.path().join("herald.toml");
    std::fs::write(
        &config_path,
        format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\nrate_limit_burst = 100.0\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    )
    .unwrap();
    let config_arg = config_path.display().to_string();
    let mut server = Server::start(dir.path(), &["--config", &config_arg], &[], "https");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    wait_healthy(&client, &server.base).await;
    let bootstrap: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("bootstrap-account.json")).unwrap(),
    )
    .unwrap();
    let response = client
        .get(format!("{}/v1/PushNotifications/Credentials", server.base))
        .basic_auth(
            bootstrap["accountSid"].as_str().unwrap(),
            bootstrap["authToken"].as_str(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP to the TLS port does not get an answer.
    let plain = reqwest::Client::new()
        .get(server.base.replace("https", "http") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    drop(client);
    assert!(server.terminate().success());
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("herald.toml");
    std::fs::write(&config_path, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("lisen"),
        "names the unknown key"
    );

    let output = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--tls-cert-file", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("TLS needs both"));
}
