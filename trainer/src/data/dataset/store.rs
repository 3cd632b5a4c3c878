//! Where a dataset's files live: the local filesystem or an object store (S3 and S3-compatible
//! servers, Google Cloud Storage, Azure Blob Storage, plain HTTP), reached through the Arrow
//! project's `object_store` crate so that listing and ranged reads are one code path for all.
//!
//! Credentials and endpoints come from the environment variables each service's own tools read
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...), never from the
//! manifest. Every request has a timeout and is retried a bounded number of times with exponential
//! backoff; after that the error names the object.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::data::error::DataError;
use crate::data::spec::DataSpec;

/// Default timeout of one object-store request.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default retries of a failed request.
const DEFAULT_RETRIES: usize = 3;

/// A store and the place in it that the manifest's `path` names.
#[derive(Clone)]
pub struct Store {
    /// The store (local filesystem or remote).
    pub inner: Arc<dyn ObjectStore>,
    /// Prefix that turns an object path into a name for messages (`s3://bucket/`, `/`).
    pub display_prefix: String,
    /// The object path of `[job.data] path` (a file, a directory prefix, or a glob).
    pub location: String,
    /// Whether `inner` is the local filesystem.
    pub local: bool,
}

impl Store {
    /// The name of `path` for messages: a URL for remote objects, a file path for local ones.
    pub fn name(&self, path: &ObjectPath) -> String {
        format!("{}{}", self.display_prefix, path)
    }
}

/// `path` made absolute with `.` and `..` resolved (object store paths have neither): the path
/// itself when it exists, else its parent (a glob's directory) and its last segment.
fn local_absolute(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    if let Ok(c) = std::fs::canonicalize(path) {
        return Ok(c);
    }
    if let (Some(parent), Some(last)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            parent
        };
        if let Ok(c) = std::fs::canonicalize(parent) {
            return Ok(c.join(last));
        }
    }
    std::path::absolute(path)
}

/// Opens the store that `spec.path` (already resolved against the manifest directory) lives in.
///
/// # Errors
/// `Io` naming the path for a URL that cannot be parsed, an unsupported scheme, or a store that
/// cannot be configured from the environment.
pub fn open(spec: &DataSpec) -> Result<Store, DataError> {
    open_location(
        &spec.path,
        spec.is_url(),
        spec.request_timeout_ms,
        spec.max_retries,
    )
}

/// Opens the store of `path`, a local path or (`is_url`) a URL, with the request timeout and
/// retries given (defaults when `None`); used for datasets and for checkpoints.
///
/// # Errors
/// As [`open`].
pub fn open_location(
    path: &std::path::Path,
    is_url: bool,
    request_timeout_ms: Option<u64>,
    max_retries: Option<usize>,
) -> Result<Store, DataError> {
    let raw = path.to_string_lossy().to_string();
    let err = |message: String| DataError::Io {
        file: raw.clone(),
        message,
    };
    if !is_url {
        let abs = local_absolute(path).map_err(|e| err(e.to_string()))?;
        let location = abs.to_string_lossy().trim_start_matches('/').to_string();
        return Ok(Store {
            inner: Arc::new(LocalFileSystem::new()),
            display_prefix: "/".into(),
            location,
            local: true,
        });
    }
    let url = Url::parse(&raw).map_err(|e| err(format!("not a valid URL: {e}")))?;
    let (scheme, path) =
        ObjectStoreScheme::parse(&url).map_err(|e| err(format!("unsupported URL: {e}")))?;
    let timeout_ms = request_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    let retries = max_retries.unwrap_or(DEFAULT_RETRIES);
    let timeout = format!("{timeout_ms}ms");
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: Duration::from_millis(timeout_ms.saturating_mul(retries as u64 + 1))
            + Duration::from_secs(30),
    };
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        ObjectStoreScheme::Local => Ok(Arc::new(LocalFileSystem::new())),
        ObjectStoreScheme::AmazonS3 => AmazonS3Builder::from_env()
            .with_url(url.as_str())
            .with_retry(retry)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                timeout.clone(),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                timeout,
            )
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::GoogleCloudStorage => GoogleCloudStorageBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry)
            .with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::MicrosoftAzure => MicrosoftAzureBuilder::from_env()
            .with_url(url.as_str())
            .with_retry(retry)
            .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::Http => HttpBuilder::new()
            .with_url(url.origin().ascii_serialization())
            .with_retry(retry)
            .with_config(ClientConfigKey::Timeout, timeout)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        other => {
            return Err(err(format!(
                "scheme {other:?} is not supported (use s3://, gs://, az://, http(s):// or a path)"
            )))
        }
    };
    let inner = built.map_err(|e| err(format!("cannot configure the object store: {e}")))?;
    let local = matches!(scheme, ObjectStoreScheme::Local);
    let display_prefix = if local {
        "/".to_string()
    } else {
        let base = &url[..url::Position::BeforePath];
        format!("{base}/")
    };
    Ok(Store {
        inner,
        display_prefix,
        location: path.to_string(),
        local,
    })
}

/// Runs `fut` to completion on a fresh single-threaded Tokio runtime in a scoped thread, so that
/// callers in or out of an async context (actix, tests, the CLI) can block on dataset I/O.
///
/// # Errors
/// `Io` naming `what` if the runtime cannot start; otherwise whatever `fut` returns.
pub fn block_on<T: Send>(
    what: &str,
    fut: impl Future<Output = Result<T, DataError>> + Send,
) -> Result<T, DataError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DataError::Io {
                    file: what.to_string(),
                    message: format!("cannot start an I/O runtime: {e}"),
                })?;
            rt.block_on(fut)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(DataError::Io {
                file: what.to_string(),
                message: "the I/O thread panicked".into(),
            })
        })
    })
}
