//! Typed UUID identifiers, so that an org id cannot be passed where a key id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Error returned when a string is not a UUID id.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{value}` is not {kind} id: expected a UUID such as 5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11{hint}"
)]
pub struct InvalidId {
    pub value: String,
    /// The kind of id, with its article, such as `an organization`.
    pub kind: &'static str,
    /// A hint on listing such ids, or empty.
    pub hint: &'static str,
    #[source]
    pub source: uuid::Error,
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $hint:literal) => {
        uuid_id!(
            $(#[$meta])* $name, $kind, $hint,
            /// Creates a new random (version 4) identifier.
            Uuid::new_v4
        );
    };
    ($(#[$meta:meta])* $name:ident, $kind:literal, $hint:literal, $(#[doc = $new_doc:literal])+ $new:path) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            $(#[doc = $new_doc])+
            pub fn new() -> Self {
                Self($new())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|source| InvalidId {
                    value: s.to_owned(),
                    kind: $kind,
                    hint: $hint,
                    source,
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// Identifier of an organization (tenant).
    OrgId,
    "an organization",
    "; `synaxisctl org list` shows them"
);
uuid_id!(
    /// Identifier of a team inside an organization.
    TeamId,
    "a team",
    "; `synaxisctl team list --org ORG_ID` shows them"
);
uuid_id!(
    /// Identifier of a user inside an organization.
    UserId,
    "a user",
    "; `synaxisctl user list --org ORG_ID` shows them"
);
uuid_id!(
    /// Identifier of a virtual key. Stable across rotations; the secret is not derived from it.
    KeyId,
    "a key",
    "; `synaxisctl key list --user USER_ID` shows them"
);
uuid_id!(
    /// Identifier of one inference request and of its request record.
    RequestId,
    "a request",
    "",
    /// Creates a new time-ordered (version 7) identifier, so that records stored one after
    /// another go to the end of the primary key's index instead of random places in it.
    Uuid::now_v7
);
uuid_id!(
    /// Identifier of an invoice.
    InvoiceId,
    "an invoice",
    "; `synaxisctl invoice list ORG` shows them"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_sort_in_creation_order() {
        let ids: Vec<RequestId> = (0..10_000).map(|_| RequestId::new()).collect();

        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(ids[0].0.get_version_num(), 7);
        assert_eq!(OrgId::new().0.get_version_num(), 4);
    }
}
