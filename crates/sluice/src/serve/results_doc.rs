//! The OpenAPI entries of the dashboard's read endpoints and of the retry of
//! a run's failures, merged into `/openapi.json` with the others.

use utoipa::OpenApi;

use super::api_doc::CommonErrors;
use super::error::ErrorBody;
use super::results::{self, DocumentView, FailuresResponse, ResultGroup, ResultsResponse, SearchResponse};
use super::retry::{self, RetryResponse};

#[derive(OpenApi)]
#[openapi(
    paths(results::failures, results::results, results::search, retry::retry),
    modifiers(&CommonErrors),
    components(schemas(
        FailuresResponse,
        ResultsResponse,
        ResultGroup,
        DocumentView,
        SearchResponse,
        RetryResponse,
        ErrorBody
    ))
)]
pub struct ResultsApi;
