//! Notices: what travels with every copy of a pykiln binary so that it can be
//! redistributed and audited. The build stores two [`EntryKind::Notice`](crate::EntryKind)
//! entries: [`LICENSES`] (plain text, every license text of what is packed and linked)
//! and [`SBOM`] (a CycloneDX 1.6 JSON document). The runtime adds what only it knows
//! (the SQLite it links) when it prints them: [`sqlite_license`], [`complete_sbom`].

use serde_json::{Value, json};

/// Name of the license-texts notice.
pub const LICENSES: &str = "licenses";
/// Name of the CycloneDX SBOM notice.
pub const SBOM: &str = "sbom.cdx.json";
/// `bom-ref` of the application component (`metadata.component`).
pub const APP_REF: &str = "app";

/// The section of the license texts about the SQLite the runtime links.
pub fn sqlite_license(version: &str) -> String {
    format!(
        "{rule}\nSQLite {version} (C library, linked into the runtime; SPDX: blessing)\n{rule}\n\
         The author disclaims copyright to this source code. In place of a legal notice,\n\
         here is a blessing:\n\n\
         \x20   May you do good and not evil.\n\
         \x20   May you find forgiveness for yourself and forgive others.\n\
         \x20   May you share freely, never taking more than you give.\n\n\
         (SQLite is in the public domain: https://sqlite.org/copyright.html)\n",
        rule = "=".repeat(78)
    )
}

/// The SBOM component of the SQLite the runtime links.
pub fn sqlite_component(version: &str) -> Value {
    json!({
        "type": "library",
        "bom-ref": format!("sqlite@{version}"),
        "name": "sqlite",
        "version": version,
        "description": "SQLite, statically linked into the runtime (Python's sqlite3 uses it)",
        "licenses": [{"expression": "blessing"}],
        "cpe": format!("cpe:2.3:a:sqlite:sqlite:{version}:*:*:*:*:*:*:*"),
        "purl": format!("pkg:generic/sqlite@{version}"),
    })
}

/// Errors of [`complete_sbom`].
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The stored notice is not JSON.
    #[error("the stored SBOM is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The stored notice is JSON of another shape.
    #[error("the stored SBOM has no {0} array")]
    Shape(&'static str),
}

/// The stored SBOM with the runtime's own components added (and, for a release
/// artifact, the SHA-256 of the binary itself, which the binary cannot contain).
pub fn complete_sbom(
    stored: &[u8],
    sqlite_version: &str,
    binary_sha256: Option<&str>,
) -> Result<Value, SbomError> {
    let mut doc: Value = serde_json::from_slice(stored)?;
    let sqlite = sqlite_component(sqlite_version);
    let sqlite_ref = sqlite["bom-ref"].clone();
    doc.get_mut("components")
        .and_then(Value::as_array_mut)
        .ok_or(SbomError::Shape("components"))?
        .push(sqlite);
    let deps = doc
        .get_mut("dependencies")
        .and_then(Value::as_array_mut)
        .ok_or(SbomError::Shape("dependencies"))?;
    if let Some(app) = deps.iter_mut().find(|d| d["ref"] == APP_REF) {
        if let Some(on) = app.get_mut("dependsOn").and_then(Value::as_array_mut) {
            on.push(sqlite_ref);
        }
    }
    if let (Some(hash), Some(app)) = (binary_sha256, doc.pointer_mut("/metadata/component")) {
        app["hashes"] = json!([{"alg": "SHA-256", "content": hash}]);
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_added_as_a_component_and_a_dependency_of_the_app() {
        let stored = br#"{"metadata":{"component":{"bom-ref":"app"}},"components":[],
            "dependencies":[{"ref":"app","dependsOn":["x"]}]}"#;
        let doc = complete_sbom(stored, "3.50.4", Some("ab")).unwrap();
        assert_eq!(doc["components"][0]["version"], "3.50.4");
        assert_eq!(doc["dependencies"][0]["dependsOn"][1], "sqlite@3.50.4");
        assert_eq!(doc["metadata"]["component"]["hashes"][0]["content"], "ab");
    }

    #[test]
    fn a_damaged_notice_is_an_error_not_a_panic() {
        assert!(matches!(
            complete_sbom(b"{", "1", None),
            Err(SbomError::Json(_))
        ));
        assert!(matches!(
            complete_sbom(b"{}", "1", None),
            Err(SbomError::Shape("components"))
        ));
    }
}
