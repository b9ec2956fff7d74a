//! Settings of the whole gateway that live with the configuration.

use crate::{parse_cidr, Policies, Problems};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Gateway-wide settings: the proxies whose forwarded addresses are believed, and the
/// policies every route gets unless its service or itself sets the same kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Addresses or CIDR blocks of proxies in front of Portico. When a request comes from
    /// one of them, the client address is taken from `X-Forwarded-For`: the right-most
    /// address that is not itself a trusted proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// CA certificates (PEM) the TLS listener verifies client certificates with. When set,
    /// it asks clients for a certificate (they may still connect without one; routes with
    /// `mtls_auth` then refuse them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Policies for every route.
    #[serde(default, skip_serializing_if = "Policies::is_empty")]
    pub policies: Policies,
}

impl crate::HoldsSecrets for Global {
    fn secret_slots(&mut self) -> Vec<(String, &mut Option<crate::Secret>)> {
        self.policies.secret_slots()
    }
}

impl Global {
    pub fn is_default(&self) -> bool {
        self == &Global::default()
    }

    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        for (i, block) in self.trusted_proxies.iter().enumerate() {
            if let Err(message) = parse_cidr(block) {
                problems.push(format!("trusted_proxies[{i}]"), message);
            }
        }
        if let Some(ca) = &self.client_ca {
            crate::certificate::check_chain("client_ca", ca, &mut problems);
        }
        self.policies.validate(&mut problems);
        problems.into_result()
    }
}
