//! Tracepoint format files (`/sys/kernel/tracing/events/<cat>/<name>/format`):
//! a pure parser and the field offsets the programs need, since rustc emits
//! no CO-RE relocations and offsets differ between kernels.

use std::path::{Path, PathBuf};

/// One `field:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The C declaration without the name, e.g. `pid_t`, `char[16]`,
    /// `__data_loc char[]`.
    pub ty: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<Field>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("malformed format line {line}: {text:?}")]
    Malformed { line: usize, text: String },
    #[error("tracepoint {tracepoint}: no field {field}")]
    MissingField { tracepoint: String, field: String },
    #[error("tracepoint {tracepoint}: field {field} has size {size}, expected {expected}")]
    BadSize {
        tracepoint: String,
        field: String,
        size: u32,
        expected: u32,
    },
    #[error("no `name:` line")]
    NoName,
}

/// Parses a format file. Unknown lines (`print fmt:`, blank) are skipped;
/// a `field:` line that does not parse is an error.
pub fn parse_format(text: &str) -> Result<TracepointFormat, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(v) = line.strip_prefix("name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("ID:") {
            id = v.trim().parse().ok();
        } else if line.starts_with("field:") {
            let malformed = || FormatError::Malformed {
                line: i + 1,
                text: raw.to_string(),
            };
            fields.push(parse_field(line).ok_or_else(malformed)?);
        }
    }
    Ok(TracepointFormat {
        name: name.ok_or(FormatError::NoName)?,
        id,
        fields,
    })
}

/// `field:char prev_comm[16]; offset:8; size:16; signed:0;` (tab-separated)
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':')?;
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = value.trim().parse().ok(),
            "size" => size = value.trim().parse().ok(),
            "signed" => signed = Some(value.trim() == "1"),
            _ => {}
        }
    }
    let decl = decl?;
    let (ty, last) = decl.rsplit_once(char::is_whitespace)?;
    let (name, array) = match last.split_once('[') {
        Some((n, rest)) => (n, format!("[{rest}")),
        None => (last, String::new()),
    };
    if name.is_empty() {
        return None;
    }
    Some(Field {
        ty: format!("{}{array}", ty.trim()),
        name: name.to_string(),
        offset: offset?,
        size: size?,
        signed: signed?,
    })
}

impl TracepointFormat {
    pub fn field(&self, name: &str) -> Result<&Field, FormatError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FormatError::MissingField {
                tracepoint: self.name.clone(),
                field: name.to_string(),
            })
    }

    /// The offset of a field whose size must be `size` (the programs read
    /// fixed-width integers).
    pub fn offset_of(&self, name: &str, size: u32) -> Result<u32, FormatError> {
        let f = self.field(name)?;
        if f.size != size {
            return Err(FormatError::BadSize {
                tracepoint: self.name.clone(),
                field: name.to_string(),
                size: f.size,
                expected: size,
            });
        }
        Ok(f.offset)
    }
}

/// Field offsets passed to the OOM program as globals (names in
/// `agent_common::globals`). The scheduler programs are BTF tracepoints
/// and take typed arguments, no offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub oom_pid: u32,
    pub oom_comm: u32,
    pub oom_total_vm: u32,
    pub oom_anon_rss: u32,
    pub oom_file_rss: u32,
    pub oom_shmem_rss: u32,
    pub oom_uid: u32,
}

impl Offsets {
    /// Placeholder globals when the classic OOM program is not used.
    pub const ZERO: Offsets = Offsets {
        oom_pid: 0,
        oom_comm: 0,
        oom_total_vm: 0,
        oom_anon_rss: 0,
        oom_file_rss: 0,
        oom_shmem_rss: 0,
        oom_uid: 0,
    };
}

/// The format files the programs depend on.
#[derive(Debug, Clone)]
pub struct Formats {
    pub mark_victim: TracepointFormat,
}

/// What the kernel's `oom:mark_victim` hands over, which decides how the
/// OOM program attaches (see agent-ebpf/src/oom.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkVictim {
    /// Since Linux 6.8 the record holds pid, comm, rss and uid (and
    /// `TP_PROTO(struct task_struct *task, uid_t uid)`): the classic
    /// tracepoint program reads the record at these offsets.
    Full(Offsets),
    /// Up to 6.7 (Debian 12's 6.1) the record is `int pid` alone and the
    /// prototype `TP_PROTO(int pid)`: the raw tracepoint program sends the
    /// pid, the agent fills in the rest from its own process sample.
    PidOnly,
}

impl Formats {
    /// Which `mark_victim` this kernel has; an error when the record has
    /// neither shape (no `pid`, or `comm` without the other fields).
    pub fn mark_victim(&self) -> Result<MarkVictim, FormatError> {
        let f = &self.mark_victim;
        if f.field("comm").is_err() {
            f.offset_of("pid", 4)?;
            return Ok(MarkVictim::PidOnly);
        }
        Ok(MarkVictim::Full(self.offsets()?))
    }

