//! A real OpenLDAP `slapd` (Debian's package) on free loopback ports, with its own config,
//! mdb database and TLS certificates in a temporary directory; killed when dropped.
//!
//! It listens on `ldap://` (plain and StartTLS) and `ldaps://`, both with a certificate for
//! `localhost` and `127.0.0.1` signed by a CA made for the run. It is seeded (offline, with
//! slapadd) with [`seed_ldif`]. When slapd is not installed the test is skipped with a note,
//! unless `CI` is set, in which case it fails.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";
pub const SUFFIX: &str = "dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PW: &str = "root-secret";
/// The read-only account the connector searches as.
pub const SERVICE_DN: &str = "cn=lanyard,ou=services,dc=example,dc=org";
pub const SERVICE_PW: &str = "service-secret";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";

pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `ldap://127.0.0.1:port` (also StartTLS).
    pub port: u16,
    /// `ldaps://127.0.0.1:tls_port`.
    pub tls_port: u16,
    /// The CA that signed slapd's certificate, as PEM, and where it is on disk.
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

/// Whether slapd and the ldap-utils are installed; outside CI a missing one skips the test.
fn installed() -> bool {
    let missing: Vec<&str> = [SLAPD, SLAPADD, "/usr/bin/ldapmodify"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "OpenLDAP is needed and CI is set, but {} is missing (install slapd and ldap-utils)",
            missing.join(", ")
        );
    }
    eprintln!(
        "skipping: {} missing (apt-get install slapd ldap-utils)",
        missing.join(", ")
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Slapd {
    /// slapd seeded with [`seed_ldif`]; `None` means "skip this test".
    pub fn start() -> Option<Slapd> {
        if !installed() {
            return None;
        }
        Some(Self::start_seeded(&seed_ldif()))
    }

    fn start_seeded(seed: &str) -> Slapd {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        std::fs::create_dir(path.join("data")).expect("data dir");

        let (ca_pem, cert_pem, key_pem) = certificates();
        let ca_file = path.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("ca");
        std::fs::write(path.join("server.pem"), cert_pem).expect("cert");
        std::fs::write(path.join("server.key"), key_pem).expect("key");

        let conf = path.join("slapd.conf");
        std::fs::write(&conf, slapd_conf(path)).expect("slapd.conf");
        std::fs::write(path.join("seed.ldif"), seed).expect("seed");
        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(path.join("seed.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Ports are picked, released, then bound by slapd.
        let (port, tls_port) = (free_port(), free_port());
        let log = std::fs::File::create(path.join("slapd.log")).expect("log");
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
            ))
            // Any debug level keeps slapd in the foreground, where it can be killed.
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start slapd");
        let mut slapd = Slapd {
            dir,
            child: Some(child),
            port,
            tls_port,
            ca_pem,
            ca_file,
        };
        if !slapd.wait_ready() {
            slapd.kill();
            let log = std::fs::read_to_string(slapd.dir().join("slapd.log")).unwrap_or_default();
            panic!("slapd did not start:\n{log}");
        }
        slapd
    }

    /// True once slapd answers an authenticated LDAP request.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            let ok = Command::new("ldapwhoami")
                .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `host` for a plain or StartTLS connector config.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `host` for an ldaps connector config (the certificate names localhost and 127.0.0.1).
    pub fn tls_host(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs ldapmodify as the root DN with `ldif` (changetype records).
    pub fn modify(&self, ldif: &str) {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ldapmodify");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("ldapmodify");
        assert!(
            out.status.success(),
            "ldapmodify failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn add_member(&self, group_dn: &str, member_dn: &str) {
        self.modify(&format!(
            "dn: {group_dn}\nchangetype: modify\nadd: member\nmember: {member_dn}\n"
        ));
    }

    pub fn remove_member(&self, group_dn: &str, member_dn: &str) {
        self.modify(&format!(
            "dn: {group_dn}\nchangetype: modify\ndelete: member\nmember: {member_dn}\n"
        ));
    }

    pub fn delete(&self, dn: &str) {
        self.modify(&format!("dn: {dn}\nchangetype: delete\n"));
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .expect("kill");
            assert!(status.success(), "kill -{signal} failed");
        }
    }

    /// SIGSTOP: the sockets stay open, but nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills slapd; its ports then refuse connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

fn slapd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {d}/data
index objectClass eq
index uid,mail,member,memberUid eq

# Passwords are only ever used to bind. Entries are readable by the service account
# only: a connection left bound as a user would find nothing.
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by * none
"#
    )
}

/// (CA PEM, server certificate PEM, server key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lanyard test LDAP CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// One LDIF line; values LDIF cannot carry as they are (non-ASCII, leading space or colon)
/// are base64-encoded.
fn line(attr: &str, value: &str) -> String {
    let safe = value.is_ascii()
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ')
        && !value.contains(['\n', '\r', '\0']);
    if safe {
        format!("{attr}: {value}\n")
    } else {
        format!(
            "{attr}:: {}\n",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

fn entry(dn: &str, attrs: &[(&str, &str)]) -> String {
    let mut out = line("dn", dn);
    for (a, v) in attrs {
        out.push_str(&line(a, v));
    }
    out.push('\n');
    out
}

pub fn person_dn(rdn: &str) -> String {
    format!("{rdn},{PEOPLE}")
}

pub fn group_dn(cn: &str) -> String {
    format!(
        "cn={},{GROUPS}",
        lanyard_connectors::ldap::escape_dn_value(cn)
    )
}

/// A test user: login (uid), password, and the DN it lives at.
pub struct User {
    pub uid: &'static str,
    pub password: &'static str,
    pub dn: String,
}

pub fn jane() -> User {
    User {
        uid: "jane",
        password: "jane-password",
        dn: person_dn("uid=jane"),
    }
}
pub fn john() -> User {
    User {
        uid: "jsmith",
        password: "john-password",
        dn: person_dn(r"cn=Smith\, John"),
    }
}
pub fn obrien() -> User {
    User {
        uid: "o'brien",
        password: "obrien-password",
        dn: person_dn("uid=o'brien"),
    }
}
pub fn juergen() -> User {
    User {
        uid: "jürgen",
        password: "jürgen-paßwort",
        dn: person_dn("uid=jürgen"),
    }
}
pub fn star() -> User {
    User {
        uid: "a*b(c)",
        password: "star-password",
        dn: person_dn("uid=a*b(c)"),
    }
}
pub fn multi() -> User {
    User {
        uid: "multi",
        password: "multi-password",
        dn: person_dn("uid=multi"),
    }
}
pub fn admin() -> User {
    User {
        uid: "admin",
        password: "admin-password",
        dn: person_dn("uid=admin"),
    }
}

/// The directory the tests start from.
///
/// Groups (groupOfNames, `member` holds DNs; nested through `member` too):
/// - developers ⊃ jane, "Smith, John", and the group "Team, Blue" ⊃ jürgen
/// - engineering ⊃ developers; all-staff ⊃ engineering
/// - cycle-a ⊃ o'brien and cycle-b; cycle-b ⊃ cycle-a
/// - chain-0 ⊃ a*b(c); chain-N ⊃ chain-(N-1) up to chain-5
/// - admins ⊃ admin
///
/// and the posixGroup posix-ops with `memberUid: jane`. Two users share the mail
/// `twin@example.org`; `multi` has two mail values.
pub fn seed_ldif() -> String {
    let mut out = String::new();
    out += &entry(
        SUFFIX,
        &[
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", "example"),
            ("o", "Example"),
        ],
    );
    for ou in ["people", "groups", "services"] {
        out += &entry(
            &format!("ou={ou},{SUFFIX}"),
            &[("objectClass", "organizationalUnit"), ("ou", ou)],
        );
    }
    out += &entry(
        SERVICE_DN,
        &[
            ("objectClass", "organizationalRole"),
            ("objectClass", "simpleSecurityObject"),
            ("cn", "lanyard"),
            ("userPassword", SERVICE_PW),
        ],
    );
    let people: [(User, &str, &str, &[&str]); 7] = [
        (jane(), "Jane Doe", "Doe", &["jane@example.org"]),
        (john(), "Smith, John", "Smith", &["john.smith@example.org"]),
        (obrien(), "Pat O'Brien", "O'Brien", &["obrien@example.org"]),
        (juergen(), "Jürgen Groß", "Groß", &["juergen@example.org"]),
        (star(), "Star Paren", "Paren", &["star@example.org"]),
        (
            multi(),
            "Multi Mail",
            "Mail",
            &["first@example.org", "second@example.org"],
        ),
        (admin(), "Admin", "Admin", &["admin@example.org"]),
    ];
    for (user, cn, sn, mails) in &people {
        let mut attrs = vec![
            ("objectClass", "inetOrgPerson"),
            ("uid", user.uid),
            ("cn", *cn),
            ("sn", *sn),
            ("userPassword", user.password),
        ];
        for m in *mails {
            attrs.push(("mail", m));
        }
        out += &entry(&user.dn, &attrs);
    }
    for twin in ["twin1", "twin2"] {
        out += &entry(
            &person_dn(&format!("uid={twin}")),
            &[
                ("objectClass", "inetOrgPerson"),
                ("uid", twin),
                ("cn", twin),
                ("sn", twin),
                ("mail", "twin@example.org"),
                ("userPassword", "twin-password"),
            ],
        );
    }

    let group = |cn: &str, members: &[String]| {
        let mut attrs: Vec<(&str, &str)> = vec![("objectClass", "groupOfNames"), ("cn", cn)];
        for m in members {
            attrs.push(("member", m));
        }
        entry(&group_dn(cn), &attrs)
    };
    out += &group("Team, Blue", &[juergen().dn]);
    out += &group(
        "developers",
        &[jane().dn, john().dn, group_dn("Team, Blue")],
    );
    out += &group("engineering", &[group_dn("developers")]);
    out += &group("all-staff", &[group_dn("engineering")]);
    // Nothing checks that a member exists, so the cycle is written in one go.
    out += &group("cycle-b", &[group_dn("cycle-a")]);
    out += &group("cycle-a", &[obrien().dn, group_dn("cycle-b")]);
    out += &group("admins", &[admin().dn]);
    out += &group("chain-0", &[star().dn]);
    for n in 1..=5 {
        out += &group(
            &format!("chain-{n}"),
            &[group_dn(&format!("chain-{}", n - 1))],
        );
    }
    out += &entry(
        &group_dn("posix-ops"),
        &[
            ("objectClass", "posixGroup"),
            ("cn", "posix-ops"),
            ("gidNumber", "5000"),
            ("memberUid", "jane"),
        ],
    );
    out
}
