//! Plain-text tables for the command-line tools (`keys list`, `usage`).

/// Rows as text, one line each: the columns numbered in `left` left-aligned, the others
/// (numbers) right-aligned, two spaces between columns, no trailing spaces.
pub(crate) fn aligned<R: AsRef<[String]>>(rows: &[R], left: &[usize]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(widths.iter().copied())
            .enumerate()
            .map(|(i, (cell, width))| {
                if left.contains(&i) {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}
