//! The kubeconfig page in real headless Chromium: sign in, see yourself as each cluster will,
//! read the commands, download the kubeconfig.

use crate::common;

use base64::Engine;
use common::browser::Browser;
use common::server::*;
use fantoccini::Locator;

fn cluster_ca() -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["kubernetes".to_string()]).unwrap();
    cert.cert.pem()
}

fn kube_yaml(ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        r#"kubernetes:
  clusters:
  - name: dev
    displayName: Development
    server: https://dev.k8s.example.com:6443
    certificateAuthorityData: {ca}
    clientID: {PUBLIC_CLIENT}
    namespace: apps
  - name: prod
    server: https://prod.k8s.example.com:6443
    certificateAuthorityData: {ca}
    clientID: {WEB_CLIENT}
  rbac:
  - group: devs
    clusterRole: edit
    namespace: apps
  - group: ops
    clusterRole: cluster-admin
  - group: finance
    clusterRole: view
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_reads_the_commands_and_downloads_a_kubeconfig() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let ca_pem = cluster_ca();
    let s = TestServer::start(Backend::Sqlite, &kube_yaml(&ca_pem))
        .await
        .unwrap();
    let c = &browser.client;

    // `/` leads to the page, which sends an unknown browser to sign in first.
    c.goto(&s.url("/")).await.unwrap();
    c.wait()
        .for_element(Locator::Id("login"))
        .await
        .unwrap()
        .send_keys("alice@example.com")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(ALICE_PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("submit-login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let who = c.wait().for_element(Locator::Id("who")).await.unwrap();
    assert_eq!(who.text().await.unwrap(), "alice@example.com");

    // As each cluster sees alice: prefixed username and groups, and the bindings that apply.
    let dev = c.find(Locator::Id("cluster-dev")).await.unwrap();
    let text = dev.text().await.unwrap();
    assert!(text.contains("oidc:alice@example.com"), "{text}");
    assert!(
        text.contains("oidc:devs") && text.contains("oidc:ops"),
        "{text}"
    );
    assert!(text.contains("edit in namespace apps"), "{text}");
    assert!(text.contains("cluster-admin (cluster-wide)"), "{text}");
    assert!(
        !text.contains("view"),
        "bindings of groups alice is not in are not shown: {text}"
    );

    // The commands: CA embedded, never insecure, interactive mode on the exec plugin, and
    // PowerShell variants.
    let posix = c
        .find(Locator::Id("cmd-dev-lanyard-posix"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(posix.contains("--embed-certs=true"), "{posix}");
    assert!(
        posix.contains("lanyard") && posix.contains("--exec-interactive-mode=IfAvailable"),
        "{posix}"
    );
    let ps = c
        .find(Locator::Id("cmd-dev-lanyard-powershell"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ps.contains("kubectl config set-cluster"), "{ps}");
    let kubelogin = c
        .find(Locator::Id("cmd-prod-kubelogin-posix"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        kubelogin.contains("oidc-login") && kubelogin.contains("offline_access"),
        "{kubelogin}"
    );
    let page = c.source().await.unwrap();
    assert!(!page.contains("insecure-skip-tls-verify"));
    assert!(
        !page.contains(WEB_SECRET),
        "no client secret unless the operator allows it"
    );
    // The legacy auth provider gets real tokens on request.
    let legacy = c
        .find(Locator::Id("cmd-dev-oidc_auth_provider-posix"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(legacy.contains("<ID_TOKEN>"), "{legacy}");
    c.find(Locator::Id("tokens-dev"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form posts and the page reloads: until it has, the old element may be found or go
    // stale under us, so poll for the new text.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let legacy = loop {
        let text = match c
            .find(Locator::Id("cmd-dev-oidc_auth_provider-posix"))
            .await
        {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("id-token=") && !text.contains("<ID_TOKEN>") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tokens never appeared: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        !legacy.contains("<ID_TOKEN>") && !legacy.contains("<REFRESH_TOKEN>"),
        "{legacy}"
    );
    let id_token = legacy
        .split("id-token=")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ', '\'', '"', '\n']).next())
        .expect("an id-token argument")
        .to_string();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["aud"], PUBLIC_CLIENT,
        "addressed to the dev cluster's client"
    );
    assert_eq!(claims["email"], "alice@example.com");
    // With JavaScript the copy buttons appear.
    let copy = c.find(Locator::Css("button.copy")).await.unwrap();
    assert!(copy.is_displayed().await.unwrap());

    // Download with the browser's session.
    let cookies = c.get_all_cookies().await.unwrap();
    let cookie_header: String = cookies
        .iter()
        .map(|k| format!("{}={}", k.name(), k.value()))
        .collect::<Vec<_>>()
        .join("; ");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(s.url("/kubeconfig/download"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let text = r.text().await.unwrap();
    let kubeconfig: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let clusters = kubeconfig["clusters"].as_sequence().unwrap();
    assert_eq!(clusters.len(), 2);
    let dev = clusters.iter().find(|c| c["name"] == "dev").unwrap();
    assert_eq!(dev["cluster"]["server"], "https://dev.k8s.example.com:6443");
    let embedded = base64::engine::general_purpose::STANDARD
        .decode(
            dev["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(embedded).unwrap().trim(), ca_pem.trim());
    assert!(dev["cluster"].get("insecure-skip-tls-verify").is_none());
    let contexts = kubeconfig["contexts"].as_sequence().unwrap();
    let dev_ctx = contexts.iter().find(|c| c["name"] == "dev").unwrap();
    assert_eq!(dev_ctx["context"]["namespace"], "apps");
    let users = kubeconfig["users"].as_sequence().unwrap();
    let exec = &users[0]["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(exec["command"], "lanyard");
    assert_eq!(exec["interactiveMode"], "IfAvailable");
    let args: Vec<&str> = exec["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.contains(&"login") && args.contains(&s.issuer.as_str()),
        "{args:?}"
    );
    assert!(!text.contains(WEB_SECRET));
    // One cluster alone.
    let r = http
        .get(s.url("/kubeconfig/download?cluster=prod"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    let one: serde_yaml_ng::Value = serde_yaml_ng::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(one["clusters"].as_sequence().unwrap().len(), 1);

    // Without the session there is nothing to download: off to sign in.
    let r = http
        .get(s.url("/kubeconfig/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"].to_str().unwrap().contains("/auth?"));

    // kubectl itself reads the file, where kubectl is installed.
    if std::path::Path::new("/usr/bin/kubectl").exists() || which("kubectl") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubeconfig");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("kubectl")
            .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names = String::from_utf8_lossy(&out.stdout);
        assert!(names.contains("dev") && names.contains("prod"), "{names}");
    }
    browser.close().await;
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_without_javascript() {
    let ca_pem = cluster_ca();
    let s = TestServer::start(Backend::Sqlite, &kube_yaml(&ca_pem))
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    // Plain HTTP client, no JavaScript: the redirect chain and the page itself work.
    let r = sign_in_through_the_page(&s, &browser).await;
    assert_eq!(r.status(), 303, "no approval page for lanyard's own page");
    let page = browser.get(s.absolute(&location(&r))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<pre id=\"cmd-dev-lanyard-posix\""),
        "commands are plain text"
    );
    assert!(
        html.contains("hidden>Copy</button>"),
        "copy buttons stay hidden without JavaScript"
    );
    assert!(html.contains("<label") || html.contains("aria-labelledby"));
}

/// With `kubernetes.issuerCertificateAuthorityData`, every way the page offers to log in, and
/// the kubeconfig it hands out, trusts the issuer's private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_download_carry_the_issuers_private_ca() {
    let ca_pem = cluster_ca();
    let issuer_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .unwrap()
        .cert
        .pem();
    let data = base64::engine::general_purpose::STANDARD.encode(&issuer_ca);
    let yaml = kube_yaml(&ca_pem).replace(
        "kubernetes:\n",
        &format!("kubernetes:\n  issuerCertificateAuthorityData: {data}\n"),
    );
    let s = TestServer::start(Backend::Sqlite, &yaml).await.unwrap();
    let browser = TestServer::new_browser();
    let r = sign_in_through_the_page(&s, &browser).await;
    let html = s.page_html(&browser, &s.absolute(&location(&r))).await;
    for (method, setting) in [
        (
            "lanyard",
            "--exec-arg=--certificate-authority-data \\\n  --exec-arg=".to_string(),
        ),
        (
            "kubelogin",
            "--exec-arg=--certificate-authority-data=".to_string(),
        ),
        (
            "oidc_auth_provider",
            "--auth-provider-arg=idp-certificate-authority-data=".to_string(),
        ),
    ] {
        let start = html
            .find(&format!("<pre id=\"cmd-dev-{method}-posix\""))
            .unwrap_or_else(|| panic!("{method} commands"));
        let block = &html[start..][..html[start..].find("</pre>").unwrap()];
        assert!(
            block.contains(&format!("{setting}{data}")),
            "{method}: {block}"
        );
    }

    let kubeconfig = browser
        .get(s.url("/kubeconfig/download?cluster=dev"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    let args: Vec<&str> = doc["users"][0]["user"]["exec"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[5..7], ["--certificate-authority-data", data.as_str()]);
}

/// A browser without JavaScript opens /kubeconfig, is sent to /auth and signs alice in;
/// returns the answer to the login form.
async fn sign_in_through_the_page(s: &TestServer, browser: &reqwest::Client) -> reqwest::Response {
    let r = browser.get(s.url("/kubeconfig")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = browser.get(location(&r)).send().await.unwrap();
    s.sign_in_from(browser, &r).await
}
