//! The default standard-library exclusions (python-stdlib/exclude.txt).

/// The exclusion list as shipped with this version of pykiln-build.
pub const DEFAULT_EXCLUDES: &str = include_str!("../../../python-stdlib/exclude.txt");

/// Module-name patterns that leave modules (and their subpackages) out of an archive.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<String>,
}

impl Excludes {
    /// Parse `pattern # reason` lines; blank and comment-only lines are ignored.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Excludes { patterns }
    }

    /// The shipped defaults.
    pub fn defaults() -> Self {
        Self::parse(DEFAULT_EXCLUDES)
    }

    /// Add one pattern.
    pub fn push(&mut self, pattern: impl Into<String>) {
        self.patterns.push(pattern.into());
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `module` or a package above it matches a pattern.
    pub fn excludes(&self, module: &str) -> bool {
        let mut end = 0;
        let parts: Vec<&str> = module.split('.').collect();
        for part in &parts {
            end += part.len();
            let prefix = &module[..end];
            if self.patterns.iter().any(|p| glob(p, prefix)) {
                return true;
            }
            end += 1;
        }
        false
    }
}

/// `*`-only glob.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    if !text.starts_with(head) {
        return false;
    }
    let text = &text[head.len()..];
    if rest.is_empty() {
        return true;
    }
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .any(|i| glob(rest, &text[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_drop_tests_gui_and_windows_but_keep_the_rest() {
        let ex = Excludes::defaults();
        for gone in [
            "test",
            "test.support",
            "unittest.test",
            "unittest.test.test_case",
            "lib2to3",
            "_testcapi",
            "tkinter.ttk",
            "idlelib",
            "encodings.mbcs",
            "xxlimited_35",
        ] {
            assert!(ex.excludes(gone), "{gone} should be excluded");
        }
        for kept in [
            "unittest",
            "json",
            "encodings.utf_8",
            "sqlite3",
            "asyncio.events",
            "_sqlite3",
            "testing",
            "contest",
        ] {
            assert!(!ex.excludes(kept), "{kept} should be kept");
        }
    }

    #[test]
    fn glob_star_matches_any_run() {
        assert!(glob("*.tests", "lib2to3.tests"));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbb"));
        assert!(glob("*", ""));
    }
}
