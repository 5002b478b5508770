//! JSON schemas of the types whose JSON form is written by hand (`impl Serialize`), for the
//! gateway's OpenAPI document. Each schema sits beside nothing else on purpose: it must say what
//! the hand-written `Serialize` writes, and the gateway's tests validate real answers against it.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::history::{HistoryCondition, HistoryScope};
use crate::model::{ApprovalNeed, Code, Decision, Effect};
use crate::pattern::Pattern;
use crate::policy::{ApprovalRequirement, Conditions};

/// A schema of one JSON type, or of that type or `null`.
fn typed(ty: Type, nullable: bool) -> RefOr<Schema> {
    let ty = if nullable {
        SchemaType::from_iter([ty, Type::Null])
    } else {
        SchemaType::new(ty)
    };
    ObjectBuilder::new().schema_type(ty).into()
}

/// A reference to a named schema, or `null`.
fn nullable_ref<T: ToSchema>() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(utoipa::openapi::Ref::from_schema_name(T::name()))
        .into()
}

/// A reference to a named schema.
fn reference<T: ToSchema>() -> RefOr<Schema> {
    utoipa::openapi::Ref::from_schema_name(T::name()).into()
}

impl PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A decision's machine code; it fixes the decision's effect (SPEC 2).",
            ))
            .enum_values(Some(Code::ALL.map(Code::as_str)))
            .into()
    }
}

impl ToSchema for Code {}

impl PartialSchema for Pattern {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A pattern as written: `*` matches any run of characters, `?` exactly one.",
            ))
            .into()
    }
}

impl ToSchema for Pattern {}

impl PartialSchema for Decision {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "A decision with its reasons; `effect` is derived from `code`.",
            ))
            .property("effect", reference::<Effect>())
            .property("code", reference::<Code>())
            .property("reason", typed(Type::String, false))
            .property("policy", typed(Type::String, true))
            .property("rule", typed(Type::String, true))
            .property("retry_after_secs", typed(Type::Integer, true))
            .property("approval", nullable_ref::<ApprovalNeed>())
            .property("approval_id", typed(Type::String, true))
            .required("effect")
            .required("code")
            .required("reason")
            .required("policy")
            .required("rule")
            .required("retry_after_secs")
            .required("approval")
            .required("approval_id")
            .into()
    }
}

impl ToSchema for Decision {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Effect::name().into(), Effect::schema()));
        schemas.push((Code::name().into(), Code::schema()));
        schemas.push((ApprovalNeed::name().into(), ApprovalNeed::schema()));
    }
}

impl PartialSchema for HistoryCondition {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("`after` / `notAfter` as written."))
            .property("action", reference::<Pattern>())
            .property("within", typed(Type::String, false))
            .property("scope", reference::<HistoryScope>())
            .required("action")
            .required("within")
            .required("scope")
            .into()
    }
}

impl ToSchema for HistoryCondition {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Pattern::name().into(), Pattern::schema()));
        schemas.push((HistoryScope::name().into(), HistoryScope::schema()));
    }
}

impl PartialSchema for ApprovalRequirement {
    fn schema() -> RefOr<Schema> {
        let conditional = ObjectBuilder::new()
            .property("action", reference::<Pattern>())
            .property("when", reference::<Conditions>())
            .required("action")
            .required("when");
        OneOfBuilder::new()
            .description(Some(
                "A `requireApproval` entry: a pattern, or a pattern with the conditions it needs.",
            ))
            .item(reference::<Pattern>())
            .item(conditional)
            .into()
    }
}

impl ToSchema for ApprovalRequirement {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Pattern::name().into(), Pattern::schema()));
        schemas.push((Conditions::name().into(), Conditions::schema()));
        Conditions::schemas(schemas);
    }
}
