//! HTML-only mail made readable (Logwatch `--format html`, vendor notices).
//!
//! mail-parser's `html_to_text` drops tags, `<head>`, `<style>` and `<script>` and decodes
//! entities, but breaks lines only at `<br>` and `</p>`; so that line-oriented parsers (and
//! people) can read tables and headings, block-level end tags become `<br>` first and table
//! cells are separated by a space. Total: it only rewrites a string.

use std::sync::LazyLock;

use regex::Regex;

static BLOCK_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<\s*/\s*(h[1-6]|div|tr|li|table|ul|ol|pre|blockquote|dt|dd|section|article|header|footer)\s*>|<\s*hr\b[^>]*>")
        .unwrap_or_else(|_| unreachable!())
});

static CELL_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)<\s*/\s*(td|th)\s*>").unwrap_or_else(|_| unreachable!()));

/// Readable text of an HTML document.
pub(super) fn to_text(html: &str) -> String {
    let html = BLOCK_END.replace_all(html, "<br>");
    let html = CELL_END.replace_all(&html, " ");
    mail_parser::decoders::html::html_to_text(&html)
}

#[cfg(test)]
mod tests {
    #[test]
    fn headings_and_rows_become_lines() {
        let text = super::to_text(
            "<html><head><style>p{}</style></head><body><h1>Title</h1><p>a &amp; b</p><table><tr><th>Host:</th><td>web01</td></tr></table></body></html>",
        );
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines, vec!["Title", "a & b", "Host: web01"]);
    }
}
