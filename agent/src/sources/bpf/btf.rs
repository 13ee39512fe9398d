//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the
//! kernel side's direct loads (rustc emits no CO-RE relocations, so the
//! programs get struct offsets as globals):
//! - the raw `mark_victim` program: the tracepoint's prototype
//!   (`btf_trace_mark_victim`) and, when it hands over a
//!   `struct task_struct *`, the offsets of that struct's `pid` and `comm`;
//! - `sched_switch`'s unit check: the path from a task to the id of its
//!   cgroup ([`cgroup_walk`]).
//!
//! aya parses BTF too but keeps struct members private.
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

/// The type with BTF id `id` (ids start at 1; 0 is `void`).
fn by_id<'t, 'a>(types: &'t [Type<'a>], id: u32) -> Option<&'t Type<'a>> {
    types.get((id as usize).wrapping_sub(1))
}

/// The type behind `id` with modifiers (volatile, const, restrict, type
/// tags) and typedefs skipped.
fn resolve<'t, 'a>(types: &'t [Type<'a>], mut id: u32) -> Option<&'t Type<'a>> {
    for _ in 0..16 {
        match by_id(types, id) {
            Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.size_or_type,
            _ => break,
        }
    }
    by_id(types, id)
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
    let by_id = |id: u32| by_id(&types, id);
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
    let resolve = |id: u32| resolve(&types, id);
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
    member(strings, t, want).map(|(off, _)| off)
}

/// Byte offset and type id of a named member of a struct type.
fn member(strings: &[u8], t: &Type<'_>, want: &str) -> Result<(u32, u32), String> {
    let owner = name_of(strings, t.name_off);
    for i in 0..t.vlen {
        let m = &t.extra[12 * i..12 * i + 12];
        if name_is(strings, u32_at(m, 0).unwrap_or(0), want) {
            let bits = u32_at(m, 8).unwrap_or(0);
            let bits = if t.kflag { bits & 0x00ff_ffff } else { bits };
            if bits % 8 != 0 {
                return Err(format!("{owner}.{want} is a bit field"));
            }
            return Ok((bits / 8, u32_at(m, 4).unwrap_or(0)));
        }
    }
    Err(format!("{owner} has no member {want}"))
}

