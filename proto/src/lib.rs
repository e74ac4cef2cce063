//! orderflow's contracts: the gRPC APIs of every service and the integration events.
//!
//! Generated from `protos/` at build time. The REST routes the gateway serves are
//! declared here too, as `google.api.http` annotations, together with the
//! `orderflow.options.v1.access` option saying who may call each route.
#![forbid(unsafe_code)]
#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// Encoded `FileDescriptorSet` of every proto, options included. The gateway builds its
/// routes from it; services serve it through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// The `orderflow.*` packages, nested as protobuf packages are so generated code resolves.
pub mod orderflow {
    pub mod options {
        pub mod v1 {
            tonic::include_proto!("orderflow.options.v1");
        }
    }
    pub mod iam {
        pub mod v1 {
            tonic::include_proto!("orderflow.iam.v1");
        }
    }
    pub mod catalog {
        pub mod v1 {
            tonic::include_proto!("orderflow.catalog.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("orderflow.order.v1");
        }
    }
    pub mod payment {
        pub mod v1 {
            tonic::include_proto!("orderflow.payment.v1");
        }
    }
    pub mod dte {
        pub mod v1 {
            tonic::include_proto!("orderflow.dte.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("orderflow.events.v1");
        }
    }
}

pub use orderflow::{catalog, dte, events, iam, options, order, payment};
