//! The JSON form of log lines, written field by field straight into the
//! line: `{"timestamp":…,"level":…,<the event's fields>,"target":…}`, with
//! `"span":{<its fields>,"name":…}` when the event happens inside one.
//! Lines of libraries logging through the `log` crate (pingora) take their
//! target from it, without the `log.*` fields that carry it.
//! (tracing-subscriber's own JSON format first collects every field into a
//! map of owned strings and values, a dozen allocations for an access line.)

use std::fmt::{self, Write as _};

use tollgate_gateway::access::{self, AccessLine};
use tollgate_identity::decision::reason_line;
use tollgate_policies::DeterminingPolicy;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A line's event; its span's fields come from [`JsonFields`].
#[derive(Debug, Default)]
pub struct JsonLines;

/// A span's fields, as the members of a JSON object (without the braces),
/// kept with the span and copied into each line written inside it.
#[derive(Debug, Default)]
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut members = Members { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut members = Members { out: &mut writer, first, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        writer.write_str(timestamp(std::time::SystemTime::now()).as_str())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut members = Members { out: &mut writer, first: false, result: Ok(()) };
        if normalized.is_some() {
            event.record(&mut FromLog(&mut members));
        } else {
            event.record(&mut members);
        }
        members.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|f| !f.fields.is_empty()) {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Access lines written straight into the log writer, in the same JSON
/// form [`JsonLines`] gives the `tracing` event they replace (access lines
/// are logged outside any span).
#[derive(Debug)]
pub struct JsonAccessLines(pub crate::log_writer::BatchWriter);

impl tollgate_gateway::access::AccessLog for JsonAccessLines {
    fn write(&self, line: &AccessLine<'_>) {
        thread_local! {
            static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let at = std::time::SystemTime::now();
        BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                if access_line(&mut *buffer, line, at).is_ok() {
                    self.0.append(buffer.as_bytes());
                }
            }
            // Written from within a line being written (nothing does that
            // today): a buffer of its own rather than a lost line.
            Err(_) => {
                let mut own = String::new();
                if access_line(&mut own, line, at).is_ok() {
                    self.0.append(own.as_bytes());
                }
            }
        });
    }
}

/// `line` as one JSON line, logged `at`.
fn access_line(out: &mut impl fmt::Write, line: &AccessLine<'_>, at: std::time::SystemTime) -> fmt::Result {
    out.write_str("{\"timestamp\":\"")?;
    out.write_str(timestamp(at).as_str())?;
    out.write_str(&CONSTANT_MEMBERS.level_and_message)?;
    for (member, value) in
        [(",\"request_id\":", line.request_id), (",\"method\":", line.method), (",\"path\":", line.path)]
    {
        out.write_str(member)?;
        string(out, value)?;
    }
    out.write_str(",\"status\":")?;
    out.write_str(itoa::Buffer::new().format(line.status))?;
    for (member, value) in [(",\"decision\":", line.decision), (",\"tenant\":", line.tenant)] {
        out.write_str(member)?;
        string(out, value)?;
    }
    out.write_str(",\"principal\":\"")?;
    if let Some(name) = line.principal {
        // The kind's prefix is plain ASCII: only the id is escaped.
        let (kind, id) = name.parts();
        out.write_str(kind)?;
        Escaped(&mut *out).write_str(id)?;
    }
    out.write_str("\",\"route\":")?;
    string(out, line.route)?;
    out.write_str(",\"policies\":")?;
    debug_list(out, line.policies)?;
    out.write_str(",\"error\":")?;
    match line.error {
        Some(error) => quoted(out, format_args!("{error}"))?,
        None => out.write_str("\"\"")?,
    }
    out.write_str(",\"latency_us\":")?;
    out.write_str(itoa::Buffer::new().format(line.latency_us))?;
    out.write_str(&CONSTANT_MEMBERS.target_and_end)
}

/// The members every access line has the same, escaped once.
struct ConstantMembers {
    /// From the timestamp's closing quote to the message's.
    level_and_message: String,
    /// The target and the line's end.
    target_and_end: String,
}

static CONSTANT_MEMBERS: std::sync::LazyLock<ConstantMembers> = std::sync::LazyLock::new(|| {
    let mut level_and_message = String::from("\",\"level\":\"INFO\",\"message\":");
    let mut target_and_end = String::from(",\"target\":");
    // Writing into a `String` cannot fail.
    let _ = string(&mut level_and_message, access::MESSAGE);
    let _ = string(&mut target_and_end, access::TARGET);
    target_and_end.push_str("}\n");
    ConstantMembers { level_and_message, target_and_end }
});

