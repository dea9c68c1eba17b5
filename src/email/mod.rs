//! The welcome email: transport, rendering and the admin's first-access secret.
