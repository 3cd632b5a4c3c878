//! Checking a producer's Arrow schema against the fitted training columns, once, at the first
//! message of each producer connection: a missing column or a column of the wrong kind is refused
//! with a message naming the stream and the column before any row is read.

use arrow_schema::Schema;

use super::columns::{column_kind, Kind};
use super::error::DataError;
use super::table::Fitted;

impl Fitted {
    /// Checks that `schema` has the label and every feature column with the kind the transform
    /// was fitted on (numbers for numeric features, strings for one-hot ones). `name` (the
    /// stream) appears in errors.
    ///
    /// # Errors
    /// `MissingColumn` or `UnsupportedType` from the column lookup, or `Config` naming the
    /// column whose kind differs from the warm-up sample's.
    pub fn check_schema(&self, schema: &Schema, name: &str) -> Result<(), DataError> {
        column_kind(schema, name, &self.label.column)?;
        for plan in &self.features.columns {
            let (column, want) = (plan.name(), plan.kind());
            let got = column_kind(schema, name, column)?;
            if got != want {
                let dtype = schema
                    .field_with_name(column)
                    .map(|f| f.data_type().to_string())
                    .unwrap_or_default();
                return Err(DataError::Config {
                    file: name.to_string(),
                    column: column.to_string(),
                    message: format!(
                        "has type {dtype} but the warm-up sample's column is {}",
                        match want {
                            Kind::Numeric => "numeric",
                            Kind::String => "a string",
                        }
                    ),
                });
            }
        }
        Ok(())
    }
}
