//! Plain-text tables for the command-line tools (`keys list`, `usage`).

/// Rows as text, one line each: the columns numbered in `left` left-aligned, the others
/// (numbers) right-aligned, two spaces between columns, no trailing spaces.
pub(crate) fn aligned<const N: usize>(rows: &[[String; N]], left: &[usize]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
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
