//! A console command's result: typed columns and text values, or a
//! command tag, or an error.

use bytes::BytesMut;
use pgsplit_protocol::encode::{self, ErrorInfo, INT4_OID, INT8_OID, NUMERIC_OID, TEXT_OID};

/// A column's type, as PgBouncer gives it (text, int4, int8, numeric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Column {
    fn oid(self) -> u32 {
        match self {
            Column::Text => TEXT_OID,
            Column::Int4 => INT4_OID,
            Column::Int8 => INT8_OID,
            Column::Numeric => NUMERIC_OID,
        }
    }
}

#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<(&'static str, Column)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Column)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; panics in tests if it does not have a value per column.
    pub fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{:?}", self.columns);
        self.rows.push(row);
    }
}

/// What a command sends back.
#[derive(Debug)]
pub enum Reply {
    Rows(Table),
    Done(&'static str, Option<String>),
    Error(ErrorInfo),
    /// An empty query string.
    Empty,
}

impl Reply {
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Rows(t) => {
                let columns: Vec<(&str, u32)> =
                    t.columns.iter().map(|(n, c)| (*n, c.oid())).collect();
                encode::row_description_typed(out, &columns);
                for row in &t.rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    encode::data_row(out, &values);
                }
                encode::command_complete(out, "SHOW");
            }
            Reply::Done(tag, note) => {
                if let Some(note) = note {
                    encode::notice_response(out, &ErrorInfo::notice("00000", note.clone()));
                }
                encode::command_complete(out, tag);
            }
            Reply::Error(e) => encode::error_response(out, e),
            Reply::Empty => encode::empty_query_response(out),
        }
    }
}

/// A value for a row.
pub fn v(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}
