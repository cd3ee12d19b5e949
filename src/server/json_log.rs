//! The JSON log line, as tracing-subscriber's JSON format writes it (the event's fields
//! flattened, the current span, no span list), without its per-line cost of parsing the
//! span's fields back from text: [`JsonFields`] stored them as a JSON object when the span
//! was made, so they are copied as they are. The same bytes come out (a test checks it).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format for `logger.format: json`, used with [`JsonFields`] for span fields.
pub struct JsonLines {
    /// For what the fast path does not cover: lines bridged from the `log` crate (whose
    /// metadata tracing-subscriber normalises) and spans whose fields are not an object.
    standard: Format<Json>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self {
            standard: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_span_list(false),
        }
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.fields().field("log.target").is_some() {
            return self.standard.format_event(ctx, writer, event);
        }
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &span {
            let object = span
                .extensions()
                .get::<FormattedFields<JsonFields>>()
                .is_some_and(|f| f.len() >= 2 && f.starts_with('{') && f.ends_with('}'));
            if !object {
                return self.standard.format_event(ctx, writer, event);
            }
        }

        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":")?;
        json(&mut writer, meta.level().as_str())?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        json(&mut writer, meta.target())?;
        if let Some(span) = &span {
            let extensions = span.extensions();
            let fields = extensions
                .get::<FormattedFields<JsonFields>>()
                .map_or("{}", |f| f.fields.as_str());
            let inner = fields
                .strip_prefix('{')
                .and_then(|f| f.strip_suffix('}'))
                .unwrap_or("");
            writer.write_str(",\"span\":{")?;
            writer.write_str(inner)?;
            if !inner.is_empty() {
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            json(&mut writer, span.metadata().name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes the event's fields as `,"name":value` entries, as tracing-serde's map visitor
/// serialises them (values it has no method for go through `record_debug`, as there).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if self.result.is_ok() {
            self.result = self
                .writer
                .write_char(',')
                .and_then(|()| json(self.writer, field.name()))
                .and_then(|()| self.writer.write_char(':'))
                .and_then(|()| json(self.writer, value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }
}

/// Writes `value` as JSON, with serde_json's escaping.
fn json<T: serde::Serialize + ?Sized>(writer: &mut Writer<'_>, value: &T) -> fmt::Result {
    serde_json::to_writer(FmtIo(writer), value).map_err(|_| fmt::Error)
}

/// An `io::Write` over a `fmt::Write`; serde_json writes whole UTF-8 sequences.
struct FmtIo<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for FmtIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0
            .write_str(text)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn emit() {
        tracing::info!("outside any span");
        let span = tracing::info_span!(
            "request",
            request_id = %"id-1",
            client_addr = %"203.0.113.7",
            method = %"POST",
            route = %"/token"
        );
        let _entered = span.enter();
        tracing::info!(status = 200u16, latency_ms = 0.25, "request");
        tracing::warn!(
            error = %"quote \" backslash \\ newline \n tab \t é",
            flag = true,
            n = -3i64,
            big = 7u128,
            nan = f64::NAN,
            list = ?vec![1, 2],
            "it \"failed\""
        );
        let empty = tracing::info_span!("empty");
        let _inner = empty.enter();
        tracing::error!(target: "lanyard::audit", "in an empty span");
    }

    /// Lines without their timestamp, which differs between the two runs.
    fn lines(buffer: &Buffer) -> Vec<String> {
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let (_, rest) = l.split_once("\",\"level\"").unwrap();
                assert!(l.starts_with("{\"timestamp\":\""), "{l}");
                rest.to_string()
            })
            .collect()
    }

    #[test]
    fn lines_are_the_bytes_tracing_subscribers_json_format_writes() {
        let standard = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(standard.clone())
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);

        let ours = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::default())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);

        let (standard, ours) = (lines(&standard), lines(&ours));
        assert_eq!(standard.len(), 4);
        assert_eq!(standard, ours);
    }
}
