//! `logger:`: log level and format.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::resolve::Ctx;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoggerConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLogger {
    level: Option<String>,
    format: Option<String>,
}

pub(super) fn resolve_logger(value: Value, ctx: &mut Ctx) -> LoggerConfig {
    let raw: RawLogger = ctx.de(value, "logger").unwrap_or_default();
    let mut logger = LoggerConfig::default();
    if let Some(level) = raw.level.filter(|l| !l.is_empty()) {
        match level.to_ascii_lowercase().as_str() {
            "debug" => logger.level = LogLevel::Debug,
            "info" => logger.level = LogLevel::Info,
            "warn" | "warning" => logger.level = LogLevel::Warn,
            "error" => logger.level = LogLevel::Error,
            _ => ctx.err(
                "logger.level",
                format!("unknown log level `{level}`; expected one of debug, info, warn, error"),
            ),
        }
    }
    if let Some(format) = raw.format.filter(|f| !f.is_empty()) {
        match format.to_ascii_lowercase().as_str() {
            "text" => logger.format = LogFormat::Text,
            "json" => logger.format = LogFormat::Json,
            _ => ctx.err(
                "logger.format",
                format!("unknown log format `{format}`; expected text or json"),
            ),
        }
    }
    logger
}
