//! JSON ⇄ protobuf conversion of a representative request and reply, as the gateway
//! does it on every call.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::{
    routes::{Lookup, RouteTable},
    transcode::{build_request, render_response},
};
use http::Method;
use prost::Message;
use prost_reflect::DynamicMessage;

fn transcode(c: &mut Criterion) {
    let table = RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap();
    let Lookup::Found(route, values) = table.lookup(&Method::POST, "/v1/orders") else {
        panic!("not routed")
    };
    let body = Bytes::from_static(br#"{"lines":[{"sku":"CAFE-GRANO-250","quantity":2},{"sku":"TE-VERDE-100","quantity":1},{"sku":"PAN-AMASADO","quantity":6}],"buyer":{"rut":"76369187-K","razonSocial":"Comercial Los Andes SpA","giro":"Venta al por menor","address":"Av. Providencia 1234","comuna":"Providencia","email":"compras@losandes.cl"},"documentType":"factura"}"#);
    c.bench_function("json_to_protobuf_place_order", |b| {
        b.iter(|| {
            build_request(route, &values, None, Some("application/json"), body.clone())
                .unwrap()
                .encode_to_vec()
        })
    });

    let order = proto::order::v1::Order {
        id: "0193a1b2-0000-7000-8000-000000000001".into(),
        customer_id: "0193a1b2-0000-7000-8000-000000000002".into(),
        status: "pending_payment".into(),
        lines: (0..3)
            .map(|i| proto::order::v1::OrderLine {
                sku: format!("SKU-{i}"),
                name: format!("Producto {i}"),
                quantity: 2,
                unit_net_price: 4990,
                exempt: i == 2,
                line_net: 9980,
            })
            .collect(),
        net: 19960,
        exempt_total: 9980,
        iva: 3792,
        total: 33732,
        created_at: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    let bytes = order.encode_to_vec();
    let desc = table
        .pool()
        .get_message_by_name("orderflow.order.v1.Order")
        .unwrap();
    c.bench_function("protobuf_to_json_order", |b| {
        b.iter(|| {
            render_response(&DynamicMessage::decode(desc.clone(), bytes.as_slice()).unwrap()).body
        })
    });
}

criterion_group!(benches, transcode);
criterion_main!(benches);
