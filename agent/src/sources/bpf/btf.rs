//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the raw
//! `mark_victim` program: the tracepoint's prototype (`btf_trace_mark_victim`)
//! and, when it hands over a `struct task_struct *`, the offsets of that
//! struct's `pid` and `comm` (rustc emits no CO-RE relocations, so the
//! program gets them as globals). aya parses BTF too but keeps struct
//! members private.
//!
//! Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst.

/// How `mark_victim` passes the victim to a raw tracepoint program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMarkVictim {
    /// `TP_PROTO(int pid)` (up to 6.7, unless backported).
    Pid,
    /// `TP_PROTO(struct task_struct *task, uid_t uid)` (6.8+, and Debian
    /// 12's 6.1.0-56 through a backport): byte offsets in `task_struct`.
    Task { pid_offset: u32, comm_offset: u32 },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

struct Type<'a> {
    /// Offset of the name in the string section.
    name_off: u32,
    kind: u32,
    kflag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// The kind-specific data after the common header.
    extra: &'a [u8],
    vlen: usize,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The types of a little-endian BTF blob (index = type id - 1) and its
/// string section. Names stay offsets: the whole kernel has ~100k types,
/// and the agent starts under TCG in the VM suite too.
fn parse(data: &[u8]) -> Result<(Vec<Type<'_>>, &[u8]), String> {
    if u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]) != 0xeb9f
    {
        return Err("not little-endian BTF (magic)".into());
    }
    let hdr_len = u32_at(data, 4).ok_or("short header")? as usize;
    let field = |i: usize| {
        u32_at(data, 8 + 4 * i)
            .map(|v| v as usize)
            .ok_or("short header")
    };
    let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let types = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or("type section out of bounds")?;
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or("string section out of bounds")?;
    let mut out = Vec::with_capacity(type_len / 16);
    let mut pos = 0;
    while pos + 12 <= types.len() {
        let info = u32_at(types, pos + 4).ok_or("short type")?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let extra_len = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            0..=19 => 0,
            other => return Err(format!("unknown BTF kind {other}")),
        };
        let extra = types
            .get(pos + 12..pos + 12 + extra_len)
            .ok_or("type data out of bounds")?;
        out.push(Type {
            name_off: u32_at(types, pos).ok_or("short type")?,
            kind,
            kflag: info >> 31 == 1,
            size_or_type: u32_at(types, pos + 8).ok_or("short type")?,
            extra,
            vlen,
        });
        pos += 12 + extra_len;
    }
    Ok((out, strings))
}

/// Whether the NUL-terminated string at `off` is `want`.
fn name_is(strings: &[u8], off: u32, want: &str) -> bool {
    let w = want.as_bytes();
    strings
        .get(off as usize..off as usize + w.len() + 1)
        .is_some_and(|s| &s[..w.len()] == w && s[w.len()] == 0)
}

/// Reads the prototype of `mark_victim` (and the `task_struct` offsets it
/// needs) from a vmlinux BTF blob.
pub fn raw_mark_victim(data: &[u8]) -> Result<RawMarkVictim, String> {
    let (types, strings) = parse(data)?;
    let by_id = |id: u32| types.get((id as usize).wrapping_sub(1));
    // typedef void (*btf_trace_mark_victim)(void *, <the TP_PROTO args>);
    let td = types
        .iter()
        .find(|t| t.kind == KIND_TYPEDEF && name_is(strings, t.name_off, "btf_trace_mark_victim"))
        .ok_or("no btf_trace_mark_victim in the kernel's BTF")?;
    let ptr = by_id(td.size_or_type)
        .filter(|t| t.kind == KIND_PTR)
        .ok_or("btf_trace_mark_victim is no pointer")?;
    let proto = by_id(ptr.size_or_type)
        .filter(|t| t.kind == KIND_FUNC_PROTO)
        .ok_or("btf_trace_mark_victim points to no function prototype")?;
    let params: Vec<u32> = (0..proto.vlen)
        .filter_map(|i| u32_at(proto.extra, 8 * i + 4))
        .collect();
    // Skip modifiers and typedefs down to the type itself.
    let resolve = |mut id: u32| {
        for _ in 0..16 {
            match by_id(id) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.size_or_type,
                _ => break,
            }
        }
        by_id(id)
    };
    match params.as_slice() {
        [_ctx, pid] if resolve(*pid).is_some_and(|t| t.kind == KIND_INT) => Ok(RawMarkVictim::Pid),
        [_ctx, task, _uid] => {
            let pointee = resolve(*task)
                .filter(|t| t.kind == KIND_PTR)
                .and_then(|p| resolve(p.size_or_type))
                .filter(|t| t.kind == KIND_STRUCT && name_is(strings, t.name_off, "task_struct"))
                .ok_or("mark_victim's first argument is no struct task_struct *")?;
            Ok(RawMarkVictim::Task {
                pid_offset: member_offset(strings, pointee, "pid")?,
                comm_offset: member_offset(strings, pointee, "comm")?,
            })
        }
        other => Err(format!(
            "unexpected mark_victim prototype: {} parameters",
            other.len()
        )),
    }
}

/// Byte offset of a named member of a struct type (BTF member offsets are
/// in bits; with `kflag` the low 24 bits).
fn member_offset(strings: &[u8], t: &Type<'_>, want: &str) -> Result<u32, String> {
    for i in 0..t.vlen {
        let m = &t.extra[12 * i..12 * i + 12];
        if name_is(strings, u32_at(m, 0).unwrap_or(0), want) {
            let bits = u32_at(m, 8).unwrap_or(0);
            let bits = if t.kflag { bits & 0x00ff_ffff } else { bits };
            if bits % 8 != 0 {
                return Err(format!("task_struct.{want} is a bit field"));
            }
            return Ok(bits / 8);
        }
    }
    Err(format!("task_struct has no member {want}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's own BTF, when it has one: the prototype must be one of
    /// the two known shapes and the offsets plausible.
    #[test]
    fn reads_this_kernels_mark_victim() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: nothing to check");
            return;
        };
        match raw_mark_victim(&data).expect("prototype") {
            RawMarkVictim::Pid => {}
            RawMarkVictim::Task {
                pid_offset,
                comm_offset,
            } => {
                assert!(pid_offset > 0 && pid_offset < 8192, "pid at {pid_offset}");
                assert!(
                    comm_offset > 0 && comm_offset < 16384,
                    "comm at {comm_offset}"
                );
                assert_eq!(pid_offset % 4, 0);
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(raw_mark_victim(b"").is_err());
        assert!(raw_mark_victim(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }
}