/// The NUL-terminated string at `off` (lossy; for messages).
fn name_of(strings: &[u8], off: u32) -> String {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// Byte offsets of the loads from a task to the id of its cgroup on the
/// default (v2) hierarchy, as `bpf_get_current_ancestor_cgroup_id` makes
/// them: `task->cgroups->dfl_cgrp`, that cgroup's `level`, and its
/// `kn->id`. The kernel side loads them directly from the BTF-typed task
/// pointer `sched_switch` hands over (the verifier checks every load
/// against the kernel's own types), which costs ~40 ns less per switch
/// than the helper call on the build box (`bpf-bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupWalk {
    /// `struct task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `struct css_set.dfl_cgrp` (`struct cgroup *`).
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup.level` (`int`).
    pub cgroup_level: u32,
    /// `struct cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node.id` (`u64`: the cgroup id).
    pub kernfs_node_id: u32,
}

impl CgroupWalk {
    /// As the kernel side's `CGROUP_WALK` global expects them.
    pub fn as_global(&self) -> [u64; agent_common::CGROUP_WALK_LEN] {
        [
            self.task_cgroups,
            self.css_set_dfl_cgrp,
            self.cgroup_level,
            self.cgroup_kn,
            self.kernfs_node_id,
        ]
        .map(u64::from)
    }
}

/// Reads the [`CgroupWalk`] offsets from a vmlinux BTF blob, checking each
/// member's type, so that a kernel whose structs differ gets an error here
/// (and the helper call) rather than a refused program.
pub fn cgroup_walk(data: &[u8]) -> Result<CgroupWalk, String> {
    let (types, strings) = parse(data)?;
    let resolve = |id: u32| resolve(&types, id);
    let find = |name: &str| {
        types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && t.vlen > 0 && name_is(strings, t.name_off, name))
            .ok_or_else(|| format!("no struct {name} in the kernel's BTF"))
    };
    let pointer_to = |owner: &str, field: &str, want: &str| -> Result<u32, String> {
        let (off, ty) = member(strings, find(owner)?, field)?;
        resolve(ty)
            .filter(|t| t.kind == KIND_PTR)
            .and_then(|p| resolve(p.size_or_type))
            .filter(|t| t.kind == KIND_STRUCT && name_is(strings, t.name_off, want))
            .ok_or_else(|| format!("{owner}.{field} is no struct {want} *"))?;
        Ok(off)
    };
    let int_of = |owner: &str, field: &str, size: u32| -> Result<u32, String> {
        let (off, ty) = member(strings, find(owner)?, field)?;
        resolve(ty)
            .filter(|t| t.kind == KIND_INT && t.size_or_type == size)
            .ok_or_else(|| format!("{owner}.{field} is no {size}-byte integer"))?;
        Ok(off)
    };
    Ok(CgroupWalk {
        task_cgroups: pointer_to("task_struct", "cgroups", "css_set")?,
        css_set_dfl_cgrp: pointer_to("css_set", "dfl_cgrp", "cgroup")?,
        cgroup_level: int_of("cgroup", "level", 4)?,
        cgroup_kn: pointer_to("cgroup", "kn", "kernfs_node")?,
        kernfs_node_id: int_of("kernfs_node", "id", 8)?,
    })
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

    /// The machine's own BTF: every member found with the expected type,
    /// at offsets this kernel's `bpftool btf dump` agrees with (checked by
    /// hand on 6.18: 2376, 112, 216, 256, 96); here only plausibility.
    #[test]
    fn reads_this_kernels_cgroup_walk() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: nothing to check");
            return;
        };
        let w = cgroup_walk(&data).expect("cgroup walk");
        assert!(w.task_cgroups > 0 && w.task_cgroups < 16384, "{w:?}");
        assert!(w.css_set_dfl_cgrp < 4096, "{w:?}");
        assert!(
            w.cgroup_level < 4096 && w.cgroup_level.is_multiple_of(4),
            "{w:?}"
        );
        assert!(w.cgroup_kn < 4096 && w.cgroup_kn.is_multiple_of(8), "{w:?}");
        assert!(
            w.kernfs_node_id < 1024 && w.kernfs_node_id.is_multiple_of(8),
            "{w:?}"
        );
    }

    /// A struct member: name, type id, byte offset.
    type Member<'a> = (&'a str, u32, u32);

    /// A little-endian BTF blob of `types`: (name, kind, size_or_type,
    /// members).
    fn blob(types: &[(&str, u32, u32, &[Member<'_>])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |n: &str| -> u32 {
            if n.is_empty() {
                return 0;
            }
            let off = strings.len() as u32;
            strings.extend_from_slice(n.as_bytes());
            strings.push(0);
            off
        };
        let mut ty = Vec::new();
        for &(n, kind, size_or_type, members) in types {
            let n = name(n);
            let vlen = members.len() as u32;
            ty.extend_from_slice(&n.to_le_bytes());
            ty.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            ty.extend_from_slice(&size_or_type.to_le_bytes());
            if kind == KIND_INT {
                ty.extend_from_slice(&(size_or_type * 8).to_le_bytes());
            }
            for &(m, t, off) in members {
                let m = name(m);
                ty.extend_from_slice(&m.to_le_bytes());
                ty.extend_from_slice(&t.to_le_bytes());
                ty.extend_from_slice(&(off * 8).to_le_bytes());
            }
        }
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            ty.len() as u32,
            ty.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&ty);
        out.extend_from_slice(&strings);
        out
    }

    /// Types 1..=9: int, u64, kernfs_node, its pointer, cgroup (with
    /// `level` of type `level_type`), its pointer, css_set, its pointer,
    /// task_struct.
    fn kernel(level_type: u32) -> Vec<u8> {
        blob(&[
            ("int", KIND_INT, 4, &[]),
            ("u64", KIND_INT, 8, &[]),
            (
                "kernfs_node",
                KIND_STRUCT,
                128,
                &[("parent", 4, 0), ("id", 2, 96)],
            ),
            ("", KIND_PTR, 3, &[]),
            (
                "cgroup",
                KIND_STRUCT,
                2048,
                &[("level", level_type, 216), ("kn", 4, 256)],
            ),
            ("", KIND_PTR, 5, &[]),
            ("css_set", KIND_STRUCT, 512, &[("dfl_cgrp", 6, 112)]),
            ("", KIND_PTR, 7, &[]),
            (
                "task_struct",
                KIND_STRUCT,
                4096,
                &[("pid", 1, 8), ("cgroups", 8, 2376)],
            ),
        ])
    }

    #[test]
    fn cgroup_walk_of_a_small_kernel() {
        assert_eq!(
            cgroup_walk(&kernel(1)),
            Ok(CgroupWalk {
                task_cgroups: 2376,
                css_set_dfl_cgrp: 112,
                cgroup_level: 216,
                cgroup_kn: 256,
                kernfs_node_id: 96,
            })
        );
        // A `level` that is no 4-byte int: the loads would not fit.
        let err = cgroup_walk(&kernel(2)).expect_err("an 8-byte level");
        assert!(err.contains("cgroup.level is no 4-byte integer"), "{err}");
        // A kernel without css_set.
        let err = cgroup_walk(&blob(&[("int", KIND_INT, 4, &[])])).expect_err("no structs");
        assert!(err.contains("no struct task_struct"), "{err}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(raw_mark_victim(b"").is_err());
        assert!(raw_mark_victim(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        assert!(cgroup_walk(b"").is_err());
        assert!(cgroup_walk(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }
}
