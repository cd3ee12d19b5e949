//! `frontend.dir` pointing at a Dex `web/` directory (a copy of Dex v2.45.1's, in
//! tests/it/fixtures/dex/web): lanyard serves the theme's and `static/` files at Dex's paths,
//! puts the theme's logo, favicon and styles on its pages, never executes Dex's Go templates,
//! keeps its own template overrides, and serves nothing outside the directory.

use crate::common;

use std::path::{Path, PathBuf};

use common::process::{terminate, wait_ready, Log, Running, BIN};
use common::server::{free_port, location, AuthRequest, Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/dex/web")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn start(dir: &Path, theme: Option<&str>) -> TestServer {
    let theme = theme.map(|t| format!("  theme: {t}\n")).unwrap_or_default();
    TestServer::builder(Backend::Sqlite)
        .issuer_path("/dex")
        .config(&format!("frontend:\n  dir: {}\n{theme}", dir.display()))
        .start()
        .await
        .unwrap()
}

async fn get(server: &TestServer, path: &str) -> (u16, String, Vec<u8>) {
    let resp = reqwest::get(server.url(path)).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, resp.bytes().await.unwrap().to_vec())
}

/// The HTML of the login page a fresh authorization request leads to.
async fn login_page(server: &TestServer) -> String {
    let resp = server
        .browser
        .get(server.url("/auth"))
        .query(&AuthRequest::public().query())
        .send()
        .await
        .unwrap();
    let page = server.site.absolute(&location(&resp));
    let html = server
        .browser
        .get(page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // minijinja escapes `/` in attributes.
    html.replace("&#x2f;", "/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dex_web_directory_serves_its_theme_at_dexs_paths_and_styles_lanyards_pages() {
    let web = fixture();
    let server = start(&web, None).await;

    for (path, file, content_type) in [
        ("/theme/logo.png", "themes/light/logo.png", "image/png"),
        (
            "/theme/favicon.png",
            "themes/light/favicon.png",
            "image/png",
        ),
        (
            "/theme/styles.css",
            "themes/light/styles.css",
            "text/css; charset=utf-8",
        ),
        (
            "/static/main.css",
            "static/main.css",
            "text/css; charset=utf-8",
        ),
    ] {
        let (status, ct, body) = get(&server, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(ct, content_type, "{path}");
        assert_eq!(body, std::fs::read(web.join(file)).unwrap(), "{path}");
    }
    // lanyard's own stylesheet keeps its path.
    let (status, _, body) = get(&server, "/static/style.css").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().contains("--accent"));
    assert_eq!(get(&server, "/theme/missing.png").await.0, 404);

    let html = login_page(&server).await;
    for link in [
        "href=\"/dex/theme/styles.css\"",
        "href=\"/dex/theme/favicon.png\"",
        "src=\"/dex/theme/logo.png\"",
        "href=\"/dex/static/main.css\"",
        "href=\"/dex/static/style.css\"",
    ] {
        assert!(html.contains(link), "{link} missing:\n{html}");
    }
    // Dex's Go templates are not executed.
    assert!(!html.contains("{{"), "{html}");
    assert!(!html.contains("dex-container"), "{html}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_theme_picks_the_theme_directory_and_a_missing_one_stops_the_start() {
    let web = fixture();
    let server = start(&web, Some("dark")).await;
    let (status, _, body) = get(&server, "/theme/styles.css").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        std::fs::read(web.join("themes/dark/styles.css")).unwrap()
    );
    // The dark fixture has no logo: no logo link rather than a broken one.
    let html = login_page(&server).await;
    assert!(!html.contains("theme/logo.png"), "{html}");
    assert!(html.contains("data-theme=\"dark\""), "{html}");
    server.stop().await;

    let yaml = format!(
        "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nenablePasswordDB: true\nfrontend:\n  dir: {}\n  theme: purple\n",
        web.display()
    );
    let config = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = lanyard::server::app::BuildOptions::new(false);
    options.data_dir = dir.path().to_path_buf();
    let err = lanyard::server::app::build(&config, options)
        .await
        .err()
        .expect("no such theme")
        .to_string();
    assert!(err.contains("frontend.theme: `purple`"), "{err}");
    assert!(err.contains("themes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanyards_own_template_overrides_keep_their_place_beside_dexs_directories() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    std::fs::write(
        dir.path().join("login.html"),
        "{% extends \"base.html\" %}{% block content %}custom login form{% endblock %}",
    )
    .unwrap();
    let server = start(dir.path(), None).await;
    let html = login_page(&server).await;
    assert!(html.contains("custom login form"), "{html}");
    assert!(html.contains("/dex/theme/styles.css"), "{html}");
    server.stop().await;
}

/// A request line as sent, without a client normalising `..` away.
async fn raw_get(server: &TestServer, target: &str) -> String {
    let authority = server.issuer.trim_start_matches("http://");
    let host = authority.split('/').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_web_directory_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    copy_dir(&fixture(), &web);
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), web.join("static/leak.txt")).unwrap();
    let server = start(&web, None).await;
    assert_eq!(get(&server, "/static/main.css").await.0, 200);
    for target in [
        "/dex/theme/../../../secret.txt",
        "/dex/theme/..%2f..%2f..%2fsecret.txt",
        "/dex/theme/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/dex/static/../../secret.txt",
        "/dex/static/..%2F..%2Fsecret.txt",
        "/dex/static/%2Fetc%2Fpasswd",
        "/dex/static/..%5c..%5csecret.txt",
        "/dex/static/leak.txt",
        "/dex/theme/../templates/login.html",
        "/dex/static/../templates/login.html",
    ] {
        let answer = raw_get(&server, target).await;
        assert!(!answer.contains("TOP-SECRET"), "{target}: {answer}");
        assert!(!answer.contains("root:"), "{target}: {answer}");
        assert!(!answer.contains("{{ template"), "{target}: {answer}");
        assert!(!answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
    }
    server.stop().await;
}

/// The real binary says at start that Dex's templates are not executed, rather than taking
/// them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_dexs_templates_are_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: http://127.0.0.1:{port}/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:{port}\nlogger:\n  level: info\nenablePasswordDB: true\nfrontend:\n  dir: {}\n",
            fixture().display()
        ),
    )
    .unwrap();
    let mut child = Running(
        std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = Log::capture(&mut child);
    wait_ready(&format!("http://127.0.0.1:{port}/dex/healthz")).await;
    log.wait_for("templates/ are not executed", 1).await;
    terminate(&mut child);
}
