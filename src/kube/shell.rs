//! The commands the kubeconfig page shows: `kubectl config` calls that set a cluster up for
//! `lanyard login`, kubelogin, or kubectl's legacy `oidc` auth provider, as a POSIX shell
//! snippet and as a Windows PowerShell snippet.

use base64::Engine as _;
use serde::Serialize;

use super::kubeconfig::{kubeconfig_user_name, login_args, pem_data, EXEC_API_VERSION};
use crate::config::KubeCluster;

/// One way to log in, for both shells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShellSnippets {
    /// sh, bash, zsh: `\` continues a line.
    pub posix: String,
    /// PowerShell: a backtick continues a line.
    pub powershell: String,
}

/// The ways to set up kubectl for a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginCommands {
    /// `lanyard login` as kubectl's exec credential plugin.
    pub lanyard: ShellSnippets,
    /// kubelogin (`kubectl oidc-login get-token`) as the exec credential plugin.
    pub kubelogin: ShellSnippets,
    /// kubectl's legacy built-in `oidc` auth provider, with an ID token and refresh token
    /// pasted in for `<ID_TOKEN>` and `<REFRESH_TOKEN>`.
    pub oidc_auth_provider: ShellSnippets,
}

/// `s` as one POSIX shell word: bare when it has only characters no shell treats specially,
/// else in single quotes (inside which nothing is special; a `'` is written `'\''`).
pub fn posix_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` as one PowerShell argument: bare only when nothing in it can be read as an operator,
/// a variable, a number or a parameter name; else a single-quoted string, in which the only
/// special characters are the single quotes (PowerShell also takes the typographic ones
/// U+2018..U+201B as quotes) and each is escaped by doubling.
pub fn powershell_quote(s: &str) -> String {
    // `-foo.bar` is split at the dot by PowerShell's parameter tokenizer, so dashed words
    // stay bare only when they are plain flag names (with an optional simple value).
    let safe = match s.as_bytes().first() {
        Some(b'-') => s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'='),
        Some(first) if first.is_ascii_alphabetic() => s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=-".contains(&b)),
        _ => false,
    };
    if safe {
        return s.to_string();
    }
    let mut out = String::from("'");
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// kubectl reads `--exec-arg` and `--auth-provider-arg` as comma-separated lists (CSV), so a
/// value with a comma or a double quote is CSV-quoted to stay one element.
fn slice_flag(flag: &str, value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("{flag}=\"{}\"", value.replace('"', "\"\""))
    } else {
        format!("{flag}={value}")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shell {
    Posix,
    PowerShell,
}

impl Shell {
    fn quote(self, s: &str) -> String {
        match self {
            Shell::Posix => posix_quote(s),
            Shell::PowerShell => powershell_quote(s),
        }
    }

    fn continuation(self) -> &'static str {
        match self {
            Shell::Posix => " \\",
            Shell::PowerShell => " `",
        }
    }
}

/// One `kubectl` call: words on the first line, then one flag per continued line.
struct Command {
    head: Vec<String>,
    flags: Vec<String>,
}

fn kubectl(words: &[&str], flags: Vec<String>) -> Command {
    let mut head = vec!["kubectl".to_string()];
    head.extend(words.iter().map(|w| w.to_string()));
    Command { head, flags }
}

struct Snippet {
    comment: String,
    ca_file: String,
    ca_pem: String,
    commands: Vec<Command>,
}