/// The `Debug` form of the list of `id: reason` lines of `policies`
/// (`["a: r", "b"]`) as a JSON string. Text of ASCII without a byte JSON
/// escapes (printable ASCII but `"` and `\`, which `Debug` does not escape
/// either) is its own `Debug` form, so such a line is copied as it is,
/// without being put together first.
fn debug_list(out: &mut impl fmt::Write, policies: &[DeterminingPolicy]) -> fmt::Result {
    let plain = |text: &str| text.is_ascii() && first_escaped(text.as_bytes()).is_none();
    out.write_str("\"[")?;
    for (i, policy) in policies.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        if plain(&policy.id) && policy.reason.as_deref().is_none_or(plain) {
            out.write_str("\\\"")?;
            out.write_str(&policy.id)?;
            if let Some(reason) = &policy.reason {
                out.write_str(": ")?;
                out.write_str(reason)?;
            }
            out.write_str("\\\"")?;
        } else {
            write!(Escaped(&mut *out), "{:?}", reason_line(policy))?;
        }
    }
    out.write_str("]\"")
}

/// Writes fields as `"name":value` members, separated by commas.
struct Members<'a, W> {
    out: &'a mut W,
    /// Whether no member precedes (so no comma goes first).
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Members<'_, W> {
    /// Writes the member's name and hands `value` the writer for its value.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { "," };
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl<W: fmt::Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| string(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        if value.is_finite() {
            self.member(field, |out| write!(out, "{value}"));
        } else {
            self.member(field, |out| out.write_str("null"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |out| quoted(out, format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| quoted(out, format_args!("{value:?}")));
    }
}

/// The fields of an event from the `log` crate, but those saying where it
/// came from (its target is the line's).
struct FromLog<'a, V>(&'a mut V);

impl<V: Visit> Visit for FromLog<'_, V> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !field.name().starts_with("log.") {
            self.0.record_str(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !field.name().starts_with("log.") {
            self.0.record_u64(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !field.name().starts_with("log.") {
            self.0.record_debug(field, value);
        }
    }
}

/// `text` as a JSON string.
fn string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_str(text)?;
    out.write_char('"')
}

/// Formatted text as a JSON string, escaped as it is written.
fn quoted(out: &mut impl fmt::Write, args: fmt::Arguments<'_>) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_fmt(args)?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        while let Some(found) = first_escaped(&text.as_bytes()[plain..]) {
            let i = plain + found;
            let byte = text.as_bytes()[i];
            self.0.write_str(&text[plain..i])?;
            match byte {
                b'"' => self.0.write_str("\\\""),
                b'\\' => self.0.write_str("\\\\"),
                b'\n' => self.0.write_str("\\n"),
                b'\r' => self.0.write_str("\\r"),
                b'\t' => self.0.write_str("\\t"),
                _ => write!(self.0, "\\u{byte:04x}"),
            }?;
            plain = i + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// Where the first byte [`ESCAPED`] marks is in `bytes`, if anywhere: eight
/// bytes at a time while none of them is one (text mostly has none).
fn first_escaped(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when a byte of `word` is below `n` (n <= 0x80).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let equal = |word: u64, b: u8| below(word ^ (ONES * u64::from(b)), 1);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = chunk.try_into().map_or(u64::MAX, u64::from_ne_bytes);
        if below(word, 0x20) | equal(word, b'"') | equal(word, b'\\') | equal(word, 0x7f) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| ESCAPED[usize::from(b)]).map(|i| at + i)
}

/// The bytes escaped inside a JSON string: quotes, backslashes and control
/// characters (DEL too). A look-up per byte: most text has none of them.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table
};

/// `at` in RFC 3339 form, in UTC with microseconds
/// (`2026-11-26T19:40:05.123456Z`), written without the formatting
/// machinery; times before 1970 read as 1970.
///
/// Each thread keeps the last second it wrote (lines come many to a
/// second), so a line only writes its microseconds.
fn timestamp(at: std::time::SystemTime) -> Timestamp {
    thread_local! {
        static LAST: std::cell::Cell<(u64, Timestamp)> =
            const { std::cell::Cell::new((u64::MAX, Timestamp(*b"0000-00-00T00:00:00.000000Z"))) };
    }
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (last, mut out) = LAST.get();
    if last != secs {
        out = to_the_second(secs);
        LAST.set((secs, out));
    }
    put(&mut out.0, 20, 6, u64::from(since.subsec_micros()));
    out
}

