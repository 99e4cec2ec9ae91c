//! What a caught panic said, for logs and probe reasons.

/// The message of a panic payload (`&str` or `String`), or a placeholder for other payloads.
pub(crate) fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(non-string panic payload)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn str_string_and_other_payloads() {
        assert_eq!(super::message(&"boom"), "boom");
        assert_eq!(super::message(&String::from("bang")), "bang");
        assert_eq!(super::message(&42_u8), "(non-string panic payload)");
    }
}
