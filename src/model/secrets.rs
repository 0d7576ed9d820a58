//! Secret settings: values an API answer, an export or a log never shows.
//!
//! A setting is secret when its key is `password`, `secret` or `token`, or
//! ends in `_key` (at any depth of the settings object), or when the
//! module's driver declares it in a top-level table of string literals,
//! `secrets = {"community", "pin"}` (read from the driver's text, never by
//! running it). The same default rule covers control systems' settings.
//!
//! Over the API secrets are write-only: a read answers [`REDACTED`]; a
//! write that omits a secret, or sends [`REDACTED`] back, keeps the stored
//! value (so GET-then-PUT and re-importing an export never store the
//! literal); `null` removes it.

use serde_json::{Map, Value};

use super::Doc;

/// What every read shows instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// Whether `key` names a secret, by the default rule or because the driver
/// declared it.
pub fn is_secret_key(key: &str, declared: &[String]) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(k.as_str(), "password" | "secret" | "token")
        || k.ends_with("_key")
        || declared.iter().any(|d| d == key)
}

/// Replaces every secret value with [`REDACTED`].
pub fn redact(settings: &mut Map<String, Value>, declared: &[String]) {
    for (key, value) in settings.iter_mut() {
        if is_secret_key(key, declared) {
            if !value.is_null() {
                *value = Value::String(REDACTED.into());
            }
        } else if let Value::Object(inner) = value {
            redact(inner, declared);
        }
    }
}

/// Makes a written settings object keep the stored secrets: a secret the
/// write omits or sends as [`REDACTED`] gets its stored value (or is left
/// out when none is stored); `null` removes it.
pub fn keep(
    new: &mut Map<String, Value>,
    stored: Option<&Map<String, Value>>,
    declared: &[String],
) {
    let empty = Map::new();
    let stored = stored.unwrap_or(&empty);
    for (key, old) in stored {
        if is_secret_key(key, declared) && !new.contains_key(key) {
            new.insert(key.clone(), old.clone());
        }
    }
    let keys: Vec<String> = new.keys().cloned().collect();
    for key in keys {
        let secret = is_secret_key(&key, declared);
        match new.get_mut(&key) {
            Some(Value::String(s)) if secret && s == REDACTED => match stored.get(&key) {
                Some(old) => {
                    new.insert(key, old.clone());
                }
                None => {
                    new.remove(&key);
                }
            },
            Some(Value::Null) if secret => {
                new.remove(&key);
            }
            Some(Value::Object(inner)) if !secret => {
                let old = stored.get(&key).and_then(Value::as_object);
                keep(inner, old, declared);
            }
            _ => {}
        }
    }
}

/// Drops every [`REDACTED`] value from a merge patch of settings, so that
/// sending a read answer back as a patch changes no secret (a `null`
/// still removes one, as merge patches do).
pub fn strip_redacted(patch: &mut Map<String, Value>) {
    patch.retain(|_, v| v.as_str() != Some(REDACTED));
    for v in patch.values_mut() {
        if let Value::Object(inner) = v {
            strip_redacted(inner);
        }
    }
}

/// The settings a driver declares secret: the string literals of its
/// top-level `secrets = { … }` table (`M.secrets = …` too).
pub fn declared_in(driver_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in driver_text.match_indices("secrets") {
        let before = driver_text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = driver_text[at + "secrets".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('{') else {
            continue;
        };
        let Some(end) = rest.find('}') else { continue };
        for item in rest[..end].split(',') {
            let item = item.trim();
            let quoted = item
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| item.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            if let Some(name) = quoted
                && !name.is_empty()
            {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// [`redact`] on a document's settings, if it has any.
pub fn redact_doc<D: Doc>(doc: &mut D, declared: &dyn Fn(&str) -> Vec<String>) {
    if let Some((settings, driver)) = doc.settings_mut() {
        let declared = driver.map(declared).unwrap_or_default();
        redact(settings, &declared);
    }
}

/// [`keep`] on a document's settings against the stored version.
pub fn keep_doc<D: Doc>(doc: &mut D, stored: Option<&D>, declared: &dyn Fn(&str) -> Vec<String>) {
    let old = stored.and_then(|s| s.settings().cloned());
    if let Some((settings, driver)) = doc.settings_mut() {
        let declared = driver.map(declared).unwrap_or_default();
        keep(settings, old.as_ref(), &declared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn default_names_and_declared_keys_are_secret() {
        for k in ["password", "Password", "secret", "token", "api_key"] {
            assert!(is_secret_key(k, &[]), "{k}");
        }
        for k in ["user", "keyboard", "tokens", "key"] {
            assert!(!is_secret_key(k, &[]), "{k}");
        }
        assert!(is_secret_key("pin", &["pin".into()]));
    }

    #[test]
    fn reads_redact_and_writes_keep() {
        let stored = obj(json!({"password": "hunter2", "poll_ms": 5, "auth": {"token": "t"}}));
        let mut shown = stored.clone();
        redact(&mut shown, &[]);
        assert_eq!(
            Value::Object(shown.clone()),
            json!({"password": REDACTED, "poll_ms": 5, "auth": {"token": REDACTED}})
        );
        // GET-then-PUT: the literal never replaces the value.
        let mut back = shown;
        back.insert("poll_ms".into(), json!(9));
        keep(&mut back, Some(&stored), &[]);
        assert_eq!(
            Value::Object(back),
            json!({"password": "hunter2", "poll_ms": 9, "auth": {"token": "t"}})
        );
        // Omitted: kept. Null: removed. New value: taken.
        let mut w = obj(json!({"poll_ms": 1}));
        keep(&mut w, Some(&stored), &[]);
        assert_eq!(w["password"], json!("hunter2"));
        let mut w = obj(json!({"password": null}));
        keep(&mut w, Some(&stored), &[]);
        assert!(!w.contains_key("password"));
        let mut w = obj(json!({"password": "new"}));
        keep(&mut w, Some(&stored), &[]);
        assert_eq!(w["password"], json!("new"));
        // Nothing stored: the literal is dropped, never stored.
        let mut w = obj(json!({"password": REDACTED}));
        keep(&mut w, None, &[]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_driver_declares_its_secrets() {
        let text = "local M = {}\nM.secrets = { \"community\", 'pin' }\nlocal mysecrets = {\"no\"}\nreturn M";
        assert_eq!(declared_in(text), vec!["community", "pin"]);
        assert!(declared_in("secrets()").is_empty());
    }
}
