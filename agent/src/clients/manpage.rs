//! `t3pressure manpage` (hidden): the t3pressure(1) man page, rendered from
//! the clap definition in [`crate::cli`] so it never drifts from `--help`.
//! The Debian package ships its output as `/usr/share/man/man1/t3pressure.1.gz`.

use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::Cli;

/// Sections written by hand: what clap cannot know.
const FILES_AND_SEE_ALSO: &str = r#".SH FILES
.TP
\fI/etc/t3pressure/config.toml\fR
Configuration of \fBt3pressure run\fR (TOML; every flag of \fBrun\fR has a key of the same name, flags override the file).
.TP
\fI/var/lib/t3pressure/\fR
The event log (JSON Lines, rotated by size), read by \fBt3pressure events\fR.
.TP
\fI/usr/lib/systemd/system/t3pressure.service\fR
The service: Type=notify with a watchdog, Restart=always, OOMScoreAdjust=\-1000.
.SH ENDPOINTS
\fBt3pressure run\fR serves \fI/metrics\fR (Prometheus), \fI/healthz\fR and \fI/api/v1/snapshot\fR (JSON) on the listen address (default 127.0.0.1:9773).
.SH SEE ALSO
\fBsystemd.resource-control\fR(5), \fBsystemd-analyze\fR(1), \fI/usr/share/doc/t3pressure/RUNBOOK.md\fR
"#;

/// The whole page as roff: NAME, SYNOPSIS, DESCRIPTION, the subcommand list,
/// then the options of every visible subcommand, then FILES and SEE ALSO.
pub fn render() -> String {
    let cmd = Cli::command();
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; a failure would only lose the page.
    let _ = Man::new(cmd.clone()).render(&mut out);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name().to_string();
        let mut section = Vec::new();
        let sub_cmd = sub.clone().bin_name(format!("t3pressure {name}"));
        let _ = Man::new(sub_cmd).render_options_section(&mut section);
        let section = String::from_utf8_lossy(&section);
        // Each subcommand's options get their own titled section.
        let titled = section.replacen(
            ".SH OPTIONS",
            &format!(".SH \"OPTIONS OF t3pressure {name}\""),
            1,
        );
        out.extend_from_slice(titled.as_bytes());
    }
    out.extend_from_slice(FILES_AND_SEE_ALSO.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_every_visible_subcommand_and_flag() {
        let page = render();
        assert!(page.contains(".TH t3pressure 1"), "no title line");
        for needle in [
            "OPTIONS OF t3pressure run",
            "OPTIONS OF t3pressure top",
            "OPTIONS OF t3pressure events",
            "OPTIONS OF t3pressure check",
            "\\-\\-cgroup\\-root",
            "\\-\\-no\\-bpf",
            "/etc/t3pressure/config.toml",
        ] {
            assert!(page.contains(needle), "man page lacks {needle:?}");
        }
        assert!(!page.contains("manpage"), "the hidden command stays hidden");
    }
}