impl Snippet {
    fn render(&self, shell: Shell) -> String {
        let mut out = String::new();
        let mut words = self
            .commands
            .iter()
            .flat_map(|c| c.head.iter().chain(c.flags.iter()));
        if shell == Shell::PowerShell && words.any(|w| w.contains('"')) {
            // Windows PowerShell 5.1 drops double quotes inside arguments to programs.
            out.push_str("# Needs PowerShell 7.3 or later: an argument contains a double quote.\n");
        }
        for line in self.comment.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        match shell {
            Shell::Posix => {
                // A quoted here-document delimiter: the PEM is written byte for byte.
                out.push_str(&format!(
                    "cat > {} <<'LANYARD_CA'\n{}LANYARD_CA\n",
                    posix_quote(&self.ca_file),
                    self.ca_pem
                ));
            }
            Shell::PowerShell => {
                // .NET resolves relative paths against the process directory, not the
                // PowerShell location; kubectl (a child process) gets the location.
                let b64 = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
                out.push_str(&format!(
                    "[IO.File]::WriteAllBytes([IO.Path]::Combine($PWD.ProviderPath, {}), [Convert]::FromBase64String('{b64}'))\n",
                    powershell_quote_always(&self.ca_file)
                ));
            }
        }
        for command in &self.commands {
            let head: Vec<String> = command.head.iter().map(|w| shell.quote(w)).collect();
            out.push_str(&head.join(" "));
            for flag in &command.flags {
                out.push_str(shell.continuation());
                out.push_str("\n  ");
                out.push_str(&shell.quote(flag));
            }
            out.push('\n');
        }
        out
    }

    fn snippets(&self) -> ShellSnippets {
        ShellSnippets {
            posix: self.render(Shell::Posix),
            powershell: self.render(Shell::PowerShell),
        }
    }
}

/// A PowerShell string literal even when a bare word would do (for .NET method arguments).
fn powershell_quote_always(s: &str) -> String {
    let quoted = powershell_quote(s);
    if quoted.starts_with('\'') {
        quoted
    } else {
        format!("'{quoted}'")
    }
}

