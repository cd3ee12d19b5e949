//! The `lanyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lanyard::config::{self, Config};
use lanyard::kube;
use lanyard::server::app;
use lanyard::server::reload::ConfigSource;

/// How often `serve --watch-config` looks at the config file.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "lanyard",
    version,
    about = "An OpenID Connect identity provider for Kubernetes; a drop-in for Dex"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the issuer. Without --config, runs the embedded development default
    /// (http://127.0.0.1:5556, SQLite under ./lanyard-data). SIGHUP reloads the config file.
    Serve {
        #[arg(long, short, env = "LANYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Also reload the config whenever the file's content changes (checked every 2s).
        #[arg(long)]
        watch_config: bool,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, env = "LANYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints OK, or every error (exit status 1).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Administration against the configured storage: clients, local passwords, users'
    /// sessions, signing keys. Without --config, the embedded default.
    Admin(lanyard::admin::AdminArgs),
    /// kubectl credential plugin: prints an ExecCredential with an ID token from the issuer
    /// (cached, refreshed, or from a new login) on stdout.
    Login(lanyard::login::LoginArgs),
    /// Kubernetes settings from the config's `kubernetes:` section: kubeconfig, API server
    /// flags or AuthenticationConfiguration, RBAC bindings. Without --config, the embedded
    /// default.
    Kube {
        #[arg(long, short, global = true, env = "LANYARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: KubeCommand,
    },
}

