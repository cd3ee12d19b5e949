//! Prometheus counters in text exposition format, kept without a metrics framework: a few
//! labelled counters behind one mutex each are all lanyard needs.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        if let Ok(mut m) = self.http_requests.lock() {
            *m.entry((route.to_string(), method.to_string(), status))
                .or_insert(0) += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP lanyard_build_info Build information.");
        let _ = writeln!(out, "# TYPE lanyard_build_info gauge");
        let _ = writeln!(
            out,
            "lanyard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP lanyard_http_requests_total HTTP requests by matched route, method and status."
        );
        let _ = writeln!(out, "# TYPE lanyard_http_requests_total counter");
        if let Ok(m) = self.http_requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lanyard_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                    escape(route),
                    escape(method),
                    status,
                    n
                );
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
