//! JSON schemas of the records whose JSON form is written by hand (`impl Serialize`), for the
//! gateway's OpenAPI document; the gateway's tests validate real answers against them.

use meshguard_policy::Code;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::records::{AuditEvent, EventCode, NewAuditEvent, PolicyOrigin};

impl PartialSchema for EventCode {
    fn schema() -> RefOr<Schema> {
        let others = [EventCode::Unauthorized, EventCode::ApprovalApproved];
        let codes = Code::ALL
            .into_iter()
            .map(EventCode::Decided)
            .chain(others)
            .map(EventCode::as_str);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An audit event's code: a decision's code, `unauthorized` (refusals of a token \
                 no longer honoured) or `approval_approved`.",
            ))
            .enum_values(Some(codes))
            .into()
    }
}

impl ToSchema for EventCode {}

impl PartialSchema for PolicyOrigin {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`api` for a policy applied through the admin API, else the file it was loaded from.",
            ))
            .into()
    }
}

impl ToSchema for PolicyOrigin {}

impl PartialSchema for AuditEvent {
    /// The submitted event's properties plus the chain's `seq`, `prev_hash` and `hash`, as one
    /// flat object (the JSON is one flat object too).
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let chain = |object: ObjectBuilder| {
            object
                .property(
                    "seq",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .description(Some("Position in its gateway's chain, from 1, gap-free.")),
                )
                .required("seq")
                .property(
                    "prev_hash",
                    text().description(Some("`hash` of the previous event of the chain.")),
                )
                .required("prev_hash")
                .property(
                    "hash",
                    text().description(Some(
                        "Hex SHA-256 of the canonical JSON of every other field.",
                    )),
                )
                .required("hash")
        };
        match NewAuditEvent::schema() {
            RefOr::T(Schema::Object(event)) => {
                let object: ObjectBuilder = event.into();
                chain(object.description(Some(
                    "One committed event of the hash-chained audit trail (SPEC 6).",
                )))
                .into()
            }
            other => AllOfBuilder::new()
                .item(other)
                .item(chain(ObjectBuilder::new()))
                .into(),
        }
    }
}

impl ToSchema for AuditEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        NewAuditEvent::schemas(schemas);
    }
}
