//! Error mapping between SIP and XMPP (RFC 7247 §7, standards.md §4).
//!
//! Conditions are named by their RFC 6120 §8.3.3 element names; the mapping to SIP
//! depends on whether the XMPP address was bare or full (Table 2).

/// The XMPP error for a SIP final response code (RFC 7247 Table 3), with the RFC 6120
/// default `type` (standards.md §4.1; the RFC gives no type, product decision §15.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedError {
    pub condition: &'static str,
    pub error_type: &'static str,
    /// For `gone`: the new address (301 with a Contact, RFC 7247: MUST contain it).
    pub gone_to: Option<String>,
}

/// RFC 6120 §8.3.3 default error types.
pub fn default_type(condition: &str) -> &'static str {
    match condition {
        "bad-request" | "jid-malformed" | "not-acceptable" | "policy-violation" | "redirect" => {
            "modify"
        }
        "forbidden" | "not-authorized" | "registration-required" | "subscription-required" => {
            "auth"
        }
        "recipient-unavailable"
        | "remote-server-timeout"
        | "resource-constraint"
        | "unexpected-request" => "wait",
        _ => "cancel",
    }
}

/// SIP status → XMPP condition (RFC 7247 §7.2 Table 3; unlisted codes by class).
/// `contact` is the Contact of a 3xx, used for `gone` on 301.
#[allow(clippy::match_overlapping_arm)] // specific codes first, then the class fallbacks
pub fn sip_to_xmpp(status: u16, contact: Option<&str>) -> MappedError {
    let condition = match status {
        300 | 302 | 305 => "redirect",
        301 => "gone",
        380 => "not-acceptable",
        400 => "bad-request",
        401 => "not-authorized",
        402 => "bad-request",
        403 => "forbidden",
        404 => "item-not-found",
        405 => "feature-not-implemented",
        406 => "not-acceptable",
        407 => "registration-required",
        408 => "remote-server-timeout",
        410 => "gone",
        413 | 414 => "policy-violation",
        415 | 416 => "not-acceptable",
        420 => "feature-not-implemented",
        421 => "not-acceptable",
        423 => "resource-constraint",
        430 => "recipient-unavailable",
        439 => "feature-not-implemented",
        440 => "policy-violation",
        480 => "recipient-unavailable",
        481 => "item-not-found",
        482 | 483 => "not-acceptable",
        484 | 485 => "item-not-found",
        486 | 487 => "recipient-unavailable",
        488 => "not-acceptable",
        489 => "policy-violation",
        491 => "unexpected-request",
        493 => "bad-request",
        500 => "internal-server-error",
        501 => "feature-not-implemented",
        502 => "remote-server-not-found",
        // 503 is deliberately not service-unavailable (RFC 7247 Table 3, case 57).
        503 => "internal-server-error",
        504 => "remote-server-timeout",
        505 => "not-acceptable",
        513 => "policy-violation",
        600 | 603 => "recipient-unavailable",
        604 => "item-not-found",
        606 => "not-acceptable",
        300..=399 => "redirect",
        400..=499 => "bad-request",
        500..=599 => "internal-server-error",
        _ => "recipient-unavailable",
    };
    let gone_to = if status == 301 {
        contact.map(str::to_string)
    } else {
        None
    };
    MappedError {
        condition,
        error_type: default_type(condition),
        gone_to,
    }
}

/// A local transaction timeout (Timer F) reads as 408 (standards.md §4.2, case 61).
pub fn timeout_to_xmpp() -> MappedError {
    sip_to_xmpp(408, None)
}

/// XMPP condition → SIP status (RFC 7247 §7.1 Table 2). `full_jid` selects the 4xx
/// (full JID) or 6xx (bare JID) variant where the table has both.
pub fn xmpp_to_sip(condition: &str, full_jid: bool, has_new_address: bool) -> u16 {
    match condition {
        "bad-request"
        | "conflict"
        | "jid-malformed"
        | "subscription-required"
        | "undefined-condition" => 400,
        "feature-not-implemented" => {
            if full_jid {
                405
            } else {
                501
            }
        }
        "forbidden" => {
            if full_jid {
                403
            } else {
                603
            }
        }
        "gone" => {
            if has_new_address {
                301
            } else {
                410
            }
        }
        "internal-server-error" | "resource-constraint" => 500,
        "item-not-found" => {
            if full_jid {
                404
            } else {
                604
            }
        }
        "not-acceptable" => {
            if full_jid {
                406
            } else {
                606
            }
        }
        "not-allowed" | "policy-violation" => 403,
        "not-authorized" => 401,
        "recipient-unavailable" => {
            if full_jid {
                480
            } else {
                600
            }
        }
        "redirect" => 302,
        "registration-required" => 407,
        "remote-server-not-found" => 404,
        "remote-server-timeout" => 408,
        // Never 503 (RFC 7247: NOT RECOMMENDED); 403 is the closest (case 60).
        "service-unavailable" => 403,
        "unexpected-request" => 491,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case 56.
    #[test]
    fn sip_404_is_item_not_found_cancel() {
        let e = sip_to_xmpp(404, None);
        assert_eq!((e.condition, e.error_type), ("item-not-found", "cancel"));
    }

    /// Case 57.
    #[test]
    fn sip_503_is_internal_server_error_not_service_unavailable() {
        assert_eq!(sip_to_xmpp(503, None).condition, "internal-server-error");
    }

    /// Case 58.
    #[test]
    fn sip_301_is_gone_with_new_address_and_410_without() {
        let e = sip_to_xmpp(301, Some("sip:ben2@sip.example"));
        assert_eq!(
            (e.condition, e.gone_to.as_deref()),
            ("gone", Some("sip:ben2@sip.example"))
        );
        let e = sip_to_xmpp(410, Some("sip:x@y"));
        assert_eq!((e.condition, e.gone_to), ("gone", None));
    }

    /// Case 59.
    #[test]
    fn unlisted_codes_fall_back_by_class() {
        assert_eq!(sip_to_xmpp(499, None).condition, "bad-request");
        assert_eq!(sip_to_xmpp(599, None).condition, "internal-server-error");
        assert_eq!(sip_to_xmpp(699, None).condition, "recipient-unavailable");
        assert_eq!(sip_to_xmpp(380, None).condition, "not-acceptable");
    }

    /// Case 60.
    #[test]
    fn service_unavailable_is_never_503_and_item_not_found_depends_on_jid() {
        assert_eq!(xmpp_to_sip("service-unavailable", true, false), 403);
        assert_eq!(xmpp_to_sip("item-not-found", false, false), 604);
        assert_eq!(xmpp_to_sip("item-not-found", true, false), 404);
    }

    /// Case 61.
    #[test]
    fn local_timeout_is_remote_server_timeout() {
        assert_eq!(timeout_to_xmpp().condition, "remote-server-timeout");
    }
}
