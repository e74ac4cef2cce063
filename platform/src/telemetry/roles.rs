//! Which role a span belongs to, so that `orderflow all` (every role in one process)
//! still reports each role as its own service (`orderflow-order`, …), as separate
//! processes do.
//!
//! The span sites that begin a role's work (the gateway's request, a gRPC call served, a
//! message consumed or published, a document issued) name their role in the
//! [`ROLE`] field; every other span inherits its parent's. The exporter of `orderflow all`
//! then sends each span under its role's resource.

use std::collections::HashMap;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use tracing::{Subscriber, field::Visit, span};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The span field (and exported attribute) naming the role a span belongs to.
pub const ROLE: &str = "orderflow.role";

/// A span's role, kept in its extensions by [`RoleLayer`].
#[derive(Clone)]
struct Role(String);

/// Records each span's role: its own [`ROLE`] field, else its parent's.
pub(super) struct RoleLayer;

struct RoleField(Option<String>);

impl Visit for RoleField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == ROLE {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == ROLE {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for RoleLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut own = RoleField(None);
        attrs.record(&mut own);
        let role = own.0.map(Role).or_else(|| {
            let parent = match attrs.parent() {
                Some(parent) => ctx.span(parent),
                None if attrs.is_contextual() => ctx.lookup_current(),
                None => None,
            }?;
            parent.extensions().get::<Role>().cloned()
        });
        if let (Some(role), Some(span)) = (role, ctx.span(id)) {
            span.extensions_mut().insert(role);
        }
    }
}

/// The role of span `id` (or its nearest ancestor that has one), as [`RoleLayer`] recorded
/// it; `None` outside any role's span or without the layer.
pub(super) fn role_of(dispatch: &tracing::Dispatch, id: &span::Id) -> Option<String> {
    let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
    let span = registry.span(id)?;
    span.scope()
        .find_map(|s| s.extensions().get::<Role>().map(|r| r.0.clone()))
}

/// The role of the current span, for a span about to begin inside it (an outgoing call).
pub fn current_role() -> Option<String> {
    tracing::dispatcher::get_default(|dispatch| {
        let id = dispatch.current_span().id()?.clone();
        role_of(dispatch, &id)
    })
}

/// The role a gRPC method belongs to: `orderflow.order.v1.OrderService` → `order`.
pub fn role_of_grpc_service(service: &str) -> Option<&str> {
    service
        .strip_prefix("orderflow.")
        .and_then(|rest| rest.split('.').next())
}

/// The exporter of `orderflow all`: one OTLP exporter per role, each with the process's
/// resource under the role's `service.name`; a span goes to its [`ROLE`]'s, and a span
/// without one to the process's own (`orderflow-all`).
#[derive(Debug)]
pub(super) struct ByRole<E> {
    by_role: HashMap<String, E>,
    process: E,
}

impl<E: SpanExporter> ByRole<E> {
    /// `make` builds one exporter; it is called once per role and once for the process.
    pub(super) fn new(
        roles: &[&str],
        mut make: impl FnMut() -> anyhow::Result<E>,
    ) -> anyhow::Result<Self> {
        let by_role = roles
            .iter()
            .map(|role| Ok((role.to_string(), make()?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            by_role,
            process: make()?,
        })
    }
}

fn role_attribute(span: &SpanData) -> Option<&str> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == ROLE)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl<E: SpanExporter> SpanExporter for ByRole<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut groups: HashMap<Option<String>, Vec<SpanData>> = HashMap::new();
        for span in batch {
            let role = role_attribute(&span)
                .filter(|role| self.by_role.contains_key(*role))
                .map(str::to_string);
            groups.entry(role).or_default().push(span);
        }
        let mut outcome = Ok(());
        for (role, spans) in groups {
            let exporter = role
                .as_deref()
                .and_then(|role| self.by_role.get(role))
                .unwrap_or(&self.process);
            if let Err(e) = exporter.export(spans).await {
                outcome = Err(e);
            }
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        let mut outcome = self.process.shutdown_with_timeout(timeout);
        for exporter in self.by_role.values() {
            if let Err(e) = exporter.shutdown_with_timeout(timeout) {
                outcome = Err(e);
            }
        }
        outcome
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut outcome = self.process.force_flush();
        for exporter in self.by_role.values() {
            if let Err(e) = exporter.force_flush() {
                outcome = Err(e);
            }
        }
        outcome
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.process.set_resource(resource);
        for (role, exporter) in &mut self.by_role {
            let attributes = resource
                .iter()
                .filter(|(key, _)| key.as_str() != "service.name")
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone()));
            exporter.set_resource(
                &Resource::builder_empty()
                    .with_attributes(attributes)
                    .with_service_name(format!("orderflow-{role}"))
                    .build(),
            );
        }
    }
}