#[derive(Subcommand)]
enum KubeCommand {
    /// kube-apiserver's --oidc-* flags for one cluster, one per line.
    ApiserverFlags {
        #[arg(long)]
        cluster: String,
    },
    /// An AuthenticationConfiguration (kube-apiserver --authentication-config) as YAML.
    /// Give --cluster for one cluster's API server: with several clusters, a token for any
    /// of their clients is accepted.
    AuthnConfig {
        /// v1 (Kubernetes 1.34+) or v1beta1 (1.30-1.33).
        #[arg(long, default_value = "v1")]
        version: kube::AuthnConfigVersion,
        #[arg(long)]
        cluster: Option<String>,
        /// The CA of lanyard's TLS certificate (PEM), when it is not publicly trusted
        /// [default: kubernetes.issuerCertificateAuthorityData/File from the config].
        #[arg(long)]
        issuer_ca_file: Option<PathBuf>,
    },
    /// RoleBindings and ClusterRoleBindings for `kubernetes.rbac` as multi-document YAML.
    Rbac {
        #[arg(long)]
        cluster: Option<String>,
    },
    /// A kubeconfig whose users log in with `lanyard login`.
    Kubeconfig {
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// What a `lanyard kube` command prints on stdout.
fn kube_command(config: &Option<PathBuf>, command: &KubeCommand) -> anyhow::Result<String> {
    let (config, _) = load(config)?;
    let issuer = config.issuer_string();
    let k8s = &config.kubernetes;
    let out = match command {
        KubeCommand::ApiserverFlags { cluster } => {
            let cluster = kube::select_clusters(k8s, Some(cluster))?[0];
            let issuer_ca = k8s.issuer_ca.as_ref();
            let mut out =
                kube::apiserver_flags(&issuer, cluster, config.keys.algorithm, issuer_ca.is_some())
                    .join("\n");
            out.push('\n');
            if let Some(ca) = issuer_ca {
                let from = match &ca.file {
                    Some(file) => format!(
                        "{} (kubernetes.issuerCertificateAuthorityFile)",
                        file.display()
                    ),
                    None => {
                        "the base64-decoded kubernetes.issuerCertificateAuthorityData".to_string()
                    }
                };
                eprintln!(
                    "lanyard: copy the issuer's CA, {from}, to {} on every control-plane node",
                    kube::APISERVER_CA_FILE
                );
            }
            out
        }
        KubeCommand::AuthnConfig {
            version,
            cluster,
            issuer_ca_file,
        } => {
            let clusters = kube::select_clusters(k8s, cluster.as_deref())?;
            let ca = match issuer_ca_file {
                None => k8s.issuer_ca.as_ref().map(|ca| ca.pem.clone()),
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some(config::normalize_pem_certificates(&text).map_err(|e| {
                        anyhow::anyhow!("{} is not a PEM certificate file: {e}", path.display())
                    })?)
                }
            };
            kube::authentication_configuration(&issuer, &clusters, *version, ca.as_deref())?
        }
        KubeCommand::Rbac { cluster } => {
            let clusters = kube::select_clusters(k8s, cluster.as_deref())?;
            kube::rbac_manifests(&k8s.rbac, &clusters)
        }
        KubeCommand::Kubeconfig { cluster } => {
            let clusters = kube::select_clusters(k8s, cluster.as_deref())?;
            let secrets = |id: &str| config.static_client(id).and_then(|c| c.secret.clone());
            let issuer_ca = k8s.issuer_ca.as_ref().map(|ca| ca.pem.as_str());
            kube::kubeconfig(&issuer, issuer_ca, &clusters, &secrets)
        }
    };
    // authn-config refuses an http issuer outright; flags and kubeconfigs still print.
    let uses_issuer = matches!(
        command,
        KubeCommand::ApiserverFlags { .. } | KubeCommand::Kubeconfig { .. }
    );
    if uses_issuer && config.issuer.scheme() != "https" {
        eprintln!("lanyard: warning: the issuer {issuer} is not https; kube-apiserver only trusts https issuers");
    }
    Ok(out)
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<(Config, bool)> {
    match config {
        Some(path) => Config::load(path)
            .map(|c| (c, false))
            .map_err(|errs| anyhow::anyhow!("{}: invalid config:\n{errs}", path.display())),
        None => Config::embedded_default()
            .map(|c| (c, true))
            .map_err(|errs| anyhow::anyhow!("embedded default config is invalid:\n{errs}")),
    }
}

/// glibc gives each thread that allocates under contention an arena of its own, up to
/// eight per core, and each keeps the memory freed into it. lanyard's threads (runtime
/// workers, password hashing, SQLite connections, the log writer) would hold a few MiB
/// each after a burst; with one arena per core no more threads allocate at once than there
/// are cores anyway.
///
/// glibc also raises its mmap threshold to the size of each large block freed: after a
/// 19 MiB argon2id buffer is freed once (the embedded default hashes its dev admin's password
/// at start), later blocks of that size come from an arena and stay resident. A fixed
/// threshold keeps large blocks in mappings of their own, returned when freed (the embedded
/// default idles at 20 MiB instead of 40). Set before any thread starts.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's initial threshold.
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    if let Command::CheckConfig { config } = &cli.command {
        let (report, ok) = config::check_config_report(config);
        println!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Command::Kube { config, command } = &cli.command {
        return match kube_command(config, command) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("lanyard: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("lanyard: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lanyard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config: path,
            watch_config,
        } => {
            if watch_config && path.is_none() {
                anyhow::bail!("--watch-config needs a config file (--config or LANYARD_CONFIG)");
            }
            let (config, embedded) = load(&path)?;
            let _log = app::init_logging(&config);
            for warning in &config.warnings {
                tracing::warn!(%warning, "config");
            }
            let app = app::build(&config, app::BuildOptions::from_env(embedded))
                .await
                .context("cannot start")?
                .reload_config_from(ConfigSource {
                    path,
                    watch: watch_config.then_some(WATCH_EVERY),
                });
            app.run(lanyard::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Migrate { config } => {
            let (config, _) = load(&config)?;
            let _log = app::init_logging(&config);
            let storage = lanyard::storage::open(&config.storage)
                .await
                .context("migration failed")?;
            tracing::info!(storage = storage.kind(), "migrations applied");
            Ok(())
        }
        Command::CheckConfig { .. } | Command::Kube { .. } => Ok(()),
        Command::Admin(args) => {
            let (config, _) = load(&args.config)?;
            let _log = app::init_logging(&config);
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::stdout().lock();
            lanyard::admin::run(&config, &args, &mut input, &mut out).await?;
            Ok(())
        }
        Command::Login(args) => {
            use std::io::Write;
            let credential = lanyard::login::run(&args, &lanyard::clock::SystemClock).await?;
            // stdout carries the ExecCredential and nothing else.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", credential.to_json())
                .and_then(|()| out.flush())
                .context("cannot write the credential to stdout")?;
            Ok(())
        }
    }
}