/// Shell commands that set up kubectl for `cluster`, three ways (see [`LoginCommands`]).
/// Each writes the cluster's CA to `lanyard-<name>-ca.pem` and embeds it with
/// `kubectl config set-cluster --certificate-authority=… --embed-certs=true` (never
/// `--insecure-skip-tls-verify`), sets a user (`lanyard-<name>`, `kubelogin-<name>`,
/// `oidc-<name>`), a context (`contextName`, default namespace) and switches to it.
/// `secret` goes into the commands only when the cluster has `clientSecretForUsers`.
/// `issuer_ca_pem`, the CA of the issuer's TLS certificate when it is private, goes inline
/// into each way's own setting for it.
pub fn login_commands(
    issuer: &str,
    issuer_ca_pem: Option<&str>,
    cluster: &KubeCluster,
    secret: Option<&str>,
) -> LoginCommands {
    let secret = secret.filter(|_| cluster.client_secret_for_users);
    let ca_file = format!("lanyard-{}-ca.pem", cluster.name);
    let set_cluster = || {
        kubectl(
            &["config", "set-cluster", &cluster.name],
            vec![
                format!("--server={}", cluster.server),
                format!("--certificate-authority={ca_file}"),
                "--embed-certs=true".to_string(),
            ],
        )
    };
    let context = |user: &str| {
        [
            kubectl(
                &["config", "set-context", &cluster.context_name],
                vec![
                    format!("--cluster={}", cluster.name),
                    format!("--user={user}"),
                    format!("--namespace={}", cluster.namespace),
                ],
            ),
            kubectl(&["config", "use-context", &cluster.context_name], vec![]),
        ]
    };
    let exec_flags = |command: &str, args: Vec<String>| {
        let mut flags = vec![
            format!("--exec-api-version={EXEC_API_VERSION}"),
            format!("--exec-command={command}"),
        ];
        flags.extend(args.iter().map(|a| slice_flag("--exec-arg", a)));
        flags.push("--exec-interactive-mode=IfAvailable".to_string());
        flags.push("--exec-provide-cluster-info=false".to_string());
        flags
    };
    let snippet = |comment: String, user: String, credentials: Vec<String>| {
        let mut commands = vec![
            set_cluster(),
            kubectl(&["config", "set-credentials", &user], credentials),
        ];
        commands.extend(context(&user));
        Snippet {
            comment,
            ca_file: ca_file.clone(),
            ca_pem: cluster.certificate_authority_pem.clone(),
            commands,
        }
        .snippets()
    };

    let lanyard = snippet(
        format!(
            "{}: log in with `lanyard login` (kubectl runs it; lanyard must be on your PATH).",
            cluster.display_name
        ),
        kubeconfig_user_name(cluster),
        exec_flags(
            "lanyard",
            login_args(issuer, issuer_ca_pem, cluster, secret),
        ),
    );

    let mut kubelogin_args = vec![
        "oidc-login".to_string(),
        "get-token".to_string(),
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={}", cluster.client_id),
    ];
    if let Some(pem) = issuer_ca_pem {
        kubelogin_args.push(format!("--certificate-authority-data={}", pem_data(pem)));
    }
    if let Some(secret) = secret {
        kubelogin_args.push(format!("--oidc-client-secret={secret}"));
    }
    for scope in ["email", "groups", "offline_access"] {
        kubelogin_args.push(format!("--oidc-extra-scope={scope}"));
    }
    let kubelogin = snippet(
        format!(
            "{}: log in with kubelogin (the kubectl oidc-login plugin must be installed).",
            cluster.display_name
        ),
        format!("kubelogin-{}", cluster.name),
        exec_flags("kubectl", kubelogin_args),
    );

    let mut provider_args = vec![
        format!("idp-issuer-url={issuer}"),
        format!("client-id={}", cluster.client_id),
    ];
    if let Some(pem) = issuer_ca_pem {
        provider_args.push(format!("idp-certificate-authority-data={}", pem_data(pem)));
    }
    if let Some(secret) = secret {
        provider_args.push(format!("client-secret={secret}"));
    }
    provider_args.push("id-token=<ID_TOKEN>".to_string());
    provider_args.push("refresh-token=<REFRESH_TOKEN>".to_string());
    let mut provider_flags = vec!["--auth-provider=oidc".to_string()];
    provider_flags.extend(
        provider_args
            .iter()
            .map(|a| slice_flag("--auth-provider-arg", a)),
    );
    let oidc_auth_provider = snippet(
        format!(
            "{}: kubectl's legacy oidc auth provider; replace <ID_TOKEN> and <REFRESH_TOKEN>\nwith your tokens (kubectl refreshes the ID token itself).",
            cluster.display_name
        ),
        format!("oidc-{}", cluster.name),
        provider_flags,
    );

    LoginCommands {
        lanyard,
        kubelogin,
        oidc_auth_provider,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command as Process;

    use super::*;
    use crate::kube::test_support::cluster;

    const ISSUER: &str = "https://login.example.com/dex";

    const TRICKY: &[&str] = &[
        "plain",
        "with space",
        "it's",
        "say \"hi\"",
        "$HOME and `date` and $(id)",
        "back\\slash",
        "semi;colon&amp|pipe>redirect<",
        "new\nline",
        "tab\there",
        "*glob?[x]",
        "~tilde",
        "#hash",
        "",
        "ünïcödé ‘curly’",
        "'",
        "a,b",
    ];

    /// Runs `sh -c 'printf "%s\0" WORD...'` and returns what the shell made of the words.
    fn through_sh(words: &[String]) -> Vec<String> {
        let script = format!("printf '%s\\0' {}", words.join(" "));
        let out = Process::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts: Vec<String> = text.split('\0').map(str::to_string).collect();
        parts.pop();
        parts
    }

    #[test]
    fn posix_quoting_survives_a_real_shell() {
        let quoted: Vec<String> = TRICKY.iter().map(|s| posix_quote(s)).collect();
        assert_eq!(through_sh(&quoted), TRICKY);
        assert_eq!(
            posix_quote("--server=https://k.example.com:6443"),
            "--server=https://k.example.com:6443"
        );
        assert_eq!(posix_quote("it's"), r"'it'\''s'");
        assert_eq!(posix_quote(""), "''");
    }

    #[test]
    fn powershell_quoting_doubles_every_kind_of_single_quote() {
        assert_eq!(powershell_quote("kubectl"), "kubectl");
        assert_eq!(powershell_quote("--embed-certs=true"), "--embed-certs=true");
        assert_eq!(
            powershell_quote("--server=https://k.example.com"),
            "'--server=https://k.example.com'"
        );
        assert_eq!(powershell_quote("with space"), "'with space'");
        assert_eq!(powershell_quote("it's"), "'it''s'");
        assert_eq!(powershell_quote("‘curly’"), "'‘‘curly’’'");
        assert_eq!(powershell_quote("$env:HOME `n"), "'$env:HOME `n'");
        assert_eq!(powershell_quote("1e5"), "'1e5'");
        assert_eq!(powershell_quote("@splat"), "'@splat'");
        assert_eq!(powershell_quote(""), "''");
    }

    /// A single-quoted PowerShell literal read back by PowerShell's rules.
    fn powershell_unquote(s: &str) -> String {
        let Some(inner) = s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) else {
            return s.to_string();
        };
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            let is_quote = matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
            if is_quote {
                let next = chars.next();
                assert!(
                    next.is_some_and(|n| matches!(
                        n,
                        '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}'
                    )),
                    "unescaped quote in {s}"
                );
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn powershell_quoting_round_trips() {
        for s in TRICKY {
            assert_eq!(powershell_unquote(&powershell_quote(s)), *s);
        }
    }

    #[test]
    fn slice_flags_csv_quote_commas_and_quotes() {
        assert_eq!(slice_flag("--exec-arg", "plain"), "--exec-arg=plain");
        assert_eq!(slice_flag("--exec-arg", "a,b"), "--exec-arg=\"a,b\"");
        assert_eq!(
            slice_flag("--exec-arg", "say \"hi\""),
            "--exec-arg=\"say \"\"hi\"\"\""
        );
    }

    #[test]
    fn every_snippet_embeds_the_ca_from_a_file_and_never_skips_verification() {
        let prod = cluster("prod", "kube");
        let commands = login_commands(ISSUER, None, &prod, None);
        for s in [
            &commands.lanyard,
            &commands.kubelogin,
            &commands.oidc_auth_provider,
        ] {
            for text in [&s.posix, &s.powershell] {
                assert!(text.contains("kubectl config set-cluster prod"), "{text}");
                assert!(
                    text.contains("--certificate-authority=lanyard-prod-ca.pem"),
                    "{text}"
                );
                assert!(text.contains("--embed-certs=true"), "{text}");
                assert!(!text.contains("insecure"), "{text}");
                assert!(text.contains("kubectl config use-context prod"), "{text}");
            }
            assert!(
                s.posix.contains(&prod.certificate_authority_pem),
                "{}",
                s.posix
            );
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(&prod.certificate_authority_pem);
            assert!(s.powershell.contains(&format!(
                "[IO.File]::WriteAllBytes([IO.Path]::Combine($PWD.ProviderPath, 'lanyard-prod-ca.pem'), [Convert]::FromBase64String('{b64}'))"
            )), "{}", s.powershell);
        }
        assert!(commands
            .lanyard
            .posix
            .contains("--exec-interactive-mode=IfAvailable"));
        assert!(commands
            .kubelogin
            .posix
            .contains("--exec-interactive-mode=IfAvailable"));
        assert!(commands
            .oidc_auth_provider
            .posix
            .contains("--auth-provider=oidc"));
    }

    #[test]
    fn continued_lines_end_with_the_shells_continuation_character() {
        let prod = cluster("prod", "kube");
        let commands = login_commands(ISSUER, None, &prod, None);
        let ps = &commands.lanyard.powershell;
        let lines: Vec<&str> = ps.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.starts_with("kubectl config set-cluster"))
            .unwrap();
        assert!(lines[start].ends_with(" `"), "{ps}");
        assert!(
            lines[start + 1].starts_with("  ") && lines[start + 1].ends_with(" `"),
            "{ps}"
        );
        assert!(!ps.contains('\\'), "{ps}");
        let sh = &commands.lanyard.posix;
        assert!(
            sh.lines()
                .any(|l| l.starts_with("kubectl config set-cluster prod \\")),
            "{sh}"
        );
        assert!(!sh.contains(" `\n"), "{sh}");
    }

    #[test]
    fn secret_appears_only_for_clusters_that_hand_it_out() {
        let mut prod = cluster("prod", "kube");
        let hidden = login_commands(ISSUER, None, &prod, Some("s3cret"));
        assert!(!format!("{hidden:?}").contains("s3cret"));
        prod.client_secret_for_users = true;
        let shown = login_commands(ISSUER, None, &prod, Some("s3cret"));
        assert!(shown
            .lanyard
            .posix
            .contains("--exec-arg=--client-secret \\\n  --exec-arg=s3cret"));
        assert!(shown
            .kubelogin
            .posix
            .contains("--exec-arg=--oidc-client-secret=s3cret"));
        assert!(shown
            .oidc_auth_provider
            .posix
            .contains("--auth-provider-arg=client-secret=s3cret"));
    }

    #[test]
    fn a_private_issuer_ca_goes_inline_into_each_ways_own_setting() {
        let prod = cluster("prod", "kube");
        let ca = crate::kube::test_support::test_ca_pem();
        let data = base64::engine::general_purpose::STANDARD.encode(&ca);
        let commands = login_commands(ISSUER, Some(&ca), &prod, None);
        let (calls, _) = run_posix(&commands.lanyard.posix);
        let args = &calls[1];
        let at = args
            .iter()
            .position(|a| a == "--exec-arg=--certificate-authority-data")
            .expect("lanyard login gets the CA");
        assert_eq!(args[at + 1], format!("--exec-arg={data}"));
        let (calls, _) = run_posix(&commands.kubelogin.posix);
        assert!(
            calls[1].contains(&format!("--exec-arg=--certificate-authority-data={data}")),
            "{:?}",
            calls[1]
        );
        let (calls, _) = run_posix(&commands.oidc_auth_provider.posix);
        assert!(
            calls[1].contains(&format!(
                "--auth-provider-arg=idp-certificate-authority-data={data}"
            )),
            "{:?}",
            calls[1]
        );
        for s in [
            &commands.lanyard,
            &commands.kubelogin,
            &commands.oidc_auth_provider,
        ] {
            assert!(s.powershell.contains(&data), "{}", s.powershell);
        }
        let public = login_commands(ISSUER, None, &prod, None);
        assert!(!format!("{public:?}").contains("certificate-authority-data"));
    }

    #[test]
    fn powershell_warns_when_a_double_quote_needs_a_modern_shell() {
        let mut prod = cluster("prod", "kube");
        prod.client_secret_for_users = true;
        let plain = login_commands(ISSUER, None, &prod, Some("s3cret"));
        assert!(!plain.lanyard.powershell.contains("PowerShell 7.3"));
        let comma = login_commands(ISSUER, None, &prod, Some("a,b"));
        assert!(comma
            .lanyard
            .powershell
            .starts_with("# Needs PowerShell 7.3"));
        assert!(!comma.lanyard.posix.contains("PowerShell"));
    }

    /// A `kubectl` that records its arguments, NUL-terminated, one call per line.
    fn fake_kubectl(dir: &Path) {
        let script = dir.join("kubectl");
        std::fs::write(
            &script,
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$KUBECTL_LOG\"; done\nprintf '\\n' >> \"$KUBECTL_LOG\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn run_posix(snippet: &str) -> (Vec<Vec<String>>, String) {
        let dir = tempfile::tempdir().unwrap();
        fake_kubectl(dir.path());
        let log = dir.path().join("log");
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Process::new("sh")
            .arg("-c")
            .arg(snippet)
            .current_dir(dir.path())
            .env("PATH", path)
            .env("KUBECTL_LOG", &log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                let mut args: Vec<String> = l.split('\0').map(str::to_string).collect();
                args.pop();
                args
            })
            .collect();
        let ca = std::fs::read_to_string(dir.path().join("lanyard-prod-ca.pem")).unwrap();
        (calls, ca)
    }

    #[test]
    fn posix_snippet_passes_exact_arguments_to_kubectl() {
        let mut prod = cluster("prod", "kube");
        prod.client_secret_for_users = true;
        prod.context_name = "acme prod".to_string();
        let secret = "it's a \"secret\", $HOME";
        let commands = login_commands(ISSUER, None, &prod, Some(secret));
        let (calls, ca) = run_posix(&commands.lanyard.posix);
        assert_eq!(ca, prod.certificate_authority_pem);
        assert_eq!(calls.len(), 4);
        assert_eq!(
            calls[0],
            vec![
                "config",
                "set-cluster",
                "prod",
                "--server=https://prod.k8s.example.com:6443",
                "--certificate-authority=lanyard-prod-ca.pem",
                "--embed-certs=true"
            ]
        );
        let csv_secret = format!("--exec-arg=\"{}\"", secret.replace('"', "\"\""));
        assert_eq!(
            calls[1],
            vec![
                "config",
                "set-credentials",
                "lanyard-prod",
                "--exec-api-version=client.authentication.k8s.io/v1",
                "--exec-command=lanyard",
                "--exec-arg=login",
                "--exec-arg=--issuer",
                "--exec-arg=https://login.example.com/dex",
                "--exec-arg=--client-id",
                "--exec-arg=kube",
                "--exec-arg=--client-secret",
                csv_secret.as_str(),
                "--exec-interactive-mode=IfAvailable",
                "--exec-provide-cluster-info=false",
            ]
        );
        assert_eq!(
            calls[2],
            vec![
                "config",
                "set-context",
                "acme prod",
                "--cluster=prod",
                "--user=lanyard-prod",
                "--namespace=default"
            ]
        );
        assert_eq!(calls[3], vec!["config", "use-context", "acme prod"]);

        let (calls, _) = run_posix(&commands.kubelogin.posix);
        assert_eq!(
            calls[1][2..],
            [
                "kubelogin-prod",
                "--exec-api-version=client.authentication.k8s.io/v1",
                "--exec-command=kubectl",
                "--exec-arg=oidc-login",
                "--exec-arg=get-token",
                "--exec-arg=--oidc-issuer-url=https://login.example.com/dex",
                "--exec-arg=--oidc-client-id=kube",
                &format!(
                    "--exec-arg=\"--oidc-client-secret={}\"",
                    secret.replace('"', "\"\"")
                ),
                "--exec-arg=--oidc-extra-scope=email",
                "--exec-arg=--oidc-extra-scope=groups",
                "--exec-arg=--oidc-extra-scope=offline_access",
                "--exec-interactive-mode=IfAvailable",
                "--exec-provide-cluster-info=false",
            ]
        );

        let (calls, _) = run_posix(&commands.oidc_auth_provider.posix);
        assert_eq!(
            calls[1][2..],
            [
                "oidc-prod",
                "--auth-provider=oidc",
                "--auth-provider-arg=idp-issuer-url=https://login.example.com/dex",
                "--auth-provider-arg=client-id=kube",
                &format!(
                    "--auth-provider-arg=\"client-secret={}\"",
                    secret.replace('"', "\"\"")
                ),
                "--auth-provider-arg=id-token=<ID_TOKEN>",
                "--auth-provider-arg=refresh-token=<REFRESH_TOKEN>",
            ]
        );
        assert_eq!(calls[2][4], "--user=oidc-prod");
    }
}
