//! The error answers every operation of the OpenAPI document can give besides
//! its own, from the layers in front of the routes; all are `ErrorBody`.

use utoipa::Modify;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use super::access::OPEN_PATH;

/// Added to every operation; 401 to all but the open one.
const COMMON: &[(&str, &str)] = &[
    (
        "401",
        "The API token is missing or wrong: POST endpoints need it when SLUICE_API_TOKEN is set, \
         every endpoint but /healthz with --protect-reads or a bind beyond loopback",
    ),
    ("405", "The method is not allowed here (the Allow header lists those that are)"),
    ("408", "The request body did not arrive within the body timeout"),
    ("413", "The request body is over the size limit (64 KiB)"),
];

pub struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item) {
                for (code, description) in COMMON {
                    if *code == "401" && path == OPEN_PATH {
                        continue;
                    }
                    operation
                        .responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}
