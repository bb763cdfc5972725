//! Glyphs for the scripts egui's bundled fonts lack (CJK, full-width forms): the first
//! system font of a known list that exists is added as the last fallback of both families, so
//! such prompts show as text instead of boxes wherever the platform has one.

use eframe::egui::{Context, FontData, FontDefinitions, FontFamily};

/// Larger "font" files are not fonts; this bounds what is read at start-up.
const MAX_FONT_BYTES: u64 = 64 * 1024 * 1024;

/// Fonts with CJK coverage shipped by the usual systems, in order of preference.
pub fn fallback_candidates() -> &'static [&'static str] {
    &[
        // Debian/Ubuntu: fonts-noto-cjk, fonts-droid-fallback, fonts-wqy-*
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        // Fedora / Arch
        "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
        // macOS
        "/System/Library/Fonts/PingFang.ttc",
        "/System/Library/Fonts/Hiragino Sans GB.ttc",
        // Windows
        "C:\\Windows\\Fonts\\msyh.ttc",
        "C:\\Windows\\Fonts\\YuGothM.ttc",
    ]
}

/// Adds the font at the first existing path of `candidates` as a fallback; returns its path.
pub fn install_fallback(context: &Context, candidates: &[&str]) -> Option<String> {
    let (path, bytes) = candidates.iter().find_map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        if !metadata.is_file() || metadata.len() > MAX_FONT_BYTES {
            return None;
        }
        Some((path.to_string(), std::fs::read(path).ok()?))
    })?;
    let mut fonts = FontDefinitions::default();
    fonts
        .font_data
        .insert("system-fallback".into(), FontData::from_owned(bytes).into());
    for family in [FontFamily::Proportional, FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push("system-fallback".into());
    }
    context.set_fonts(fonts);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_existing_font_becomes_a_fallback() {
        let context = Context::default();
        let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fonts/DejaVuSans.ttf");
        let chosen = install_fallback(&context, &["/nonexistent/font.ttc", bundled]);
        assert_eq!(chosen.as_deref(), Some(bundled));
        assert_eq!(install_fallback(&context, &["/nonexistent/font.ttc"]), None);
        assert!(!fallback_candidates().is_empty());
    }
}
