//! The daemon's NDJSON lines as they leave the process: every line gets the schema version, a
//! timestamp, the host name and the container fields (empty where the line concerns no
//! container), then goes to stdout or to a file that SIGHUP reopens. The schema is
//! docs/log-schema.json.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use serde_json::{Map, Number, Value};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, MakeWriter},
    registry::LookupSpan,
    EnvFilter,
};

use crate::{clock, error::Error};

/// Bumped when a field changes meaning or disappears; added fields do not bump it.
pub const SCHEMA_VERSION: u64 = 1;

/// Fields every line has, filled with "" where the line concerns no container.
const CONTAINER_FIELDS: [&str; 3] = ["container_id", "container_name", "image"];

/// Installs the daemon's subscriber; the returned output is reopened on SIGHUP.
pub fn install(host: &str, log_file: Option<&Path>) -> Result<Output, Error> {
    let output = Output::open(log_file)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .event_format(Lines { host: host.to_string() })
        .with_env_filter(filter)
        .with_writer(output.clone())
        .init();
    Ok(output)
}

/// Formats one event as one JSON object.
struct Lines {
    host: String,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("schema".into(), SCHEMA_VERSION.into());
        line.insert("timestamp".into(), clock::rfc3339(SystemTime::now()).into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("host".into(), self.host.clone().into());
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        line.extend(fields.0);
        // Lines from libraries carry no event name of their own.
        line.entry("event").or_insert_with(|| "log".into());
        line.entry("message").or_insert_with(|| "".into());
        for field in CONTAINER_FIELDS {
            line.entry(field).or_insert_with(|| "".into());
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values: numbers stay numbers, everything else is text.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Where the lines go: stdout, or an append-only file that can be reopened under the same or a
/// new name.
#[derive(Clone)]
pub struct Output {
    target: Arc<Mutex<Target>>,
}

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(path: Option<&Path>) -> Result<Self, Error> {
        Ok(Self { target: Arc::new(Mutex::new(Target::open(path)?)) })
    }

    /// Opens `path` (or stdout) afresh; the old file stays in use if that fails.
    pub fn reopen(&self, path: Option<&Path>) -> Result<(), Error> {
        let target = Target::open(path)?;
        *self.lock() = target;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Target> {
        // A panic while writing a line leaves nothing half-updated that matters here.
        self.target.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Target {
    fn open(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else { return Ok(Target::Stdout) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file =
            OpenOptions::new().create(true).append(true).mode(0o640).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Target::File { path: path.to_path_buf(), file })
    }
}

/// One line's writer: holds the output while the formatted line is written in one piece.
pub struct LineWriter<'a>(MutexGuard<'a, Target>);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0 {
            Target::Stdout => io::stdout().lock().write(buf),
            Target::File { file, .. } => file.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut *self.0 {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Target::File { file, .. } => file.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0 {
            Target::Stdout => io::stdout().flush(),
            Target::File { file, .. } => file.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.lock())
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.lock() {
            Target::Stdout => f.write_str("stdout"),
            Target::File { path, .. } => write!(f, "{}", path.display()),
        }
    }
}
