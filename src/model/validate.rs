//! Validation errors that name the document and the field, and a small
//! collector so one pass reports every problem at once.

use uuid::Uuid;

use super::Kind;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub kind: &'static str,
    pub id: Uuid,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.kind, self.id, self.field, self.message
        )
    }
}

/// A document (or a set of documents) failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub errors: Vec<FieldError>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Invalid {
    pub fn merge(results: impl IntoIterator<Item = Result<(), Invalid>>) -> Result<(), Invalid> {
        let errors: Vec<FieldError> = results
            .into_iter()
            .filter_map(Result::err)
            .flat_map(|e| e.errors)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid { errors })
        }
    }
}

pub(crate) struct Checker {
    kind: Kind,
    id: Uuid,
    errors: Vec<FieldError>,
}

impl Checker {
    pub(super) fn new(kind: Kind, id: Uuid) -> Self {
        Self {
            kind,
            id,
            errors: Vec::new(),
        }
    }

    pub(super) fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            kind: self.kind.as_str(),
            id: self.id,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Names are shown to operators: non-empty, one line, bounded.
    pub(super) fn name(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(field, "must not be empty");
        } else if value.len() > 200 {
            self.fail(field, "must be at most 200 bytes");
        } else if value.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
    }

    pub(super) fn finish(self) -> Result<(), Invalid> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid {
                errors: self.errors,
            })
        }
    }
}
