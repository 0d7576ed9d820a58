//! One line for an error and its causes, for logs and for the short
//! messages the API and the command line print.

/// One line: an error and its causes, joined by `": "`.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_on_one_line() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::describe(&e), "outer: inner");
    }
}
