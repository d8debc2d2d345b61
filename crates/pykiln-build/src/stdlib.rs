//! The default standard-library exclusions (python-stdlib/exclude.txt, linked into
//! this crate as exclude.txt so that it is packaged with it).

/// The exclusion list as shipped with this version of pykiln-build.
pub const DEFAULT_EXCLUDES: &str = include_str!("../exclude.txt");

/// Module-name patterns that leave modules (and their subpackages) out of an archive:
/// the standard-library list applies to the standard library only (`*.tests` must not
/// drop `jinja2.tests`), patterns added with [`Excludes::push`] to every layer.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<String>,
    user: Vec<String>,
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
        Excludes {
            patterns,
            user: Vec::new(),
        }
    }

    /// The shipped defaults.
    pub fn defaults() -> Self {
        Self::parse(DEFAULT_EXCLUDES)
    }

    /// Add one pattern that applies to every layer.
    pub fn push(&mut self, pattern: impl Into<String>) {
        self.user.push(pattern.into());
    }

    /// The standard-library patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The patterns added with `push`.
    pub fn user_patterns(&self) -> &[String] {
        &self.user
    }

    /// Whether `module` (of the standard library if `stdlib`) or a package above it
    /// matches a pattern.
    pub fn excludes(&self, module: &str, stdlib: bool) -> bool {
        let mut end = 0;
        let parts: Vec<&str> = module.split('.').collect();
        let stdlib_patterns = if stdlib { &self.patterns[..] } else { &[] };
        for part in &parts {
            end += part.len();
            let prefix = &module[..end];
            if stdlib_patterns
                .iter()
                .chain(&self.user)
                .any(|p| glob(p, prefix))
            {
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
            assert!(ex.excludes(gone, true), "{gone} should be excluded");
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
            assert!(!ex.excludes(kept, true), "{kept} should be kept");
        }
    }

    #[test]
    fn stdlib_patterns_spare_third_party_packages() {
        let mut ex = Excludes::defaults();
        assert!(ex.excludes("unittest.test", true));
        assert!(!ex.excludes("jinja2.tests", false));
        assert!(!ex.excludes("_testing_helpers", false));
        ex.push("mypkg.heavy*");
        assert!(ex.excludes("mypkg.heavy_models.x", false));
        assert!(ex.excludes("mypkg.heavy", true));
    }

    #[test]
    fn glob_star_matches_any_run() {
        assert!(glob("*.tests", "lib2to3.tests"));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbb"));
        assert!(glob("*", ""));
    }
}