/// The timestamp of `secs` after the epoch, to the second.
fn to_the_second(secs: u64) -> Timestamp {
    // Within u64 seconds the day count fits an i64 and the date is not
    // negative.
    let (year, month, day) = tollgate_scim::query::civil_date((secs / 86_400) as i64);
    let in_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out, 0, 4, year.unsigned_abs());
    put(&mut out, 5, 2, month.unsigned_abs());
    put(&mut out, 8, 2, day.unsigned_abs());
    put(&mut out, 11, 2, in_day / 3600);
    put(&mut out, 14, 2, in_day / 60 % 60);
    put(&mut out, 17, 2, in_day % 60);
    Timestamp(out)
}

/// Writes `value`'s last `width` decimal digits into `out` from `at`.
fn put(out: &mut [u8], at: usize, width: usize, mut value: u64) {
    for slot in out[at..at + width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A formatted [`timestamp`]: ASCII digits and separators.
#[derive(Clone, Copy)]
struct Timestamp([u8; 27]);

impl Timestamp {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tollgate_identity::principal::Name;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Lines written by the subscriber, readable by the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn logged(emit: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    }

    #[test]
    fn each_event_is_one_json_line_with_its_fields() {
        let error = std::io::Error::other("disk \"full\"");
        let lines = logged(|| {
            tracing::info!(
                request_id = %"r-1",
                path = "/a \"quoted\"\\path\n\u{1}é",
                status = 403u16,
                offset = -7i64,
                ratio = 0.25f64,
                nothing = f64::NAN,
                allowed = false,
                policies = ?["p1", "p2"],
                error = &error as &(dyn std::error::Error + 'static),
                "gateway request"
            );
            tracing::warn!("second {} line", 2);
        });
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "gateway request");
        assert_eq!(first["request_id"], "r-1");
        assert_eq!(first["path"], "/a \"quoted\"\\path\n\u{1}é");
        assert_eq!((&first["status"], &first["offset"], &first["ratio"]), (&json!(403), &json!(-7), &json!(0.25)));
        assert_eq!((&first["nothing"], &first["allowed"]), (&Value::Null, &json!(false)));
        assert_eq!(first["policies"], "[\"p1\", \"p2\"]");
        assert_eq!(first["error"], "disk \"full\"");
        assert_eq!(first["target"], module_path!());
        assert!(first.get("span").is_none(), "{first}");
        let stamp = first["timestamp"].as_str().unwrap();
        assert!(stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{stamp}");
        assert_eq!((&lines[1]["level"], &lines[1]["message"]), (&json!("WARN"), &json!("second 2 line")));
    }

    #[test]
    fn lines_inside_a_span_carry_its_fields_and_name() {
        let lines = logged(|| {
            let span = tracing::info_span!("request", request_id = %"r-2", gateway_decision = "d\"1", later = tracing::field::Empty);
            let _inside = span.enter();
            tracing::info!("handled");
            span.record("later", 5u64);
            tracing::info!("recorded");
            let bare = tracing::info_span!("bare");
            let _bare = bare.enter();
            tracing::info!("nested");
        });
        assert_eq!(lines[0]["span"], json!({"request_id": "r-2", "gateway_decision": "d\"1", "name": "request"}));
        assert_eq!(
            lines[1]["span"],
            json!({"request_id": "r-2", "gateway_decision": "d\"1", "later": 5, "name": "request"})
        );
        assert_eq!(lines[2]["span"], json!({"name": "bare"}));
    }

    #[test]
    fn lines_of_the_log_crate_take_its_target() {
        let lines = logged(|| {
            let logger = tracing_log::LogTracer::new();
            log::Log::log(
                &logger,
                &log::Record::builder()
                    .args(format_args!("backend {} becomes unhealthy", 1))
                    .level(log::Level::Warn)
                    .target("pingora_load_balancing")
                    .module_path_static(Some("pingora_load_balancing"))
                    .file_static(Some("src/lib.rs"))
                    .line(Some(476))
                    .build(),
            );
        });
        assert_eq!(
            lines,
            vec![json!({
                "timestamp": lines[0]["timestamp"],
                "level": "WARN",
                "message": "backend 1 becomes unhealthy",
                "target": "pingora_load_balancing",
            })]
        );
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_with_microseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        for (secs, micros, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (1_709_164_800, 42, "2024-02-29T00:00:00.000042Z"),
            (1_798_761_599, 999_999, "2026-12-31T23:59:59.999999Z"),
            (1_800_000_000, 123_456, "2027-01-15T08:00:00.123456Z"),
            (4_107_542_400, 500_000, "2100-03-01T00:00:00.500000Z"),
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            assert_eq!(timestamp(at).as_str(), expected, "{secs}.{micros}");
        }
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(1)).as_str(), "1970-01-01T00:00:00.000000Z");
        // The same second again, then an earlier one: each line its own time.
        let second = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        for (at, expected) in [
            (second + Duration::from_micros(7), "2026-12-31T23:59:59.000007Z"),
            (second + Duration::from_micros(999_000), "2026-12-31T23:59:59.999000Z"),
            (second - Duration::from_secs(86_400), "2026-12-30T23:59:59.000000Z"),
            (second + Duration::from_secs(1), "2027-01-01T00:00:00.000000Z"),
        ] {
            assert_eq!(timestamp(at).as_str(), expected);
        }
    }

    /// The access line written straight into the log writer is the line
    /// the `tracing` event gives, field for field, hostile text included.
    #[test]
    fn access_lines_written_directly_are_the_events_lines() {
        let error = std::io::Error::other("upstream \"gone\"\n");
        let policy =
            |id: &str, reason: Option<&str>| DeterminingPolicy { id: id.into(), reason: reason.map(Into::into) };
        let policies = [
            policy("tenant.crm-read", None),
            policy("crm.read", Some("members \"read\"")),
            policy("crm.list", Some("members only")),
            policy("layer.a\\b", None),
            policy("équipe", Some("ok\u{7f}")),
            policy("layer.b", Some("ok\u{7f}")),
        ];
        let line = AccessLine {
            request_id: "r-1",
            method: "GET",
            path: "/tenant/\"x\"\\\u{1}é",
            status: 502,
            decision: "d-1",
            tenant: "t-1",
            principal: Some(Name::User("u-\"1\"")),
            route: "crm.read",
            policies: &policies,
            error: Some(&error),
            latency_us: 1234,
        };
        let mut direct = String::new();
        access_line(&mut direct, &line, std::time::SystemTime::now()).unwrap();
        assert!(direct.ends_with('\n') && direct.matches('\n').count() == 1, "{direct}");
        let mut direct: Value = serde_json::from_str(&direct).unwrap();
        let mut evented = logged(|| access::record(&line)).remove(0);
        for line in [&mut direct, &mut evented] {
            let timestamp = line.as_object_mut().unwrap().remove("timestamp").unwrap();
            assert_eq!(timestamp.as_str().unwrap().len(), 27, "{timestamp}");
        }
        assert_eq!(direct, evented);
        assert_eq!(direct["path"], "/tenant/\"x\"\\\u{1}é");
        assert_eq!(direct["error"], "upstream \"gone\"\n");
        let listed = direct["policies"].as_str().unwrap();
        let start = r#"["tenant.crm-read", "crm.read: members \"read\"", "crm.list: members only", "#;
        assert!(listed.starts_with(start), "{listed}");
        assert_eq!(direct["principal"], "user:u-\"1\"");
        let without = AccessLine { error: None, policies: &[], principal: None, ..line };
        let mut direct = String::new();
        access_line(&mut direct, &without, std::time::SystemTime::now()).unwrap();
        let direct: Value = serde_json::from_str(&direct).unwrap();
        let evented = logged(|| access::record(&without)).remove(0);
        for field in ["error", "policies", "principal"] {
            assert_eq!(direct[field], evented[field], "{field}");
        }
        assert_eq!((direct["error"].clone(), direct["policies"].clone()), (json!(""), json!("[]")));
        assert_eq!(direct["principal"], "");
    }

    #[test]
    fn the_bytes_to_escape_are_found_wherever_they_are() {
        let scalar = |bytes: &[u8]| bytes.iter().position(|&b| ESCAPED[usize::from(b)]);
        for filler in [b'a', b' ', b'~', 0x21, 0x80, 0xa2, 0xff] {
            for len in 0..20 {
                let mut bytes = vec![filler; len];
                assert_eq!(first_escaped(&bytes), scalar(&bytes));
                for at in 0..len {
                    for byte in 0..=255u8 {
                        bytes[at] = byte;
                        assert_eq!(first_escaped(&bytes), scalar(&bytes), "{byte:#x} at {at} of {len}");
                        // A second one after it does not hide the first.
                        if at + 1 < len {
                            bytes[len - 1] = b'"';
                            assert_eq!(first_escaped(&bytes), scalar(&bytes), "{byte:#x} at {at} of {len}");
                            bytes[len - 1] = filler;
                        }
                    }
                    bytes[at] = filler;
                }
            }
        }
    }

    #[test]
    fn escaping_is_the_same_across_write_boundaries() {
        let mut out = String::new();
        let mut escaped = Escaped(&mut out);
        for piece in ["plain", "\"", "tab\there", "", "\u{7f}end"] {
            escaped.write_str(piece).unwrap();
        }
        assert_eq!(out, "plain\\\"tab\\there\\u007fend");
    }
}
