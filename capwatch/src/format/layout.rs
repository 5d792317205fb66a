//! How answers fit where they are printed: tables wrap their long columns to the terminal's
//! width (or `COLUMNS`) and run full width into a pipe or a file; verdicts and causes are
//! coloured on a terminal only, never with `NO_COLOR` set (`CLICOLOR_FORCE` colours anywhere).

use comfy_table::{presets::UTF8_BORDERS_ONLY, Cell, Color, ContentArrangement, Row, Table};

/// A table with `header`, laid out for standard output.
pub fn table(header: impl Into<Row>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    if let Some(width) = width() {
        table.set_width(width);
    }
    if colour_forced() {
        table.enforce_styling();
    } else if no_colour() {
        // Keeps the terminal's width, found above, while dropping the styling.
        table.force_no_tty();
    }
    table
}

/// The width to fit: `COLUMNS` where set, else the terminal's; None into a pipe or a file.
pub fn width() -> Option<u16> {
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<u16>().ok()).filter(|&c| c >= 20);
    columns.or_else(|| Table::new().width())
}

/// `text` in `colour` where the table styles its cells.
pub fn coloured(text: impl Into<String>, colour: Option<Color>) -> Cell {
    let cell = Cell::new(text.into());
    match colour {
        Some(colour) => cell.fg(colour),
        None => cell,
    }
}

/// A paragraph wrapped at spaces to `width()`, each line after the first starting with `indent`.
pub fn paragraph(text: &str, indent: &str) -> String {
    wrap(text, indent, width().map(usize::from))
}

fn wrap(text: &str, indent: &str, width: Option<usize>) -> String {
    let Some(width) = width else { return format!("{text}\n") };
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let start = line.trim().is_empty();
        if !start && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
        } else if !start {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn no_colour() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn colour_forced() -> bool {
    !no_colour() && std::env::var("CLICOLOR_FORCE").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_wrap_at_spaces_to_the_width() {
        let text = wrap("uncertain: the advice covers only what was seen", "  ", Some(20));
        assert_eq!(text, "uncertain: the\n  advice covers only\n  what was seen\n");
        assert!(text.lines().all(|l| l.chars().count() <= 20), "{text}");
        assert_eq!(wrap("one two", "  ", None), "one two\n");
    }
}
