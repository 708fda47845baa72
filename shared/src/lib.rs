//! Types shared by `synaxisd` and `synaxisctl`: identifiers, regions, roles and the bodies of
//! the control and inference APIs.

pub mod api;
pub mod budgets;
pub mod compliance;
pub mod credits;
pub mod error;
pub mod ids;
pub mod invoices;
pub mod limits;
pub mod locale;
pub mod money;
pub mod plans;
pub mod region;
pub mod role;

pub use ids::{InvoiceId, KeyId, OrgId, RequestId, TeamId, UserId};
pub use locale::Locale;
pub use region::{Jurisdiction, RegionId};
pub use role::Role;