    pub fn offsets(&self) -> Result<Offsets, FormatError> {
        let oom = &self.mark_victim;
        Ok(Offsets {
            oom_pid: oom.offset_of("pid", 4)?,
            // `__data_loc`: a u32, offset (low 16) and length (high 16).
            oom_comm: oom.offset_of("comm", 4)?,
            oom_total_vm: oom.offset_of("total_vm", 8)?,
            oom_anon_rss: oom.offset_of("anon_rss", 8)?,
            oom_file_rss: oom.offset_of("file_rss", 8)?,
            oom_shmem_rss: oom.offset_of("shmem_rss", 8)?,
            oom_uid: oom.offset_of("uid", 4)?,
        })
    }
}

/// Where tracefs is mounted, mounting it at `/sys/kernel/tracing` when it
/// is not (hosts without systemd often leave it unmounted; attaching a
/// tracepoint needs its `id` files).
pub fn tracefs_root() -> std::io::Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// Errors reading the format files from tracefs.
#[derive(Debug, thiserror::Error)]
pub enum ReadFormatError {
    #[error("tracefs not available: {0}")]
    Tracefs(std::io::Error),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: FormatError },
}

/// Reads and parses the format files under `root` (a tracefs mount).
pub fn read_formats(root: &Path) -> Result<Formats, ReadFormatError> {
    let read = |cat: &str, name: &str| {
        let path = root.join("events").join(cat).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| ReadFormatError::Io {
            path: path.clone(),
            source,
        })?;
        parse_format(&text).map_err(|source| ReadFormatError::Parse { path, source })
    };
    Ok(Formats {
        mark_victim: read("oom", "mark_victim")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tracing");

    fn fixture(name: &str) -> TracepointFormat {
        let path = Path::new(FIXTURES).join(name);
        let text = std::fs::read_to_string(&path).expect("read fixture");
        parse_format(&text).expect("parse fixture")
    }

    fn formats() -> Formats {
        Formats {
            mark_victim: fixture("oom_mark_victim.format"),
        }
    }

    #[test]
    fn parses_sched_switch_of_kernel_6_1() {
        let f = fixture("sched_sched_switch.format");
        assert_eq!(f.name, "sched_switch");
        assert_eq!(f.id, Some(319));
        assert_eq!(f.fields.len(), 11);
        let comm = f.field("prev_comm").expect("prev_comm");
        assert_eq!(
            (comm.ty.as_str(), comm.offset, comm.size, comm.signed),
            ("char[16]", 8, 16, true)
        );
        let st = f.field("prev_state").expect("prev_state");
        assert_eq!((st.ty.as_str(), st.offset, st.size), ("long", 32, 8));
    }

    #[test]
    fn offsets_of_kernel_6_1() {
        let o = formats().offsets().expect("offsets");
        assert_eq!(
            o,
            Offsets {
                oom_pid: 8,
                oom_comm: 12,
                oom_total_vm: 16,
                oom_anon_rss: 24,
                oom_file_rss: 32,
                oom_shmem_rss: 40,
                oom_uid: 48,
            }
        );
        let comm = formats().mark_victim.fields[5].clone();
        assert_eq!(comm.ty, "__data_loc char[]");
        assert_eq!(comm.name, "comm");
    }

    /// Upstream up to 6.7 the record is the pid alone (written by hand from
    /// include/trace/events/oom.h; Debian's 6.1.0-56 has the full record,
    /// backported, like the host's 6.18 in `oom_mark_victim.format`).
    #[test]
    fn mark_victim_shapes() {
        assert_eq!(
            formats().mark_victim(),
            Ok(MarkVictim::Full(formats().offsets().expect("offsets")))
        );
        let old = Formats {
            mark_victim: fixture("oom_mark_victim_pid_only.format"),
        };
        assert_eq!(old.mark_victim(), Ok(MarkVictim::PidOnly));
        assert!(old.offsets().is_err());
    }

    #[test]
    fn parses_every_captured_format() {
        for (file, name, fields) in [
            ("sched_sched_wakeup.format", "sched_wakeup", 8),
            ("sched_sched_wakeup_new.format", "sched_wakeup_new", 8),
            ("oom_mark_victim.format", "mark_victim", 13),
            ("oom_mark_victim_pid_only.format", "mark_victim", 5),
        ] {
            let f = fixture(file);
            assert_eq!((f.name.as_str(), f.fields.len()), (name, fields), "{file}");
        }
    }

    #[test]
    fn empty_input_has_no_name() {
        assert_eq!(parse_format(""), Err(FormatError::NoName));
    }

    #[test]
    fn malformed_field_line_is_an_error() {
        let text = "name: x\nID: 1\nformat:\n\tfield:int pid;\toffset:eight;\tsize:4;\tsigned:1;\n";
        assert!(matches!(
            parse_format(text),
            Err(FormatError::Malformed { line: 4, .. })
        ));
    }

    #[test]
    fn missing_field_and_wrong_size_are_errors() {
        let text = "name: mark_victim\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let f = parse_format(text).expect("parse");
        assert!(matches!(
            f.offset_of("uid", 4),
            Err(FormatError::MissingField { .. })
        ));
        assert!(matches!(
            f.offset_of("pid", 8),
            Err(FormatError::BadSize { size: 4, .. })
        ));
        let mut fs = formats();
        fs.mark_victim = f;
        assert!(fs.offsets().is_err());
    }
}
