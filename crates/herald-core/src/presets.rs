//! Ready server and provider templates for the setups tenants ask for most,
//! each with what must be set up on the mail service's side.

use serde_json::Value;

/// Every preset: an id, a title, the SMTP server body, whether an account is
/// needed (and which mechanisms fit), the provider fields, and the mail
/// service's side of the setup. The table is data, kept in `presets.json`.
pub fn all() -> Value {
    serde_json::from_str(include_str!("presets.json")).expect("presets.json is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_has_an_id_a_server_and_the_mail_services_side() {
        let presets = all();
        let presets = presets.as_array().expect("a list");
        assert!(!presets.is_empty());
        for preset in presets {
            for field in [
                "id",
                "title",
                "smtp_server",
                "provider",
                "mail_service_setup",
            ] {
                assert!(preset.get(field).is_some(), "{field} is missing: {preset}");
            }
            assert!(preset.get("account").is_some(), "{preset}");
        }
    }
}
