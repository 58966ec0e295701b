//! Publish ids scoped to a publisher. With auth on, the dedupe index keys a publisher's
//! `id` by the token's subject (`<sub>\0<id>`), so nobody can pre-publish another
//! publisher's id and turn the real publish into a `duplicate` of their data. The stored
//! message, its envelope and every reply carry the publisher's `id` as given. A valid id
//! is printable ASCII (never `\0`), so the id is what follows the last `\0`.

/// The dedupe key of `id` published by `subject` (`None`: auth off, or no subject).
pub fn scoped(subject: Option<&str>, id: String) -> String {
    match subject {
        Some(sub) => format!("{sub}\0{id}"),
        None => id,
    }
}

/// The publisher's id within a dedupe key.
pub fn unscoped(key: &str) -> &str {
    key.rsplit_once('\0').map_or(key, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_id_gives_back_the_publishers_id() {
        assert_eq!(scoped(None, "a".into()), "a");
        let key = scoped(Some("alice"), "order-7".into());
        assert_ne!(key, scoped(Some("bob"), "order-7".into()));
        assert_eq!(unscoped(&key), "order-7");
        // A subject may hold anything, a \0 included.
        assert_eq!(unscoped(&scoped(Some("x\0y"), "id".into())), "id");
        assert_eq!(unscoped("plain"), "plain");
    }
}
