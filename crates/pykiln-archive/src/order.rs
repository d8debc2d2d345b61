//! The order in which loading modules reads archive entries, shared by the writer
//! (which lays those entries out first) and the reader (whose runtime prefetches them).

use std::collections::BTreeSet;

/// A name's key and the SONAMEs it needs, if the name is known.
type Lookup<'f, K> = dyn Fn(&str) -> Option<(K, Vec<String>)> + 'f;

/// The entries that loading `modules` reads, in that order and each once: a module's
/// own entry, preceded, for an extension module, by the packed shared libraries it
/// needs, each after the libraries it needs itself (a dependency cycle is followed
/// once). `module` gives a module's key and the SONAMEs it needs (none for bytecode),
/// `library` the same for a SONAME; names either does not know are skipped.
pub(crate) fn load_order<K: Ord + Clone>(
    modules: &[impl AsRef<str>],
    module: impl Fn(&str) -> Option<(K, Vec<String>)>,
    library: impl Fn(&str) -> Option<(K, Vec<String>)>,
) -> Vec<K> {
    struct Walk<'f, K> {
        library: &'f Lookup<'f, K>,
        expanded: BTreeSet<String>,
        seen: BTreeSet<K>,
        out: Vec<K>,
    }
    impl<K: Ord + Clone> Walk<'_, K> {
        fn push(&mut self, key: K) {
            if self.seen.insert(key.clone()) {
                self.out.push(key);
            }
        }
        fn libraries(&mut self, needed: &[String]) {
            for soname in needed {
                if !self.expanded.insert(soname.clone()) {
                    continue;
                }
                if let Some((key, deps)) = (self.library)(soname) {
                    self.libraries(&deps);
                    self.push(key);
                }
            }
        }
    }
    let mut walk = Walk {
        library: &library,
        expanded: BTreeSet::new(),
        seen: BTreeSet::new(),
        out: Vec::new(),
    };
    for name in modules {
        if let Some((key, needed)) = module(name.as_ref()) {
            walk.libraries(&needed);
            walk.push(key);
        }
    }
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_come_before_what_needs_them_and_everything_once() {
        let module = |n: &str| match n {
            "a" | "b" => Some((n.to_string(), vec![])),
            "ext" => Some(("ext".to_string(), vec!["libx".into(), "libsys".into()])),
            "ext2" => Some(("ext2".to_string(), vec!["liby".into()])),
            _ => None,
        };
        let library = |s: &str| match s {
            "libx" => Some(("libx".to_string(), vec!["liby".into()])),
            // A cycle back to libx must not loop.
            "liby" => Some(("liby".to_string(), vec!["libx".into()])),
            _ => None,
        };
        let order = load_order(&["a", "ext", "missing", "ext2", "a", "b"], module, library);
        assert_eq!(order, ["a", "liby", "libx", "ext", "ext2", "b"]);
    }
}
