//! How the command line prints: Docker-style tables, human sizes and ages,
//! diagnostics.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use miette::Diagnostic;

/// A table in Docker's style: upper-case headers, columns separated by three
/// spaces, no borders.
pub fn table<I, R, C>(headers: &[&str], rows: I) -> String
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = C>,
    C: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    for column in t.column_iter_mut() {
        column.set_cell_alignment(CellAlignment::Left);
        column.set_padding((0, 3));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in Docker's human form (decimal units, three significant digits):
/// `4.26MB`, `850kB`, `1.2GB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    // Three significant digits, trailing zeros dropped, like go-units' %.4g.
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{value:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// An RFC 3339 time as Docker prints ages: `2 weeks ago`, `About an hour ago`.
pub fn age(rfc3339: Option<&str>) -> String {
    let Some(then) = rfc3339.and_then(parse_rfc3339) else {
        return "N/A".to_string();
    };
    let elapsed = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO);
    format!("{} ago", human_duration(elapsed))
}

/// Go's `units.HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (minutes, hours) = (secs / 60, secs / 3600);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (a space for the `T`
/// too).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    match s.as_bytes().get(10) {
        Some(b' ') => crate::runtime::logs::parse_datetime(&format!("{}T{}", &s[..10], &s[11..])),
        _ => crate::runtime::logs::parse_datetime(s),
    }
}

/// True when stderr should get colors.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Renders a diagnostic the way the CLI prints it: with the source line and
/// labels, in color or not, 100 columns wide.
pub fn render(diagnostic: &dyn Diagnostic, color: bool) -> String {
    crate::spec::diag::render(diagnostic, color)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(850_000), "850kB");
        assert_eq!(human_size(1_200_000_000), "1.2GB");
        assert_eq!(human_size(12_345_678), "12.3MB");
    }

    #[test]
    fn durations_print_like_docker() {
        assert_eq!(human_duration(Duration::from_secs(0)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(59)), "59 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3600 * 3)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(86_400 * 20)), "2 weeks");
    }

    #[test]
    fn rfc3339_times_parse() {
        let t = parse_rfc3339("1970-01-02T00:00:01Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            86_401
        );
        let t = parse_rfc3339("2000-02-29T01:00:00.123456+01:00").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            951_782_400
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn tables_align_columns_like_docker() {
        let out = table(&["REPOSITORY", "TAG"], [["busybox", "latest"], ["a", "b"]]);
        assert_eq!(
            out,
            "REPOSITORY   TAG\nbusybox      latest\na            b\n"
        );
    }
}
