//! Access control inside every service: one tower layer in front of each service's gRPC
//! API (installed by [`crate::grpc_server::GrpcServer`], so a new RPC cannot skip it).
//!
//! For each call it verifies the internal token in the `authorization` metadata
//! ([`crate::identity`]), puts the verified [`Caller`] into the request's extensions (the
//! handlers read it with [`Caller::of`]), and enforces the RPC's access level as the protos
//! declare it with `orderflow.options.v1.access`:
//!
//! | access | who passes | refused with |
//! |---|---|---|
//! | public | anyone (a token, if sent, must verify) | UNAUTHENTICATED for a bad token |
//! | authenticated | a token naming a user | UNAUTHENTICATED |
//! | admin | a token naming a user with `admin` | UNAUTHENTICATED / PERMISSION_DENIED |
//! | internal | a token minted by a backend service | UNAUTHENTICATED / PERMISSION_DENIED |
//!
//! A method of ours without an access option is refused to everyone. The standard
//! health and reflection services are public.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
};

use http::{Request, Response};
use prost_reflect::{DescriptorPool, Value};
use tonic::Status;

use crate::{grpc::Caller, identity::Verifier};

/// Who may call an RPC (`orderflow.options.v1.Access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Any signed-in user.
    Authenticated,
    /// Users holding `admin`.
    Admin,
    /// orderflow's backend services only.
    Internal,
    /// The method declares no access: refused to everyone.
    Undeclared,
}

/// Every orderflow RPC's access, by gRPC path (`/package.Service/Method`).
pub static ACCESS_TABLE: LazyLock<HashMap<String, Access>> = LazyLock::new(|| {
    access_table(proto::FILE_DESCRIPTOR_SET).expect("the compiled descriptor set decodes")
});

/// Reads every method's access option from an encoded descriptor set.
pub fn access_table(descriptors: &[u8]) -> Result<HashMap<String, Access>, String> {
    let pool = DescriptorPool::decode(descriptors).map_err(|e| e.to_string())?;
    let extension = pool
        .get_extension_by_name("orderflow.options.v1.access")
        .ok_or("orderflow.options.v1.access is missing")?;
    let mut table = HashMap::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            let access = if options.has_extension(&extension) {
                match options.get_extension(&extension).as_ref() {
                    Value::EnumNumber(1) => Access::Public,
                    Value::EnumNumber(2) => Access::Authenticated,
                    Value::EnumNumber(3) => Access::Admin,
                    Value::EnumNumber(4) => Access::Internal,
                    _ => Access::Undeclared,
                }
            } else {
                Access::Undeclared
            };
            table.insert(
                format!("/{}/{}", service.full_name(), method.name()),
                access,
            );
        }
    }
    Ok(table)
}

/// The access check of one RPC for a verified caller.
pub fn check(access: Access, caller: &Caller) -> Result<(), Status> {
    match access {
        Access::Public => Ok(()),
        Access::Authenticated => caller.require_user().map(drop),
        Access::Admin => caller.require_admin().map(drop),
        Access::Internal if caller.service.is_none() => Err(Status::unauthenticated(
            "this method is for orderflow's services: no service credential was sent",
        )),
        Access::Internal if !caller.is_backend_service() => Err(Status::permission_denied(
            "this method is for orderflow's services only",
        )),
        Access::Internal => Ok(()),
        Access::Undeclared => Err(Status::permission_denied(
            "this method declares no access level",
        )),
    }
}

/// Installs [`Authorize`] in front of a service's API.
#[derive(Clone)]
pub struct AuthorizeLayer {
    verifier: Verifier,
}

impl AuthorizeLayer {
    /// Verifies tokens with `verifier` (whose audience is the service's gRPC name).
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service made by [`AuthorizeLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    verifier: Verifier,
}

impl<S> Authorize<S> {
    fn caller_of<B>(&self, req: &Request<B>) -> Result<Caller, Status> {
        let path = req.uri().path();
        let access = match ACCESS_TABLE.get(path) {
            Some(access) => *access,
            // The standard health and reflection services; anything else unknown has no
            // handler and gets UNIMPLEMENTED from the router.
            None => Access::Public,
        };
        let caller = match crate::identity::bearer(req.headers()) {
            Ok(None) => Caller::default(),
            Ok(Some(token)) => self.verifier.verify(token).map_err(|e| {
                tracing::debug!(rpc = path, error = %e, "credential refused");
                metrics::counter!("grpc_credentials_refused_total").increment(1);
                Status::unauthenticated(format!("credential refused: {e}"))
            })?,
            Err(e) => return Err(Status::unauthenticated(e.to_string())),
        };
        check(access, &caller)?;
        Ok(caller)
    }
}

impl<S, B, ResBody> tower::Service<Request<B>> for Authorize<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.caller_of(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                let response = status.into_http::<ResBody>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_every_service_declares_its_access() {
        let undeclared: Vec<&String> = ACCESS_TABLE
            .iter()
            .filter(|(_, a)| **a == Access::Undeclared)
            .map(|(path, _)| path)
            .collect();
        assert!(
            undeclared.is_empty(),
            "these RPCs have no orderflow.options.v1.access option: {undeclared:?}"
        );
        // The walk saw every service's methods, internal ones included.
        assert_eq!(
            ACCESS_TABLE.get("/orderflow.catalog.v1.CatalogService/ReserveStock"),
            Some(&Access::Internal)
        );
        assert_eq!(
            ACCESS_TABLE.get("/orderflow.order.v1.OrderService/GetPayableOrder"),
            Some(&Access::Internal)
        );
        assert!(ACCESS_TABLE.len() >= 30, "{}", ACCESS_TABLE.len());
    }

    #[test]
    fn a_method_without_an_access_option_is_refused_to_everyone() {
        let admin = Caller {
            user_id: Some(uuid::Uuid::now_v7()),
            roles: vec!["admin".into()],
            service: Some("order".into()),
            client_ip: None,
        };
        assert_eq!(
            check(Access::Undeclared, &admin).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn internal_methods_take_a_backend_service_not_a_user_or_the_gateway() {
        let user = Caller {
            user_id: Some(uuid::Uuid::now_v7()),
            roles: vec!["admin".into()],
            service: Some(crate::identity::GATEWAY.into()),
            client_ip: None,
        };
        assert_eq!(
            check(Access::Internal, &user).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            check(Access::Internal, &Caller::default())
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        let order = Caller {
            service: Some("order".into()),
            ..Caller::default()
        };
        assert!(check(Access::Internal, &order).is_ok());
    }
}
