//! How an error's hint names an elior command: runnable as typed, with the stack
//! directory the user named (issue 20), quoted for a POSIX shell when it needs it.

use std::path::Path;

/// `elior [--dir DIR] ARGS`.
pub fn command(dir: Option<&Path>, args: &str) -> String {
    match dir {
        Some(dir) => format!("elior --dir {} {args}", quote(dir)),
        None => format!("elior {args}"),
    }
}

/// A path as one shell word: as it is when that is safe, else single-quoted.
pub fn quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    shlex::try_quote(&text)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_a_space_is_quoted_and_a_plain_one_is_not() {
        assert_eq!(
            command(Some(Path::new("/srv/my stack")), "backup list"),
            "elior --dir '/srv/my stack' backup list"
        );
        assert_eq!(
            command(Some(Path::new("/srv/elior")), "render"),
            "elior --dir /srv/elior render"
        );
        assert_eq!(command(None, "render"), "elior render");
    }
}
