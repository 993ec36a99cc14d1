//! Text tables for results (issue 20): columns aligned to their widest cell by
//! comfy-table, whatever the length of a name, with no borders, in the style of
//! `docker ps`. Never wrapped: a script reading the lines sees one row per line.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// A table with these column headers; the columns named in `right` are right-aligned.
pub fn new(header: &[&str], right: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for (i, name) in header.iter().enumerate() {
        if right.contains(name) {
            if let Some(column) = table.column_mut(i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
}

/// The table as lines: without the one-space frame padding at the start of each line
/// and without trailing blanks.
pub fn render(table: &Table) -> String {
    let mut out = String::new();
    for line in table.lines() {
        let line = line.strip_prefix(' ').unwrap_or(&line);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_length_of_a_cell() {
        let mut t = new(&["NAME", "SIZE", "STATUS"], &["SIZE"]);
        t.add_row(vec!["a", "1 KiB", "ok"]);
        t.add_row(vec![
            "a-very-long-container-name-that-overflows-32",
            "10.5 MiB",
            "ok",
        ]);
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let status_at: Vec<usize> = lines.iter().map(|l| l.rfind(' ').unwrap() + 1).collect();
        assert!(status_at.iter().all(|&p| p == status_at[0]), "{text}");
        assert!(lines[0].starts_with("NAME "), "{text}");
        // SIZE is right-aligned: its cells end in one column.
        let size_end = |l: &str, s: &str| l.find(s).unwrap() + s.len();
        assert_eq!(
            size_end(lines[1], "1 KiB"),
            size_end(lines[2], "10.5 MiB"),
            "{text}"
        );
    }
}
