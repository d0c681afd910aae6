//! `put --restore DIGEST --service URL`: the document a service remembers under that
//! digest (`GET /changes/{digest}`), to be validated and stored again like a file.

use super::fleet_client::{Endpoint, FleetClient, FleetClientError};

/// A remembered document fetched for restoring.
#[derive(Debug)]
pub struct Restorable {
    /// What the output calls it: `document DIGEST from SERVICE (source NAME)`.
    pub name: String,
    pub bytes: Vec<u8>,
    /// The digest the service serves for that source now: the key must still hold it
    /// (compare-and-set), so a restore never overwrites a change made meanwhile.
    pub expected: Option<String>,
}

/// Fetches `digest` from `at`, and what `at` serves now for the document's source.
pub async fn fetch(
    client: &FleetClient,
    at: &Endpoint,
    digest: &str,
) -> Result<Restorable, FleetClientError> {
    let (source, body) = client.document(at, digest).await?;
    let fleet = client.fleet(at, "limit=1").await?;
    let expected = source.as_ref().and_then(|name| {
        fleet
            .sources
            .iter()
            .find(|s| &s.name == name)
            .map(|s| s.digest.clone())
    });
    Ok(Restorable {
        name: format!(
            "document {digest} from {at}{}",
            source.map_or(String::new(), |s| format!(" (source {s})"))
        ),
        bytes: body.to_vec(),
        expected,
    })
}
