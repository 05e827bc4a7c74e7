//! SMS text: GSM-7 awareness and segment-unit budgets (reference/sinks.md §4.1).
//!
//! An SMS is GSM-7 encoded when every character is in the GSM 03.38 alphabet (an extension
//! character such as `€` or `{` takes two septets), and UCS-2 as soon as one is not — which
//! cuts a segment from 160 to 70 characters \[TW-SEG\], \[TW-UCS2\]. So [`normalize`] maps common
//! typographic characters (curly quotes, dashes, `…`, non-breaking spaces) to GSM ones and
//! drops emoji; [`Encoding::Gsm7`] also replaces whatever is left with `?`, guaranteeing GSM-7.
//! [`fit`] then cuts to a budget counted in septets (GSM-7) or UTF-16 units (UCS-2).
//!
//! Guarantees: the result never exceeds the budget in the encoding it will be sent in; it is
//! cut between characters and marked (`...` in GSM-7, `…` in UCS-2); it holds no control
//! character except line feeds.

use serde::Deserialize;

/// GSM 03.38 basic alphabet (one septet each), escape excluded.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38 extension table (escape + one septet: two septets each).
const GSM_EXTENSION: &str = "^{}\\[~]|€";

/// How the SMS text is made to fit an encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Typography mapped to GSM-7 and emoji dropped; other scripts kept (then sent as UCS-2).
    #[default]
    Auto,
    /// Like `auto`, and every character still outside GSM-7 becomes `?`: always GSM-7.
    Gsm7,
}

/// Whether `ch` is in the GSM-7 alphabet (basic or extension).
pub fn is_gsm(ch: char) -> bool {
    GSM_BASIC.contains(ch) || GSM_EXTENSION.contains(ch)
}

/// Septets `ch` takes in GSM-7.
fn septets(ch: char) -> usize {
    if GSM_EXTENSION.contains(ch) {
        2
    } else {
        1
    }
}

fn is_emoji(ch: char) -> bool {
    matches!(u32::from(ch),
        0x1F000..=0x1FAFF   // pictographs, emoticons, transport, flags' regional indicators
        | 0x2600..=0x27BF   // miscellaneous symbols, dingbats
        | 0x2B00..=0x2BFF   // arrows and stars used as emoji
        | 0xFE00..=0xFE0F   // variation selectors
        | 0x200D            // zero-width joiner
        | 0x20E3            // combining keycap
        | 0xE0020..=0xE007F // tag characters
    )
}

/// Maps typography to GSM-7, drops emoji and control characters (line feeds kept), and with
/// [`Encoding::Gsm7`] replaces the rest of the non-GSM characters with `?`.
pub fn normalize(text: &str, encoding: Encoding) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\n' => out.push('\n'),
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '`' | '´' => {
                out.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '«' | '»' => {
                out.push('"')
            }
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{2022}' => out.push('*'),
            'ç' => out.push('Ç'),
            // Invisible format characters (bidi overrides, zero-width spaces) carry nothing
            // an SMS can show and cost a UCS-2 segment.
            _ if is_emoji(ch) || crate::text::is_format(ch) => {}
            _ if ch.is_whitespace() || ch.is_control() => out.push(' '),
            _ if encoding == Encoding::Gsm7 && !is_gsm(ch) => out.push('?'),
            _ => out.push(ch),
        }
    }
    out
}

/// Cuts normalized `text` to `budget` units of the encoding it needs: septets when it is all
/// GSM-7, UTF-16 units otherwise.
pub fn fit(text: &str, budget: usize) -> String {
    if text.chars().all(is_gsm) {
        crate::text::fit(text, budget, "...", crate::text::no_escape, septets)
    } else {
        crate::text::fit(text, budget, "…", crate::text::no_escape, char::len_utf16)
    }
}

/// The units `text` costs in the encoding it needs (what [`fit`] bounds).
pub fn units(text: &str) -> usize {
    if text.chars().all(is_gsm) {
        text.chars().map(septets).sum()
    } else {
        text.chars().map(char::len_utf16).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typography_becomes_gsm() {
        let t = normalize("“disk” – 99%… ’ok’ 🔥\u{a0}x\ty", Encoding::Auto);
        assert_eq!(t, "\"disk\" - 99%... 'ok'  x y");
        assert!(t.chars().all(is_gsm));
    }

    #[test]
    fn other_scripts_are_kept_or_replaced() {
        assert_eq!(normalize("сервер", Encoding::Auto), "сервер");
        assert_eq!(normalize("сервер", Encoding::Gsm7), "??????");
    }

    #[test]
    fn budgets_count_in_the_right_units() {
        assert_eq!(units("€€"), 4);
        assert_eq!(fit("€€€", 5), "€...", "6 septets over 5");
        assert_eq!(fit("abcdef", 5), "ab...");
        assert_eq!(units("я😀"), 3);
        let cut = fit("яяяяяя", 4);
        assert_eq!(cut, "яяя…");
        assert!(units(&cut) <= 4);
    }
}
